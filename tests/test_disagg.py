"""Disaggregated prefill/decode (costsim.simulator.disagg, ``costsim disagg``): each pool's pick
checked by brute force with the scalar engine (``serving.serve`` at every batch of every
candidate), the ratio, the pool sizes and the KV transfer worked out by hand from the engine's
per-layout results (``perf``), DeepSeek-V3 on the Day-6 layouts, and bad input as one line."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
from typer.testing import CliRunner

import tiny
from costsim.api import LayoutRequest, load_hardware, load_model
from costsim.cli import app
from costsim.errors import CostsimError, FieldError
from costsim.simulator.disagg import disaggregate
from costsim.simulator.memory import memory_report
from costsim.simulator.planner import candidates
from costsim.simulator.scenario import Scenario, perf
from costsim.simulator.serving import serve

runner = CliRunner()


# ---- the search, against a brute force on the tiny model ---------------------------------------


def test_each_pool_is_the_best_of_a_brute_force_over_the_planner_candidates():
    spec = tiny.gqa()
    hw = tiny.hw(memory_capacity=7e4)  # about 20 sequences of 72 tokens per device beside the weights
    I, O, ttft_slo, tpot_slo = 64, 8, 1.0e-3, 1.6e-4
    best_p = best_d = 0.0
    for kv in ("bf16", "fp8"):
        pre = dec = 0.0
        for dep in candidates(spec, hw, 2, kv_dtypes=(kv,), pp=(1, 2), context=I)[0]:
            for b in range(1, int(memory_report(spec, hw, dep, dep.dp, I).max_batch) + 2):
                r = serve(spec, hw, dep, b, I, 0)
                if r.memory.fits and r.prefill_fits and r.ttft_s <= ttft_slo:
                    pre = max(pre, b * I / r.ttft_s / dep.devices)
        for dep in candidates(spec, hw, 2, kv_dtypes=(kv,), pp=(1, 2), context=I + O)[0]:
            top = None  # the largest batch meeting memory and the TPOT SLO
            for b in range(1, int(memory_report(spec, hw, dep, dep.dp, I + O).max_batch) + 2):
                r = serve(spec, hw, dep, b, I, O)
                if r.memory.fits and r.tpot_s <= tpot_slo:
                    top = r
            if top is not None:
                dec = max(dec, top.decode_tokens_per_s / dep.devices)
        # the engine keeps the KV format whose balanced pools deliver more output per device
        if best_p == 0 or O / (I / pre + O / dec) > O / (I / best_p + O / best_d):
            best_p, best_d = pre, dec
    got = disaggregate(spec, hw, I, O, ttft_slo_s=ttft_slo, tpot_slo_s=tpot_slo, max_devices=2, pp=(1, 2),
                       colocated=False)
    assert (got.prefill.limit, got.decode.limit) == ("TTFT SLO", "TPOT SLO")  # both SLOs bind here
    assert got.prefill.tokens_per_s_per_device == pytest.approx(best_p, rel=1e-9)
    assert got.decode.tokens_per_s_per_device == pytest.approx(best_d, rel=1e-9)
    assert got.prefill_devices_per_decode_device == pytest.approx((I / best_p) / (O / best_d), rel=1e-9)


# ---- Llama-3.1-70B on H100: the arithmetic by hand from perf -----------------------------------


@pytest.fixture(scope="module")
def llama():
    spec, hw = load_model("llama-3.1-70b"), load_hardware("h100")
    return spec, hw, disaggregate(spec, hw, 2048, 512, rate=10.0, ttft_slo_s=2.0, tpot_slo_s=0.050)


def test_llama_pools_are_what_perf_gives_on_their_layouts(llama):
    spec, hw, r = llama
    p, d = r.prefill, r.decode
    # what the search found (costsim, not a published value): prefill TP2 on 2 devices, 14 prompts
    # per step; decode TP2 x PP2 on 4 devices at its memory limit, 501 sequences; both FP8
    assert (p.devices, p.tp, p.pp, p.batch, p.weight_dtype, p.kv_dtype) == (2, 2, 1, 14, "fp8", "fp8")
    assert (d.devices, d.tp, d.pp, d.batch, d.limit) == (4, 2, 2, 501, "memory")
    # perf on the same layouts gives the same TTFT, TPOT and rates
    pre_req = LayoutRequest(devices=2, tp=2, pp=1, weight_dtype="fp8", kv_dtype="fp8")
    one = perf(Scenario(spec, hw, pre_req, 14, 2048, 0))
    assert p.ttft_s == pytest.approx(one.ttft_s, rel=1e-9) and p.ttft_s <= 2.0
    assert p.tokens_per_s == pytest.approx(14 * 2048 / one.ttft_s, rel=1e-9)  # 15,229 input tokens/s
    assert perf(Scenario(spec, hw, pre_req, 15, 2048, 0)).ttft_s > 2.0  # the SLO stops batch 15
    dec_req = LayoutRequest(devices=4, tp=2, pp=2, weight_dtype="fp8", kv_dtype="fp8")
    run = perf(Scenario(spec, hw, dec_req, 501, 2048, 512))
    assert d.tpot_s == pytest.approx(run.tpot_s, rel=1e-9) and d.tpot_s <= 0.050
    assert d.tokens_per_s == pytest.approx(501 / run.tpot_s, rel=1e-9)  # 14,106 output tokens/s
    assert run.max_batch == 501
    # ratio by hand: (2048 / 7,614.3) / (512 / 3,526.5) = 0.26897 / 0.14519 = 1.8526 prefill
    # devices per decode device; per decode replica of 4 devices: 7.41 prefill devices
    ratio = (2048 / (14 * 2048 / one.ttft_s / 2)) / (512 / (501 / run.tpot_s / 4))
    assert r.prefill_devices_per_decode_device == pytest.approx(ratio, rel=1e-9)
    assert ratio == pytest.approx(1.8526, rel=1e-3)
    assert r.prefill_devices_per_decode_replica == pytest.approx(4 * ratio, rel=1e-9)
    # balanced pools: 512 / (0.26897 + 0.14519) = 1,236 output tokens/s per device
    assert r.output_tokens_per_s_per_device == pytest.approx(1236.3, rel=1e-3)


def test_llama_pool_sizes_kv_transfer_and_colocated_at_10_requests_per_s(llama):
    spec, hw, r = llama
    # 10 req/s: prefill 20,480 input tokens/s over 15,229 per replica -> 2 replicas (4 devices);
    # decode 5,120 output tokens/s over 14,106 per replica -> 1 replica (4 devices); 1 node each
    assert (r.prefill_replicas, r.prefill_devices, r.prefill_nodes) == (2, 4, 1)
    assert (r.decode_replicas, r.decode_devices, r.decode_nodes) == (1, 4, 1)
    assert r.total_devices == 8
    # KV of 2,048 tokens in FP8: 80 layers x 8 KV heads x 128 x (K + V) x 1 byte = 163,840 B per
    # token (Llama 3.1 70B config.json) -> 335,544,320 B per request; TP2 halves the heads, so each
    # prefill device sends 167,772,160 B at 50 GB/s x the profile's inter-node efficiency + latency
    assert r.kv_bytes_per_request == 80 * 8 * 128 * 2 * 2048
    rate = hw.inter_node_bandwidth.value * hw.efficiency.inter_node.value
    assert r.kv_transfer_s == pytest.approx(167_772_160 / rate + hw.inter_node_latency.value, rel=1e-12)
    # each device holds its half of the heads of all 14 prompts of a batch (dp = 1) and sends them
    # once per TTFT: 14 x 167,772,160 B / rate / TTFT
    assert r.prefill_link_load == pytest.approx(14 * 167_772_160 / rate / r.prefill.ttft_s, rel=1e-9)
    assert r.prefill_link_load < 1 and not r.warnings
    # colocated: plan's best at the same SLOs, TP4 on 4 devices, 23 requests per batch (TTFT SLO):
    # 1,466 output tokens/s per replica -> ceil(5,120 / 1,466) = 4 replicas, 16 devices: twice the
    # 8 of the two pools
    c = r.colocated
    assert (c["devices"], c["tp"], c["batch"], c["limit"]) == (4, 4, 23, "TTFT SLO")
    assert c["replicas"] == math.ceil(5120 / c["tokens_per_s"]) == 4 and c["total_devices"] == 16


# ---- DeepSeek-V3 on the Day-6 layouts ----------------------------------------------------------


def test_deepseek_v3_day6_layouts_ratio():
    # DeepSeek Open-Infra Day-6 overview (V3/R1 on H800, shared/reference/published-values.md §3.7):
    # prefill units of 4 nodes (EP32, 32 redundant experts, 56.3% prefix-cache hits), decode units
    # of 18 nodes (EP144, 32 redundant, MTP); FP8 matmuls, BF16 MLA. Request mix from its day of
    # tokens: 608B input / 168B output = 3.62 input tokens per output token, and an average KV
    # length of 4,989: I + O / 2 = 4,989 with I = 3.62 O gives O = 1,211, I = 4,384 (I / O = 3.620).
    # 20-22 tokens/s per user: TPOT <= 47.6 ms. FP8 matmuls with 128 x 128 weight-block scales
    # (V3 report §3.3): fp8-b128.
    spec, hw = load_model("deepseek-v3"), load_hardware("h800-calibrated")
    pre = LayoutRequest(devices=32, tp=1, ep=32, redundant_experts=32, prefix_hit=0.563)
    dec = LayoutRequest(devices=144, tp=1, ep=144, redundant_experts=32, mtp_depth=1, ep_kernel="auto")
    r = disaggregate(spec, hw, 4384, 1211, tpot_slo_s=0.0476, weight_dtypes=("fp8-b128",), kv_dtypes=("bf16",),
                     prefill_layout=pre, decode_layout=dec, colocated=False)
    # costsim says (no two-batch overlap): prefill 87.8K input tokens/s per node (the overview:
    # 73.7K, +19%), decode 10.5K output tokens/s per node (the overview: 14.8K, -29%;
    # tests/test_derived_profiles.py gives 10.4K at a context of 4,989)
    assert r.prefill.tokens_per_s_per_node == pytest.approx(87_756, rel=0.01)
    assert r.decode.tokens_per_s_per_node == pytest.approx(10_460, rel=0.01)
    assert r.decode.limit == "TPOT SLO" and r.decode.tpot_s <= 0.0476
    # each pool is perf on its layout: the prefill batch's TTFT, the decode batch's mean TPOT
    one = perf(Scenario(spec, hw, replace(pre, weight_dtype="fp8-b128"), r.prefill.batch, 4384, 0))
    assert r.prefill.tokens_per_s == pytest.approx(r.prefill.batch * 4384 / one.ttft_s, rel=1e-9)
    # the ratio: the overview's own rates imply (608e9 / 73.7e3) / (168e9 / 14.8e3) = 0.727 prefill
    # nodes per decode node (its units are 4 : 18 = 0.222, many of each); costsim's rates give
    # (4384 / 10,969.5) / (1211 / 1,307.48) = 0.431, i.e. 7.77 prefill nodes per 18-node decode unit
    # (1.9 prefill units of 4 nodes), not 4: its prefill is faster and its decode slower than the
    # overview's day-long averages
    assert (608e9 / 73.7e3) / (168e9 / 14.8e3) == pytest.approx(0.727, abs=5e-4)
    assert (4384 / 10_969.5) / (1211 / 1_307.48) == pytest.approx(0.431, abs=5e-4)
    assert r.prefill_devices_per_decode_device == pytest.approx(0.431, rel=0.01)
    assert r.prefill_devices_per_decode_replica / 8 == pytest.approx(7.77, rel=0.01)
    # KV of 4,384 tokens: 70,272 B per token in BF16 (ISCA 2025 Table 1: 576 x 2 x 61) = 308.07 MB;
    # with DP-attention (TP1) one device holds and sends a request's whole cache
    assert r.kv_bytes_per_request == 70_272 * 4384
    rate = hw.inter_node_bandwidth.value * hw.efficiency.inter_node.value
    assert r.kv_transfer_s == pytest.approx(70_272 * 4384 / rate + hw.inter_node_latency.value, rel=1e-9)


def test_each_pool_takes_its_own_request_fields():
    # prefill_base / decode_base: each pool is what a run with that pool's fields on both gives,
    # and differs from the shared run (so a swapped or ignored base fails): prefix hits skip half of
    # each prompt's prefill; two-batch overlap changes the decode step
    spec, hw = tiny.gqa(), tiny.hw(memory_capacity=7e4)
    kw = dict(ttft_slo_s=1.0e-3, tpot_slo_s=1.6e-4, max_devices=2, pp=(1,), colocated=False)
    hit, tbo = LayoutRequest(prefix_hit=0.5), LayoutRequest(two_batch_overlap=True)
    both = disaggregate(spec, hw, 64, 8, prefill_base=hit, decode_base=tbo, **kw)
    plain = disaggregate(spec, hw, 64, 8, **kw)
    assert both.prefill == disaggregate(spec, hw, 64, 8, base=hit, **kw).prefill
    assert both.decode == disaggregate(spec, hw, 64, 8, base=tbo, **kw).decode
    assert both.prefill.tokens_per_s != plain.prefill.tokens_per_s
    assert both.decode.tokens_per_s != plain.decode.tokens_per_s
    assert both.prefill.modes == "prefix hits 50.0%" and both.decode.modes == "two-batch overlap"
    assert plain.prefill.modes == plain.decode.modes == ""


def test_cli_pool_flags_apply_to_their_pool_only():
    # --decode-set: the decode pool runs low-latency kernels and two micro-batches, the prefill pool
    # is the run without them
    args = ["disagg", "deepseek-v2-lite", "-H", "h100", "--input", "1024", "--output", "256", "--tpot-slo", "50ms",
            "--prefill-devices", "8", "--prefill-tp", "1", "--prefill-ep", "8", "--decode-devices", "8",
            "--decode-tp", "1", "--decode-ep", "8", "--weight-dtype", "bf16", "--kv-dtype", "bf16", "--no-colocated",
            "-f", "json"]
    got = json.loads(runner.invoke(app, args + ["--decode-set", "two-batch-overlap=true", "--decode-set", "ep-kernel=low-latency"]).stdout)
    off = json.loads(runner.invoke(app, args).stdout)
    on = json.loads(runner.invoke(app, args + ["--two-batch-overlap", "--ep-kernel", "low-latency"]).stdout)
    assert got["prefill"] == off["prefill"] and got["decode"] == on["decode"]
    assert got["decode"]["modes"] == "DeepEP low-latency, two-batch overlap" and got["prefill"]["modes"] == ""
    assert got["decode"]["tokens_per_s"] != off["decode"]["tokens_per_s"]


# ---- bad input ------------------------------------------------------------------------------


def test_engine_refuses_bad_arguments_naming_the_field():
    spec, hw = tiny.gqa(), tiny.hw(memory_capacity=2e5)
    for kw, field in ((dict(rate=0.0), "rate"), (dict(ttft_slo_s=-1.0), "ttft_slo_s"), (dict(max_devices=0), "max_devices"),
                      (dict(base=LayoutRequest(devices=2)), "devices"), (dict(pp=()), "pp"),
                      (dict(prefill_layout=LayoutRequest()), "prefill_layout"),
                      (dict(decode_layout=LayoutRequest(devices=3, tp=2)), "decode_devices")):
        with pytest.raises(FieldError) as e:
            disaggregate(spec, hw, 64, 8, colocated=False, **kw)
        assert e.value.field == field
    with pytest.raises(CostsimError, match="no decode layout of tiny-gqa .* meets TPOT <= 1e-06 ms"):
        disaggregate(spec, hw, 64, 8, tpot_slo_s=1e-9, colocated=False)


@pytest.mark.parametrize("args, message", [
    (["--rate", "0"], "--rate '0': expected requests per second > 0"),
    (["--ttft-slo", "2"], "--ttft-slo: give a unit"),
    (["--prefill-tp", "2"], "--prefill-tp: give --prefill-devices too"),
    (["--decode-devices", "3", "--decode-tp", "2"], "--decode-devices 3: not a multiple of tp*pp = 2"),
    (["--max-devices", "0"], "--max-devices 0: must be an integer >= 1"),
    (["--tpot-slo", "1us"], "no decode layout of llama-3.1-70b on h100 meets TPOT <= 0.001 ms"),
    (["--decode-set", "mtp"], "--decode-set 'mtp': expected NAME=VALUE with NAME one of mtp, mtp-acceptance"),
    (["--prefill-set", "batch=2"], "--prefill-set 'batch=2': expected NAME=VALUE"),
    (["--decode-set", "mtp=x"], "--decode-set 'mtp=x': mtp takes an integer"),
    (["--decode-set", "two-batch-overlap=maybe"], "two-batch-overlap takes true or false"),
    (["--decode-set", "ep-kernel=fast"], "ep-kernel takes normal, low-latency or auto"),
    (["--decode-set", "mtp-acceptance=0.9"], "--decode-set mtp-acceptance: applies only with MTP on that pool"),
    (["--decode-set", "prefix-hit=1.5"], "--decode-set prefix-hit=1.5: must be a share in [0, 1) of each prompt"),
    (["--prefix-hit", "1.5"], "--prefix-hit 1.5: must be a share in [0, 1) of each prompt"),
    # fresh-user finding: a NAME given twice for one pool once let the last silently win
    (["--prefill-set", "mtp=1", "--prefill-set", "mtp=2"], "--prefill-set 'mtp=2': mtp is given twice for the prefill"),
    (["--deepep-max-tokens", "0"], "--deepep-max-tokens 0: must be an integer from 1 to 1024"),
    (["--prefill-devices", "8", "--prefill-tp", "8", "--decode-devices", "8", "--decode-tp", "8",
      "--decode-set", "redundant-experts=3"], "--decode-set redundant-experts=3:"),
])
def test_cli_bad_input_is_one_line_with_exit_code_2(args, message):
    r = runner.invoke(app, ["disagg", "llama-3.1-70b", "-H", "h100", "--input", "2048", "--output", "512", *args])
    assert r.exit_code == 2
    assert message in r.output and len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_cli_json_is_the_engine_record(llama):
    spec, hw, r = llama
    out = runner.invoke(app, ["disagg", "llama-3.1-70b", "-H", "h100", "--input", "2048", "--output", "512",
                              "--rate", "10", "--ttft-slo", "2s", "--tpot-slo", "50ms", "--format", "json"])
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)
    assert got["prefill_devices_per_decode_device"] == pytest.approx(r.prefill_devices_per_decode_device, rel=1e-12)
    assert got["decode"]["batch"] == r.decode.batch and got["total_devices"] == r.total_devices
    assert got["colocated"]["total_devices"] == 16


def test_planner_candidates_take_the_base_request():
    # the search fields come from the search, the others from ``base``: 4 routed experts + 2
    # redundant copies = 6 slots, so 4 devices take EP 2 (the largest dividing 4 and 6), not 4
    spec = tiny.gqa(name="tiny-moe", ffn=dict(kind="moe", n_routed_experts=4, num_experts_per_tok=2,
                                              moe_intermediate_size=8, n_shared_experts=1))
    hw = tiny.hw(memory_capacity=1e6)
    plain = {(d.devices, d.ep) for d in candidates(spec, hw, 4, kv_dtypes=("bf16",), pp=(1,))[0]}
    deps = candidates(spec, hw, 4, kv_dtypes=("bf16",), pp=(1,), base=LayoutRequest(redundant_experts=2, prefix_hit=0.5))[0]
    assert (4, 4) in plain and {(d.devices, d.ep) for d in deps if d.devices == 4} == {(4, 2)}
    assert all(d.prefix_hit == 0.5 and d.redundant_experts == 2 for d in deps)


README_COMMAND = "costsim disagg llama-3.1-70b -H h100 --input 2048 --output 512 --ttft-slo 2s --tpot-slo 50ms --rate 10"


def test_readme_example_is_current():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    i = readme.index(f"`{README_COMMAND}`")
    start = readme.index("\n", readme.index("```", i)) + 1
    shown = readme[start:readme.index("```", start)]
    out = runner.invoke(app, README_COMMAND.split()[1:])
    assert out.exit_code == 0 and out.stdout.strip() == shown.strip()


def test_decode_pool_warns_when_deepep_cannot_dispatch_its_batch():
    # fresh-user finding: perf warned, disagg did not. Day-6 decode layout with MTP 1 and DeepEP
    # low-latency buffers for 32 tokens per rank: the TPOT-bound batch dispatches more than 32
    # (each of 144 ranks sends its batch / 144 sequences x 2 verify tokens)
    spec, hw = load_model("deepseek-v3"), load_hardware("h800-calibrated")
    dec = LayoutRequest(devices=144, tp=1, ep=144, redundant_experts=32, mtp_depth=1, ep_kernel="auto",
                        deepep_max_tokens=32)
    pre = LayoutRequest(devices=32, tp=1, ep=32, redundant_experts=32, prefix_hit=0.563)
    r = disaggregate(spec, hw, 4384, 1211, tpot_slo_s=0.0476, weight_dtypes=("fp8-b128",), kv_dtypes=("bf16",),
                     prefill_layout=pre, decode_layout=dec, colocated=False)
    sent = -(-r.decode.batch // 144) * 2
    assert sent > 32 and any(w.startswith("decode pool: ") and f"sends {sent} tokens per rank, more than the 32" in w
                             for w in r.warnings)
    ok = disaggregate(spec, hw, 4384, 1211, tpot_slo_s=0.0476, weight_dtypes=("fp8-b128",), kv_dtypes=("bf16",),
                      prefill_layout=pre, decode_layout=replace(dec, deepep_max_tokens=256), colocated=False)
    assert not any("DeepEP refuses" in w for w in ok.warnings)


def test_cli_global_deepep_max_tokens_reaches_the_decode_pool():
    # --deepep-max-tokens for both pools (only the decode's low-latency kernels use it), as perf and
    # rate take it: V3 decode on 18 H800 nodes at EP144 sends 74 tokens per rank at its best batch
    # under TPOT <= 50 ms, above a 64-token buffer (DeepEP refuses such a step: a warning), not a 128
    args = ["disagg", "deepseek-v3", "-H", "h800-calibrated", "--decode-devices", "144", "--decode-ep", "144",
            "--decode-tp", "1", "--redundant-experts", "32", "--ep-kernel", "auto", "--no-colocated",
            "--weight-dtype", "fp8-b128", "--kv-dtype", "bf16", "--tpot-slo", "50ms", "-f", "json"]
    small, default = (runner.invoke(app, args + extra) for extra in (["--deepep-max-tokens", "64"], []))
    assert small.exit_code == 0 and default.exit_code == 0
    assert "more than the 64 DeepEP's buffer is sized for" in small.stderr
    assert "DeepEP's buffer" not in default.stderr
