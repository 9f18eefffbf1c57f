"""Commands that cost a deployment: compare, perf, max-throughput, train.

Each command: parse flags -> one engine call (``costsim.simulator.scenario``) -> view. The
layout policy, format choices and feasibility checks are the engine's.
"""

from __future__ import annotations

from typing import Optional

import typer

from costsim.cli import options as O
from costsim.cli.app import app
from costsim.errors import CostsimError


@app.command("compare")
def compare_cmd(models: O.Models, hardware: O.Hardware, context: O.Context = "4096", batch: O.Batch = "1",
                devices: O.Devices = None, weight_dtype: O.WeightDtype = None, kv_dtype: O.KVDtype = "bf16",
                sets: O.Sets = None, hw_sets: O.HwSets = None, price: O.Price = None, fmt: O.Format = O.Fmt.table):
    """Side by side: params, activated params, KV per token and per batch, FLOPs per token,
    decode tokens/s and max batch on one replica (default: one node of the hardware; MoE
    models as DP-attention + EP, dense models with TP)."""

    def go():
        from costsim.reports import views
        from costsim.simulator.scenario import compare

        hw = O.priced(O.hardware(hardware, hw_sets), price)
        ctx, b = O.count(context, "--context", minimum=1), O.count(batch, "--batch", minimum=1)
        specs = [O.model(m, sets) for m in models]
        req = O.layout(devices, weight_dtype=weight_dtype, kv_dtype=kv_dtype)
        recs = compare(specs, hw, req, ctx, b)
        views.compare([r.to_dict() for r in recs], fmt.value, recs[0].devices)
        return [w for r in recs for w in r.warnings]

    O.run(go)


@app.command("perf")
def perf_cmd(model: O.Model, hardware: O.Hardware, devices: O.Devices = None, tp: O.TP = None, ep: O.EP = None,
             pp: O.PP = None, batch: str = typer.Option("1", "--batch", help="Concurrent requests over all the devices."),
             input_len: str = typer.Option("4096", "--input", help="Prompt tokens (k = 1024)."),
             output_len: str = typer.Option("1024", "--output", help="Generated tokens (k = 1024)."),
             weight_dtype: O.WeightDtype = None, kv_dtype: O.KVDtype = "bf16", mla_form: O.MLAForm = "auto",
             imbalance: O.Imbalance = 1.0, overlap: O.Overlap = False, block_size: O.BlockSize = None, mtp: O.MTP = 0, mtp_acceptance: O.MTPAcceptance = None,
             prefix_hit: O.PrefixHit = 0.0, redundant: O.Redundant = 0, ep_kernel: O.EPKernel = "normal", tbo: O.TBO = False, draft: O.Draft = None,
             deepep_max_tokens: O.DeepEPMaxTokens = 128, deepep_nvlink: O.DeepEPNVLink = False,
             breakdown: bool = typer.Option(False, "--breakdown", help="Per-operator table (prefill and first decode "
                                                                       "step)."),
             sets: O.Sets = None, hw_sets: O.HwSets = None, price: O.Price = None, fmt: O.Format = O.Fmt.table):
    """Prefill (TTFT) and decode (TPOT) of a batch of requests on a parallel layout."""

    def go():
        from costsim.reports import views
        from costsim.simulator.scenario import Scenario, perf

        spec, hw = O.model(model, sets), O.priced(O.hardware(hardware, hw_sets), price)
        b, i, o = O.lengths(batch, input_len, output_len)
        req = O.layout(devices, tp, ep, pp, weight_dtype, kv_dtype, mla_form, imbalance, overlap, block_size, mtp,
                       mtp_acceptance, prefix_hit, redundant, ep_kernel, tbo, draft, deepep_max_tokens,
                       deepep_nvlink)
        rec = perf(Scenario(spec, hw, req, b, i, o), breakdown=breakdown)
        views.perf(rec.to_dict(), fmt.value, breakdown)
        return rec.warnings

    O.run(go)


@app.command("max-throughput")
def max_throughput_cmd(model: O.Model, hardware: O.Hardware, devices: O.Devices = None, tp: O.TP = None,
                       ep: O.EP = None, pp: O.PP = None, context: O.Context = "4096", tpot_slo: O.TpotSlo = None,
                       weight_dtype: O.WeightDtype = None, kv_dtype: O.KVDtype = "bf16",
                       mla_form: O.MLAForm = "auto", imbalance: O.Imbalance = 1.0, overlap: O.Overlap = False,
                       block_size: O.BlockSize = None, mtp: O.MTP = 0, mtp_acceptance: O.MTPAcceptance = None,
                       prefix_hit: O.PrefixHit = 0.0, redundant: O.Redundant = 0, ep_kernel: O.EPKernel = "normal", tbo: O.TBO = False, draft: O.Draft = None,
                       deepep_max_tokens: O.DeepEPMaxTokens = 128, deepep_nvlink: O.DeepEPNVLink = False,
                       sets: O.Sets = None, hw_sets: O.HwSets = None, price: O.Price = None, fmt: O.Format = O.Fmt.table):
    """The decode batch that maximises tokens/s under memory and an optional TPOT SLO."""

    def go():
        from costsim.reports import views
        from costsim.simulator.scenario import max_throughput_record

        spec, hw = O.model(model, sets), O.priced(O.hardware(hardware, hw_sets), price)
        ctx = O.count(context, "--context", minimum=1)
        slo = O.slo(tpot_slo)
        req = O.layout(devices, tp, ep, pp, weight_dtype, kv_dtype, mla_form, imbalance, overlap, block_size, mtp,
                       mtp_acceptance, prefix_hit, redundant, ep_kernel, tbo, draft, deepep_max_tokens,
                       deepep_nvlink)
        rec = max_throughput_record(spec, hw, req, ctx, slo)
        views.max_throughput(rec.to_dict(), fmt.value)
        return rec.warnings

    O.run(go, given={"tpot_slo_s": tpot_slo})


@app.command("rate")
def rate_cmd(model: O.Model, hardware: O.Hardware,
             rate: str = typer.Option(..., "--rate", help="Offered request rates, requests/s, comma-separated."),
             devices: O.Devices = None, tp: O.TP = None, ep: O.EP = None, pp: O.PP = None,
             input_len: str = typer.Option("4096", "--input", help="Prompt tokens per request (k = 1024)."),
             output_len: str = typer.Option("1024", "--output", help="Generated tokens per request (k = 1024)."),
             weight_dtype: O.WeightDtype = None, kv_dtype: O.KVDtype = "bf16", mla_form: O.MLAForm = "auto",
             imbalance: O.Imbalance = 1.0, overlap: O.Overlap = False, block_size: O.BlockSize = None,
             mtp: O.MTP = 0, mtp_acceptance: O.MTPAcceptance = None, prefix_hit: O.PrefixHit = 0.0,
             redundant: O.Redundant = 0, ep_kernel: O.EPKernel = "normal", tbo: O.TBO = False,
             draft: O.Draft = None, deepep_max_tokens: O.DeepEPMaxTokens = 128,
             deepep_nvlink: O.DeepEPNVLink = False,
             chunked: Optional[str] = typer.Option(None, "--chunked-prefill", help="Sarathi-Serve chunked prefill: "
                                                   "tokens per step (decode tokens + a prompt chunk), e.g. 2048."),
             sets: O.Sets = None, hw_sets: O.HwSets = None, fmt: O.Format = O.Fmt.table):
    """TTFT, TPOT and the running batch of continuous batching at offered request rates."""

    def go():
        from costsim.reports import views
        from costsim.simulator.scheduling import rate_records

        spec, hw = O.model(model, sets), O.hardware(hardware, hw_sets)
        i = O.count(input_len, "--input", minimum=1)
        o = O.count(output_len, "--output", minimum=1)
        budget = None
        if chunked is not None:
            if not chunked.strip().isdigit() or int(chunked) < 1:
                raise CostsimError(f"--chunked-prefill {chunked!r}: expected a whole number of tokens per step >= 1, "
                                   "e.g. 2048")
            budget = int(chunked)
        rates = []
        for t in O.items(rate, "--rate"):
            try:
                v = float(t)
            except ValueError:
                v = float("nan")
            if not (0 < v < float("inf")):
                raise CostsimError(f"--rate {t!r}: expected request rates > 0 per second, e.g. 0.5,2,8")
            rates.append(v)
        req = O.layout(devices, tp, ep, pp, weight_dtype, kv_dtype, mla_form, imbalance, overlap, block_size, mtp,
                       mtp_acceptance, prefix_hit, redundant, ep_kernel, tbo, draft, deepep_max_tokens,
                       deepep_nvlink)
        head, recs = rate_records(spec, hw, req, rates, i, o, budget)
        views.rate(recs, head, fmt.value)

    O.run(go, given={"chunked_prefill": chunked})


@app.command("train")
def train_cmd(model: O.Model, hardware: O.Hardware,
              tokens: str = typer.Option(..., "--tokens", help="Training tokens, decimal: 8.1T = 8.1e12."),
              seq_len: str = typer.Option("4096", "--seq-len", help="Sequence length (k = 1024)."),
              mfu: Optional[float] = typer.Option(None, "--mfu", help="Model FLOPs utilisation in (0, 1] -> GPU-hours."),
              gpu_hours: Optional[str] = typer.Option(None, "--gpu-hours",
                                                      help="Published GPU-hours (2.788M) -> implied MFU."),
              dtype: str = typer.Option("bf16", "--dtype", help="Peak the MFU refers to (bf16 as in ISCA 2025 Table 4)."),
              devices: Optional[int] = typer.Option(None, "--devices", help="Devices training together -> wall-clock "
                                                                            "days (GPU-hours / devices / 24)."),
              attention_flops: str = typer.Option("causal", "--attention-flops", help="FLOP convention of the "
                                                  "attention core: causal (s(s+1)/2 pairs) or full (s^2 pairs, as "
                                                  "DeepSeekMoE's FLOPs per 4K tokens and ISCA 2025's non-causal MFU)."),
              sets: O.Sets = None, hw_sets: O.HwSets = None, price: O.Price = None, fmt: O.Format = O.Fmt.table):
    """Training FLOPs per token, GPU-hours at an MFU, or the MFU implied by GPU-hours."""

    def go():
        from costsim.reports import views
        from costsim.simulator.scenario import train
        from costsim.units import parse_count

        if (mfu is None) == (gpu_hours is None):
            raise O.CostsimError("give exactly one of --mfu (to get GPU-hours) or --gpu-hours (to get the implied MFU)")
        spec, hw = O.model(model, sets), O.priced(O.hardware(hardware, hw_sets), price)
        n_tok = O.count(tokens, "--tokens", binary_k=False, minimum=1)
        s = O.count(seq_len, "--seq-len", minimum=1)
        gh = None if gpu_hours is None else O.parse(parse_count, gpu_hours, "--gpu-hours")
        if attention_flops not in ("causal", "full"):
            raise O.CostsimError(f"--attention-flops {attention_flops}: expected causal or full")
        rec = train(spec, hw, seq_len=s, tokens=n_tok, mfu=mfu, gpu_hours=gh, dtype=dtype, devices=devices,
                    causal=attention_flops == "causal")
        views.train(rec.to_dict(), fmt.value)
        return rec.warnings

    O.run(go, given={"gpu_hours": gpu_hours, "devices": None if devices is None else str(devices)})
