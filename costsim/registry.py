"""Loading specs: shipped YAML (package data), user YAML files, HF ``config.json`` files,
and ``--set`` / ``--hw-set`` what-ifs. All user mistakes become one-line CostsimError
messages naming the file and field.
"""

from __future__ import annotations

import json
import re
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


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (the second would
    silently win)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                dup = key in seen
            except TypeError:  # an unhashable key: the base class raises its own error
                dup = False
            if dup:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (given twice in one mapping)", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


MAX_DEPTH = 64  # nesting of lists/mappings in a spec, profile or --set value
MAX_NODES = 1_000_000  # values in one document, aliases expanded (a YAML alias bomb stops here)
MAX_INT = 2**63  # integers at or beyond this are refused (no float conversion overflows later)


def check_structure(data: Any, where: str) -> Any:
    """``data`` unless it nests deeper than MAX_DEPTH, holds more than MAX_NODES values with
    YAML aliases expanded, or an integer of magnitude >= 2^63; else a one-line CostsimError.
    Iterative, so a hostile document cannot exhaust the stack or the time."""
    stack, count = [(data, 0)], 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise CostsimError(f"{where}: more than {MAX_NODES:,} values (are YAML aliases expanding without bound?)")
        if isinstance(node, (dict, list)):
            if depth >= MAX_DEPTH:
                raise CostsimError(f"{where}: nested more than {MAX_DEPTH} levels deep")
            children = list(node.keys()) + list(node.values()) if isinstance(node, dict) else node
            stack.extend((c, depth + 1) for c in children)
        elif isinstance(node, int) and not isinstance(node, bool) and not -MAX_INT < node < MAX_INT:
            raise CostsimError(f"{where}: an integer of {node.bit_length()} bits: expected one below 2^63")
    return data


def load_yaml_text(text: str, where: str) -> Any:
    """``yaml.safe_load`` with duplicate keys refused, then :func:`check_structure`; every
    failure is a one-line CostsimError naming ``where``."""
    try:
        loader = _UniqueKeyLoader(text)  # what yaml.safe_load runs, plus the duplicate-key check
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise CostsimError(f"{where}: malformed YAML{line}: {problem}") from None
    except RecursionError:
        raise CostsimError(f"{where}: nested too deeply (more than {MAX_DEPTH} levels expected at most)") from None
    except ValueError as e:  # int('9' * 5000): Python's integer string conversion limit
        raise CostsimError(f"{where}: {str(e).split(';')[0]}") from None
    return check_structure(data, where)


def _read_text(path: Path | str) -> str:
    from costsim.files import check_input

    try:
        return Path(check_input(path)).read_text(encoding="utf-8-sig")
    except OSError as e:
        raise CostsimError(f"{path}: cannot read file ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise CostsimError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save the file as UTF-8") from None


def read_yaml(path: Path | str, text: str | None = None) -> Any:
    """Load a YAML file (a regular file of bounded size, duplicate keys refused, bounded
    nesting and alias expansion); any problem -> CostsimError naming the file (and line)."""
    return load_yaml_text(_read_text(path) if text is None else text, str(path))


def read_json(path: Path | str) -> Any:
    """Load a JSON file with the same bounds as :func:`read_yaml`."""
    text = _read_text(path)
    try:
        data = json.loads(text, object_pairs_hook=_unique_pairs(path))
    except json.JSONDecodeError as e:
        raise CostsimError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise CostsimError(f"{path}: nested too deeply (more than {MAX_DEPTH} levels expected at most)") from None
    except ValueError as e:  # int('9' * 5000), or a duplicate key
        raise CostsimError(f"{path}: {str(e).split(';')[0]}") from None
    return check_structure(data, str(path))


def _unique_pairs(path):
    def hook(pairs):
        d = {}
        for k, v in pairs:
            if k in d:
                raise ValueError(f"duplicate key {k!r} (given twice in one object)")
            d[k] = v
        return d

    return hook


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


def _field_class(model: type, keys: list[str]):
    """The pydantic model class at ``keys`` under ``model`` (None if it is not a model)."""
    import typing

    cls = model
    for k in keys:
        fields = getattr(cls, "model_fields", None)
        if not fields or k not in fields:
            return None
        ann = fields[k].annotation
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        cls = args[0] if typing.get_origin(ann) is not None and len(args) == 1 else ann
    return cls if isinstance(cls, type) else None


def apply_sets(spec: T, assignments: list[str] | None, flag: str, require_units: bool = False) -> T:
    """Apply ``path.to.field=value`` what-ifs to a spec and re-validate the whole spec.

    Values are parsed with ``yaml.safe_load`` (``256`` -> int, ``null`` -> None, ``8TB/s``
    stays a string for the unit parser). Paths walk the same pydantic model the YAML fills.

    A relative value scales the field's current value (after earlier assignments):
    ``+10%``, ``-5%``, ``x2``, ``x0.5`` (no unit: it is a ratio). An integer field (heads,
    ranks, layers) must stay a whole number, else a CostsimError says what it would become.

    Setting ``kind`` on the attention or the FFN switches its class (``attention.kind=mla``):
    fields the new kind shares are kept, the others dropped, and later assignments may set the
    new kind's fields; a required field left unset is named in one error line.
    Raises CostsimError naming the flag, the path and what was expected.
    """
    if not assignments:
        return spec
    data = spec.model_dump(mode="python", exclude_unset=False)
    switched: dict[tuple, str] = {}  # path of a union node whose kind was set -> the assignment
    for item in assignments:
        if not isinstance(item, str) or "=" not in item:
            raise CostsimError(f"{flag} {item!r}: expected PATH=VALUE, e.g. attention.kv_lora_rank=256")
        path, raw = item.split("=", 1)
        path = path.strip()
        keys = [k for k in path.split(".")]
        if not all(keys):
            raise CostsimError(f"{flag} {item!r}: empty field name in path {path!r}")
        node = data
        for depth, k in enumerate(keys[:-1]):
            node = _child(type(spec), data, node, keys, depth, flag, path)
        k = keys[-1]
        _check_field(type(spec), data, node, keys, flag, path)
        old = node.get(k)
        sourced = isinstance(old, dict) and "value" in old
        rel = relative_factor(raw)
        if rel is not None:
            base = old["value"] if sourced else old
            if sourced and isinstance(base, str):  # set with its unit by an earlier --hw-set (8TB/s)
                base = _parse_sourced(type(spec), keys, base, flag, path)
            value = _scaled(base, rel, raw.strip(), flag, path)
        else:
            if re.fullmatch(r"\s*\+\s*[0-9.]+\s*", raw):
                n = raw.strip().lstrip("+").strip()
                raise CostsimError(f"{flag} {path}={raw.strip()}: ambiguous; write +{n}% for a relative change or "
                                   f"{n} for the value")
            try:
                value = load_yaml_text(raw, f"{flag} {path}") if raw.strip() else ""
            except CostsimError as e:
                if "malformed YAML" not in str(e):
                    raise
                value = raw  # not YAML: a string for the field's own parser (8TB/s)
            if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d*)?\s*%\s*", value):
                raise CostsimError(f"{flag} {path}={raw.strip()}: a relative value needs a sign or an x: "
                                   f"+{value.strip()}, -{value.strip()} or x{float(value.strip()[:-1]) / 100:g}")
        if sourced and not isinstance(value, dict):
            if rel is None and require_units and _bare_number_for_a_unit(type(spec), keys, value):
                raise CostsimError(
                    f"{flag} {path}={raw.strip()}: give the unit (e.g. {path}="
                    f"{_unit_example(type(spec), keys)}); a bare number is ambiguous here")
            # a sourced quantity: replace value, mark it as a what-if
            node[k] = {**old, "value": value, "source": f"what-if ({flag} {path}={raw.strip()})",
                       "provenance": "assumed"}
        elif k == "kind" and _union_members(type(spec), data, keys[:-1]):
            node = _switch_kind(type(spec), data, keys[:-1], value, flag, path)
            switched[tuple(keys[:-1])] = f"{path}={raw.strip()}"
        else:
            node[k] = value
    for where, item in switched.items():
        _require_fields(type(spec), data, list(where), flag, item)
    return validate(type(spec), data, f"{flag}")


_RELATIVE = re.compile(r"\s*(?:([+-])\s*(\d+(?:\.\d*)?|\.\d+)\s*%|[x×X]\s*(\d+(?:\.\d*)?|\.\d+))\s*")


def relative_factor(text: str):
    """The factor of a relative value as an exact ``fractions.Fraction``: ``+10%`` -> 11/10,
    ``-5%`` -> 19/20, ``x2`` -> 2, ``x0.5`` -> 1/2; None when ``text`` is not relative.
    A factor below 0 (``-150%``) raises CostsimError."""
    from fractions import Fraction

    m = _RELATIVE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        return None
    sign, pct, mult = m.groups()
    if mult is not None:
        return Fraction(mult)
    f = 1 + (Fraction(pct) if sign == "+" else -Fraction(pct)) / 100
    if f < 0:
        raise CostsimError(f"{text.strip()}: a change below -100% would make the value negative")
    return f


def _parse_sourced(model: type, keys: list[str], text: str, flag: str, path: str) -> float:
    """The SI value of ``text`` by the parser of the sourced quantity at ``keys``."""
    cls = _field_class(model, keys)
    try:
        return float(cls._parser(text))
    except (ValueError, CostsimError, AttributeError, TypeError) as e:
        raise CostsimError(f"{flag} {path}: cannot read {text!r} ({e})") from None


def _scaled(old, factor, text: str, flag: str, path: str):
    """``old`` x ``factor``: an int stays an int (or CostsimError), a float stays a float."""
    from fractions import Fraction

    if isinstance(old, bool) or not isinstance(old, (int, float)):
        what = "not set on this spec (null)" if old is None else f"{old!r}, not a number"
        raise CostsimError(f"{flag} {path}={text}: a relative value needs a number to scale; {path} is {what}")
    new = Fraction(old) * factor
    if isinstance(old, int):
        if new.denominator != 1:
            raise CostsimError(f"{flag} {path}={text}: {old} {text} = {float(new):g}, but {path} is a whole number")
        return int(new)
    return float(new)


def _child(root: type, data: dict, node, keys: list[str], depth: int, flag: str, path: str):
    """Step from ``node`` into ``keys[depth]`` (a group of fields), or a one-line error."""
    _check_field(root, data, node, keys[:depth + 1], flag, path)
    child = node.get(keys[depth])
    if not isinstance(child, dict):
        what = "not set on this spec (null)" if child is None else "a value, not a group of fields"
        raise CostsimError(f"{flag} {path}: {'.'.join(keys[:depth + 1])} is {what}")
    return child


def _check_field(root: type, data: dict, node, keys: list[str], flag: str, path: str) -> None:
    """``keys[-1]`` must be a field of ``node`` (or of its class, after a kind switch)."""
    if not isinstance(node, dict):
        raise CostsimError(f"{flag} {path}: {'.'.join(keys[:-1])} is a value, not a group of fields")
    k = keys[-1]
    cls = _node_class(root, data, keys[:-1])
    known = set(node) | (set(cls.model_fields) if cls is not None else set())
    if k not in known:
        where = ".".join(keys[:-1]) or "top level"
        raise CostsimError(f"{flag} {path}: no field {k!r} at {where} (expected one of: {', '.join(sorted(known))})")


def _members(ann) -> dict:
    """``{kind tag: class}`` of a discriminated union annotation (empty for anything else)."""
    import typing

    while typing.get_origin(ann) is typing.Annotated:
        ann = typing.get_args(ann)[0]
    out = {}
    for a in typing.get_args(ann) if typing.get_origin(ann) is typing.Union else ():
        kind = getattr(a, "model_fields", {}).get("kind")
        for tag in typing.get_args(kind.annotation) if kind is not None else ():
            out[tag] = a
    return out


def _union_members(root: type, data: dict, keys: list[str]) -> dict:
    """``{kind: class}`` when the field at ``keys`` is a discriminated union (attention, ffn)."""
    if not keys:
        return {}
    parent = _node_class(root, data, keys[:-1])
    field = getattr(parent, "model_fields", {}).get(keys[-1]) if parent is not None else None
    return _members(field.annotation) if field is not None else {}


def _node_class(root: type, data: dict, keys: list[str]):
    """The pydantic class of the node at ``keys`` in ``data`` (a union resolved by the node's
    ``kind``); None where it is not a model."""
    import typing

    cls, node = root, data
    for k in keys:
        fields = getattr(cls, "model_fields", None)
        if not fields or k not in fields:
            return None
        node = node.get(k) if isinstance(node, dict) else None
        ann = fields[k].annotation
        members = _members(ann)
        if members:
            cls = members.get(node.get("kind")) if isinstance(node, dict) else None
            continue
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        cls = args[0] if typing.get_origin(ann) is not None and len(args) == 1 else ann
        if not isinstance(cls, type):
            return None
    return cls


def _switch_kind(root: type, data: dict, keys: list[str], kind, flag: str, path: str) -> dict:
    """Replace the union node at ``keys`` by one of class ``kind``, keeping shared fields."""
    members = _union_members(root, data, keys)
    if kind not in members:
        raise CostsimError(f"{flag} {path}={kind}: expected one of {', '.join(members)}")
    parent = data
    for k in keys[:-1]:
        parent = parent[k]
    old = parent[keys[-1]]
    fields = members[kind].model_fields
    parent[keys[-1]] = {k: v for k, v in old.items() if k in fields and k != "kind"} | {"kind": kind}
    return parent[keys[-1]]


def _require_fields(root: type, data: dict, keys: list[str], flag: str, item: str) -> None:
    """After a kind switch: every required field of the new kind is set, else one line naming all."""
    node = data
    for k in keys:
        node = node[k]
    cls = _node_class(root, data, keys)
    missing = [k for k, f in cls.model_fields.items() if f.is_required() and k not in node]
    if missing:
        where = ".".join(keys)
        raise CostsimError(f"{flag} {item}: the {node['kind']} {where} also needs "
                           f"{', '.join(missing)} (give each as {flag} {where}.FIELD=VALUE)")


def _unit_classes():
    from costsim.specs import Bandwidth, Bytes, FlopRate, Price, Seconds

    return {FlopRate: "2000TFLOPS", Bandwidth: "8TB/s", Bytes: "80GB", Seconds: "3us", Price: "2.5USD/h"}


def _bare_number_for_a_unit(model: type, keys: list[str], value) -> bool:
    """True for a non-zero bare number aimed at a field that has a unit (a rate, a size, a time)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value == 0:
        return False
    cls = _field_class(model, keys)
    return cls is not None and any(issubclass(cls, u) for u in _unit_classes())


def _unit_example(model: type, keys: list[str]) -> str:
    cls = _field_class(model, keys)
    return next((ex for u, ex in _unit_classes().items() if cls is not None and issubclass(cls, u)), "")


_CONVERSIONS = {  # name -> (attention kinds it converts from, required and optional parameters)
    "mha-to-mla": (("mha", "gqa", "mqa"), ("d_c", "d_h_r"), ("d_q",)),
}


def conversion_sets(spec: ModelSpec, text: str | None, flag: str = "--convert") -> list[str]:
    """A named conversion as ``--set`` assignments for ``apply_sets``.

    ``mha-to-mla:d_c=512,d_h_r=64[,d_q=1536]``: MHA/GQA/MQA attention becomes MLA
    (DeepSeek-V2, arXiv 2405.04434, §2.1) with KV latent rank d_c (``kv_lora_rank``),
    decoupled RoPE key dim d_h^R (``qk_rope_head_dim``), optional query latent rank d'_c
    (``q_lora_rank``; absent: queries uncompressed, as V2-Lite); the heads are kept, and the
    per-head dim d_h becomes ``qk_nope_head_dim`` and ``v_head_dim`` (V2: d_h = 128 for both).
    Raises CostsimError naming ``flag`` and what was expected.
    """
    if not text:
        return []
    name, _, args = text.partition(":")
    name = name.strip().lower()
    if name not in _CONVERSIONS:
        raise CostsimError(f"{flag} {text}: unknown conversion {name!r}: expected one of {', '.join(_CONVERSIONS)}")
    kinds, required, optional = _CONVERSIONS[name]
    params = {}
    for part in filter(None, (p.strip() for p in args.split(","))):
        k, eq, v = part.partition("=")
        k = k.strip()
        if not eq or k not in required + optional:
            raise CostsimError(f"{flag} {text}: expected {name}:" + ",".join(f"{r}=N" for r in required)
                               + "".join(f"[,{o}=N]" for o in optional) + f", got {part!r}")
        if not v.strip().isdigit() or int(v) < 1:
            raise CostsimError(f"{flag} {text}: {k} must be a whole number >= 1, got {v.strip()!r}")
        params[k] = int(v)
    missing = [r for r in required if r not in params]
    if missing:
        raise CostsimError(f"{flag} {text}: {name} needs {', '.join(missing)} ({name}:"
                           + ",".join(f"{r}=N" for r in required) + ")")
    att = spec.attention
    if att.kind not in kinds:
        raise CostsimError(f"{flag} {text}: {spec.name}'s attention is {att.kind}; {name} converts {', '.join(kinds)}")
    a = "attention."
    return [f"{a}kind=mla", f"{a}kv_lora_rank={params['d_c']}", f"{a}qk_rope_head_dim={params['d_h_r']}",
            f"{a}qk_nope_head_dim={att.head_dim}", f"{a}v_head_dim={att.head_dim}",
            f"{a}q_lora_rank={params['d_q'] if 'd_q' in params else 'null'}"]
