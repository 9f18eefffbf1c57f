"""``costsim plan``: the cheapest deployments of a model on some hardware under latency SLOs
(``costsim.simulator.planner``), ranked by USD per million output tokens."""

from __future__ import annotations

import io
from pathlib import Path
from typing import List, Optional

import typer

from costsim.cli import options as O
from costsim.cli.app import app
from costsim.errors import CostsimError


def _priced(hws: list, texts: list[str] | None) -> list:
    """Each profile with the ``--price`` that names it (NAME=PRICE) or the one for all (PRICE)."""
    if not texts:
        return hws
    names = [h.name for h in hws]
    for t in texts:
        name, eq, value = t.partition("=")
        if eq and name.strip().lower() not in names:
            raise CostsimError(f"--price {t}: no hardware {name.strip()!r} among --hardware {', '.join(names)}")
    out = []
    for h in hws:
        for t in texts:
            name, eq, value = t.partition("=")
            if not eq or name.strip().lower() == h.name:
                h = O.priced(h, value if eq else t)
        out.append(h)
    return out


def search_lists(weight_dtype: str | None, kv_dtype: str, pp: str) -> tuple[list | None, list, list[int]]:
    """The comma-separated --weight-dtype (None: the checkpoint's), --kv-dtype and --pp lists a
    search command tries, each item checked (CostsimError naming the flag and item)."""
    from costsim.units import parse_format

    wds = None if weight_dtype is None else O.items(weight_dtype, "--weight-dtype")
    kvs = O.items(kv_dtype, "--kv-dtype")
    for flag, names in (("--weight-dtype", wds or []), ("--kv-dtype", kvs)):
        for name in names:
            O.parse(parse_format, name, f"{flag} {name}")
    return wds, kvs, [O.count(t, "--pp", minimum=1) for t in O.items(pp, "--pp")]


@app.command("plan")
def plan_cmd(model: O.Model,
             hardware: str = typer.Option(..., "--hardware", "-H", help="Hardware to compare (comma-separated names "
                                                                        "or profile .yaml)."),
             context: str = typer.Option("4096", "--context", help="Prompt tokens per request (k = 1024)."),
             output_len: str = typer.Option("1024", "--output", help="Output tokens per request (k = 1024)."),
             tpot_slo: O.TpotSlo = None,
             ttft_slo: Optional[str] = typer.Option(None, "--ttft-slo", help="TTFT limit with a unit, e.g. 2s (the "
                                                                             "prefill of the whole batch)."),
             target: Optional[str] = typer.Option(None, "--target-tokens-per-s", help="Output tokens/s the fleet must "
                                                  "deliver, decimal (1M = 1e6) -> replicas needed."),
             users: Optional[str] = typer.Option(None, "--users", help="Concurrent requests, decimal (10k = 1e4) -> "
                                                                       "replicas needed."),
             max_devices: int = typer.Option(64, "--max-devices", help="Most devices in one replica."),
             weight_dtype: Optional[str] = typer.Option(None, "--weight-dtype", help="Weight formats to try "
                                                        "(comma-separated; default: the checkpoint's, and fp8 where "
                                                        "the hardware has it)."),
             kv_dtype: str = typer.Option("bf16,fp8", "--kv-dtype", help="KV cache formats to try (comma-separated)."),
             pp: str = typer.Option("1,2,4", "--pp", help="PP degrees to try (comma-separated)."),
             top: int = typer.Option(10, "--top", help="How many plans to find and show."),
             ep_kernel: O.EPKernel = "normal", tbo: O.TBO = False, mtp: O.MTP = 0,
             mtp_acceptance: O.MTPAcceptance = None, draft: O.Draft = None,
             deepep_max_tokens: O.DeepEPMaxTokens = 128, deepep_nvlink: O.DeepEPNVLink = False,
             price: Optional[List[str]] = typer.Option(None, "--price", help="Price per device-hour with its unit: "
                                                       "2.5USD/h for every profile, or NAME=2.5USD/h for one "
                                                       "(repeatable; default: each profile's price_per_device_hour)."),
             out: Optional[Path] = typer.Option(None, "-o", "--out", help="Write the output (in --format) to this file."),
             force: O.Force = False, sets: O.Sets = None, hw_sets: O.HwSets = None, fmt: O.Format = O.Fmt.table):
    """Search device counts, TP/EP/PP/DP layouts and weight/KV formats for the deployments that
    meet the SLOs, each at its largest such batch, and rank them by USD per 1M output tokens."""

    def go():
        from costsim.files import atomic_write_text
        from costsim.reports import views
        from costsim.simulator.planner import plan
        from costsim.units import parse_count

        if out is not None:
            O.check_new(out, force)
        if target is not None and users is not None:
            raise CostsimError("give --target-tokens-per-s or --users, not both")
        spec = O.model(model, sets)
        hws = _priced([O.hardware(h, hw_sets) for h in O.items(hardware, "--hardware")], price)
        i, o = O.count(context, "--context", minimum=1), O.count(output_len, "--output", minimum=1)
        rate = None if target is None else O.parse(parse_count, target, "--target-tokens-per-s")
        if rate is not None and not 0 < rate < float("inf"):
            raise CostsimError(f"--target-tokens-per-s {target}: must be > 0")
        n_users = None if users is None else O.count(users, "--users", binary_k=False, minimum=1)
        if max_devices < 1:
            raise CostsimError(f"--max-devices {max_devices}: must be an integer >= 1")
        if top < 1:
            raise CostsimError(f"--top {top}: must be an integer >= 1")
        wds, kvs, pps = search_lists(weight_dtype, kv_dtype, pp)
        result = plan(spec, hws, i, o, tpot_slo_s=O.slo(tpot_slo), ttft_slo_s=O.slo(ttft_slo, "--ttft-slo"),
                      target_tokens_per_s=rate, users=n_users, max_devices=max_devices, weight_dtypes=wds,
                      kv_dtypes=tuple(kvs), pp=tuple(pps), top=top,
                      base=O.layout(mtp=mtp, mtp_acceptance=mtp_acceptance, ep_kernel=ep_kernel, tbo=tbo, draft=draft,
                                     deepep_max_tokens=deepep_max_tokens, deepep_nvlink=deepep_nvlink))
        if out is None:
            views.plan(result.to_dict(), fmt.value)
        else:
            buf = io.StringIO()
            views.plan(result.to_dict(), fmt.value, out=buf)
            atomic_write_text(out, buf.getvalue())
        from costsim.simulator.scenario import context_warnings

        warn = context_warnings(spec, i + o)
        # EP modes that no layout shown uses: every row the search kept has ep = 1
        if result.rows and all(r.ep == 1 for r in result.rows):
            if O.ep_kernel_name(ep_kernel) != "normal":
                warn.append(f"--ep-kernel {ep_kernel} has no effect on the layouts shown: all have ep=1 (no EP all-to-all)")
            if deepep_nvlink:
                warn.append("--deepep-nvlink has no effect on the layouts shown: all have ep=1")
        return warn

    O.run(go, given={"tpot_slo_s": tpot_slo, "ttft_slo_s": ttft_slo, "max_devices": str(max_devices)})
