"""What-if diffs: one serving scenario before and after a change of the model spec or the
hardware profile, each headline metric with its change and its elasticity.

Elasticity of a metric m with respect to a knob p (one changed scalar field):
``log(m_after / m_before) / log(p_after / p_before)``, the arc form of d log m / d log p.
It is -1 for a time inversely proportional to the knob (a memory-bound decode step against
memory bandwidth), 0 for a metric the knob does not touch. It is None (n/a) when several
fields changed, the knob is not a positive number (a kind, a flag), or a value is 0.

Pure: takes two ``Scenario`` objects (built by the caller from specs with ``--set`` /
``--hw-set`` applied), returns a record of SI numbers. Sources: the metrics are those of
``scenario.show`` (exact arithmetic) and ``scenario.perf`` (roofline models).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from costsim.errors import CostsimError
from costsim.simulator.scenario import Scenario, _Record, perf, show

# (key, label, SI unit, source record): the headline metrics, in the order they are shown
METRICS = (
    ("params_total", "parameters, total", "params", "show"),
    ("params_active", "parameters activated per token", "params", "show"),
    ("kv_cache_elements_per_token", "KV cache per token", "elements", "show"),
    ("kv_cache_bytes_per_token", "KV cache per token", "bytes", "show"),
    ("flops_per_token_decode", "decode FLOPs per token at the input length", "FLOP", "show"),
    ("flops_per_token_prefill", "prefill FLOPs per token over the input", "FLOP", "show"),
    ("ttft_s", "TTFT (prefill of the batch)", "s", "perf"),
    ("tpot_s", "TPOT, mean over output", "s", "perf"),
    ("decode_tokens_per_s", "decode tokens/s, all devices", "tokens/s", "perf"),
    ("decode_tokens_per_s_per_device", "decode tokens/s per device", "tokens/s", "perf"),
    ("max_batch", "max batch at input+output tokens", "sequences", "perf"),
    ("weight_bytes_per_device", "weights per device", "bytes", "perf"),
    ("kv_bytes_per_device", "KV cache per device at input+output", "bytes", "perf"),
    ("memory_bytes_per_device", "memory per device (weights, DeepEP, KV, act.)", "bytes", "perf"),
    ("prefill_mfu", "prefill MFU", "fraction", "perf"),
    ("decode_mbu", "decode MBU (first step)", "fraction", "perf"),
)
TEXTS = (("attention_kind", "attention kind"), ("ffn_kind", "FFN kind"), ("layout", "layout"),
         ("max_batch_limit", "max batch limited by"))


@dataclass(frozen=True)
class Knob(_Record):
    """One field that differs between the two specs: its path (``attention.kv_lora_rank``,
    ``hardware.memory_bandwidth``; a sourced quantity by its SI value) and both values (None
    where the field does not exist on that side, e.g. after a kind switch)."""

    path: str
    before: object
    after: object


@dataclass(frozen=True)
class MetricChange(_Record):
    """A metric before and after, ``change`` = after / before - 1 and ``elasticity`` (None
    when not defined); a metric the engine could not compute on one side is None there."""

    key: str
    label: str
    unit: str
    before: float | None
    after: float | None
    change: float | None
    elasticity: float | None


@dataclass(frozen=True)
class WhatIfRecord(_Record):
    model: str
    hardware: str
    devices: int
    batch: int
    input: int
    output: int
    kv_dtype: str
    knobs: list  # Knob.to_dict() each
    elasticity_knob: str | None  # the one numeric knob elasticities refer to, else None
    elasticity_note: str  # why elasticities are n/a, when they are
    metrics: list  # MetricChange.to_dict() each
    texts: list  # {key, label, before, after}: kinds, layout, the memory limit
    notes: tuple = ()
    warnings: tuple = ()
    # decode modes of the layout, both sides (as ``PerfRecord`` carries them)
    mtp_depth: int = 0
    mtp_acceptance: float = 0.0
    mtp_tokens_per_step: float = 1.0
    ep_kernel: str = "normal"
    deepep_nvlink: bool = False
    draft_model: str | None = None
    two_batch_overlap: bool = False


def _flat(d, prefix: str = "") -> dict:
    """A spec dump as ``{path: scalar}``; a sourced quantity ({value, source, ...}) by its value."""
    out = {}
    for k, v in d.items():
        p = f"{prefix}{k}"
        if isinstance(v, dict) and "value" in v and "provenance" in v:
            out[p] = v["value"]
        elif isinstance(v, dict):
            out.update(_flat(v, p + "."))
        else:
            out[p] = v
    return out


def spec_diff(before, after, prefix: str = "") -> list[Knob]:
    """The fields (paths under ``prefix``) whose values differ between two pydantic specs of
    one class: each with both values (None where a field exists on one side only)."""
    a, b = _flat(before.model_dump(mode="python"), prefix), _flat(after.model_dump(mode="python"), prefix)
    return [Knob(k, a.get(k), b.get(k)) for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def elasticity(m0, m1, p0, p1) -> float | None:
    """``log(m1/m0) / log(p1/p0)``; None unless all four are positive finite numbers and p1 != p0."""
    if not all(_number(x) and x > 0 for x in (m0, m1, p0, p1)) or p0 == p1:
        return None
    return math.log(m1 / m0) / math.log(p1 / p0)


def _elasticity_knob(knobs: list[Knob]) -> tuple[Knob | None, str]:
    if not knobs:
        return None, "nothing changed"
    if len(knobs) > 1:
        listed = f" ({', '.join(k.path for k in knobs)})" if len(knobs) <= 4 else ""
        return None, f"{len(knobs)} fields changed{listed}: elasticity needs one numeric knob"
    k = knobs[0]
    if not (_number(k.before) and _number(k.after) and k.before > 0 and k.after > 0):
        return None, f"{k.path} is not a positive number ({k.before!r} -> {k.after!r}): elasticity n/a"
    return k, ""


def _values(sc: Scenario) -> tuple[dict, str | None, object]:
    """Metric values and texts of one scenario; perf's error message instead of its values
    when the scenario cannot be served (weights do not fit, an invalid layout)."""
    s = show(sc.model, _kv_dtype(sc), sc.input_len, sc.batch)
    vals = {k: getattr(s, k) for k, _, _, src in METRICS if src == "show"}
    vals.update(attention_kind=sc.model.attention.kind, ffn_kind=sc.model.ffn.kind)
    try:
        r = perf(sc)
    except CostsimError as e:
        return vals, str(e), None
    vals.update({k: getattr(r, k, None) for k, _, _, src in METRICS if src == "perf"})
    vals["memory_bytes_per_device"] = (r.weight_bytes_per_device + r.comm_buffer_bytes_per_device
                                       + r.kv_bytes_per_device + r.workspace_bytes_per_device)
    vals["layout"] = f"tp={r.tp} ep={r.ep} pp={r.pp} dp={r.dp}"
    vals["max_batch_limit"] = r.max_batch_limit
    return vals, None, r


def _kv_dtype(sc: Scenario):
    return getattr(sc.layout, "kv_dtype", None) or getattr(getattr(sc.layout, "kv_format", None), "name", "bf16")


def whatif(before: Scenario, after: Scenario) -> WhatIfRecord:
    """Each headline metric of ``before`` and ``after`` (same question, changed spec and/or
    hardware), its change and its elasticity with respect to the one changed field.

    ``before`` must be servable (its errors propagate, FieldError naming the field); when only
    ``after`` cannot be served, its roofline metrics are None and a note says why."""
    for sc in (before, after):
        if not isinstance(sc, Scenario):
            raise CostsimError(f"scenario: expected a Scenario, got {type(sc).__name__}")
    knobs = spec_diff(before.model, after.model) + spec_diff(before.hardware, after.hardware, "hardware.")
    knob, why = _elasticity_knob(knobs)
    v0, err0, r0 = _values(before)
    if err0 is not None:
        perf(before)  # raises the same error, with its type (FieldError names the field)
    v1, err1, r1 = _values(after)
    metrics = []
    for key, label, unit, _ in METRICS:
        a, b = v0.get(key), v1.get(key)
        change = b / a - 1 if _number(a) and _number(b) and a != 0 else None
        e = elasticity(a, b, knob.before, knob.after) if knob is not None else None
        metrics.append(MetricChange(key, label, unit, a, b, change, e).to_dict())
    texts = [dict(key=k, label=label, before=v0.get(k), after=v1.get(k)) for k, label in TEXTS]
    notes = [f"after the change: {err1}"] if err1 else []
    if r1 is not None and v0.get("layout") != v1.get("layout"):
        notes.append(f"the layout policy chose another layout after the change ({v0['layout']} -> {v1['layout']}); "
                     "pass --tp/--ep to hold it fixed")
    return WhatIfRecord(
        model=after.model.name, hardware=after.hardware.name, devices=r0.devices, batch=r0.batch, input=r0.input,
        output=r0.output, kv_dtype=r0.kv_dtype, knobs=[k.to_dict() for k in knobs],
        elasticity_knob=knob.path if knob is not None else None, elasticity_note=why, metrics=metrics, texts=texts,
        notes=tuple(notes), warnings=tuple(dict.fromkeys(r0.warnings + (r1.warnings if r1 is not None else ()))),
        mtp_depth=r0.mtp_depth, mtp_acceptance=r0.mtp_acceptance, mtp_tokens_per_step=r0.mtp_tokens_per_step,
        ep_kernel=r0.ep_kernel, deepep_nvlink=r0.deepep_nvlink, draft_model=r0.draft_model, two_batch_overlap=r0.two_batch_overlap)


__all__ = ["METRICS", "Knob", "MetricChange", "WhatIfRecord", "elasticity", "spec_diff", "whatif"]
