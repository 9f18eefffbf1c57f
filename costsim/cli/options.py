"""What every command shares: options declared once (typed and documented), parsing at the
edge (units, k = 1024 counts), loading specs with what-ifs, and the one-line error contract.

An engine ``FieldError`` names a scenario field (``tp``, ``kv_dtype``, ``tpot_slo_s``); the
CLI prints the flag the user typed instead (``--tp 3: ...``), with the user's own text.
"""

from __future__ import annotations

import re
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, List, Optional

import typer

from costsim.errors import CostsimError, FieldError


class Fmt(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


# ---- options, declared once ----------------------------------------------------------------

_DTYPES = "bf16, fp16, fp8, int8, int4, int4-g32, mxfp4, or bits (6)"
Format = Annotated[Fmt, typer.Option("--format", "-f", help="table (people), json or csv (machines; SI units).")]
Sets = Annotated[Optional[List[str]], typer.Option(
    "--set", help="What-if on the model spec: PATH=VALUE, e.g. attention.kv_lora_rank=256, or relative: =x0.5, "
             "=+10%, =-5% (repeatable; attention.kind=mla switches the kind, its fields set by further --set).")]
HwSets = Annotated[Optional[List[str]], typer.Option(
    "--hw-set", help="What-if on the hardware: PATH=VALUE, e.g. memory_bandwidth=8TB/s, or relative without a "
                "unit: memory_bandwidth=+10%, peak_flops.fp8=x2 (repeatable).")]
Model = Annotated[str, typer.Argument(help="Model name, spec .yaml or HF config.json.")]
Models = Annotated[List[str], typer.Argument(help="One or more models (name, spec .yaml or HF config.json).")]
Hardware = Annotated[str, typer.Option("--hardware", "-H", help="Hardware name or profile .yaml.")]
Context = Annotated[str, typer.Option("--context", help="Context length in tokens; k = 1024 (128k = 131,072).")]
Batch = Annotated[str, typer.Option("--batch", help="Concurrent sequences over all the devices (k = 1024).")]
Devices = Annotated[Optional[int], typer.Option("--devices", help="Devices in the deployment (default: one node).")]
TP = Annotated[Optional[int], typer.Option("--tp", help=(
    "Tensor parallel degree. Default: dense models TP within a node; MoE models the smallest TP at which the "
    "batch fits (TP=1 = DP-attention); max-throughput tries every valid TP and keeps the best."))]
EP = Annotated[Optional[int], typer.Option("--ep", help="Expert parallel degree (default: the largest that divides "
                                                        "devices and experts).")]
PP = Annotated[Optional[int], typer.Option("--pp", help=(
    "Pipeline parallel degree (default: 1, or the smallest that fits the weights and the batch when TP within a "
    "node does not)."))]
WeightDtype = Annotated[Optional[str], typer.Option(
    "--weight-dtype", help=f"Matmul weights: {_DTYPES}, fp8-b128 (default: the checkpoint's, from the spec or "
                           "the config.json quantization_config; else bf16).")]
KVDtype = Annotated[str, typer.Option("--kv-dtype", help=f"KV cache: {_DTYPES}, or flashmla-fp8 (MLA).")]
MLAForm = Annotated[str, typer.Option("--mla-form", help="MLA form: absorbed, naive, or auto (faster per phase).")]
Imbalance = Annotated[float, typer.Option("--imbalance", help="MoE load imbalance: busiest EP rank over mean (>= 1).")]
Overlap = Annotated[bool, typer.Option("--overlap/--no-overlap", help="Overlap communication with compute.")]
EPKernel = Annotated[str, typer.Option("--ep-kernel", help="EP all-to-all kernel (DeepEP): normal (one copy per remote "
    "node, NVLink forwarding), low-latency (one RDMA copy per token-expert pair) or auto (low-latency for decode, "
    "normal for prefill, as DeepSeek serves V3).")]
DeepEPNVLink = Annotated[bool, typer.Option("--deepep-nvlink", help="DeepEP's NVLink-aware low-latency kernels (2025-06): "
    "pairs for a rank in the node over NVLink, the rest over the NIC (default: the Feb-2025 kernels, all over the NIC).")]
TBO = Annotated[bool, typer.Option("--two-batch-overlap", help="Run each step as two micro-batches of half the "
                                                             "sequences, one's communication under the other's "
                                                             "compute (DeepSeek's serving; weights read twice).")]
DeepEPMaxTokens = Annotated[int, typer.Option("--deepep-max-tokens", help="Tokens per rank a low-latency dispatch may "
                                             "send; sizes DeepEP's buffer (SGLang's default 128; 1 to 1024).")]
Draft = Annotated[Optional[str], typer.Option("--draft-model", help="Speculative decoding with a draft model (name or "
                                              "file; same tokenizer) proposing the --mtp N tokens, not the MTP module.")]
MTP = Annotated[int, typer.Option("--mtp", help="MTP speculative decoding: draft tokens per decode step from the "
                                                  "model's MTP module (0: off; DeepSeek-V3 serves with 1).")]
MTPAcceptance = Annotated[Optional[float], typer.Option("--mtp-acceptance", help="With --mtp: probability that each "
    "draft token is accepted given the ones before it (default 0.85; DeepSeek-V3: 0.85-0.90 for the second token).")]
PrefixHit = Annotated[float, typer.Option("--prefix-hit", help="Prefix caching: share of each prompt whose KV is "
                                                              "already cached, so its prefill is skipped (0 to <1; "
                                                              "DeepSeek's service: 0.563).")]
Redundant = Annotated[int, typer.Option("--redundant-experts", help="EPLB: extra copies of routed experts, so that "
                                                                     "experts + copies divide over --ep (DeepSeek "
                                                                     "Day 6: 32 with 256 experts over EP144).")]
BlockSize = Annotated[Optional[int], typer.Option("--block-size", help="Paged KV cache block size (tokens).")]
TpotSlo = Annotated[Optional[str], typer.Option("--tpot-slo", help="TPOT limit with a unit, e.g. 50ms.")]
RequestBatch = Annotated[str, typer.Option("--batch", help="Concurrent requests over all the devices (k = 1024).")]
InputLen = Annotated[str, typer.Option("--input", help="Prompt tokens (k = 1024).")]
OutputLen = Annotated[str, typer.Option("--output", help="Generated tokens (k = 1024).")]
Output = Annotated[Path, typer.Option("--out", "-o", help="Plot file: .png, .svg or .pdf (an existing file is "
                                                          "refused without --force).")]
Force = Annotated[bool, typer.Option("--force", help="Replace an existing output file.")]
Price = Annotated[Optional[str], typer.Option(
    "--price", help="Rental price per device-hour with its unit, e.g. 2.5USD/h (default: the profile's "
                    "price_per_device_hour; costsim hardware lists them).")]

# engine field -> the flag that sets it
FLAGS = {
    "devices": "--devices", "tp": "--tp", "ep": "--ep", "pp": "--pp", "weight_dtype": "--weight-dtype",
    "weight_format": "--weight-dtype", "kv_dtype": "--kv-dtype", "kv_format": "--kv-dtype", "mla_form": "--mla-form",
    "imbalance": "--imbalance", "block_size": "--block-size", "mtp_depth": "--mtp", "mtp_acceptance": "--mtp-acceptance",
    "prefix_hit": "--prefix-hit", "redundant_experts": "--redundant-experts", "ep_kernel": "--ep-kernel", "deepep_nvlink": "--deepep-nvlink", "two_batch_overlap": "--two-batch-overlap", "draft_model": "--draft-model", "deepep_max_tokens": "--deepep-max-tokens", "tpot_slo_s": "--tpot-slo", "batch": "--batch",
    "context": "--context", "input_len": "--input", "output_len": "--output", "mfu": "--mfu",
    "gpu_hours": "--gpu-hours", "tokens": "--tokens", "seq_len": "--seq-len", "dtype": "--dtype",
    "m": "--m", "n": "--n", "k": "--k", "form": "--form", "new_tokens": "--new-tokens", "price": "--price",
    "max_devices": "--max-devices", "users": "--users", "target_tokens_per_s": "--target-tokens-per-s",
    "ttft_slo_s": "--ttft-slo", "top": "--top", "rate": "--rate", "chunked_prefill": "--chunked-prefill", **{f"{r}_{k}": f"--{r}-{k}" for r in ("prefill", "decode") for k in ("devices", "tp", "ep", "pp")},
}


# ---- parsing at the edge -------------------------------------------------------------------


def parse(parser: Callable, text: str, flag: str, **kw):
    """Run a unit parser; a ValueError or CostsimError becomes a CostsimError naming the flag."""
    try:
        return parser(text, **kw)
    except (ValueError, CostsimError) as e:
        raise CostsimError(f"{flag}: {e}") from None


def count(text: str, flag: str, binary_k: bool = True, minimum: float = 0) -> int:
    """A token or sequence count; k = 1024 (as in "128K context") unless ``binary_k`` is
    False (training token totals: 8.1T = 8.1e12)."""
    from costsim.units import parse_count

    v = parse(parse_count, text, flag, binary_k=binary_k)
    if not (minimum <= v < float("inf")) or v != int(v):
        raise CostsimError(f"{flag}: expected a finite integer >= {minimum}, got {text!r}")
    return int(v)


def slo(text: str | None, flag: str = "--tpot-slo") -> float | None:
    """A latency limit; it needs its unit (50ms, 0.05s): a bare 50 would be 50 seconds."""
    from costsim.units import parse_time

    if text is None:
        return None
    if re.fullmatch(r"\s*[0-9.eE+-]+\s*", text):
        raise CostsimError(f"{flag}: give a unit, e.g. {text.strip()}ms or {text.strip()}s, got {text!r}")
    v = parse(parse_time, text, flag)
    if not 0 < v < float("inf"):
        raise CostsimError(f"{flag} must be > 0, got {text!r}")
    return v


def model(ref: str, sets):
    from costsim.registry import apply_sets, load_model

    return apply_sets(load_model(ref), sets, "--set")


def hardware(ref: str, sets):
    from costsim.registry import apply_sets, load_hardware

    return apply_sets(load_hardware(ref), sets, "--hw-set", require_units=True)


def price(text: str, flag: str = "--price") -> float:
    """A rental price in USD per device-hour; it needs its unit (2.5USD/h, $2.5/h), as every
    rate does on the command line (a bare 0 is accepted)."""
    from costsim.units import parse_price

    if re.fullmatch(r"\s*[0-9.eE+-]+\s*", text) and parse(float, text, flag) != 0:
        raise CostsimError(f"{flag} {text.strip()}: give the unit, e.g. {text.strip()}USD/h (USD per device-hour)")
    v = parse(parse_price, text, flag)
    if not 0 <= v < float("inf"):
        raise CostsimError(f"{flag} {text.strip()}: must be a finite price >= 0")
    return v


def priced(hw, text: str | None, flag: str = "--price"):
    """``hw`` with ``price_per_device_hour`` set from ``text`` (provenance assumed, source the
    flag); ``hw`` itself when ``text`` is None."""
    if text is None:
        return hw
    from costsim.specs import Price

    return hw.model_copy(update={"price_per_device_hour": Price(value=price(text, flag), source=f"{flag} {text.strip()}",
                                                                provenance="assumed")})


def lengths(batch: str, input_len: str, output_len: str) -> tuple[int, int, int]:
    """``--batch`` (>= 1), ``--input`` (>= 1) and ``--output`` (>= 0) of a serving question."""
    return (count(batch, "--batch", minimum=1), count(input_len, "--input", minimum=1),
            count(output_len, "--output"))


def items(text: str, flag: str) -> list[str]:
    """A comma-separated flag value as its distinct items, in order; CostsimError names the flag
    when it is empty or has an empty item."""
    parts = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in parts):
        raise CostsimError(f"{flag} {text!r}: expected a comma-separated list without empty items, e.g. 1,8,64")
    return list(dict.fromkeys(parts))


def layout(devices=None, tp=None, ep=None, pp=None, weight_dtype=None, kv_dtype="bf16", mla_form="auto",
           imbalance=1.0, overlap=False, block_size=None, mtp=0, mtp_acceptance=None, prefix_hit=0.0,
           redundant=0, ep_kernel="normal", tbo=False, draft=None, deepep_max_tokens=128, deepep_nvlink=False):
    """The flags of a layout as the engine's ``LayoutRequest`` (the engine checks them).
    ``mtp_acceptance`` None: the engine's default; given without ``mtp`` >= 1, it is refused."""
    from costsim.simulator.layout import LayoutRequest

    if mtp_acceptance is not None and not mtp:
        raise CostsimError(f"--mtp-acceptance {mtp_acceptance:g}: applies only with --mtp N (N >= 1 draft tokens); "
                           "give --mtp or drop --mtp-acceptance")
    if mtp_acceptance is None:
        mtp_acceptance = LayoutRequest.mtp_acceptance

    return LayoutRequest(devices=devices, tp=tp, ep=ep, pp=pp, weight_dtype=weight_dtype, kv_dtype=kv_dtype,
                         mla_form=mla_form, imbalance=imbalance, overlap_comm=overlap, block_size=block_size,
                         mtp_depth=mtp, mtp_acceptance=mtp_acceptance, prefix_hit=prefix_hit,
                         redundant_experts=redundant, ep_kernel=ep_kernel_name(ep_kernel), deepep_nvlink=deepep_nvlink,
                         two_batch_overlap=tbo, draft_model=draft_spec(draft, mtp), deepep_max_tokens=deepep_max_tokens)

def draft_spec(name, mtp):
    """``--draft-model``'s spec (None when not given); CostsimError without ``--mtp N``."""
    if name is None:
        return None
    if not mtp:
        raise CostsimError(f"--draft-model {name}: give --mtp N, the tokens the draft proposes per step")
    try:
        return model(name, None)
    except CostsimError as e:  # name the flag: the target's MODEL argument reads the same way
        raise CostsimError(f"--draft-model: {e}") from None


def ep_kernel_name(text: str) -> str:
    """``--ep-kernel`` as the engine's name (low-latency -> low_latency); CostsimError names the flag."""
    name = str(text).strip().lower().replace("-", "_")
    if name not in ("normal", "low_latency", "auto"):
        raise CostsimError(f"--ep-kernel {text!r}: expected normal, low-latency or auto")
    return name


def emit(*a, **kw):
    from costsim.reports.format import emit as _emit

    _emit(*a, **kw)


def check_new(path: Path, force: bool, what: str = "output") -> Path:
    """An output file's path, checked before any work: a regular file (or none) in an existing
    directory, and, unless ``force``, not an existing file. Raises CostsimError."""
    from costsim.files import check_target

    path = check_target(path, what)
    if path.exists() and not force:
        raise CostsimError(f"{path}: exists; give --force to replace it")
    return path


def check_plot_output(path: Path, force: bool = False) -> Path:
    from costsim.reports.plots import check_output

    return check_new(check_output(path), force, "plot")


# ---- the error contract --------------------------------------------------------------------


def flag_message(e: FieldError, given: dict[str, str] | None = None) -> str:
    """``--flag TEXT: reason`` for an engine FieldError (TEXT as the user typed it)."""
    flag = FLAGS.get(e.field)
    if flag is None:
        return str(e)
    text = (given or {}).get(e.field)
    return f"{flag} {e.value if text is None else text}: {e.reason}"


def run(fn: Callable[[], list[str] | None], given: dict[str, str] | None = None) -> None:
    """Call ``fn``; a CostsimError becomes one stderr line and exit code 2. The warnings ``fn``
    returns are printed on stderr only when it succeeds (an error stays one line).
    ``given``: the user's text per engine field, for error messages."""
    import warnings as _w

    import numpy as np

    from costsim.errors import CostsimWarning

    try:
        with np.errstate(all="ignore"), _w.catch_warnings(record=True) as caught:
            _w.simplefilter("ignore")  # an overflow ends as one error line, not noise
            _w.simplefilter("always", CostsimWarning)  # the loaders' warnings, printed below
            warnings = list(fn() or [])
    except BrokenPipeError:  # the reader of stdout left (`| head`); click would make it exit 1
        from costsim.cli import _quiet_stdout

        _quiet_stdout()
        raise typer.Exit(0)
    except FieldError as e:
        _fail(flag_message(e, given))
    except CostsimError as e:
        _fail(str(e))
    warnings = [str(c.message) for c in caught if issubclass(c.category, CostsimWarning)] + warnings
    for w in dict.fromkeys(warnings):
        print(f"costsim: warning: {w}", file=sys.stderr)


def _fail(msg: str):
    print(f"costsim: error: {msg}".replace("\n", " "), file=sys.stderr)
    raise typer.Exit(2)
