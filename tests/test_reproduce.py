"""``costsim reproduce``: every row is a test. The papers' numbers are typed here again from
the papers (not read from the engine), so a wrong value in either place fails."""

import json
import shlex

import pytest

from costsim.registry import load_hardware, load_model
from costsim.simulator.reproduce import PAPERS, claims
from test_cli import check_user_error, cli

# id -> the paper's printed value (SI units) and where it is printed
PAPER = {
    "v2.params_total": (236e9, "arXiv 2405.04434 abstract: 236B total"),
    "v2.params_active": (21e9, "arXiv 2405.04434 abstract: 21B activated"),
    "v2.kv_elements": (34_560, "arXiv 2405.04434 Table 1: (d_c + d_h^R) l = (512 + 64) x 60"),
    "v2.gqa_groups": (2.25, "arXiv 2405.04434 §2.1.4: 'equal to GQA with only 2.25 groups'"),
    "v2.kv_reduction": (0.933, "arXiv 2405.04434 abstract: 'reduces the KV cache by 93.3%'"),
    "v2.decode_tokens_per_s": (50_000, "arXiv 2405.04434 §3.2.3: generation throughput exceeding 50K tokens/s"),
    "v2.throughput_ratio": (5.76, "arXiv 2405.04434 §3.2.3 / Fig. 1b: 5.76 times DeepSeek 67B"),
    "v2.prefill_tokens_per_s": (100_000, "arXiv 2405.04434 §3.2.3: prompt input throughput exceeding 100K tokens/s"),
    "v3.params_total": (671e9, "arXiv 2412.19437 abstract: 671B total"),
    "v3.params_active": (37e9, "arXiv 2412.19437 abstract: 37B activated"),
    "v3.gpu_hours_per_trillion": (180e3, "arXiv 2412.19437 §1: 180K H800 GPU hours per trillion tokens"),
    "v3.days_per_trillion": (3.7, "arXiv 2412.19437 §1: 3.7 days on our cluster with 2048 H800 GPUs"),
    "v3.cost_usd": (5.576e6, "arXiv 2412.19437 Table 1: $5.576M at $2 per GPU hour"),
    "v3.mfu_implied": (0.3894, "arXiv 2505.09343 Table 4: causal MFU 38.94% (MPFT)"),
    "isca.kv_v3": (70_272, "arXiv 2505.09343 Table 1: 70.272 KB"),
    "isca.kv_qwen": (327_680, "arXiv 2505.09343 Table 1: 327.680 KB"),
    "isca.kv_llama": (516_096, "arXiv 2505.09343 Table 1: 516.096 KB"),
    "isca.kv_ratio_qwen": (4.66, "arXiv 2505.09343 Table 1: 4.66x"),
    "isca.kv_ratio_llama": (7.28, "arXiv 2505.09343 Table 1: 7.28x"),
    "isca.train_gflop_deepseek-v2": (155, "arXiv 2505.09343 Table 2: 155 GFLOPS/token"),
    "isca.train_gflop_deepseek-v3": (250, "arXiv 2505.09343 Table 2: 250"),
    "isca.train_gflop_qwen2.5-72b": (394, "arXiv 2505.09343 Table 2: 394"),
    "isca.train_gflop_llama-3.1-405b": (2448, "arXiv 2505.09343 Table 2: 2448"),
    "isca.ep_ib_step": (120.96e-6, "arXiv 2505.09343 §2.3.2: 120.96 us"),
    "isca.ep_ib_tpot": (14.76e-3, "arXiv 2505.09343 §2.3.2: 14.76 ms"),
    "isca.ep_ib_tokens_per_s": (67, "arXiv 2505.09343 §2.3.2: 67 tokens per second"),
    "isca.ep_ib_tpot_7168": (14.76e-3, "arXiv 2505.09343 §2.3.2: 14.76 ms"),
    "isca.ep_nvl72_step": (6.72e-6, "arXiv 2505.09343 §2.3.2: 6.72 us"),
    "isca.ep_nvl72_tpot": (0.82e-3, "arXiv 2505.09343 §2.3.2: 0.82 ms"),
    "isca.ep_nvl72_tokens_per_s": (1200, "arXiv 2505.09343 §2.3.2: about 1,200 tokens/s"),
    "isca.mfu_causal": (0.3894, "arXiv 2505.09343 Table 4: 38.94%"),
    "isca.tflops_causal": (385e12, "arXiv 2505.09343 Table 4: 385 TFLOPS causal"),
    # DeepSeek open-infra-index, 202502OpenSourceWeek day_6 overview: "each H800 node delivers an
    # average throughput of ~73.7k tokens/s input (including cache hits) during prefilling or
    # ~14.8k tokens/s output during decoding"
    # the same overview: "average node occupancy 226.75", "$2 per H800 GPU per hour", "total daily cost $87,072"
    "day6.cost_per_day": (87_072, "Day-6 overview: total daily cost $87,072"),
    "day6.occupancy": (226.75, "Day-6 overview: average node occupancy 226.75 nodes"),
    "day6.cost_per_day.h800": (87_072, "Day-6 overview: total daily cost $87,072"),
    "day6.cost_per_day.h800-calibrated": (87_072, "Day-6 overview: total daily cost $87,072"),
    "day6.prefill_per_node.h800": (73.7e3, "Day-6 overview: ~73.7k input tokens/s per H800 node"),
    "day6.decode_per_node.h800": (14.8e3, "Day-6 overview: ~14.8k output tokens/s per H800 node"),
    "day6.prefill_per_node.h800-calibrated": (73.7e3, "Day-6 overview: ~73.7k input tokens/s per H800 node"),
    "day6.decode_per_node.h800-calibrated": (14.8e3, "Day-6 overview: ~14.8k output tokens/s per H800 node"),
    # alibaba/InferSim README "Simulation Result", DeepSeek-V3 on H800, "Actual data from
    # deepseek/profile-data": prefill TGS 7839, decode TGS 2324 (setup: deepseek-ai/profile-data README)
    "profile.prefill_per_gpu.h800": (7839, "InferSim README: Prefill TGS (Actual) 7839"),
    "profile.decode_per_gpu.h800": (2324, "InferSim README: Decode TGS (Actual) 2324"),
    "profile.prefill_per_gpu.h800-calibrated": (7839, "InferSim README: Prefill TGS (Actual) 7839"),
    "profile.decode_per_gpu.h800-calibrated": (2324, "InferSim README: Decode TGS (Actual) 2324"),
}

# rows whose paper number is NOT reproduced, and the value costsim gives instead, derived
# independently (the project's reference notes, published-values.md §5):
KNOWN = {
    # 516,096 / 70,272 B from the same Table 1 = 7.344x, not the printed 7.28x (§5.4)
    "isca.kv_ratio_llama": (516_096 / 70_272, 1e-12),
    # Qwen2.5-72B derives to ~445 GFLOP/token with the method that reproduces V2 and V3 (§5.5)
    "isca.train_gflop_qwen2.5-72b": (445, 0.001),
    # LLaMA-3.1-405B derives to 2,473, within 1% of the printed 2,448 (§5.5)
    "isca.train_gflop_llama-3.1-405b": (2473, 0.0005),
}

# model rows costsim does not bring within their band (not a paper error: the estimate is off),
# with the value it gives, pinned so a change is seen
OUTSIDE = {
    # Day-6 with its two-batch overlap: h800's assumed factors put every figure 1.5-2.8x high;
    # h800-calibrated meets decode and DeepSeek's own traces (profile.*), but the day's average
    # prefill is 0.58 of its saturated node (see the README)
    "day6.prefill_per_node.h800": (202_865, 0.01),
    "day6.decode_per_node.h800": (28_419, 0.01),
    # the day's tokens on h800's saturated pools: 608e9 / 86400 / 202,865 + 168e9 / 86400 / 28,419
    # = 34.69 + 68.42 = 103.1 nodes, x 8 x 2 x 24 = $39,594
    "day6.cost_per_day.h800": (39_594, 0.01),
    "profile.prefill_per_gpu.h800": (13_089, 0.01),
    "profile.decode_per_gpu.h800": (3_512, 0.01),
    "day6.prefill_per_node.h800-calibrated": (127_903, 0.01),
}

ROWS = [c for p in PAPERS for c in claims(p, load_model, load_hardware)]


def test_every_row_is_listed_here():
    assert sorted(c.id for c in ROWS) == sorted(PAPER)


@pytest.mark.parametrize("row", ROWS, ids=[c.id for c in ROWS])
def test_claim(row):
    paper, where = PAPER[row.id]
    assert row.paper_value == paper, where
    assert row.source and row.command and row.paper_text
    if row.id in KNOWN:
        want, rel = KNOWN[row.id]
        assert row.costsim_value == pytest.approx(want, rel=rel)
        assert not row.passes and row.note and row.status == "see note"
        assert abs(row.costsim_value - paper) > row.tolerance
        return
    assert not row.note
    if row.id in OUTSIDE:
        want, rel = OUTSIDE[row.id]
        assert row.costsim_value == pytest.approx(want, rel=rel)
        assert not row.passes and row.status == "outside band" and abs(row.costsim_value - paper) > row.tolerance
        return
    if row.relation == ">=":  # "more than X": at least X less the band
        assert row.costsim_value >= paper - row.tolerance, where
    else:
        assert abs(row.costsim_value - paper) <= row.tolerance * (1 + 1e-12), where
    assert row.passes


def test_exact_rows_are_exact_and_model_rows_carry_a_band():
    # exact rows: the paper's printed precision, half its last digit (236B: 0.5e9; 93.3%: 0.05 pp;
    # 14.76 ms: 5 us); "67" tokens/s is 67.75 truncated, so +-1 there
    want = {"v2.params_total": 0.5e9, "v3.params_active": 0.5e9, "v2.kv_reduction": 0.0005, "v2.gqa_groups": 0.005,
            "v3.cost_usd": 500, "v3.days_per_trillion": 0.05, "isca.ep_ib_tpot": 0.005e-3,
            "isca.ep_ib_step": 0.005e-6, "isca.train_gflop_deepseek-v3": 0.5, "isca.ep_ib_tokens_per_s": 1}
    tol = {r.id: r.tolerance for r in ROWS}
    for k, v in want.items():
        assert tol[k] == pytest.approx(v, rel=1e-9), k
    for r in ROWS:
        if r.kind == "model":
            assert r.assumptions and 0 < r.tolerance / r.paper_value <= 0.25, r.id
    exact_zero = {r.id for r in ROWS if r.kind == "exact" and r.tolerance == 0}
    assert {"v2.kv_elements", "isca.kv_v3", "isca.kv_qwen", "isca.kv_llama"} <= exact_zero


def test_cli_reproduce_all_json_and_table():
    res = cli("reproduce", "all", "-f", "json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert len(d["claims"]) == len(PAPER) and len(d["papers"]) == 4
    table = cli("reproduce", "deepseek-v2").stdout
    assert "93.34%" in table and "5.76x" in table and "costsim kv deepseek-v2 --kv-dtype 6" in table


def test_cli_reproduce_unknown_paper():
    check_user_error(cli("reproduce", "gpt-4"), "gpt-4", "deepseek-v2, deepseek-v3, isca25")


def _commands():
    out = set()
    for r in ROWS:
        for c in r.command.split(";"):
            c = c.split("  (")[0].strip()
            if c.startswith("costsim "):
                out.add(c)
    return sorted(out)


@pytest.mark.parametrize("cmd", _commands())
def test_each_rows_command_runs(cmd):
    res = cli(*shlex.split(cmd)[1:], "-f", "json")
    assert res.exit_code == 0, res.output


def test_commands_give_the_rows_values():
    by = {r.id: r for r in ROWS}
    show = json.loads(cli("show", "deepseek-v2", "-f", "json").stdout)
    assert show["params_total"] == by["v2.params_total"].costsim_value
    kv = json.loads(cli("kv", "deepseek-v3", "qwen2.5-72b", "llama-3.1-405b", "-f", "json").stdout)
    assert [k["kv_cache_bytes_per_token"] for k in kv] == [by[i].costsim_value
                                                          for i in ("isca.kv_v3", "isca.kv_qwen", "isca.kv_llama")]
    tr = json.loads(cli(*shlex.split(by["v3.gpu_hours_per_trillion"].command)[1:], "-f", "json").stdout)
    assert tr["mfu"] == by["v3.mfu_implied"].costsim_value
    mt = json.loads(cli(*shlex.split(by["v2.decode_tokens_per_s"].command)[1:], "-f", "json").stdout)
    assert mt["tokens_per_s"] == by["v2.decode_tokens_per_s"].costsim_value


def test_day6_command_gives_the_rows_values():
    # the printed disagg command is the row's computation: both pools get --mtp and --ep-kernel
    # (fresh-user finding: the prefill pool once lacked them and the command differed by 0.01%)
    by = {r.id: r for r in ROWS}
    row = by["day6.prefill_per_node.h800-calibrated"]
    d = json.loads(cli(*shlex.split(row.command)[1:], "-f", "json").stdout)
    assert d["prefill"]["tokens_per_s_per_node"] == pytest.approx(row.costsim_value, rel=1e-9)
    assert d["decode"]["tokens_per_s_per_node"] == pytest.approx(
        by["day6.decode_per_node.h800-calibrated"].costsim_value, rel=1e-9)


def test_profile_data_commands_give_the_rows_values():
    # the profile-data rows' printed perf commands compute the rows (per-GPU prefill and decode)
    by = {r.id: r for r in ROWS}
    for rid, key in (("profile.prefill_per_gpu.h800-calibrated", "prefill_tokens_per_s_per_device"),
                     ("profile.decode_per_gpu.h800-calibrated", "decode_tokens_per_s_per_device")):
        d = json.loads(cli(*shlex.split(by[rid].command)[1:], "-f", "json").stdout)
        assert d[key] == pytest.approx(by[rid].costsim_value, rel=1e-9), rid
        assert d["two_batch_overlap"] is True


def test_day6_occupancy_and_rent_by_hand():
    # Day-6 overview: 608B input, 168B output tokens in 24 h; 73.7K and 14.8K tokens/s per node;
    # 226.75 nodes on average at $2 per GPU-hour = $87,072. By hand: 608e9 / 86,400 / 73,700 =
    # 95.48 prefill nodes, 168e9 / 86,400 / 14,800 = 131.38 decode nodes, 226.86 in all (+0.05%);
    # rounding of 73.7K / 14.8K (+-0.05K): 95.48 x 0.05 / 73.7 + 131.38 x 0.05 / 14.8 = 0.509
    by = {r.id: r for r in ROWS}
    occ = by["day6.occupancy"]
    assert occ.costsim_value == pytest.approx(226.86, abs=0.005) and occ.tolerance == pytest.approx(0.509, abs=5e-4)
    assert by["day6.cost_per_day"].costsim_value == 87_072 and by["day6.cost_per_day"].passes
    # h800-calibrated: 608e9 / 86400 / 127,903 = 55.02 + 168e9 / 86400 / 13,797 = 140.93 = 195.95
    # nodes = $75,247 (-13.6%: the saturated pools' lower bound on the day's rent)
    cal = by["day6.cost_per_day.h800-calibrated"]
    pre, dec = (by[f"day6.{k}_per_node.h800-calibrated"].costsim_value for k in ("prefill", "decode"))
    assert cal.costsim_value == pytest.approx((608e9 / 86400 / pre + 168e9 / 86400 / dec) * 8 * 2 * 24, rel=1e-12)
    assert cal.costsim_value == pytest.approx(75_247, rel=1e-3) and cal.passes
