"""Timing of a step's operators on a hardware profile.

Per operator occurrence, the roofline of its family (Williams, Waterman & Patterson, CACM 2009;
the formulas and their parameters are in ``costsim.simulator.efficiency``):
  compute_s = FLOPs / (peak_flops[dtype] * compute efficiency [* GEMM shape efficiency])
  memory_s  = bytes moved / (memory_bandwidth * memory efficiency)
  time_s    = max(compute_s, memory_s) + overhead [+ per-element / per-group terms]
Communication: bytes / (link bandwidth * link efficiency) + latency terms
(``costsim.simulator.parallel``). A step's time is the sum over operators (x count), or
with ``overlap_comm`` max(compute part, communication part). With ``two_batch_overlap``
the step is two micro-batches of half the sequences: 2 x max(compute, communication) of one.

Every rate carries provenance from the profile (datasheet / measured / calibrated / assumed).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from costsim.simulator.deployment import Deployment
from costsim.simulator.efficiency import operator_terms
from costsim.simulator.operators import layer_groups, step_operators
from costsim.simulator.parallel import comm_seconds
from costsim.simulator.types import Family, LayerType, OpKind, Operator, StepShape
from costsim.specs import HardwareProfile, MLAAttention, ModelSpec


@dataclass(frozen=True)
class OpTiming:
    """Timing of one operator (per occurrence, seconds) and what bounds it."""

    op: Operator
    compute_s: object
    memory_s: object
    comm_s: object
    time_s: object  # per occurrence, overhead included

    @property
    def total_s(self):
        return np.asarray(self.time_s) * self.op.count

    @property
    def bound(self):
        if self.op.kind is OpKind.COMM:
            return np.full(np.shape(self.time_s), "comm", dtype=object) if np.ndim(self.time_s) else "comm"
        out = np.where(np.asarray(self.compute_s) >= np.asarray(self.memory_s), "compute", "memory")
        return out if np.ndim(out) else str(out)


@dataclass(frozen=True)
class StepTiming:
    """A timed step: operators, per-op timings, and totals (seconds, FLOPs, bytes)."""

    timings: list[OpTiming]
    time_s: object
    compute_part_s: object
    comm_part_s: object
    flops: object
    bytes_moved: object
    mla_form: str
    micro_batches: int = 1  # two-batch overlap: ``timings`` are one of this many micro-batches

    def by_name(self, name: str) -> OpTiming:
        return next(t for t in self.timings if t.op.name == name)


def time_operator(op: Operator, hw: HardwareProfile, spec: ModelSpec, dep: Deployment) -> OpTiming:
    """Time of one operator occurrence on ``hw``: its family's formula
    (``costsim.simulator.efficiency``), or the link model for communication."""
    if op.kind is OpKind.COMM:
        c = comm_seconds(op, spec, dep, hw)
        return OpTiming(op, 0.0, 0.0, c, c)
    t = operator_terms(op, hw)
    return OpTiming(op, t.compute_s, t.memory_s, 0.0, t.time_s)


def _time_ops(ops, hw, spec, dep, form) -> StepTiming:
    timings = [time_operator(o, hw, spec, dep) for o in ops]
    comp = sum(t.total_s for t in timings if t.op.kind is not OpKind.COMM)
    comm = sum((t.total_s for t in timings if t.op.kind is OpKind.COMM), 0.0)
    total = np.maximum(comp, comm) if dep.overlap_comm else comp + comm
    flops = sum(np.asarray(o.flops) * o.count for o in ops)
    moved = sum(np.asarray(o.bytes_moved) * o.count for o in ops)
    return StepTiming(timings, total, comp, comm, flops, moved, form)


def time_step(spec: ModelSpec, hw: HardwareProfile, dep: Deployment, step: StepShape,
              operators=step_operators) -> StepTiming:
    """Time one step on one device (the busiest). With ``dep.mla_form == 'auto'`` both MLA
    forms are timed and the faster is kept (per element when inputs are arrays: the
    reported operators are then those of the absorbed form). ``operators``: the operator
    list of the step (``step_operators``; ``operators.mtp_operators`` for an MTP module).
    With ``dep.two_batch_overlap`` the timings are those of one micro-batch (half the
    sequences; ``micro_batches`` = 2) and the totals are the whole step's."""
    if dep.two_batch_overlap:
        half = replace(step, batch=np.asarray(step.batch, dtype=float) / 2)
        t = time_step(spec, hw, dep.with_(two_batch_overlap=False, overlap_comm=True), half, operators)
        return StepTiming(t.timings, 2 * np.asarray(t.time_s), 2 * np.asarray(t.compute_part_s),
                          2 * np.asarray(t.comm_part_s), 2 * np.asarray(t.flops), 2 * np.asarray(t.bytes_moved),
                          t.mla_form, micro_batches=2)
    forms = ["absorbed", "naive"] if (dep.mla_form == "auto" and isinstance(spec.attention, MLAAttention)) else [
        dep.mla_form if dep.mla_form != "auto" else "absorbed"]
    results = [_time_ops(operators(spec, dep, step, form=f), hw, spec, dep, f) for f in forms]
    if len(results) == 1:
        return results[0]
    a, n = results
    if np.ndim(a.time_s) == 0:
        return a if a.time_s <= n.time_s else n
    pick = np.asarray(a.time_s) <= np.asarray(n.time_s)
    return StepTiming(a.timings, np.where(pick, a.time_s, n.time_s), np.where(pick, a.compute_part_s, n.compute_part_s),
                      np.where(pick, a.comm_part_s, n.comm_part_s), np.where(pick, a.flops, n.flops),
                      np.where(pick, a.bytes_moved, n.bytes_moved), "auto")


def per_layer_seconds(timing: StepTiming, spec: ModelSpec, pp: int = 1) -> dict[str, float]:
    """Seconds per layer of each layer type on the busiest device, plus the once-per-step
    parts (embedding, LM head, PP send), from a timed step with scalar inputs.

    Keys: "dense", "moe" (attention + FFN + that layer's communication, per layer), "once"
    (per step). Each operator is counted in its ``layer`` type, so the keys times their layer
    counts sum to the step's time without overlap.
    """
    groups = layer_groups(spec, pp)
    n = {LayerType.DENSE: sum(g[2] for g in groups if not g[0]), LayerType.MOE: sum(g[2] for g in groups if g[0])}
    total = {t: 0.0 for t in LayerType}
    for t in timing.timings:
        total[t.op.layer] += float(np.sum(t.total_s)) * timing.micro_batches
    out = {k.value: total[k] / n[k] for k in (LayerType.DENSE, LayerType.MOE) if n[k]}
    out["once"] = total[LayerType.ONCE]
    return out


def rate_provenance(hw: HardwareProfile, dtype: str) -> dict[str, dict]:
    """The rates a roofline estimate on ``hw`` stands on, each with value (SI) and provenance
    (datasheet / measured / calibrated / assumed / unverified) and source."""
    e = hw.efficiency
    items = {
        f"peak_flops.{dtype}": getattr(hw.peak_flops, dtype) or getattr(hw.peak_flops, "bf16"),
        "memory_bandwidth": hw.memory_bandwidth,
        "efficiency.compute": e.compute,
        "efficiency.memory": e.memory,
        "efficiency.kernel_overhead": e.kernel_overhead,
        "intra_node_bandwidth": hw.intra_node_bandwidth,
        "efficiency.intra_node": e.intra_node,
        "inter_node_bandwidth": hw.inter_node_bandwidth,
        "efficiency.inter_node": e.inter_node,
        "intra_node_latency": hw.intra_node_latency,
        "inter_node_latency": hw.inter_node_latency,
    }
    if e.comm_overhead.value:  # listed once a profile has one (0 adds nothing)
        items["efficiency.comm_overhead"] = e.comm_overhead
    for fam in Family:
        if fam is Family.COMM:
            continue
        for k, q in getattr(e.families, fam.value):
            if q is not None:
                items[f"efficiency.families.{fam.value}.{k}"] = q
    return {k: dict(value=v.value, provenance=v.provenance, source=v.source) for k, v in items.items() if v is not None}
