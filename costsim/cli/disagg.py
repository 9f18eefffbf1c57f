"""``costsim disagg``: disaggregated prefill/decode pools of a model on one hardware profile
(``costsim.simulator.disagg``): each pool's best layout, the prefill:decode ratio, the pools
for a request rate, the KV transfer, and the colocated planner's best beside them."""

from __future__ import annotations

from typing import List, Optional

import typer

from costsim.cli import options as O
from costsim.cli.app import app
from costsim.cli.plan import search_lists
from costsim.errors import CostsimError, FieldError

_POOL = "A given {role} layout instead of the search ({what}; formats still searched)."


def _opt(flag: str, role: str, what: str):
    return typer.Option(None, flag, help=_POOL.format(role=role, what=what))


def _flag(text: str) -> bool:
    t = text.strip().lower()
    if t not in ("true", "false", "on", "off", "yes", "no", "1", "0"):
        raise ValueError(text)
    return t in ("true", "on", "yes", "1")


# --prefill-set / --decode-set NAME=VALUE: a layout flag (without its dashes) for one pool only
POOL_FLAGS = {"mtp": ("mtp_depth", int), "mtp-acceptance": ("mtp_acceptance", float),
              "prefix-hit": ("prefix_hit", float), "redundant-experts": ("redundant_experts", int),
              "ep-kernel": ("ep_kernel", O.ep_kernel_name), "deepep-nvlink": ("deepep_nvlink", _flag),
              "two-batch-overlap": ("two_batch_overlap", _flag),
              "overlap": ("overlap_comm", _flag), "imbalance": ("imbalance", float),
              "deepep-max-tokens": ("deepep_max_tokens", int)}


def pool_base(base, items, role: str):
    """``base`` with one pool's ``--{role}-set NAME=VALUE`` items applied (``POOL_FLAGS``);
    CostsimError, one line naming the flag, for a bad item."""
    from dataclasses import replace

    flag, got = f"--{role}-set", {}
    for item in items or ():
        name, eq, value = item.partition("=")
        name = name.strip().lstrip("-")
        if not eq or name not in POOL_FLAGS or not value.strip():
            raise CostsimError(f"{flag} {item!r}: expected NAME=VALUE with NAME one of {', '.join(POOL_FLAGS)}, "
                               "e.g. mtp=1")
        field, conv = POOL_FLAGS[name]
        if field in got:  # one value per pool: a second would silently win
            raise CostsimError(f"{flag} {item!r}: {name} is given twice for the {role} pool; give it once")
        try:
            got[field] = conv(value.strip())
        except (ValueError, CostsimError):
            raise CostsimError(f"{flag} {item!r}: {name} takes "
                               + {int: "an integer", float: "a number", _flag: "true or false"}.get(
                                   conv, "normal, low-latency or auto")) from None
    if "mtp_acceptance" in got and not got.get("mtp_depth", base.mtp_depth):
        raise CostsimError(f"{flag} mtp-acceptance: applies only with MTP on that pool; give mtp=N too")
    return replace(base, **got)


@app.command("disagg")
def disagg_cmd(model: O.Model, hardware: O.Hardware,
               input_len: str = typer.Option("4096", "--input", help="Prompt tokens per request (k = 1024)."),
               output_len: str = typer.Option("1024", "--output", help="Output tokens per request (k = 1024)."),
               rate: Optional[str] = typer.Option(None, "--rate", help="Requests/s to serve -> replicas, devices and "
                                                                      "nodes of each pool."),
               ttft_slo: Optional[str] = typer.Option(None, "--ttft-slo", help="TTFT limit of the prefill pool with a "
                                                                               "unit, e.g. 2s."),
               tpot_slo: O.TpotSlo = None,
               max_devices: int = typer.Option(64, "--max-devices", help="Most devices in one replica of a pool."),
               weight_dtype: Optional[str] = typer.Option(None, "--weight-dtype", help="Weight formats to try "
                                                          "(comma-separated; default: the checkpoint's, and fp8 where "
                                                          "the hardware has it)."),
               kv_dtype: str = typer.Option("bf16,fp8", "--kv-dtype", help="KV cache formats to try (comma-separated)."),
               pp: str = typer.Option("1,2,4", "--pp", help="PP degrees to search (comma-separated)."),
               prefill_devices: Optional[int] = _opt("--prefill-devices", "prefill", "devices per replica"),
               prefill_tp: Optional[int] = _opt("--prefill-tp", "prefill", "with --prefill-devices"),
               prefill_ep: Optional[int] = _opt("--prefill-ep", "prefill", "with --prefill-devices"),
               prefill_pp: Optional[int] = _opt("--prefill-pp", "prefill", "with --prefill-devices"),
               decode_devices: Optional[int] = _opt("--decode-devices", "decode", "devices per replica"),
               decode_tp: Optional[int] = _opt("--decode-tp", "decode", "with --decode-devices"),
               decode_ep: Optional[int] = _opt("--decode-ep", "decode", "with --decode-devices"),
               decode_pp: Optional[int] = _opt("--decode-pp", "decode", "with --decode-devices"),
               colocated: bool = typer.Option(True, "--colocated/--no-colocated", help="Compare with costsim plan's "
                                                                                       "best colocated deployment."),
               mla_form: O.MLAForm = "auto", imbalance: O.Imbalance = 1.0, overlap: O.Overlap = False,
               mtp: O.MTP = 0, mtp_acceptance: O.MTPAcceptance = None, prefix_hit: O.PrefixHit = 0.0,
               redundant: O.Redundant = 0, ep_kernel: O.EPKernel = "normal", tbo: O.TBO = False,
               deepep_nvlink: O.DeepEPNVLink = False, deepep_max_tokens: O.DeepEPMaxTokens = 128,
               prefill_set: Optional[List[str]] = typer.Option(
                   None, "--prefill-set", help="A layout flag for the prefill pool only, NAME=VALUE (repeatable; "
                   "NAME: " + ", ".join(POOL_FLAGS) + "), e.g. ep-kernel=normal."),
               decode_set: Optional[List[str]] = typer.Option(
                   None, "--decode-set", help="A layout flag for the decode pool only, as --prefill-set, e.g. mtp=1."),
               sets: O.Sets = None, hw_sets: O.HwSets = None, fmt: O.Format = O.Fmt.table):
    """Prefill and decode on separate pools: each pool's best layout and per-device rate under
    its SLO, the prefill:decode device ratio, the pools for a request rate, the KV transfer per
    request, and the colocated best at the same SLOs."""

    def go():
        from dataclasses import replace

        from costsim.reports import views
        from costsim.simulator.disagg import disaggregate

        spec, hw = O.model(model, sets), O.hardware(hardware, hw_sets)
        i, o = O.count(input_len, "--input", minimum=1), O.count(output_len, "--output", minimum=1)
        r = None
        if rate is not None:
            try:
                r = float(rate)
            except ValueError:
                r = float("nan")
            if not 0 < r < float("inf"):
                raise CostsimError(f"--rate {rate!r}: expected requests per second > 0, e.g. 10")
        if max_devices < 1:
            raise CostsimError(f"--max-devices {max_devices}: must be an integer >= 1")
        wds, kvs, pps = search_lists(weight_dtype, kv_dtype, pp)
        base = O.layout(None, mla_form=mla_form, imbalance=imbalance, overlap=overlap, mtp=mtp,
                        mtp_acceptance=mtp_acceptance, prefix_hit=prefix_hit, redundant=redundant,
                        ep_kernel=ep_kernel, tbo=tbo, deepep_nvlink=deepep_nvlink, deepep_max_tokens=deepep_max_tokens)
        pools = {}
        bases = {"prefill": pool_base(base, prefill_set, "prefill"), "decode": pool_base(base, decode_set, "decode")}
        for role, n, t, e, p in (("prefill", prefill_devices, prefill_tp, prefill_ep, prefill_pp),
                                 ("decode", decode_devices, decode_tp, decode_ep, decode_pp)):
            if n is None:
                extra = [f for f, v in (("tp", t), ("ep", e), ("pp", p)) if v is not None]
                if extra:
                    raise CostsimError(f"--{role}-{extra[0]}: give --{role}-devices too (a {role} layout)")
                pools[role] = None
            else:
                pools[role] = replace(bases[role], devices=n, tp=t, ep=e, pp=p)
        try:
            res = disaggregate(spec, hw, i, o, rate=r, ttft_slo_s=O.slo(ttft_slo, "--ttft-slo"),
                               tpot_slo_s=O.slo(tpot_slo), max_devices=max_devices, weight_dtypes=wds,
                               kv_dtypes=tuple(kvs), pp=tuple(pps), mla_form=mla_form, base=base,
                               prefill_layout=pools["prefill"], decode_layout=pools["decode"], colocated=colocated,
                               prefill_base=bases["prefill"], decode_base=bases["decode"])
        except FieldError as e:  # a value one pool's --{role}-set gave: name that flag
            for role, items in (("prefill", prefill_set), ("decode", decode_set)):
                for item in items or ():
                    name = item.partition("=")[0].strip().lstrip("-")
                    field = POOL_FLAGS[name][0]
                    if getattr(bases[role], field) == getattr(base, field):
                        continue
                    # the value itself, or the pool's EP that cannot take the redundant copies it set
                    if field == e.field or (field == "redundant_experts" and e.field == f"{role}_ep"):
                        raise CostsimError(f"--{role}-set {item}: {e.reason}" if field == e.field else
                                           f"--{role}-set {item}: --{role}-ep {e.value} {e.reason}") from None
            raise
        views.disagg(res.to_dict(), fmt.value)
        from costsim.simulator.scenario import context_warnings

        return list(res.warnings) + context_warnings(spec, i + o)

    O.run(go, given={"tpot_slo_s": tpot_slo, "ttft_slo_s": ttft_slo, "max_devices": str(max_devices), "rate": rate,
                     **{f"{role}_{k}": None if v is None else str(v) for role, k, v in (
                         ("prefill", "devices", prefill_devices), ("prefill", "tp", prefill_tp),
                         ("prefill", "ep", prefill_ep), ("prefill", "pp", prefill_pp),
                         ("decode", "devices", decode_devices), ("decode", "tp", decode_tp),
                         ("decode", "ep", decode_ep), ("decode", "pp", decode_pp))}})
