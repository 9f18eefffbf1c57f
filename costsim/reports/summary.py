"""Result records for the CLI and reports: plain dicts of SI numbers with stable key names.

Units of every key are in ``KEY_UNITS`` (also documented in the README). Values are
floats/ints in SI base units (bytes, FLOPs, seconds, tokens/s) or None when not applicable
(e.g. a model that does not fit the hardware).
"""

from __future__ import annotations

import numpy as np

from costsim.errors import CostsimError
from costsim.simulator.deployment import Deployment
from costsim.simulator.flops import flops_per_token_decode, prefill_flops
from costsim.simulator.kv import kv_bytes_per_token, kv_cache_bytes, kv_elements_per_token
from costsim.simulator.memory import memory_report, weight_bytes_per_device
from costsim.simulator.params import param_counts
from costsim.simulator.serving import decode
from costsim.specs import GQAAttention, HardwareProfile, MLAAttention, MoEFFN, ModelSpec
from costsim.units import NumberFormat

KEY_UNITS = {
    "params_total": "parameters (count)",
    "params_active": "parameters activated per token (count), input embedding excluded",
    "params_active_incl_embedding": "parameters (count)",
    "kv_cache_elements_per_token": "elements per token, all layers",
    "kv_cache_bytes_per_token": "bytes per token, all layers, in kv_dtype",
    "kv_cache_bytes_per_token_per_layer": "bytes",
    "kv": "bytes of KV cache for batch x context",
    "flops_per_token_decode": "FLOPs per generated token at context (MLA absorbed form)",
    "flops_per_token_decode_naive": "FLOPs (MLA naive form; equals the above for non-MLA)",
    "flops_per_token_prefill": "FLOPs per prompt token, causal prefill of context tokens",
    "decode_tokens_per_s": "output tokens/s per replica (devices)",
    "tpot_s": "seconds per output token",
    "max_batch": "sequences at context that fit in memory",
    "weight_bytes_per_device": "bytes",
}


def model_line(spec: ModelSpec) -> dict:
    a, f = spec.attention, spec.ffn
    p = param_counts(spec)
    moe = ""
    if isinstance(f, MoEFFN):
        moe = f"{f.n_routed_experts} routed + {f.n_shared_experts} shared, top-{f.num_experts_per_tok}"
    return dict(name=spec.name, attention=a.kind, ffn=f.kind, experts=moe, layers=spec.num_hidden_layers,
                hidden_size=spec.hidden_size, params_total=p.total, params_active=p.active, source=spec.source)


def kv_record(spec: ModelSpec, fmt: NumberFormat, context, batch, tp: int = 1, block_size=None) -> dict:
    """KV cache figures for one model."""
    return dict(
        name=spec.name, kv_dtype=fmt.name,
        kv_cache_elements_per_token=kv_elements_per_token(spec),
        kv_cache_bytes_per_token=kv_bytes_per_token(spec, fmt, tp),
        kv_cache_bytes_per_token_per_layer=kv_bytes_per_token(spec, fmt, tp) / spec.num_hidden_layers,
        context=int(context), batch=int(batch), tp=tp, block_size=block_size,
        kv=float(kv_cache_bytes(spec, fmt, context, batch, tp=tp, block_size=block_size)),
    )


def show_record(spec: ModelSpec, fmt: NumberFormat, context: int, batch: int) -> dict:
    """Parameters (breakdown), KV cache and FLOPs per token of one model."""
    p = param_counts(spec)
    rec = dict(name=spec.name, source=spec.source, params_total=p.total, params_active=p.active,
               params_active_incl_embedding=p.active_incl_embedding, params_mtp=p.mtp,
               params=p.as_dict())
    rec.update({k: v for k, v in kv_record(spec, fmt, context, batch).items() if k != "name"})
    rec["flops_per_token_decode"] = float(flops_per_token_decode(spec, context, "absorbed"))
    rec["flops_per_token_decode_naive"] = float(flops_per_token_decode(spec, context, "naive"))
    rec["flops_per_token_prefill"] = float(prefill_flops(spec, max(context, 1), "naive", logits_for_all=True)) / max(context, 1)
    return rec


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def valid_tp(spec: ModelSpec, devices: int) -> list[int]:
    """TP degrees (ascending) that divide the devices and fit the head counts."""
    a = spec.attention
    kv = a.num_key_value_heads if isinstance(a, GQAAttention) else a.num_attention_heads
    return [t for t in _divisors(devices) if a.num_attention_heads % t == 0 and (kv % t == 0 or t % kv == 0)]


def default_layout(spec: ModelSpec, devices: int, tp: int | None = None, ep: int | None = None,
                   room=None, max_tp: int | None = None) -> tuple[int, int]:
    """Layout used when the user gives none (per pipeline stage of ``devices``).

    - EP: MoE models spread experts over the largest EP that divides both the device count
      and the expert count; dense models use EP = 1.
    - TP stays within ``max_tp`` (a node) when it can.
      - Dense models use the largest such TP compatible with the head counts; the rest of
        the devices are data-parallel replicas.
      - MoE models use the smallest TP at which the batch fits (TP = 1 is DP-attention, as
        DeepSeek deploys V3). ``room(tp, ep)`` returns (fits, max_batch) or None when the
        layout is infeasible. If no TP fits, the one with the largest max batch is used.
    """
    f = spec.ffn
    if ep is None:
        ep = 1
        if isinstance(f, MoEFFN):
            ep = max(e for e in _divisors(devices) if f.n_routed_experts % e == 0)
    if tp is None:
        valid = valid_tp(spec, devices)
        in_node = [t for t in valid if max_tp is None or t <= max_tp] or valid[:1]
        if isinstance(f, MoEFFN) and ep > 1 and room is not None:
            scored = [(t, room(t, ep)) for t in valid]
            scored = [(t, r) for t, r in scored if r is not None]
            fitting = [t for t, r in scored if r[0]]
            if fitting:
                tp = fitting[0]
            elif scored:
                tp = max(scored, key=lambda tr: (tr[1][1], -tr[0]))[0]
            else:
                tp = in_node[0]
        elif isinstance(f, MoEFFN) and ep > 1:
            tp = 1
        else:
            tp = in_node[-1]
    return tp, ep


def compare_record(spec: ModelSpec, hw: HardwareProfile, dep: Deployment, context: int, batch: int) -> dict:
    """Side-by-side figures for ``compare``: params, KV, FLOPs, decode tokens/s, max batch."""
    rec = show_record(spec, dep.kv_format, context, batch)
    rec.pop("params")
    rec.update(hardware=hw.name, devices=dep.devices, tp=dep.tp, ep=dep.ep, weight_dtype=dep.weight_format.name,
               weight_bytes_per_device=weight_bytes_per_device(spec, dep),
               decode_tokens_per_s=None, tpot_s=None, max_batch=None, fits=False, note="")
    try:
        dep.check(spec)
    except CostsimError as e:
        rec["note"] = str(e)
        return rec
    mem = memory_report(spec, hw, dep, batch, context)
    rec["max_batch"] = int(mem.max_batch)
    if mem.limit == "weights do not fit":
        rec["note"] = f"weights do not fit ({rec['weight_bytes_per_device'] / 1e9:.1f} GB per device)"
        return rec
    rec["fits"] = bool(np.all(mem.fits))
    if not rec["fits"]:
        rec["note"] = f"batch {batch} at context {context} exceeds memory (max batch {rec['max_batch']})"
    d = decode(spec, hw, dep, batch, context)
    rec["decode_tokens_per_s"] = float(d.tokens_per_s)
    rec["tpot_s"] = float(d.time_s)
    return rec
