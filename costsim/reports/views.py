"""How each command's records are shown: the rows and columns of its table, its title and
notes, and what JSON / CSV carry. Records come from ``costsim.simulator.scenario`` as dicts
(``to_dict()``); a view knows field names and units, never models.
"""

from __future__ import annotations

import functools
import math

from costsim.errors import CostsimError
from costsim.reports import format as F
from costsim.reports.format import _non_finite, emit


def _finite(view):
    """A view refuses to show an inf or a NaN from the engine (inputs beyond what the model can
    represent, e.g. an extreme --hw-set): one error line instead."""

    @functools.wraps(view)
    def checked(*args, **kw):
        if any(_non_finite(a) for a in args if isinstance(a, (dict, list))):
            raise CostsimError("a result is not finite (inf, NaN or beyond 1e100): the inputs are beyond what the model can "
                               "represent; check extreme --set / --hw-set values")
        return view(*args, **kw)

    return checked


# a record's ``band`` when its profile gives no band (``bands.band_kind``): shown in the band rows
NO_BAND = ("uncalibrated", "no residuals")

def _machine(recs: list[dict], fmt: str, payload=None, skip=()) -> None:
    cols = [(k, k, F.text) for k in recs[0] if k not in skip]
    emit(recs, cols, fmt, payload=payload if payload is not None else (recs if len(recs) > 1 else recs[0]))


@_finite
def models(recs: list[dict], fmt: str) -> None:
    cols = [("name", "name", F.text), ("attention", "attention", F.text), ("ffn", "FFN", F.text),
            ("experts", "experts", F.text), ("params_total", "params total [1e9]", F.scaled(1e9)),
            ("params_active", "params active [1e9]", F.scaled(1e9)), ("source", "source", F.text)]
    emit(recs, cols, fmt, title="Shipped model specs", notes=["Full sources: costsim models --format json"])


@_finite
def hardware(recs: list[dict], fmt: str) -> None:
    cols = [("name", "name", F.text), ("full_name", "device", F.text),
            ("bf16_flops", "BF16 dense [TFLOP/s]", F.scaled(1e12)), ("fp8_flops", "FP8 dense [TFLOP/s]", F.scaled(1e12)),
            ("memory_capacity", "memory [GB]", F.scaled(1e9)), ("memory_bandwidth", "HBM BW [TB/s]", F.scaled(1e12)),
            ("intra_node_bandwidth", "intra-node [GB/s/dir]", F.scaled(1e9)),
            ("inter_node_bandwidth", "inter-node [GB/s/dir]", F.scaled(1e9)),
            ("devices_per_node", "per node", F.integer), ("price_per_device_hour", "price [USD/h]", F.num),
            ("source", "source", F.text)]
    emit(recs, cols, fmt, title="Shipped hardware profiles (dense peaks; GB = 1e9 B)",
         notes=["Full sources and provenance: costsim hardware --format json, or the YAML in costsim/hardware_profiles/"])


_SHOW_ROWS = [
    ("params_total", "params total [1e9]", F.scaled(1e9, 5)),
    ("params_active", "params active/token, excl. input embedding [1e9]", F.scaled(1e9, 5)),
    ("params_active_incl_embedding", "params active incl. embedding [1e9]", F.scaled(1e9, 5)),
    ("kv_cache_elements_per_token", "KV cache [elements/token]", F.integer),
    ("kv_cache_bytes_per_token", "KV cache [bytes/token]", F.num),
    ("kv", "KV cache for batch x context [GB = 1e9 B]", F.scaled(1e9)),
    ("flops_per_token_decode", "decode FLOPs/token at context [GFLOP]", F.scaled(1e9)),
    ("flops_per_token_decode_naive", "decode FLOPs/token, MLA naive [GFLOP]", F.scaled(1e9)),
    ("flops_per_token_prefill", "prefill FLOPs/token over context [GFLOP]", F.scaled(1e9)),
]
_PARAM_PARTS = ("embedding", "lm_head", "attention", "dense_ffn", "routed_experts", "routed_experts_active",
                "shared_experts", "router", "norms", "mtp", "total", "active", "active_incl_embedding")


@_finite
def show(rec: dict, fmt: str) -> None:
    rec = {k: v for k, v in rec.items() if k != "warnings"}
    if fmt != "table":
        emit([rec], [(k, k, F.text) for k in rec if k != "params"], fmt, payload=rec)
        return
    p = rec["params"]
    emit([dict(name=k, v=p[k]) for k in _PARAM_PARTS],
         [("name", "component", F.text), ("v", "parameters [count]", F.integer)], title=f"{rec['name']}: parameters",
         notes=[f"source: {rec['source']}", "active = activated per token, input embedding excluded (DeepSeek convention)."])
    rows, cols = F.transpose([rec], _SHOW_ROWS)
    emit(rows, cols, title=(f"{rec['name']}: KV cache ({rec['kv_dtype']}, batch {rec['batch']}, context {rec['context']}) "
                            "and FLOPs (2 per multiply-add)"))


@_finite
def kv(recs: list[dict], fmt: str) -> None:
    r0 = recs[0]
    dev = "/device" if r0["tp"] > 1 else ""
    cols = [("name", "model", F.text), ("kv_dtype", "KV dtype", F.text),
            ("kv_cache_elements_per_token", "elements/token (whole model)", F.integer),
            ("kv_cache_bytes_per_token_per_layer", f"bytes/token/layer{dev}", F.num),
            ("kv_cache_bytes_per_token", f"bytes/token{dev}", F.num),
            ("kv", f"batch {r0['batch']} x {r0['context']} tokens [GB = 1e9 B]", F.scaled(1e9)),
            ("kv", "[GiB = 2^30 B]", F.scaled(2**30))]
    if fmt == "csv":  # machines get every field, as in JSON
        cols = [(k, k, F.text) for k in r0]
    emit(recs, cols, fmt, title=f"KV cache per device (tp={r0['tp']})", payload=recs if len(recs) > 1 else r0)


@_finite
def compare(recs: list[dict], fmt: str, devices: int) -> None:
    r0 = recs[0]
    hw, ctx, b = r0["hardware"], r0["context"], r0["batch"]
    recs = [{k: v for k, v in r.items() if k != "warnings"} for r in recs]
    if fmt != "table":
        _machine(recs, fmt, payload=dict(hardware=hw, devices=devices, context=ctx, batch=b, models=recs))
        return
    rows = [("params_total", "params total [1e9]", F.scaled(1e9)),
            ("params_active", "params active/token [1e9]", F.scaled(1e9)),
            ("kv_cache_elements_per_token", "KV cache [elements/token]", F.integer),
            ("kv_cache_bytes_per_token", f"KV cache, {r0['kv_dtype']} [bytes/token]", F.num),
            ("kv", f"KV cache, batch {b} x {ctx} tokens [GB]", F.scaled(1e9)),
            ("flops_per_token_decode", f"decode FLOPs/token at {ctx} [GFLOP]", F.scaled(1e9)),
            ("weight_bytes_per_device", f"weights per device, {r0['weight_dtype']} [GB]", F.scaled(1e9)),
            ("tp", "layout: TP", F.integer), ("ep", "layout: EP", F.integer), ("pp", "layout: PP", F.integer),
            ("tpot_s", f"TPOT at batch {b} [ms]", F.ms),
            ("_band", "TPOT band, calibration p10-p90 [ms]", F.text),
            ("decode_tokens_per_s", f"decode at batch {b} [tokens/s per {devices} devices]", F.num),
            ("max_batch", f"max batch at {ctx} tokens [sequences]", F.integer)] + _compare_money(recs, devices, b)
    recs = [dict(r, _band=f"{F.ms(r['tpot_band_s'][0])} - {F.ms(r['tpot_band_s'][1])}" if r.get("tpot_band_s") else
                 r["band"] if r.get("band") in NO_BAND else "-") for r in recs]
    table, cols = F.transpose(recs, rows)
    notes = [f"note: {r['name']}: {r['note']}" for r in recs if r["note"]]
    notes.append(f"GB = 1e9 bytes. Decode is a roofline estimate on {hw} ({devices} devices, efficiency factors "
                 "from the profile).")
    if any(r.get("price_usd_per_device_hour") is not None for r in recs):
        notes += _price_note(recs)
    emit(table, cols, title=f"compare on {devices} x {hw}, context {ctx}, batch {b}", notes=notes)


def _usd(v) -> str:
    """A dollar figure: 4 significant digits, '-' for None (no price)."""
    return F.num(v)


def _price_note(recs: list[dict]) -> list[str]:
    """One note naming the price(s) the USD rows stand on, or how to give one."""
    prices = sorted({r.get("price_usd_per_device_hour") for r in recs} - {None})
    if not prices:
        return ["No price for this hardware: give --price 2.5USD/h (USD per device-hour) for the USD rows."]
    prov = {r.get("price_provenance") for r in recs} - {None}
    how = f", {', '.join(sorted(prov))}" if prov else ""
    return [f"USD = rent only: devices x {' / '.join(f'{p:g}' for p in prices)} USD per device-hour x time (price: "
            f"--price, else the profile's price_per_device_hour{how})."]


def _compare_money(recs: list[dict], devices: int, batch: int) -> list:
    if all(r.get("price_usd_per_device_hour") is None for r in recs):
        return []
    return [("usd_per_hour", f"rent of the {devices} devices [USD/h]", _usd),
            ("usd_per_million_output_tokens", f"decode at batch {batch} [USD per 1M output tokens]", _usd)]


def _rate(k: str, v: float) -> str:
    if k.startswith("peak_flops"):
        return f"{v / 1e12:g} TFLOP/s"
    if k.endswith("bandwidth"):
        return f"{v / 1e9:g} GB/s"
    if k.endswith("per_element"):
        return f"{v * 1e9:g} ns"
    return f"{v * 1e6:g} us" if k.endswith(("overhead", "latency")) else f"{v:g}"


def _mode_notes(rec: dict, breakdown: bool = False) -> list[str]:
    """Notes on the decode modes of a perf / max-throughput / whatif record (MTP or a draft model,
    DeepEP kernels, two-batch overlap), in that order."""
    notes = []
    if rec.get("mtp_depth"):
        by = f"draft model {rec['draft_model']}" if rec.get("draft_model") else "the MTP module"
        kind = "speculative decoding with a draft model" if rec.get("draft_model") else "MTP speculative decoding"
        notes.append(f"{kind}: {rec['mtp_depth']} draft token(s) per step, acceptance "
                     f"{rec['mtp_acceptance']:g} -> {rec['mtp_tokens_per_step']:.3g} tokens per sequence per step; "
                     f"TPOT = step time / that (a verify pass of depth + 1 tokens, plus one pass of {by} per "
                     "draft" + ("; its weights and KV cache are in memory and its prefill in TTFT)"
                                if rec.get("draft_model") else ")"))
    if rec.get("ep_kernel", "normal") != "normal" and rec.get("ep", 2) > 1:  # (whatif's record has no ep)
        notes.append(f"EP all-to-all: DeepEP {rec['ep_kernel'].replace('_', '-')} kernels"
                     + (" (low-latency for decode, normal for prefill)" if rec["ep_kernel"] == "auto" else "")
                     + ("; low-latency sends one copy per token-expert pair on another rank, over NVLink inside "
                        "the node and RDMA beyond (NVLink-aware, DeepEP 2025-06)" if rec.get("deepep_nvlink") else
                        "; low-latency sends one RDMA copy per token-expert pair on another rank"))
    if rec.get("two_batch_overlap"):
        notes.append("two-batch overlap: each step is two micro-batches of half the sequences, one's communication "
                     "under the other's compute: step = 2 x max(compute, comm) of one"
                     + (" (the breakdown shows one micro-batch)" if breakdown else ""))
    return notes


@_finite
def perf(rec: dict, fmt: str, breakdown: bool) -> None:
    if fmt == "csv" and breakdown:  # machines asking for the breakdown get the operator rows
        ops = [dict(phase=ph, **o) for ph in ("prefill", "decode") for o in rec[f"{ph}_operators"]]
        emit(ops, [(k, k, F.text) for k in ops[0]], "csv")
        return
    if fmt != "table":
        skip = ("rates", "warnings")
        emit([rec], [(k, k, F.text) for k in rec if not k.endswith(("_operators", "_per_layer")) and k not in skip],
             fmt, payload=rec)
        return
    n = rec["devices"]
    rows = [
        ("ttft_s", "TTFT (prefill of the batch) [ms]", F.ms), ("tpot_s", "TPOT, mean over output [ms]", F.ms),
        ("tpot_last_s", "TPOT at the last token [ms]", F.ms),
        ("_ttft_band", "TTFT band, calibration p10-p90 [ms]", F.text),
        ("_tpot_band", "TPOT band, calibration p10-p90 [ms]", F.text),
        ("_tpot_last_band", "TPOT at the last token, band p10-p90 [ms]", F.text), ("e2e_s", "end-to-end latency [s]", F.num),
        ("_e2e_band", "end-to-end band, calibration p10-p90 [s]", F.text),
        ("prefill_tokens_per_s", f"prefill [tokens/s, all {n} devices]", F.num),
        ("decode_tokens_per_s", f"decode [tokens/s, all {n} devices]", F.num),
        ("decode_tokens_per_s_per_device", "decode [tokens/s per device]", F.num),
        ("decode_tokens_per_s_per_node", f"decode [tokens/s per node of {rec['devices_per_node']}]", F.num),
        ("combined_tokens_per_s", "prefill+decode on the same devices [output tokens/s]", F.num),
        ("prefill_devices_per_decode_device", "disaggregated: prefill devices per decode device", F.num),
        ("prefill_mfu", "prefill MFU", F.pct), ("decode_mbu", "decode MBU (first step)", F.pct),
        ("_forms", "MLA form prefill / decode", F.text),
        ("weight_bytes_per_device", "weights per device [GB]", F.scaled(1e9)),
        ("kv_bytes_per_device", "KV cache per device at input+output [GB]", F.scaled(1e9)),
        ("comm_buffer_bytes_per_device", "DeepEP buffers per device" + (
            f" (low-latency: {rec['deepep_max_tokens']} tokens per rank)" if rec.get("deepep_max_tokens") else "")
         + " [GB]", F.scaled(1e9)),
        ("memory_usable_bytes", "usable memory per device [GB]", F.scaled(1e9)),
        ("max_batch", "max batch at input+output tokens", F.integer), ("max_batch_limit", "limited by", F.text)]
    if rec.get("price_usd_per_device_hour") is not None:
        rows += [("usd_per_hour", f"rent of the {n} devices [USD/h]", _usd),
                 ("usd_per_million_output_tokens", "decode [USD per 1M output tokens]", _usd),
                 ("usd_per_million_input_tokens", "prefill [USD per 1M input tokens]", _usd),
                 ("usd_per_million_output_tokens_combined", "prefill+decode on the same devices [USD per 1M output "
                                                            "tokens]", _usd)]
    shown = dict(rec, name="value")
    for k in ("ttft", "tpot", "tpot_last", "e2e"):
        band, fmt_ = rec.get(f"{k}_band_s"), (F.num if k == "e2e" else F.ms)
        shown[f"_{k}_band"] = (f"{fmt_(band[0])} - {fmt_(band[1])}" if band else
                               rec["band"] if rec.get("band") in NO_BAND else "-")
    if not rec.get("ttft_band_s") and rec.get("band") not in NO_BAND:
        rows = [r for r in rows if r[0] not in ("_ttft_band", "_tpot_band", "_tpot_last_band", "_e2e_band")]
    if not rec.get("comm_buffer_bytes_per_device"):  # no EP all-to-all: no DeepEP buffers
        rows = [r for r in rows if r[0] != "comm_buffer_bytes_per_device"]
    for kind, sec in rec["decode_seconds_per_layer"].items():
        label = "embedding + LM head (once per step)" if kind == "once" else f"one {kind} layer"
        shown[f"_dl_{kind}"] = sec
        rows.append((f"_dl_{kind}", f"decode step: {label} [us]", F.scaled(1e-6)))
    mla = "mla_decode_step_absorbed_s" in rec
    if mla:
        shown["_mla"] = f"{F.ms(rec['mla_decode_step_absorbed_s'])} / {F.ms(rec['mla_decode_step_naive_s'])}"
        rows += [("_mla", "MLA decode step absorbed / naive [ms]", F.text),
                 ("mla_naive_faster_from_chunk_tokens",
                  f"MLA naive faster from query chunks of [tokens] (context {rec['input']})", F.integer)]
    shown["_forms"] = f"{rec['prefill_mla_form']} / {rec['decode_mla_form']}" if mla else "n/a (not MLA)"
    table, cols = F.transpose([shown], rows)
    notes = ["Roofline estimate: time = max(FLOPs / achievable FLOP/s, bytes / achievable bandwidth) + overhead, "
             "efficiency factors from the hardware profile (a calibrated profile's families add their fitted "
             "terms: costsim/simulator/efficiency.py).",
             "Rates used (provenance): " + "; ".join(f"{k} {_rate(k, v['value'])} ({v['provenance']})"
                                                     for k, v in rec["rates"].items())] + _price_note([rec])
    if rec.get("layout_reason"):
        notes.insert(0, f"layout: {rec['layout_reason']}")
    notes[:0] = _mode_notes(rec, breakdown=True)
    emit(table, cols, notes=notes, title=(
        f"{rec['model']} on {n} x {rec['hardware']} (tp={rec['tp']} ep={rec['ep']} pp={rec['pp']} dp={rec['dp']}; "
        f"weights {rec['weight_dtype']}, KV {rec['kv_dtype']}); batch {rec['batch']}, {rec['input']} in -> "
        f"{rec['output']} out"))
    if breakdown:
        for phase in ("prefill", "decode"):
            cols = [("op", "operator", F.text), ("count", "x", F.integer), ("time_s", "time/step [us]", F.scaled(1e-6)),
                    ("flops", "FLOPs [GFLOP]", F.scaled(1e9)), ("bytes", "mem bytes [MB]", F.scaled(1e6)),
                    ("comm_bytes", "sent [MB]", F.scaled(1e6)), ("intensity", "FLOP/byte", F.num),
                    ("bound", "bound", F.text)]
            emit(rec[f"{phase}_operators"], cols,
                 title=f"{phase} operators per device ({'whole prompt' if phase == 'prefill' else 'first step'})")


@_finite
def max_throughput(rec: dict, fmt: str) -> None:
    rec = {k: v for k, v in rec.items() if k != "warnings"}
    if fmt != "table":
        _machine([rec], fmt, payload=rec)
        return
    rows = [("batch", "best batch [sequences]", F.integer), ("tpot_s", "TPOT [ms]", F.ms),
            ("tokens_per_s", f"decode [tokens/s, all {rec['devices']} devices]", F.num),
            ("tokens_per_s_per_device", "decode [tokens/s per device]", F.num),
            ("max_batch_memory", "max batch that fits in memory", F.integer), ("limit", "limited by", F.text)]
    shown = dict(rec, name="value")
    if rec.get("tpot_band_s") or rec.get("band") in NO_BAND:
        shown["_band"] = (f"{F.ms(rec['tpot_band_s'][0])} - {F.ms(rec['tpot_band_s'][1])}" if rec.get("tpot_band_s")
                          else rec["band"])
        rows.insert(2, ("_band", "TPOT band, calibration p10-p90 [ms]", F.text))
    if rec.get("price_usd_per_device_hour") is not None:
        rows += [("usd_per_hour", f"rent of the {rec['devices']} devices [USD/h]", _usd),
                 ("usd_per_million_output_tokens", "decode [USD per 1M output tokens]", _usd)]
    table, cols = F.transpose([shown], rows)
    slo = f", TPOT <= {rec['tpot_slo_s'] * 1e3:g} ms" if rec["tpot_slo_s"] else ""
    notes = _mode_notes(rec) + (_price_note([rec]) if rec.get("price_usd_per_device_hour") is not None else [])
    emit(table, cols, notes=notes, title=(
        f"max decode throughput: {rec['model']} on {rec['devices']} x {rec['hardware']} (tp={rec['tp']} ep={rec['ep']}; "
        f"weights {rec['weight_dtype']}, KV {rec['kv_dtype']}), context {rec['context']}{slo}"))


@_finite
def train(rec: dict, fmt: str) -> None:
    rec = {k: v for k, v in rec.items() if k != "warnings"}
    if fmt != "table":
        _machine([rec], fmt, payload=rec)
        return
    given = rec["mfu_given"]
    rows = [("training_flops_per_token", f"training FLOPs/token at seq {rec['seq_len']} [GFLOP]", F.num_scaled_g),
            ("total_flops", "total training FLOPs [FLOP]", lambda v: f"{v:.4g}"),
            ("mfu", "MFU" + (" (given)" if given else " (implied)"), F.pct),
            ("gpu_hours", "GPU-hours" + ("" if given else " (given)"), F.integer),
            ("gpu_hours_per_trillion_tokens", "GPU-hours per 1e12 tokens", F.num),
            ("tokens_per_s_per_device", "tokens/s per device", F.num)]
    price = rec.get("price_usd_per_device_hour")
    if price is not None:
        rows.append(("training_usd", f"rent at {price:g} USD per GPU-hour [USD]", _usd))
    if rec.get("wall_clock_days") is not None:
        rows.append(("wall_clock_days", f"wall-clock on {rec['devices']:,} devices [days]", F.num))
    table, cols = F.transpose([dict(rec, name="value")], rows)
    emit(table, cols, title=(f"training {rec['model']} on {rec['hardware']} ({rec['dtype']} dense peak "
                             f"{rec['peak_flops'] / 1e12:g} TFLOP/s), {rec['tokens']:.4g} tokens"),
         notes=[f"training FLOPs/token = 3 x forward (2 x activated matmul params + {rec.get('attention_flops', 'causal')} "
                "attention), logits for "
                "every token."] + ([] if price is None else ["USD = GPU-hours x the price (rent only; the profile's "
                                                             "price_per_device_hour, --price to change)."]))


@_finite
def kernels(recs: list[dict], fmt: str, title: str) -> None:
    """Kernel predictions: one row per shape, time and terms in us, achieved rates."""
    if fmt != "table":
        emit(recs, [(k, k, F.text) for k in recs[0]], fmt, payload=recs)
        return
    shape = [(k, k, F.text) for k in recs[0] if k not in _KERNEL_FIELDS]
    cols = shape + [("time_s", "time [us]", F.scaled(1e-6)), ("compute_s", "compute [us]", F.scaled(1e-6)),
                    ("memory_s", "memory [us]", F.scaled(1e-6)), ("extra_s", "overhead etc. [us]", F.scaled(1e-6)),
                    ("bound", "bound", F.text), ("achieved_flops_per_s", "achieved [TFLOP/s]", F.scaled(1e12)),
                    ("achieved_bytes_per_s", "achieved [GB/s]", F.scaled(1e9))]
    emit(recs, cols, title=title, notes=["Predictions of the profile's per-family time models (a model, not a "
                                         "measurement); FLOPs 2 per multiply-add; GB = 1e9 B."])


_KERNEL_FIELDS = {"kernel", "time_s", "compute_s", "memory_s", "extra_s", "flops", "bytes", "bound",
                  "achieved_flops_per_s", "achieved_bytes_per_s"}


@_finite
def validation(ours: dict, shipped: dict, name: str, shipped_name: str, n: int, orderings: list[dict],
               fmt: str) -> None:
    """Held-out accuracy of a profile beside the shipped one (fractions in JSON)."""
    fams = [dict(f, mape_shipped=g["mape"], geomean_ratio_shipped=g["geomean_ratio"])
            for f, g in zip(ours["families"], shipped["families"])]
    payload = dict(profile=name, shipped=shipped_name, points=n, mape=ours["mape"], mape_shipped=shipped["mape"],
                   median_abs_error=ours["median_abs_error"], geomean_ratio=ours["geomean_ratio"],
                   within_25pct=ours["within_25pct"], median_abs_error_shipped=shipped["median_abs_error"],
                   geomean_ratio_shipped=shipped["geomean_ratio"], within_25pct_shipped=shipped["within_25pct"],
                   families=fams, orderings=orderings)
    rows = [dict(family="all", points=n, **{k: ours[k] for k in ("mape", "median_abs_error", "geomean_ratio",
                                                                  "within_25pct")},
                 mape_shipped=shipped["mape"], geomean_ratio_shipped=shipped["geomean_ratio"])] + fams
    if fmt != "table":
        emit(rows, [(k, k, F.text) for k in fams[0]], fmt, payload=payload)
        return
    cols = [("family", "family", F.text), ("points", "points", F.integer), ("mape", f"MAPE {name}", F.pct),
            ("median_abs_error", "median |error|", F.pct), ("geomean_ratio", "pred/meas (geomean)", F.num),
            ("within_25pct", "within 25%", F.pct), ("mape_shipped", f"MAPE {shipped_name}", F.pct),
            ("geomean_ratio_shipped", f"pred/meas {shipped_name}", F.num)]
    notes = [f"order {'kept' if o['agree'] else 'WRONG'}: {o['pair']}: measured A/B {o['measured_ratio']:.2f}, "
             f"predicted {o['predicted_ratio']:.2f}" for o in orderings]
    emit(rows, cols, title=f"validate {name}: {n} held-out kernels, predicted vs measured (minimum of the runs)",
         notes=notes + ["MAPE = mean |predicted / measured - 1|; pred/meas is the geometric mean of the ratios."])


def silicon_validation(res: dict, name: str, reference: str | None, system: str, backend: str, fmt: str) -> None:
    """Predicted vs measured per label over a system's silicon tables (fractions in JSON)."""
    labels = res["labels"]
    rows = [dict(r, worst_group=r["worst"][0]["group"] if r["worst"] else "",
                 worst_mape=r["worst"][0]["mape"] if r["worst"] else 0.0) for r in labels]
    payload = dict(profile=name, reference=reference, system=system, backend=backend,
                   source=res["tables"].source_text(), points=res["overall"]["points"], mape=res["overall"]["mape"],
                   median_abs_error=res["overall"]["median_abs_error"],
                   geomean_ratio=res["overall"]["geomean_ratio"], within_25pct=res["overall"]["within_25pct"],
                   families=labels)
    cols = [("label", "family", F.text), ("points", "rows", F.integer), ("mape", f"MAPE {name}", F.pct),
            ("median_abs_error", "median |error|", F.pct), ("geomean_ratio", "pred/meas (geomean)", F.num),
            ("within_25pct", "within 25%", F.pct)]
    if reference:
        cols += [("mape_reference", f"MAPE {reference}", F.pct),
                 ("geomean_ratio_reference", f"pred/meas {reference}", F.num)]
    cols += [("worst_group", "worst shape group", F.text), ("worst_mape", "its MAPE", F.pct)]
    if fmt != "table":
        emit(rows, cols, fmt, payload=payload)
        return
    emit(rows, cols, title=f"validate {name} on {system} silicon tables ({backend}): {res['overall']['points']:,} rows",
         notes=[res["tables"].source_text(),
                "MAPE = mean |predicted / measured - 1|; pred/meas is the geometric mean of the ratios."])


_WHATIF_UNITS = {  # SI unit of a what-if metric -> (header unit, formatter); bytes per token stay in bytes
    "params": ("1e9", F.scaled(1e9, 5)), "elements": ("elements", F.integer), "FLOP": ("GFLOP", F.scaled(1e9)),
    "s": ("ms", F.ms), "tokens/s": ("tokens/s", F.num), "sequences": ("sequences", F.integer),
    "fraction": ("%", F.pct), "bytes": ("GB", F.scaled(1e9)),
}


def _signed_pct(v) -> str:
    return "-" if v is None else f"{v * 100:+.2f}%"


def _elasticity(v) -> str:
    return "n/a" if v is None else f"{v:+.3f}"


def _knob_value(v) -> str:
    return "(absent)" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))


@_finite
def whatif(rec: dict, fmt: str) -> None:
    """Before / after / change / elasticity per metric (JSON: the whole record, SI units)."""
    rows = []
    for m in rec["metrics"]:
        unit, f = _WHATIF_UNITS[m["unit"]]
        if m["unit"] == "bytes" and m["key"].endswith("per_token"):
            unit, f = "bytes", F.num
        label = f"{m['label']}, {rec['kv_dtype']}" if m["key"] == "kv_cache_bytes_per_token" else m["label"]
        rows.append(dict(m, field=f"{label} [{unit}]", b=f(m["before"]), a=f(m["after"]),
                         c=_signed_pct(m["change"]), e=_elasticity(m["elasticity"])))
    rows += [dict(key=t["key"], field=t["label"], b=F.text(t["before"]), a=F.text(t["after"]), c="", e="",
                  before=t["before"], after=t["after"]) for t in rec["texts"]]
    if fmt != "table":
        emit(rows, [(k, k, F.text) for k in ("key", "unit", "before", "after", "change", "elasticity")], fmt,
             payload={k: v for k, v in rec.items() if k != "warnings"})
        return
    cols = [("field", "metric [unit]", F.text), ("b", "before", F.text), ("a", "after", F.text),
            ("c", "change", F.text), ("e", "elasticity", F.text)]
    both = [k for k in rec["knobs"] if k["before"] is not None and k["after"] is not None]
    knobs = "; ".join(f"{k['path']} {_knob_value(k['before'])} -> {_knob_value(k['after'])}" for k in both)
    added = [f"{k['path']}={_knob_value(k['after'])}" for k in rec["knobs"] if k["before"] is None]
    dropped = [k["path"] for k in rec["knobs"] if k["after"] is None]
    e = rec["elasticity_knob"]
    notes = [f"elasticity = log(after / before) / log({e} after / before), the arc d log metric / d log {e}."
             if e else f"elasticity: {rec['elasticity_note']}."]
    if added or dropped:
        notes.insert(0, "fields of the new kind: " + ", ".join(added) + (f"; dropped: {', '.join(dropped)}"
                                                                          if dropped else ""))
    notes += _mode_notes(rec) + list(rec["notes"]) + [
        "Parameters, KV and FLOPs are exact arithmetic; times, tokens/s and max batch are roofline models "
        "(GB = 1e9 B)."]
    emit(rows, cols, notes=notes, title=(
        f"what-if: {rec['model']} on {rec['devices']} x {rec['hardware']}, batch {rec['batch']}, {rec['input']} in -> "
        f"{rec['output']} out; {knobs or 'no change'}"))


def _claim_value(v: float, unit: str, like: str = "") -> str:
    """A claim's value in the paper's style (its unit in the text; times in the unit of ``like``)."""
    if unit == "params":
        return f"{v / 1e9:.2f}B"
    if unit in ("elements", "bytes", "GPU-hours"):
        return f"{v:,.0f}" + {"bytes": " B", "GPU-hours": " GPU-h"}.get(unit, "")
    if unit == "fraction":
        return f"{v * 100:.2f}%"
    if unit in ("ratio", "groups"):
        return f"{v:.3f}" + ("x" if unit == "ratio" else "")
    if unit == "s":
        return f"{v * 1e6:.2f} us" if like.endswith("us") or (v < 1e-4 and not like) else f"{v * 1e3:.3f} ms"
    if unit == "USD":
        return f"${v / 1e6:.3f}M" if v >= 1e5 else (f"${v:,.0f}" if v >= 1 else f"${v:.2f}")
    if unit == "nodes":
        return f"{v:,.2f} nodes"
    if unit == "FLOP/s":
        return f"{v / 1e12:.1f} TFLOP/s"
    if unit == "GFLOP":
        return f"{v:.1f}"
    return f"{v:,.4g} {'tok/s' if unit == 'tokens/s' else unit}"


def _tolerance(r: dict) -> str:
    if r["kind"] == "exact":
        return "0" if r["tolerance"] == 0 else f"±{_claim_value(r['tolerance'], r['unit'], 'us' if r['tolerance'] < 1e-4 else '')}"
    band = r["tolerance"] / r["paper_value"]
    return f"±{band:.0%}" if r["relation"] == "=" else f">= {1 - band:.0%} of it"


@_finite
def reproduce(recs: list[dict], papers: list[str], fmt: str) -> None:
    """Claims: paper vs costsim, difference, tolerance and status; the command, assumptions and
    notes of each row below the table (JSON / CSV: every field, SI units)."""
    if fmt != "table":
        emit(recs, [(k, k, F.text) for k in recs[0]], fmt, payload=dict(papers=papers, claims=recs))
        return
    rows = [dict(r, n=str(i), name=r["claim"], c=_claim_value(r["costsim_value"], r["unit"], r["paper_text"]),
                 d=f"{r['relative_difference'] * 100:+.2f}%", s=r["status"], t=_tolerance(r))
            for i, r in enumerate(recs, 1)]
    cols = [("n", "#", F.text), ("name", "claim", F.text), ("paper_text", "paper", F.text),
            ("c", "costsim", F.text), ("d", "difference", F.text), ("kind", "kind", F.text), ("t", "tolerance", F.text),
            ("s", "status", F.text)]
    notes, last = [], None
    for r in rows:
        same = r["assumptions"] == last and r["assumptions"]
        notes.append(f"{r['n']}. [{r['source']}] {r['command']}"
                     + (" | assumes: as above" if same else f" | assumes: {r['assumptions']}" if r["assumptions"] else "")
                     + (f" | NOTE: {r['note']}" if r["note"] else ""))
        last = r["assumptions"]
    ok = sum(r["passes"] for r in recs)
    notes.append(f"{ok} of {len(recs)} claims within tolerance; exact = arithmetic on the published configs, model = "
                 "roofline estimate with a band.")
    emit(rows, cols, title="reproduce: " + "; ".join(papers), notes=notes)
SWEEP_TABLE_ROWS = 200  # rows a sweep prints without -o; the rest go to a file


def sweep(recs: list[dict], fmt: str = "table") -> None:
    """A sweep's rows (``costsim.sweeps``) as a compact table: layout, point, the headline
    metrics and the reason of an infeasible point; NaN (infeasible) shows as '-'."""
    import math

    def clean(r):
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}

    def v(x):  # an invalid layout's unset degree is <NA>
        return "-" if x is None or x != x or str(x) == "<NA>" else x

    shown = [clean(dict(r, name=r["model"], layout=f"{v(r['devices'])} tp{v(r['tp'])} ep{v(r['ep'])} pp{v(r['pp'])}",
                        formats=f"{r['weight_dtype']}/{r['kv_dtype']}",
                        reason=r["reason"] or "ok")) for r in recs[:SWEEP_TABLE_ROWS]]
    cols = [("name", "model", F.text), ("hardware", "hw", F.text), ("layout", "layout", F.text),
            ("formats", "W/KV", F.text), ("batch", "batch", F.integer), ("input_tokens", "in [tok]", F.integer),
            ("output_tokens", "out [tok]", F.integer), ("ttft_s", "TTFT [ms]", F.ms), ("tpot_s", "TPOT [ms]", F.ms),
            ("tokens_per_s", "tok/s", F.num), ("tokens_per_s_per_device", "tok/s/dev", F.num),
            ("memory_per_device_bytes", "GB/dev", F.scaled(1e9)), ("reason", "reason", F.text)]
    notes = [f"{len(recs) - SWEEP_TABLE_ROWS:,} more rows: write them all with -o FILE.csv|.parquet"] \
        if len(recs) > SWEEP_TABLE_ROWS else []
    emit(shown, cols, fmt, title=f"Sweep: {len(recs):,} points ({sum(bool(r['feasible']) for r in recs):,} feasible); "
                                 "TPOT = mean over the n - 1 decode steps; tok/s = decode tokens/s (batch / TPOT); GB = 1e9 B",
         notes=notes)


def plan(rec: dict, fmt: str = "table", out=None) -> None:
    """The planner's ranked deployments (``costsim.simulator.planner.Plan.to_dict()``): one row
    per deployment, cheapest first, with what was searched and why a hardware has no plan.
    JSON: the whole plan (SI units, USD); CSV: the rows."""
    rows = [dict(r, name=r["hardware"], layout=f"tp{r['tp']} ep{r['ep']} pp{r['pp']} dp{r['dp']}",
                 formats=f"{r['weight_dtype']}/{r['kv_dtype']}") for r in rec["rows"]]
    if fmt != "table":
        cols = [(k, k, F.text) for k in rec["rows"][0]] if rec["rows"] else [("hardware", "hardware", F.text)]
        emit(rec["rows"], cols, fmt, payload=rec, out=out)
        return
    cols = [("name", "hw", F.text), ("devices", "devices", F.integer), ("layout", "layout", F.text),
            ("formats", "W/KV", F.text), ("batch", "batch", F.integer), ("ttft_s", "TTFT [ms]", F.ms),
            ("tpot_s", "TPOT [ms]", F.ms), ("tokens_per_s", "tok/s", F.num), ("replicas", "replicas", F.integer),
            ("total_devices", "total dev", F.integer), ("usd_per_hour", "USD/h", _usd),
            ("usd_per_million_output_tokens", "USD/M tok", _usd), ("limit", "limited by", F.text)]
    from costsim.simulator.planner import slo_text

    want = (f", {F.num(rec['target_tokens_per_s'])} output tokens/s" if rec["target_tokens_per_s"] is not None else
            f", {rec['users']:,} concurrent users" if rec["users"] is not None else "")
    hw = rec["hardware"]
    found = sum(h["feasible"] for h in hw)
    costed = sum(h["evaluated"] for h in hw)
    title = (f"plan: {rec['model']}, {rec['input_len']} in -> {rec['output_len']} out, "
             f"{slo_text(rec['tpot_slo_s'], rec['ttft_slo_s'])}{want}: the {len(rows)} cheapest of {found} plans "
             f"found ({costed} of {sum(h['candidates'] for h in hw)} deployments costed)")
    fleet = "the fleet" if want else "one replica"
    notes = [f"tok/s = output tokens/s of one replica (batch x output / e2e: it prefills, then decodes, its batch "
             f"in lock-step; TTFT = the prefill of the whole batch, as costsim perf). USD/h = {fleet}; USD/M tok = "
             "USD/h over the output tokens delivered (rent only).",
             f"Searched: {_powers(rec['max_devices'])} devices per replica, pp "
             f"{'/'.join(str(p) for p in rec['pp'])}, TP within a node (dense: dp = 1), EP the largest dividing "
             f"devices and experts; weights " + "; ".join(f"{k} {'/'.join(v)}" for k, v in rec["weight_dtypes"].items())
             + f"; KV {'/'.join(rec['kv_dtypes'])}.",
             "Prices [USD per device-hour]: " + ", ".join(f"{h['hardware']} {h['price_usd_per_device_hour']:g} "
                                                           f"({h['price_provenance']})" for h in hw) + "."]
    for h in hw:
        if h["feasible"] == 0 and h["evaluated"] == 0 and h["screened"] > 0:
            notes.append(f"{h['hardware']}: none of its {h['screened']} deployments passing the screen could beat "
                         "the plans shown.")
        elif h["feasible"] == 0:
            why = ", ".join(f"{n} {k}" for k, n in sorted(h["reasons"].items(), key=lambda kv: -kv[1]))
            notes.append(f"{h['hardware']}: no plan ({why}).")
    if not rec["complete"]:
        notes.append(f"The search stopped when no deployment left could beat plan {len(rows)} (a lower bound "
                     "on each one's cost); --top N finds more.")
    emit(rows, cols, title=title, notes=notes, out=out)


def _powers(n: int) -> str:
    """'1, 2, 4, ..., 64': the device counts the planner tries (powers of two up to ``n``)."""
    out, k = [], 1
    while k <= n:
        out.append(k)
        k *= 2
    return ", ".join(map(str, out)) if len(out) <= 4 else f"1, 2, 4, ..., {out[-1]}"


@_finite
def rate(recs: list[dict], head: dict, fmt: str) -> None:
    """``costsim rate``: one row per offered request rate."""
    if fmt != "table":
        emit(recs, [(k, k, F.text) for k in recs[0]], fmt, payload=dict(head, points=recs))
        return
    cols = [("rate", "rate [requests/s]", F.num), ("batch", "running batch [sequences]", F.integer),
            ("ttft_s", "TTFT [ms]", F.ms), ("tpot_s", "TPOT [ms]", F.ms), ("e2e_s", "end-to-end [s]", F.num),
            ("prefill_share", "prefill share of time", F.pct),
            ("output_tokens_per_s", f"output [tokens/s, all {head['devices']} devices]", F.num),
            ("state", "state", F.text)]
    shown = [dict(r, state="saturated: " + r["reason"] if r["saturated"] else "steady") for r in recs]
    emit(shown, cols, fmt, title=(
        f"{head['model']} on {head['devices']} x {head['hardware']} (tp={head['tp']} ep={head['ep']} pp={head['pp']} "
        f"dp={head['dp']}; weights {head['weight_dtype']}, KV {head['kv_dtype']}); {head['input']} in -> "
        f"{head['output']} out per request, Poisson arrivals"),
        notes=[f"largest sustainable rate: {head['max_rate']:.4g} requests/s (decode at the memory limit of "
               f"{head['max_batch']:,} sequences plus prefill)",
               "Continuous batching, prefill first (no chunked prefill): running batch = rate x output x TPOT "
               "(Little's law); TPOT = decode step / (1 - prefill share); TTFT = prefill + M/D/1 queueing + half a "
               "decode step (costsim/simulator/rate.py)."] if not head.get("chunked_prefill") else [
               f"largest sustainable rate: {head['max_rate']:.4g} requests/s (rate x prompt = chunk / step at the "
               f"best batch up to the memory limit of {head['max_batch']:,} sequences)",
               f"Chunked prefill, {head['chunked_prefill']:,} tokens per step"
               f"{' per DP rank' if head['dp'] > 1 else ''} (Sarathi-Serve): running batch = rate x "
               "output x TPOT (Little's law)" + (", rounded up to whole sequences on every DP rank (each steps "
               "at least one)" if head['dp'] > 1 else "") + "; TPOT = one mixed step (decode + a prompt chunk, weights read once; "
               "with MTP: / the tokens gained per step, each decode taking 1 + depth budget tokens); "
               "prefill share = chunk / spare budget; TTFT = ceil(prompt / spare budget) full steps + M/D/1 queueing "
               "+ half a step (costsim/simulator/scheduling.py)."])


@_finite
def disagg(rec: dict, fmt: str) -> None:
    """``costsim disagg`` (``costsim.simulator.disagg.Disaggregated.to_dict()``): the prefill pool,
    the decode pool and the colocated best side by side, then the ratio, the pool sizes at the
    rate and the KV transfer. JSON: the whole record (SI units); CSV: one row per pool."""
    rec = dict(rec)
    warnings = rec.pop("warnings", ())
    pools = [dict(rec["prefill"])] + [dict(rec["decode"])]
    col = rec.get("colocated")
    if fmt != "table":
        rows = pools + ([dict(col, role="colocated")] if col else [])
        keys = list(dict.fromkeys(k for r in rows for k in r))
        emit(rows, [(k, k, F.text) for k in keys], fmt, payload=dict(rec, warnings=list(warnings)))
        return
    rate = rec["rate"]
    shown = []
    for p in pools:
        r = dict(p, name=f"{p['role']} pool")
        r["_in"] = p["tokens_per_s"] if p["role"] == "prefill" else None
        r["_out"] = p["tokens_per_s"] if p["role"] == "decode" else None
        r["_in_dev"] = p["tokens_per_s_per_device"] if p["role"] == "prefill" else None
        r["_out_dev"] = p["tokens_per_s_per_device"] if p["role"] == "decode" else None
        if rate is not None:
            r.update(replicas=rec[f"{p['role']}_replicas"], total_devices=rec[f"{p['role']}_devices"],
                     total_nodes=rec[f"{p['role']}_nodes"])
        shown.append(r)
    if col:
        n = rec["devices_per_node"]
        c = dict(col, name="colocated (plan)", role="colocated", modes=None, _out=col["tokens_per_s"],
                 _out_dev=col["tokens_per_s"] / col["devices"], nodes=col["devices"] / n, limit=col["limit"])
        if rate is not None:
            c["total_nodes"] = math.ceil(col["total_devices"] / n)
        else:
            c.pop("replicas"), c.pop("total_devices")
        shown.append(c)
    for r in shown:
        r["_layout"] = f"tp{r['tp']} ep{r['ep']} pp{r['pp']} dp{r['dp']}"
        r["_formats"] = f"{r['weight_dtype']}/{r['kv_dtype']}"
    rows = [("devices", "devices per replica", F.integer), ("nodes", f"nodes of {rec['devices_per_node']} per replica",
                                                               F.num),
            ("_layout", "layout", F.text), ("_formats", "weights / KV cache", F.text)]
    if any(p.get("modes") for p in pools):
        rows += [("modes", "modes", F.text)]
    rows += [("batch", "batch per replica [sequences]", F.integer), ("ttft_s", "TTFT [ms]", F.ms),
            ("tpot_s", "TPOT [ms]", F.ms), ("_in", "input tokens/s per replica", F.num),
            ("_in_dev", "input tokens/s per device", F.num), ("_out", "output tokens/s per replica", F.num),
            ("_out_dev", "output tokens/s per device", F.num), ("limit", "limited by", F.text)]
    if rate is not None:
        rows += [("replicas", f"replicas for {rate:g} requests/s", F.integer),
                 ("total_devices", "devices", F.integer), ("total_nodes", "nodes", F.integer)]
    table, cols = F.transpose(shown, rows)
    from costsim.simulator.planner import slo_text

    ratio = rec["prefill_devices_per_decode_device"]
    dec = rec["decode"]
    notes = [f"prefill devices per decode device: {ratio:.4g} = (input / prefill tokens/s per device) / (output / "
             f"decode tokens/s per device) = {rec['prefill_device_s_per_request']:.4g} s / "
             f"{rec['decode_device_s_per_request']:.4g} s per request; per decode replica of {dec['devices']} devices "
             f"({dec['nodes']:g} nodes): {rec['prefill_devices_per_decode_replica']:.4g} prefill devices "
             f"({rec['prefill_devices_per_decode_replica'] / rec['devices_per_node']:.4g} nodes).",
             f"balanced pools: {F.num(rec['output_tokens_per_s_per_device'])} output tokens/s per device"
             + (f"; colocated best: {F.num(rec['colocated_output_tokens_per_s_per_device'])}" if col else "") + "."]
    if rate is not None:
        notes.append(f"for {rate:g} requests/s: {rec['total_devices']:,} devices disaggregated ("
                     f"{rec['prefill_devices']:,} prefill + {rec['decode_devices']:,} decode)"
                     + (f" vs {col['total_devices']:,} colocated" if col else "") + ".")
    if rec["kv_transfer_s"] is not None:
        notes.append(f"KV transfer: {rec['kv_bytes_per_request'] / 1e6:,.4g} MB per request ({rec['input_len']} "
                     f"tokens, {rec['prefill']['kv_dtype']}), {rec['kv_transfer_s'] * 1e3:.4g} ms over a prefill "
                     f"device's inter-node link; link busy {rec['prefill_link_load'] * 100:.1f}% of the time on a "
                     f"prefill device, {rec['decode_link_load'] * 100:.1f}% on a decode device (overlapped with "
                     "compute: not added to TTFT, TPOT or throughput).")
    if not col and rec.get("colocated_reason"):
        notes.append(f"colocated: {rec['colocated_reason']}")
    notes.append("Steady state, no queueing: TTFT = the prefill of the pool's batch; TPOT = the mean over the output "
                 "of the decode pool's batch; colocated = costsim plan's best at the same SLOs (prefill then decode "
                 "of its batch in lock-step) (costsim/simulator/disagg.py).")
    emit(table, cols, notes=notes, title=(
        f"disagg: {rec['model']} on {rec['hardware']}, {rec['input_len']} in -> {rec['output_len']} out, "
        f"{slo_text(rec['tpot_slo_s'], rec['ttft_slo_s'])}"
        + (f", {rate:g} requests/s" if rate is not None else "")))
