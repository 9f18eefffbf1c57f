"""costsim command line: what-if queries on model specs and hardware profiles.

Thin by design: resolve names to specs, apply --set/--hw-set, call the engine, hand the
records to a formatter. User mistakes print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from costsim.errors import CostsimError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="costsim: analytical cost-and-memory simulator for LLMs (MLA, MoE, roofline, parallelism).")


class Fmt(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


FORMAT = typer.Option(Fmt.table, "--format", "-f", help="table (people), json or csv (machines; SI units).")
SET = typer.Option(None, "--set", help="What-if on the model spec: PATH=VALUE, e.g. attention.kv_lora_rank=256 (repeatable).")
HWSET = typer.Option(None, "--hw-set", help="What-if on the hardware: PATH=VALUE, e.g. memory_bandwidth=8TB/s (repeatable).")
CONTEXT_HELP = "Context length in tokens; k = 1024 (128k = 131,072)."
# every token/sequence count flag (context, batch, input, output, seq-len) reads k as 1024;
# only training token totals (--tokens 8.1T) and --gpu-hours are decimal


# ---- parsing helpers (edges only) -----------------------------------------------------


def _parse(parser, text: str, flag: str, **kw):
    """Run a unit parser; a ValueError becomes a CostsimError naming the flag."""
    try:
        return parser(text, **kw)
    except ValueError as e:
        raise CostsimError(f"{flag}: {e}") from None


def _slo(text: str) -> float:
    """--tpot-slo needs its unit (50ms, 0.05s): a bare 50 would be 50 seconds."""
    import re

    from costsim.units import parse_time

    if re.fullmatch(r"\s*[0-9.eE+-]+\s*", text):
        raise CostsimError(f"--tpot-slo: give a unit, e.g. {text.strip()}ms or {text.strip()}s, got {text!r}")
    return _parse(parse_time, text, "--tpot-slo")


def _count(text: str, flag: str, binary_k: bool = True, minimum: float = 0) -> int:
    """A token or sequence count; k = 1024 (as in "128K context") unless ``binary_k`` is
    False (training token totals: 8.1T = 8.1e12)."""
    from costsim.units import parse_count

    v = _parse(parse_count, text, flag, binary_k=binary_k)
    if not (minimum <= v < float("inf")) or v != int(v):
        raise CostsimError(f"{flag}: expected a finite integer >= {minimum}, got {text!r}")
    return int(v)


def _check_kv_layout(spec, fmt, text: str) -> None:
    """An MLA-only cache layout (flashmla-fp8) on a non-MLA model: one line naming --kv-dtype."""
    from costsim.specs import MLAAttention

    if fmt.rope_bits is not None and not isinstance(spec.attention, MLAAttention):
        raise CostsimError(f"--kv-dtype {text}: an MLA cache layout; {spec.name} uses {spec.attention.kind}")


def _format(name: str, flag: str):
    from costsim.units import parse_format

    try:
        return parse_format(name)
    except CostsimError as e:
        raise CostsimError(f"{flag}: {e}") from None


def _model(ref: str, sets):
    from costsim.registry import apply_sets, load_model

    return apply_sets(load_model(ref), sets, "--set")


def _hw(ref: str, sets):
    from costsim.registry import apply_sets, load_hardware

    return apply_sets(load_hardware(ref), sets, "--hw-set")


def _emit(*a, **kw):
    from costsim.reports.format import emit

    emit(*a, **kw)


_WARNINGS: list[str] = []


def _run(fn):
    """Call ``fn``; turn CostsimError into one stderr line and exit code 2. Warnings collected
    on the way are printed only when the command succeeds (an error stays one line)."""
    _WARNINGS.clear()
    try:
        fn()
    except CostsimError as e:
        msg = str(e).replace("\n", " ")
        print(f"costsim: error: {msg}", file=sys.stderr)
        raise typer.Exit(2)
    for w in dict.fromkeys(_WARNINGS):
        print(f"costsim: warning: {w}", file=sys.stderr)


# ---- commands -------------------------------------------------------------------------


@app.command("models")
def models_cmd(fmt: Fmt = FORMAT):
    """List the shipped model specs with their sources."""

    def go():
        from costsim.registry import load_model, model_names
        from costsim.reports import format as F
        from costsim.reports.summary import model_line

        recs = [model_line(load_model(n)) for n in model_names()]
        cols = [("name", "name", F.text), ("attention", "attention", F.text), ("ffn", "FFN", F.text),
                ("experts", "experts", F.text), ("params_total", "params total [1e9]", F.scaled(1e9)),
                ("params_active", "params active [1e9]", F.scaled(1e9)), ("source", "source", F.text)]
        _emit(recs, cols, fmt.value, title="Shipped model specs", notes=["Full sources: costsim models --format json"])

    _run(go)


@app.command("hardware")
def hardware_cmd(fmt: Fmt = FORMAT):
    """List the shipped hardware profiles (dense peaks, memory, links) with their sources."""

    def go():
        from costsim.registry import hardware_names, load_hardware
        from costsim.reports import format as F

        recs = []
        for n in hardware_names():
            h = load_hardware(n)
            pf = h.peak_flops
            recs.append(dict(
                name=h.name, full_name=h.full_name,
                bf16_flops=pf.bf16.value if pf.bf16 else None, fp8_flops=pf.fp8.value if pf.fp8 else None,
                memory_capacity=h.memory_capacity.value, memory_bandwidth=h.memory_bandwidth.value,
                intra_node_bandwidth=h.intra_node_bandwidth.value if h.intra_node_bandwidth else None,
                inter_node_bandwidth=h.inter_node_bandwidth.value if h.inter_node_bandwidth else None,
                devices_per_node=h.devices_per_node, source=h.source))
        cols = [("name", "name", F.text), ("full_name", "device", F.text),
                ("bf16_flops", "BF16 dense [TFLOP/s]", F.scaled(1e12)), ("fp8_flops", "FP8 dense [TFLOP/s]", F.scaled(1e12)),
                ("memory_capacity", "memory [GB]", F.scaled(1e9)), ("memory_bandwidth", "HBM BW [TB/s]", F.scaled(1e12)),
                ("intra_node_bandwidth", "intra-node [GB/s/dir]", F.scaled(1e9)),
                ("inter_node_bandwidth", "inter-node [GB/s/dir]", F.scaled(1e9)),
                ("devices_per_node", "per node", F.integer), ("source", "source", F.text)]
        _emit(recs, cols, fmt.value, title="Shipped hardware profiles (dense peaks; GB = 1e9 B)",
              notes=["Full sources and provenance: costsim hardware --format json, or the YAML in costsim/hardware_profiles/"])

    _run(go)


def _show_rows():
    from costsim.reports import format as F

    return [
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


@app.command("show")
def show_cmd(model: str = typer.Argument(..., help="Model name, spec .yaml or HF config.json."),
             context: str = typer.Option("4096", "--context", help=CONTEXT_HELP),
             batch: str = typer.Option("1", "--batch"),
             kv_dtype: str = typer.Option("bf16", "--kv-dtype", help="bf16, fp16, fp8, int8, int4, int4-g32, flashmla-fp8, or bits (6)."),
             sets: Optional[List[str]] = SET, fmt: Fmt = FORMAT):
    """Parameter breakdown, KV cache per token and FLOPs per token of one model."""

    def go():
        from costsim.reports import format as F
        from costsim.reports.summary import show_record

        spec = _model(model, sets)
        ctx = _count(context, "--context")
        b = _count(batch, "--batch")
        _context_warning(spec, ctx)
        kvf = _format(kv_dtype, "--kv-dtype")
        _check_kv_layout(spec, kvf, kv_dtype)
        rec = show_record(spec, kvf, ctx, b)
        if fmt is not Fmt.table:
            cols = [(k, k, F.text) for k in rec if k != "params"]
            _emit([rec], cols, fmt.value, payload=rec)
            return
        p = rec["params"]
        prow = [dict(name=k, v=p[k]) for k in ("embedding", "lm_head", "attention", "dense_ffn", "routed_experts",
                                               "routed_experts_active", "shared_experts", "router", "norms", "mtp",
                                               "total", "active", "active_incl_embedding")]
        _emit(prow, [("name", "component", F.text), ("v", "parameters [count]", F.integer)], title=f"{spec.name}: parameters",
              notes=[f"source: {spec.source}", "active = activated per token, input embedding excluded (DeepSeek convention)."])
        rows, cols = F.transpose([rec], _show_rows())
        _emit(rows, cols, title=f"{spec.name}: KV cache ({rec['kv_dtype']}, batch {b}, context {ctx}) and FLOPs (2 per multiply-add)")

    _run(go)


@app.command("kv")
def kv_cmd(models: List[str] = typer.Argument(..., help="One or more models."),
           context: str = typer.Option("4096", "--context", help=CONTEXT_HELP),
           batch: str = typer.Option("1", "--batch"),
           kv_dtype: str = typer.Option("bf16", "--kv-dtype", help="bf16, fp16, fp8, int8, int4, int4-g32, flashmla-fp8, or bits (6)."),
           tp: int = typer.Option(1, "--tp", help="Tensor parallel degree: KV per device (heads split, MLA latent replicated)."),
           block_size: Optional[int] = typer.Option(None, "--block-size", help="Paged cache block size in tokens (round up)."),
           sets: Optional[List[str]] = SET, fmt: Fmt = FORMAT):
    """KV cache per token and for a batch x context."""

    def go():
        from costsim.reports import format as F
        from costsim.reports.summary import kv_record

        ctx = _count(context, "--context")
        b = _count(batch, "--batch")
        if tp < 1:
            raise CostsimError(f"--tp must be >= 1, got {tp}")
        if block_size is not None and block_size < 1:
            raise CostsimError(f"--block-size must be >= 1, got {block_size}")
        kvf = _format(kv_dtype, "--kv-dtype")
        recs = []
        for m in models:
            spec = _model(m, sets)
            _context_warning(spec, ctx)
            _check_kv_layout(spec, kvf, kv_dtype)
            try:
                recs.append(kv_record(spec, kvf, ctx, b, tp, block_size))
            except CostsimError as e:
                raise CostsimError(f"--tp: {e}") from None
        dev = "/device" if tp > 1 else ""
        cols = [("name", "model", F.text), ("kv_dtype", "KV dtype", F.text),
                ("kv_cache_elements_per_token", "elements/token (whole model)", F.integer),
                ("kv_cache_bytes_per_token_per_layer", f"bytes/token/layer{dev}", F.num),
                ("kv_cache_bytes_per_token", f"bytes/token{dev}", F.num),
                ("kv", f"batch {b} x {ctx} tokens [GB = 1e9 B]", F.scaled(1e9)),
                ("kv", "[GiB = 2^30 B]", F.scaled(2**30))]
        if fmt is Fmt.csv:  # machines get every field, as in JSON
            cols = [(k, k, F.text) for k in recs[0]]
        _emit(recs, cols, fmt.value, title=f"KV cache per device (tp={tp})", payload=recs if len(recs) > 1 else recs[0])

    _run(go)


def _deployment(spec, devices, tp, ep, pp, weight_dtype, kv_dtype, hw=None, batch=1, context=0, **kw):
    """Build the Deployment; unset --tp/--ep follow ``default_layout`` (smallest TP at which
    ``batch`` sequences of ``context`` tokens fit, for MoE) within one pipeline stage."""
    from costsim.reports.summary import default_layout
    from costsim.simulator.deployment import Deployment
    from costsim.simulator.memory import memory_report

    for flag, v in (("--devices", devices), ("--tp", tp), ("--ep", ep), ("--pp", pp)):
        if v is not None and v < 1:
            raise CostsimError(f"{flag} must be >= 1, got {v}")
    if devices % pp:
        raise CostsimError(f"--devices {devices} is not a multiple of --pp {pp}")

    base = Deployment(devices=devices, tp=1, ep=1, pp=pp, weight_format=_format(weight_dtype, "--weight-dtype"),
                      kv_format=_format(kv_dtype, "--kv-dtype"), **kw)

    _check_kv_layout(spec, base.kv_format, kv_dtype)
    wf = base.weight_format
    if wf.rope_bits is not None:
        raise CostsimError(f"--weight-dtype {weight_dtype}: that is a KV cache layout, not a weight format")
    if hw is not None:
        try:
            hw.peak(wf.compute)
        except CostsimError as e:
            raise CostsimError(f"--weight-dtype {weight_dtype}: {e}") from None

    def room(t, e):
        d = base.with_(tp=t, ep=e)
        try:
            d.check(spec)
        except CostsimError:
            return None
        m = memory_report(spec, hw, d, max(batch, d.dp), context)
        return bool(m.fits), float(m.max_batch)

    t, e = default_layout(spec, devices // pp, tp, ep, room if hw is not None else None,
                          hw.devices_per_node if hw is not None else None)
    return base.with_(tp=t, ep=e)


@app.command("compare")
def compare_cmd(models: List[str] = typer.Argument(..., help="One or more models (side by side)."),
                hardware: str = typer.Option(..., "--hardware", "-H", help="Hardware name or profile .yaml."),
                context: str = typer.Option("4096", "--context", help=CONTEXT_HELP),
                batch: str = typer.Option("32", "--batch", help="Concurrent sequences over all the devices."),
                devices: Optional[int] = typer.Option(None, "--devices", help="Devices (default: one node)."),
                weight_dtype: str = typer.Option("bf16", "--weight-dtype"),
                kv_dtype: str = typer.Option("bf16", "--kv-dtype"),
                sets: Optional[List[str]] = SET, hw_sets: Optional[List[str]] = HWSET, fmt: Fmt = FORMAT):
    """Side by side: params, activated params, KV per token and per batch, FLOPs per token,
    decode tokens/s and max batch on one replica (default: one node of the hardware; MoE
    models as DP-attention + EP, dense models with TP)."""

    def go():
        from costsim.reports import format as F
        from costsim.reports.summary import compare_record

        hw = _hw(hardware, hw_sets)
        ctx = _count(context, "--context")
        b = _count(batch, "--batch", minimum=1)
        n = hw.devices_per_node if devices is None else devices
        recs = []
        for m in models:
            spec = _model(m, sets)
            _context_warning(spec, ctx)
            recs.append(compare_record(spec, hw, _deployment(spec, n, None, None, 1, weight_dtype, kv_dtype, hw, b, ctx), ctx, b))
        rows = [("params_total", "params total [1e9]", F.scaled(1e9)),
                ("params_active", "params active/token [1e9]", F.scaled(1e9)),
                ("kv_cache_elements_per_token", "KV cache [elements/token]", F.integer),
                ("kv_cache_bytes_per_token", f"KV cache, {recs[0]['kv_dtype']} [bytes/token]", F.num),
                ("kv", f"KV cache, batch {b} x {ctx} tokens [GB]", F.scaled(1e9)),
                ("flops_per_token_decode", f"decode FLOPs/token at {ctx} [GFLOP]", F.scaled(1e9)),
                ("weight_bytes_per_device", f"weights per device, {recs[0]['weight_dtype']} [GB]", F.scaled(1e9)),
                ("tp", "layout: TP", F.integer), ("ep", "layout: EP", F.integer),
                ("tpot_s", f"TPOT at batch {b} [ms]", F.ms),
                ("decode_tokens_per_s", f"decode at batch {b} [tokens/s per {n} devices]", F.num),
                ("max_batch", f"max batch at {ctx} tokens [sequences]", F.integer)]
        if fmt is not Fmt.table:
            cols = [(k, k, F.text) for k in recs[0]]
            _emit(recs, cols, fmt.value, payload=dict(hardware=hw.name, devices=n, context=ctx, batch=b, models=recs))
            return
        table, cols = F.transpose(recs, rows)
        seen: dict[str, int] = {}
        for r in recs:  # the same model twice (a name and a file of the same name): tell the columns apart
            seen[r["name"]] = seen.get(r["name"], 0) + 1
            if seen[r["name"]] > 1:
                r["name"] = f"{r['name']} ({seen[r['name']]})"
        notes = [f"note: {r['name']}: {r['note']}" for r in recs if r["note"]]
        notes.append(f"GB = 1e9 bytes. Decode is a roofline estimate on {hw.name} ({n} devices, efficiency factors from the profile).")
        _emit(table, cols, title=f"compare on {n} x {hw.name}, context {ctx}, batch {b}", notes=notes)

    _run(go)


@app.command("import-hf")
def import_hf_cmd(config: Path = typer.Argument(..., help="HuggingFace config.json"),
                  output: Optional[Path] = typer.Option(None, "--output", "-o", help="Spec YAML to write (default: stdout)."),
                  name: Optional[str] = typer.Option(None, "--name", help="Spec name (default from the config).")):
    """Convert a HuggingFace config.json into a costsim model spec YAML."""

    def go():
        from costsim.hf import spec_from_hf_config, spec_to_yaml
        from costsim.registry import read_json

        spec = spec_from_hf_config(read_json(config), where=str(config), name=name)
        text = spec_to_yaml(spec)
        if output is None:
            sys.stdout.write(text)
            return
        from costsim.files import atomic_write_text

        atomic_write_text(output, text, "spec YAML")
        print(f"wrote {output} ({spec.name})", file=sys.stderr)

    _run(go)


# ---- performance: perf, max-throughput, train -----------------------------------------

DEVICES = typer.Option(None, "--devices", help="Devices in the deployment (default: one node of the hardware).")
TP = typer.Option(None, "--tp", help="Tensor parallel degree. Default: dense models TP over all devices; MoE models "
                                    "the smallest TP at which the batch fits (TP=1 = DP-attention when it fits); "
                                    "max-throughput tries every valid TP and keeps the best.")
EP = typer.Option(None, "--ep", help="Expert parallel degree (default: the largest that divides devices and experts).")
PP = typer.Option(1, "--pp", help="Pipeline parallel degree.")
WDT = typer.Option("bf16", "--weight-dtype", help="bf16, fp8, int8, int4, int4-g32, mxfp4, ...")
KVDT = typer.Option("bf16", "--kv-dtype", help="bf16, fp8, int4-g32, flashmla-fp8, or bits (6).")
MLA = typer.Option("auto", "--mla-form", help="MLA form: absorbed, naive, or auto (faster per phase).")
IMB = typer.Option(1.0, "--imbalance", help="MoE load imbalance: busiest EP rank over mean (>= 1).")
OVL = typer.Option(False, "--overlap/--no-overlap", help="Overlap communication with compute.")
BLOCK = typer.Option(None, "--block-size", help="Paged KV cache block size (tokens).")


def _perf_deployment(spec, hw, devices, tp, ep, pp, weight_dtype, kv_dtype, mla_form, imbalance, overlap, block_size,
                     batch=1, context=0):
    """Deployment for perf / max-throughput / plots; the default layout must fit ``batch``
    sequences of ``context`` tokens (see ``_deployment``)."""
    from costsim.specs import MoEFFN

    if mla_form not in ("auto", "absorbed", "naive"):
        raise CostsimError(f"--mla-form: expected auto, absorbed or naive, got {mla_form!r}")
    n = hw.devices_per_node if devices is None else devices
    if not (1 <= imbalance < float("inf")):
        raise CostsimError(f"--imbalance must be a finite number >= 1 (busiest rank over mean), got {imbalance}")
    if imbalance != 1 and not isinstance(spec.ffn, MoEFFN):
        raise CostsimError(f"--imbalance applies to MoE models only; {spec.name} is dense")
    wf = _format(weight_dtype, "--weight-dtype")
    dispatch = 1.0 if wf.compute == "fp8" else 2.0  # FP8 dispatch, BF16 combine (DeepSeek Day-6 overview)
    dep = _deployment(spec, n, tp, ep, pp, weight_dtype, kv_dtype, hw, batch, context, mla_form=mla_form,
                      imbalance=imbalance, overlap_comm=overlap, block_size=block_size, dispatch_bytes=dispatch,
                      combine_bytes=2.0).check(spec)
    if isinstance(spec.ffn, MoEFFN) and imbalance > dep.ep:
        raise CostsimError(f"--imbalance {imbalance:g} exceeds --ep {dep.ep}: the busiest rank carries at most ep x the mean")
    return dep


def _context_warning(spec, tokens: int) -> None:
    """Warn (stderr, not an error) when a context exceeds the model's published maximum."""
    if spec.max_position_embeddings and tokens > spec.max_position_embeddings:
        _WARNINGS.append(f"{tokens} tokens exceed {spec.name}'s max_position_embeddings "
                         f"({spec.max_position_embeddings}); figures are extrapolated")


def _breakdown_records(timing, scale_tokens):
    """Operator table rows: time per step (all occurrences), FLOPs, bytes, bound, intensity."""
    import numpy as np

    rows = []
    for t in timing.timings:
        o = t.op
        rows.append(dict(op=o.name, kind=o.kind, count=o.count, time_s=float(np.asarray(t.total_s)),
                         flops=float(np.asarray(o.flops) * o.count), bytes=float(np.asarray(o.bytes_moved) * o.count),
                         comm_bytes=float(np.asarray(o.comm_bytes) * o.count),
                         intensity=None if o.kind == "comm" else float(np.asarray(o.intensity)),
                         bound=str(t.bound)))
    return rows


@app.command("perf")
def perf_cmd(model: str = typer.Argument(...),
             hardware: str = typer.Option(..., "--hardware", "-H"),
             devices: Optional[int] = DEVICES, tp: Optional[int] = TP, ep: Optional[int] = EP, pp: int = PP,
             batch: str = typer.Option("1", "--batch", help="Concurrent requests over all the devices."),
             input_len: str = typer.Option("4096", "--input", help="Prompt tokens (k = 1024)."),
             output_len: str = typer.Option("1024", "--output", help="Generated tokens (k = 1024)."),
             weight_dtype: str = WDT, kv_dtype: str = KVDT, mla_form: str = MLA, imbalance: float = IMB,
             overlap: bool = OVL, block_size: Optional[int] = BLOCK,
             breakdown: bool = typer.Option(False, "--breakdown", help="Per-operator table (prefill and first decode step)."),
             sets: Optional[List[str]] = SET, hw_sets: Optional[List[str]] = HWSET, fmt: Fmt = FORMAT):
    """Prefill (TTFT) and decode (TPOT) of a batch of requests on a parallel layout."""

    def go():
        from costsim.reports import format as F
        from costsim.simulator.serving import serve

        spec, hw = _model(model, sets), _hw(hardware, hw_sets)
        b = _count(batch, "--batch", minimum=1)
        i = _count(input_len, "--input", minimum=1)
        o = _count(output_len, "--output")
        _context_warning(spec, i + o)
        dep = _perf_deployment(spec, hw, devices, tp, ep, pp, weight_dtype, kv_dtype, mla_form, imbalance, overlap,
                               block_size, b, i + o)
        r = serve(spec, hw, dep, b, i, o)
        m = r.memory
        rec = dict(
            model=spec.name, hardware=hw.name, devices=dep.devices, tp=dep.tp, ep=dep.ep, pp=dep.pp, dp=dep.dp,
            weight_dtype=dep.weight_format.name, kv_dtype=dep.kv_format.name, batch=b, input=i, output=o,
            ttft_s=r.ttft_s, tpot_s=r.tpot_s, tpot_last_s=r.tpot_last_s, e2e_s=r.e2e_s,
            prefill_tokens_per_s=r.prefill_tokens_per_s, prefill_tokens_per_s_per_device=r.prefill_tokens_per_s_per_device,
            decode_tokens_per_s=r.decode_tokens_per_s, decode_tokens_per_s_per_device=r.decode_tokens_per_s_per_device,
            decode_tokens_per_s_per_node=r.decode_tokens_per_s_per_device * hw.devices_per_node,
            combined_tokens_per_s=r.combined_tokens_per_s,
            prefill_mfu=float(r.prefill.mfu), decode_mbu=float(r.decode_first.mbu),
            prefill_mla_form=r.prefill.timing.mla_form, decode_mla_form=r.decode_first.timing.mla_form,
            weight_bytes_per_device=m.weight_bytes, kv_bytes_per_device=float(m.kv_bytes),
            workspace_bytes_per_device=float(m.workspace_bytes), memory_usable_bytes=m.usable_bytes,
            prefill_workspace_bytes_per_device=r.prefill_workspace_bytes, prefill_fits=r.prefill_fits,
            fits=bool(m.fits), max_batch=int(m.max_batch), max_batch_limit=m.limit)
        from costsim.simulator.roofline import rate_provenance

        rec["rates"] = rate_provenance(hw, dep.weight_format.compute)
        warn = [] if m.fits else [f"batch {b} does not fit in memory at {i + o} tokens (max batch {int(m.max_batch)})"]
        if not r.prefill_fits:
            warn.append(f"prefilling all {b} prompts in one step needs {r.prefill_workspace_bytes / 1e9:.1f} GB of "
                        "activations per device, more than is left; a real server would chunk the prefill")
        rec["warnings"] = warn
        _WARNINGS.extend(warn)
        from costsim.simulator.roofline import per_layer_seconds
        from costsim.specs import MLAAttention

        rec["decode_seconds_per_layer"] = per_layer_seconds(r.decode_first.timing, spec, dep.pp)
        rec["prefill_seconds_per_layer"] = per_layer_seconds(r.prefill.timing, spec, dep.pp)
        if isinstance(spec.attention, MLAAttention):
            from costsim.simulator.serving import mla_crossover

            x = mla_crossover(spec, hw, dep, b, i)
            rec.update(mla_decode_step_absorbed_s=x.decode_absorbed_s, mla_decode_step_naive_s=x.decode_naive_s,
                       mla_naive_faster_from_chunk_tokens=x.chunk_tokens)
        if o == 0:  # prefill only: no decode step happens, so no TPOT / decode utilisation
            rec.update(tpot_s=None, tpot_last_s=None, decode_mbu=None, decode_seconds_per_layer={})
        if breakdown:
            rec["prefill_operators"] = _breakdown_records(r.prefill.timing, b * i)
            rec["decode_operators"] = _breakdown_records(r.decode_first.timing, b)
        if fmt is Fmt.csv and breakdown:  # machines asking for the breakdown get the operator rows
            ops = [dict(phase=ph, **o) for ph in ("prefill", "decode") for o in rec[f"{ph}_operators"]]
            _emit(ops, [(k, k, F.text) for k in ops[0]], "csv")
            return
        if fmt is not Fmt.table:
            cols = [(k, k, F.text) for k in rec if not k.endswith(("_operators", "_per_layer")) and k not in ("rates", "warnings")]
            _emit([rec], cols, fmt.value, payload=rec)
            return
        rows = [
            ("ttft_s", "TTFT (prefill of the batch) [ms]", F.ms), ("tpot_s", "TPOT, mean over output [ms]", F.ms),
            ("tpot_last_s", "TPOT at the last token [ms]", F.ms), ("e2e_s", "end-to-end latency [s]", F.num),
            ("prefill_tokens_per_s", f"prefill [tokens/s, all {dep.devices} devices]", F.num),
            ("decode_tokens_per_s", f"decode [tokens/s, all {dep.devices} devices]", F.num),
            ("decode_tokens_per_s_per_device", "decode [tokens/s per device]", F.num),
            ("decode_tokens_per_s_per_node", f"decode [tokens/s per node of {hw.devices_per_node}]", F.num),
            ("combined_tokens_per_s", "prefill+decode on the same devices [output tokens/s]", F.num),
            ("prefill_mfu", "prefill MFU", F.pct), ("decode_mbu", "decode MBU (first step)", F.pct),
            ("prefill_mla_form", "MLA form prefill / decode", F.text),
            ("weight_bytes_per_device", "weights per device [GB]", F.scaled(1e9)),
            ("kv_bytes_per_device", "KV cache per device at input+output [GB]", F.scaled(1e9)),
            ("memory_usable_bytes", "usable memory per device [GB]", F.scaled(1e9)),
            ("max_batch", "max batch at input+output tokens", F.integer), ("max_batch_limit", "limited by", F.text)]
        for kind, sec in rec["decode_seconds_per_layer"].items():
            label = "embedding + LM head (once per step)" if kind == "once" else f"one {kind} layer"
            rec[f"_dl_{kind}"] = sec
            rows.append((f"_dl_{kind}", f"decode step: {label} [us]", F.scaled(1e-6)))
        if "mla_naive_faster_from_chunk_tokens" in rec:
            rec["_mla"] = f"{F.ms(rec['mla_decode_step_absorbed_s'])} / {F.ms(rec['mla_decode_step_naive_s'])}"
            rows += [("_mla", "MLA decode step absorbed / naive [ms]", F.text),
                     ("mla_naive_faster_from_chunk_tokens", f"MLA naive faster from query chunks of [tokens] (context {i})", F.integer)]
        from costsim.specs import MLAAttention as _MLA

        forms = f"{rec['prefill_mla_form']} / {rec['decode_mla_form']}" if isinstance(spec.attention, _MLA) else "n/a (not MLA)"
        rec2 = dict(rec, name="value", prefill_mla_form=forms)
        table, cols = F.transpose([rec2], rows)
        notes = []
        notes.append("Roofline estimate: time = max(FLOPs / achievable FLOP/s, bytes / achievable bandwidth) + overhead, "
                     "efficiency factors from the hardware profile.")
        def human(k, v):
            if k.startswith("peak_flops"):
                return f"{v / 1e12:g} TFLOP/s"
            if k.endswith("bandwidth"):
                return f"{v / 1e9:g} GB/s"
            return f"{v * 1e6:g} us" if k.endswith("overhead") else f"{v:g}"

        notes.append("Rates used (provenance): " + "; ".join(
            f"{k} {human(k, v['value'])} ({v['provenance']})" for k, v in rec["rates"].items()))
        _emit(table, cols, title=(f"{spec.name} on {dep.devices} x {hw.name} (tp={dep.tp} ep={dep.ep} pp={dep.pp} dp={dep.dp}; "
                                  f"weights {dep.weight_format.name}, KV {dep.kv_format.name}); batch {b}, {i} in -> {o} out"),
              notes=notes)
        if breakdown:
            for phase in ("prefill", "decode"):
                ops = rec[f"{phase}_operators"]
                cols = [("op", "operator", F.text), ("count", "x", F.integer), ("time_s", "time/step [us]", F.scaled(1e-6)),
                        ("flops", "FLOPs [GFLOP]", F.scaled(1e9)), ("bytes", "mem bytes [MB]", F.scaled(1e6)),
                        ("comm_bytes", "sent [MB]", F.scaled(1e6)), ("intensity", "FLOP/byte", F.num), ("bound", "bound", F.text)]
                _emit(ops, cols, title=f"{phase} operators per device ({'whole prompt' if phase == 'prefill' else 'first step'})")

    _run(go)


@app.command("max-throughput")
def max_throughput_cmd(model: str = typer.Argument(...),
                       hardware: str = typer.Option(..., "--hardware", "-H"),
                       devices: Optional[int] = DEVICES, tp: Optional[int] = TP, ep: Optional[int] = EP, pp: int = PP,
                       context: str = typer.Option("4096", "--context", help=CONTEXT_HELP),
                       tpot_slo: Optional[str] = typer.Option(None, "--tpot-slo", help="TPOT limit, e.g. 50ms."),
                       weight_dtype: str = WDT, kv_dtype: str = KVDT, mla_form: str = MLA, imbalance: float = IMB,
                       overlap: bool = OVL, block_size: Optional[int] = BLOCK,
                       sets: Optional[List[str]] = SET, hw_sets: Optional[List[str]] = HWSET, fmt: Fmt = FORMAT):
    """The decode batch that maximises tokens/s under memory and an optional TPOT SLO."""

    def go():
        from costsim.reports import format as F
        from costsim.simulator.serving import max_throughput
        from costsim.units import parse_time

        spec, hw = _model(model, sets), _hw(hardware, hw_sets)
        ctx = _count(context, "--context", minimum=1)
        _context_warning(spec, ctx)
        dep = _perf_deployment(spec, hw, devices, tp, ep, pp, weight_dtype, kv_dtype, mla_form, imbalance, overlap,
                               block_size, 1, ctx)
        slo = None
        if tpot_slo is not None:
            slo = _slo(tpot_slo)
            if slo <= 0:
                raise CostsimError(f"--tpot-slo must be > 0, got {tpot_slo!r}")
        from costsim.simulator.serving import SLOError

        try:
            if tp is None:  # the layout is part of the answer: try every valid TP
                from costsim.reports.summary import valid_tp
                from costsim.simulator.serving import best_max_throughput

                cands = [dep.with_(tp=t) for t in valid_tp(spec, dep.devices // dep.pp)]
                dep, r = best_max_throughput(spec, hw, cands, ctx, slo)
            else:
                r = max_throughput(spec, hw, dep, ctx, slo)
        except SLOError as e:
            raise CostsimError(f"--tpot-slo {tpot_slo}: {e}") from None
        rec = dict(model=spec.name, hardware=hw.name, devices=dep.devices, tp=dep.tp, ep=dep.ep, pp=dep.pp,
                   weight_dtype=dep.weight_format.name, kv_dtype=dep.kv_format.name, context=ctx, tpot_slo_s=slo,
                   batch=r.batch, tpot_s=r.tpot_s, tokens_per_s=r.tokens_per_s,
                   tokens_per_s_per_device=r.tokens_per_s_per_device,
                   tokens_per_s_per_node=r.tokens_per_s_per_device * hw.devices_per_node,
                   max_batch_memory=r.max_batch_memory, limit=r.limit)
        if fmt is not Fmt.table:
            _emit([rec], [(k, k, F.text) for k in rec], fmt.value, payload=rec)
            return
        rows = [("batch", "best batch [sequences]", F.integer), ("tpot_s", "TPOT [ms]", F.ms),
                ("tokens_per_s", f"decode [tokens/s, all {dep.devices} devices]", F.num),
                ("tokens_per_s_per_device", "decode [tokens/s per device]", F.num),
                ("max_batch_memory", "max batch that fits in memory", F.integer), ("limit", "limited by", F.text)]
        table, cols = F.transpose([dict(rec, name="value")], rows)
        slo_txt = f", TPOT <= {slo * 1e3:g} ms" if slo else ""
        _emit(table, cols, title=(f"max decode throughput: {spec.name} on {dep.devices} x {hw.name} (tp={dep.tp} ep={dep.ep}; "
                                  f"weights {dep.weight_format.name}, KV {dep.kv_format.name}), context {ctx}{slo_txt}"))

    _run(go)


@app.command("train")
def train_cmd(model: str = typer.Argument(...),
              hardware: str = typer.Option(..., "--hardware", "-H"),
              tokens: str = typer.Option(..., "--tokens", help="Training tokens, decimal: 8.1T = 8.1e12."),
              seq_len: str = typer.Option("4096", "--seq-len", help="Sequence length (k = 1024)."),
              mfu: Optional[float] = typer.Option(None, "--mfu", help="Model FLOPs utilisation in (0, 1] -> GPU-hours."),
              gpu_hours: Optional[str] = typer.Option(None, "--gpu-hours", help="Published GPU-hours (2.788M) -> implied MFU."),
              dtype: str = typer.Option("bf16", "--dtype", help="Peak the MFU refers to (bf16 as in ISCA 2025 Table 4)."),
              sets: Optional[List[str]] = SET, hw_sets: Optional[List[str]] = HWSET, fmt: Fmt = FORMAT):
    """Training FLOPs per token, GPU-hours at an MFU, or the MFU implied by GPU-hours."""

    def go():
        from costsim.reports import format as F
        from costsim.simulator.training import train_cost

        spec, hw = _model(model, sets), _hw(hardware, hw_sets)
        n_tok = _count(tokens, "--tokens", binary_k=False, minimum=1)
        s = _count(seq_len, "--seq-len", minimum=1)
        _context_warning(spec, s)
        from costsim.units import parse_count

        gh = None if gpu_hours is None else _parse(parse_count, gpu_hours, "--gpu-hours")
        r = train_cost(spec, hw, seq_len=s, tokens=n_tok, mfu=mfu, gpu_hours=gh, dtype=dtype)
        rec = dict(model=spec.name, hardware=hw.name, seq_len=s, tokens=n_tok, training_flops_per_token=r.flops_per_token,
                   total_flops=r.total_flops, peak_flops=r.peak_flops, dtype=dtype, mfu=r.mfu, gpu_hours=r.gpu_hours,
                   gpu_hours_per_trillion_tokens=r.gpu_hours_per_trillion_tokens,
                   tokens_per_s_per_device=r.tokens_per_s_per_device, mfu_given=mfu is not None)
        if fmt is not Fmt.table:
            _emit([rec], [(k, k, F.text) for k in rec], fmt.value, payload=rec)
            return
        rows = [("training_flops_per_token", f"training FLOPs/token at seq {s} [GFLOP]", F.num_scaled_g),
                ("total_flops", "total training FLOPs [FLOP]", lambda v: f"{v:.4g}"),
                ("mfu", "MFU" + (" (given)" if mfu is not None else " (implied)"), F.pct),
                ("gpu_hours", "GPU-hours" + (" (given)" if gh else ""), F.integer),
                ("gpu_hours_per_trillion_tokens", "GPU-hours per 1e12 tokens", F.num),
                ("tokens_per_s_per_device", "tokens/s per device", F.num)]
        table, cols = F.transpose([dict(rec, name="value")], rows)
        _emit(table, cols, title=f"training {spec.name} on {hw.name} ({dtype} dense peak {r.peak_flops / 1e12:g} TFLOP/s), "
                                 f"{n_tok:.4g} tokens",
              notes=["training FLOPs/token = 3 x forward (2 x activated matmul params + causal attention), logits for every token."])

    _run(go)

# ---- plots ----------------------------------------------------------------------------

plot_app = typer.Typer(no_args_is_help=True, help="Comparison plots (PNG, SVG or PDF; matplotlib).")
app.add_typer(plot_app, name="plot")
OUT = typer.Option(..., "--output", "-o", help="Plot file: .png, .svg or .pdf.")


@plot_app.command("throughput")
def plot_throughput_cmd(models: List[str] = typer.Argument(...),
                        hardware: str = typer.Option(..., "--hardware", "-H"),
                        devices: Optional[int] = DEVICES,
                        context: str = typer.Option("4096", "--context", help=CONTEXT_HELP),
                        tpot_slo: Optional[str] = typer.Option(None, "--tpot-slo", help="Draw an SLO line, e.g. 50ms."),
                        weight_dtype: str = WDT, kv_dtype: str = KVDT,
                        output: Path = OUT, sets: Optional[List[str]] = SET, hw_sets: Optional[List[str]] = HWSET):
    """Decode throughput per device against TPOT, batch swept up to the memory limit."""

    def go():
        from costsim.reports.plots import check_output, throughput_latency
        from costsim.simulator.serving import max_throughput
        from costsim.units import parse_time

        path = check_output(output)
        hw = _hw(hardware, hw_sets)
        ctx = _count(context, "--context", minimum=1)
        slo = None if tpot_slo is None else _slo(tpot_slo)
        curves = []
        for m in models:
            spec = _model(m, sets)
            dep = _perf_deployment(spec, hw, devices, None, None, 1, weight_dtype, kv_dtype, "auto", 1.0, False, None)
            r = max_throughput(spec, hw, dep, ctx)
            curves.append(dict(label=f"{spec.name} (tp={dep.tp} ep={dep.ep})", tpot_s=r.curve_tpot_s,
                               tokens_per_s_per_device=r.curve_tokens_per_s / dep.devices))
        throughput_latency(curves, path, f"decode on {hw.name}, context {ctx}, weights {weight_dtype}, KV {kv_dtype}", slo)
        print(f"wrote {path}", file=sys.stderr)

    _run(go)


@plot_app.command("roofline")
def plot_roofline_cmd(model: str = typer.Argument(...),
                      hardware: str = typer.Option(..., "--hardware", "-H"),
                      devices: Optional[int] = DEVICES, tp: Optional[int] = TP, ep: Optional[int] = EP,
                      batch: str = typer.Option("64", "--batch"),
                      context: str = typer.Option("4096", "--context", help=CONTEXT_HELP),
                      weight_dtype: str = WDT, kv_dtype: str = KVDT,
                      output: Path = OUT, sets: Optional[List[str]] = SET, hw_sets: Optional[List[str]] = HWSET):
    """Operators of one decode step placed on the hardware's roofline."""

    def go():
        import numpy as np

        from costsim.reports.plots import check_output, roofline
        from costsim.simulator.serving import decode

        path = check_output(output)
        spec, hw = _model(model, sets), _hw(hardware, hw_sets)
        dep = _perf_deployment(spec, hw, devices, tp, ep, 1, weight_dtype, kv_dtype, "auto", 1.0, False, None)
        b = _count(batch, "--batch", minimum=1)
        ctx = _count(context, "--context")
        from costsim.simulator.memory import require_fit

        require_fit(spec, hw, dep)
        t = decode(spec, hw, dep, b, ctx).timing
        step = float(np.asarray(t.time_s))
        # operators that take at least 1% of the step (the one-off dense layers would only clutter)
        pts = [dict(label=x.op.name, intensity=float(np.asarray(x.op.intensity)),
                    flops_per_s=float(np.asarray(x.op.flops)) / float(np.asarray(x.time_s)))
               for x in t.timings if x.op.kind != "comm" and float(np.asarray(x.op.flops)) > 0
               and float(np.asarray(x.total_s)) >= 0.01 * step]
        peak = hw.peak(dep.weight_format.compute) * hw.efficiency.compute.value
        bw = hw.memory_bandwidth.value * hw.efficiency.memory.value
        roofline(pts, peak, bw, path, f"{spec.name} decode, batch {b}, context {ctx} on {hw.name} ({dep.weight_format.name})")
        print(f"wrote {path}", file=sys.stderr)

    _run(go)


@plot_app.command("kv")
def plot_kv_cmd(models: List[str] = typer.Argument(...),
                max_context: str = typer.Option("128k", "--max-context", help=CONTEXT_HELP),
                batch: str = typer.Option("1", "--batch"), kv_dtype: str = KVDT,
                output: Path = OUT, sets: Optional[List[str]] = SET):
    """KV cache size against context length for several models."""

    def go():
        import numpy as np

        from costsim.reports.plots import check_output, kv_vs_context
        from costsim.simulator.kv import kv_cache_bytes

        path = check_output(output)
        top = _count(max_context, "--max-context", minimum=1)
        b = _count(batch, "--batch", minimum=1)
        fmt = _format(kv_dtype, "--kv-dtype")
        ctx = np.linspace(0, top, 257)
        specs = [_model(m, sets) for m in models]
        for spec in specs:
            _check_kv_layout(spec, fmt, kv_dtype)
        series = [dict(label=spec.name, context=ctx, kv_bytes=kv_cache_bytes(spec, fmt, ctx, b)) for spec in specs]
        kv_vs_context(series, path, f"KV cache, batch {b}, {fmt.name}")
        print(f"wrote {path}", file=sys.stderr)

    _run(go)


def main() -> None:
    """Console-script entry point: usage errors (missing option, bad integer, unknown
    command) are printed as one line on stderr with exit code 2, like every user mistake."""
    try:
        rv = app(standalone_mode=False)
    except BrokenPipeError:  # `costsim ... | head`: the reader left, nothing went wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except OSError as e:  # stdout on a full disk, etc.
        print(f"costsim: error: cannot write output: {e.strerror or e}", file=sys.stderr)
        sys.exit(1)
    except typer.Abort:
        print("costsim: aborted", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # click/typer usage errors carry format_message() and exit_code
        if not hasattr(e, "format_message"):
            raise
        ctx = getattr(e, "ctx", None)
        path = ctx.command_path if ctx is not None else "costsim"
        cmd = path[len(path.split(" ")[0]):]  # " perf", " plot kv", or "" at the top level
        msg = e.format_message().replace("\n", " ").strip()
        if not msg:  # no arguments: the help was printed, nothing went wrong
            sys.exit(0)
        print(f"costsim{cmd}: error: {msg} (see costsim{cmd} --help)", file=sys.stderr)
        sys.exit(getattr(e, "exit_code", 2))
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
