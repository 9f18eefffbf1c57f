"""Loading specs: shipped YAML (package data), user YAML files, HF ``config.json`` files,
and ``--set`` / ``--hw-set`` what-ifs. All user mistakes become one-line CostsimError
messages naming the file and field.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel

from costsim.errors import CostsimError
from costsim.hf import spec_from_hf_config
from costsim.specs import HardwareProfile, ModelSpec, validate

T = TypeVar("T", bound=BaseModel)

_MODEL_PKG = "costsim.model_specs"
_HW_PKG = "costsim.hardware_profiles"


def read_yaml(path: Path | str, text: str | None = None) -> Any:
    """``yaml.safe_load`` a file; malformed YAML -> CostsimError with the line number."""
    try:
        if text is None:
            text = Path(path).read_text(encoding="utf-8-sig")
        return yaml.safe_load(text)
    except OSError as e:
        raise CostsimError(f"{path}: cannot read file ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise CostsimError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save the file as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise CostsimError(f"{path}: malformed YAML{line}: {problem}") from None


def read_json(path: Path | str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except OSError as e:
        raise CostsimError(f"{path}: cannot read file ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise CostsimError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save the file as UTF-8") from None
    except json.JSONDecodeError as e:
        raise CostsimError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


@lru_cache(maxsize=None)
def _shipped(pkg: str) -> dict[str, str]:
    """Map of slug -> YAML text for the files shipped in ``pkg``."""
    out = {}
    for f in resources.files(pkg).iterdir():
        if f.name.endswith(".yaml"):
            out[f.name[: -len(".yaml")].lower()] = f.read_text()
    return out


@lru_cache(maxsize=None)
def _load_shipped(pkg: str, slug: str, cls_name: str):
    cls = {"ModelSpec": ModelSpec, "HardwareProfile": HardwareProfile}[cls_name]
    where = f"{pkg.replace('.', '/')}/{slug}.yaml"
    return validate(cls, read_yaml(where, _shipped(pkg)[slug]), where)


def model_names() -> list[str]:
    return sorted(_shipped(_MODEL_PKG))


def hardware_names() -> list[str]:
    return sorted(_shipped(_HW_PKG))


def _looks_like_path(ref: str) -> bool:
    return ref.lower().endswith((".yaml", ".yml", ".json")) or "/" in ref or Path(ref).is_file()


def _ref(ref, what: str) -> str:
    if not isinstance(ref, (str, Path)):
        raise CostsimError(f"{what}: expected a name or a path, got {type(ref).__name__}")
    return str(ref)


def _file(ref: str) -> Path:
    p = Path(ref)
    if p.is_dir():
        raise CostsimError(f"{ref}: is a directory, not a spec file")
    if p.exists() and not p.is_file():
        raise CostsimError(f"{ref}: not a regular file")
    if not p.is_file():
        raise CostsimError(f"{ref}: no such file")
    return p


def load_model(ref: str) -> ModelSpec:
    """Resolve a model name (case-insensitive slug), a spec YAML path or an HF config.json path."""
    ref = _ref(ref, "model")
    if _looks_like_path(ref):
        p = _file(ref)
        data = read_json(p) if p.suffix.lower() == ".json" else read_yaml(p)
        if p.suffix.lower() == ".json" or (isinstance(data, dict) and "model_type" in data and "attention" not in data):
            return spec_from_hf_config(data, where=str(p))  # an HF config.json, whatever its suffix
        return validate(ModelSpec, data, str(p))
    slug = ref.strip().lower()
    if slug not in _shipped(_MODEL_PKG):
        raise CostsimError(
            f"unknown model {ref!r}: expected one of {', '.join(model_names())}, or a path to a spec .yaml or config.json"
        )
    return _load_shipped(_MODEL_PKG, slug, "ModelSpec")


def load_hardware(ref: str) -> HardwareProfile:
    """Resolve a hardware name (case-insensitive slug) or a profile YAML path."""
    ref = _ref(ref, "hardware")
    if _looks_like_path(ref):
        p = _file(ref)
        return validate(HardwareProfile, read_yaml(p), str(p))
    slug = ref.strip().lower()
    if slug not in _shipped(_HW_PKG):
        raise CostsimError(f"unknown hardware {ref!r}: expected one of {', '.join(hardware_names())}, or a path to a profile .yaml")
    return _load_shipped(_HW_PKG, slug, "HardwareProfile")


def apply_sets(spec: T, assignments: list[str] | None, flag: str) -> T:
    """Apply ``path.to.field=value`` what-ifs to a spec and re-validate the whole spec.

    Values are parsed with ``yaml.safe_load`` (``256`` -> int, ``null`` -> None, ``8TB/s``
    stays a string for the unit parser). Paths walk the same pydantic model the YAML fills.
    Raises CostsimError naming the flag, the path and what was expected.
    """
    if not assignments:
        return spec
    data = spec.model_dump(mode="python", exclude_unset=False)
    for item in assignments:
        if "=" not in item:
            raise CostsimError(f"{flag} {item!r}: expected PATH=VALUE, e.g. attention.kv_lora_rank=256")
        path, raw = item.split("=", 1)
        keys = [k for k in path.strip().split(".")]
        if not all(keys):
            raise CostsimError(f"{flag} {item!r}: empty field name in path {path!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        for depth, k in enumerate(keys):
            last = depth == len(keys) - 1
            if not isinstance(node, dict):
                what = "not set on this spec (null)" if node is None else "a value, not a group of fields"
                raise CostsimError(f"{flag} {path}: {'.'.join(keys[:depth])} is {what}")
            if k not in node:
                where = ".".join(keys[:depth]) or "top level"
                opts = ", ".join(sorted(node))
                raise CostsimError(f"{flag} {path}: no field {k!r} at {where} (expected one of: {opts})")
            if last:
                old = node[k]
                if isinstance(old, dict) and "value" in old and not isinstance(value, dict):
                    # a sourced quantity: replace value, mark it as a what-if
                    node[k] = {**old, "value": value, "source": f"what-if ({flag})", "provenance": "assumed"}
                else:
                    node[k] = value
            else:
                node = node[k]
    return validate(type(spec), data, f"{flag}")
