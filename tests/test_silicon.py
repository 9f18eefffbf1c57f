"""Silicon tables (costsim.calibration.silicon) and the engine pieces they are predicted with:
``parallel.collective_seconds``, the ``gemm_fp8`` family, ``kernels.attention_core`` and
``kernels.moe(moe_tp, router)``. Expected values are worked out by hand on the round-number
profile of tests/tiny.py (INTRA 5e7 B/s + 1 us per step in a node of 2, INTER 2.5e6 B/s + 5 us,
MEM 5e8 B/s, 1e10 / 2e10 FLOP/s bf16 / fp8 at 0.5, 1 us per kernel). None of these tests
needs the aiconfigurator-core package."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import tiny
from costsim.calibration import silicon as S
from costsim.calibration import silicon_fit as F
from costsim.cli import app
from costsim.errors import CostsimError
from costsim.simulator import kernels
from costsim.simulator.parallel import collective_seconds
from costsim.simulator.types import Family
from costsim.specs import ModelSpec


# ---- collectives ---------------------------------------------------------------------------

@pytest.mark.parametrize("coll,ranks,expected", [
    ("all_reduce", 2, 2 * 1 / 2 * 1e6 / 5e7 + 2 * 1e-6),  # ring: 2(n-1)/n S, 2(n-1) steps
    ("all_gather", 2, 1 / 2 * 1e6 / 5e7 + 1 * 1e-6),  # (n-1)/n S, n-1 steps
    ("reduce_scatter", 4, 3 / 4 * 1e6 / 2.5e6 + 3 * 5e-6),  # 4 ranks > 2 per node: the NIC
    ("all_to_all", 4, 3 / 4 * 1e6 / 2.5e6 + 1 * 5e-6),  # one-shot: one latency step
    ("all_reduce", 1, 0.0),
])
def test_collective_seconds_by_hand(coll, ranks, expected):
    assert collective_seconds(tiny.hw(), coll, 1e6, ranks) == pytest.approx(expected, rel=1e-12)


def test_collective_seconds_vectorises_and_refuses_unknown():
    t = collective_seconds(tiny.hw(), "all_gather", np.array([1e6, 2e6]), np.array([2, 4]))
    assert t == pytest.approx([0.5 * 1e6 / 5e7 + 1e-6, 0.75 * 2e6 / 2.5e6 + 3 * 5e-6], rel=1e-12)
    with pytest.raises(CostsimError, match="unknown collective"):
        collective_seconds(tiny.hw(), "broadcast", 1e6, 2)


def _proto_hw():
    coll = dict(all_reduce=dict(efficiency=0.5, latency=4e-6, ll_latency=1e-7))  # LL at half: 0.25
    return tiny.hw(efficiency=dict(compute=0.5, memory=0.5, intra_node=0.5, inter_node=0.25, kernel_overhead=1e-6,
                                   collectives=coll))


def test_the_faster_protocol_is_taken_per_size():
    """NCCL's tuner picks, per size, the fastest (algorithm, protocol). 2 ranks on tiny's 1e8 B/s
    link: 100 B by the low-latency protocol (100 / 2.5e7 + 2 x 0.1 us = 4.2 us, against
    100 / 5e7 + 2 x 4 us = 10 us), 1 MB by the simple one (0.02 s + 8 us)."""
    h = _proto_hw()
    assert collective_seconds(h, "all_reduce", [100.0, 1e6], 2) == pytest.approx([4.2e-6, 0.02 + 8e-6], rel=1e-12)
    # collectives without their own model keep the profile-wide ring formula
    assert collective_seconds(h, "all_gather", 1e6, 2) == pytest.approx(0.5 * 1e6 / 5e7 + 1e-6, rel=1e-12)


def test_all_to_all_takes_ll_up_to_its_threshold_per_peer():
    """NCCL's point-to-point sends (all-to-all) take LL up to NCCL_P2P_LL_THRESHOLD bytes per
    peer (16 KiB by default; src/enqueue.cc), not the faster protocol. 4 ranks in a node of 8
    on tiny's 1e8 B/s link, simple at 0.5 (4 us per step), LL at 0.25 (0.1 us), all-to-all sends 3/4 of S in one
    step: S = 64 KiB is 16 KiB per peer, LL: 0.75 x 65,536 / 2.5e7 + 0.1 us = 1,966.18 us (the
    simple one would take 987.04 us); S = 64 KiB + 4, simple: 0.75 x 65,540 / 5e7 + 4 us."""
    coll = dict(all_to_all=dict(efficiency=0.5, latency=4e-6, ll_latency=1e-7, ll_threshold=16384))
    h = tiny.hw(devices_per_node=8, efficiency=dict(compute=0.5, memory=0.5, intra_node=0.5, inter_node=0.25,
                                                    kernel_overhead=1e-6, collectives=coll))
    got = collective_seconds(h, "all_to_all", [65536.0, 65540.0], 4)
    assert got == pytest.approx([0.75 * 65536 / 2.5e7 + 1e-7, 0.75 * 65540 / 5e7 + 4e-6], rel=1e-12)
    # without the threshold the faster protocol is taken at both sizes (simple here)
    coll["all_to_all"].pop("ll_threshold")
    h = tiny.hw(devices_per_node=8, efficiency=dict(compute=0.5, memory=0.5, intra_node=0.5, inter_node=0.25,
                                                    kernel_overhead=1e-6, collectives=coll))
    assert collective_seconds(h, "all_to_all", 65536.0, 4) == pytest.approx(0.75 * 65536 / 5e7 + 4e-6, rel=1e-12)


def test_serving_tp_allreduce_uses_the_collective_model():
    from costsim.simulator.deployment import Deployment
    from costsim.simulator.operators import step_operators
    from costsim.simulator.parallel import comm_seconds
    from costsim.simulator.types import StepShape

    spec, h = tiny.gqa(), _proto_hw()
    dep = Deployment(devices=2, tp=2)
    op = next(o for o in step_operators(spec, dep, StepShape(1, 1, 16, 1)) if o.name.startswith("comm.tp_allreduce"))
    buffer = 1 * spec.hidden_size * 2  # one token's hidden state in BF16, per rank
    assert float(comm_seconds(op, spec, dep, h)) == pytest.approx(collective_seconds(h, "all_reduce", buffer, 2))
    assert float(comm_seconds(op, spec, dep, h)) == pytest.approx(buffer / 2.5e7 + 2e-7)  # small: low-latency


# ---- gemm_fp8 ------------------------------------------------------------------------------

def _fam_hw(**families):
    eff = dict(compute=0.5, memory=0.5, intra_node=0.5, inter_node=0.25, kernel_overhead=1e-6, families=families)
    return tiny.hw(efficiency=eff)


def test_fp8_gemm_uses_gemm_fp8_then_gemm_parameters():
    hw = _fam_hw(gemm=dict(compute=0.25, overhead=2e-6), gemm_fp8=dict(overhead=10e-6))
    # 1000^3: 2e9 FLOPs. fp8: peak 2e10 x compute 0.25 (gemm's, gemm_fp8 has none) = 0.4 s, +10 us
    # (gemm_fp8's overhead); bytes 1e6 (fp8 weights) + 2e6 + 2e6 = 5e6 / 5e8 = 10 ms < 0.4 s
    assert float(kernels.gemm(hw, 1000, 1000, 1000, "fp8").time_s) == pytest.approx(0.4 + 10e-6, rel=1e-12)
    # bf16: 2e9 / (1e10 x 0.25) = 0.8 s, + gemm's 2 us
    assert float(kernels.gemm(hw, 1000, 1000, 1000, "bf16").time_s) == pytest.approx(0.8 + 2e-6, rel=1e-12)
    assert kernels.gemm_operators(hw, 1, 1, 1, "fp8")[0].family is Family.GEMM_FP8
    assert kernels.gemm_operators(hw, 1, 1, 1, "bf16")[0].family is Family.GEMM
    # no gemm_fp8 parameters at all: exactly gemm's time model on the fp8 peak
    plain = _fam_hw(gemm=dict(compute=0.25, overhead=2e-6))
    assert float(kernels.gemm(plain, 1000, 1000, 1000, "fp8").time_s) == pytest.approx(0.4 + 2e-6, rel=1e-12)


# ---- attention core, MoE options -------------------------------------------------------------

def test_attention_core_by_hand():
    # tiny GQA: 4 heads of 2, 2 KV heads. 3 sequences, 10 cached tokens, 1 new each:
    # pairs 3 x (10 + 1) = 33; FLOPs 4 x 4 x 2 x 33 = 1056. KV per token 2 x 2 x 2 x 2 B = 16 B:
    # read 3 x 11 x 16 = 528, write 3 x 16 = 48; queries and outputs 3 x 4 x 2 x 2 B = 48 each.
    p = kernels.attention_core(tiny.gqa(), tiny.hw(), 3, 10, 1)
    assert p.operators == ("attn.core",)
    assert float(p.flops) == 1056 and float(p.bytes) == 528 + 48 + 48 + 48
    # max(1056 / 5e9, 672 / 5e8) + 1 us
    assert float(p.time_s) == pytest.approx(672 / 5e8 + 1e-6, rel=1e-12)


def test_moe_expert_tp_and_no_router():
    spec = ModelSpec.model_validate(dict(
        name="tiny-moe", source="test", vocab_size=100, hidden_size=8, num_hidden_layers=1,
        attention=dict(kind="mha", num_attention_heads=1, num_key_value_heads=1, head_dim=8),
        ffn=dict(kind="moe", n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=16)))
    p = kernels.moe(spec, tiny.hw(), 10, ep=2, moe_tp=2, router=False)
    assert p.operators == ("moe.permute", "moe.experts.gate_up_proj", "moe.experts.down_proj")
    # 10 tokens x top-2 / ep 2 = 10 pairs on the rank; expert intermediate 16 / moe_tp 2 = 8:
    # gate_up 2 x 10 x 16 x 8 = 2560, down 2 x 10 x 8 x 8 = 1280
    assert float(p.flops) == 2560 + 1280
    with_router = kernels.moe(spec, tiny.hw(), 10, ep=2, moe_tp=2)
    # the router runs on this rank's share of the tokens: ceil(10 / (2 x 2 ranks)) = 3 -> 2 x 3 x 4 x 8
    assert with_router.operators[0] == "moe.router" and float(with_router.flops) == 3840 + 2 * 3 * 4 * 8


# ---- table rows -> records -------------------------------------------------------------------

def test_rows_map_units_and_dtypes():
    g = S._gemm(pd.DataFrame(dict(gemm_dtype=["bfloat16", "fp8", "fp8_block", "nvfp4"], m=[1, 2, 3, 4],
                                  n=[128] * 4, k=[256] * 4, latency=[0.01, 0.02, 0.03, 0.04])))
    assert list(g["family"]) == ["gemm", "gemm_fp8", "gemm_fp8_block"]  # nvfp4: not mapped
    assert list(g["label"]) == ["gemm bf16", "gemm fp8", "gemm fp8_block"]
    assert g["measured_s"].tolist() == pytest.approx([1e-5, 2e-5, 3e-5])  # ms -> s
    n = S._nccl(pd.DataFrame(dict(op_name=["alltoall", "all_reduce"], nccl_dtype=["half", "int8"],
                                  num_gpus=[8, 4], message_size=[1024, 1024], latency=[0.005, 0.004])))
    # message_size is elements: x 2 bytes for half, x 1 for int8
    assert n["size_bytes"].tolist() == [2048.0, 1024.0] and list(n["kernel"]) == ["all_to_all", "all_reduce"]
    a = S._attention(pd.DataFrame(dict(
        attn_dtype=["bfloat16", "fp8"], kv_cache_dtype=["bfloat16", "fp8"], num_heads=[8, 8],
        num_key_value_heads=[2, 2], head_dim=[128, 128], window_size=[0, 0], batch_size=[4, 4], isl=[512, 512],
        step=[0, 0], latency=[0.1, 0.1])), "prefill")
    assert len(a) == 1 and a["new_tokens"].iloc[0] == 512 and a["context"].iloc[0] == 0  # fp8 compute left out


def test_plan_predicts_what_the_kernel_api_predicts():
    hw = tiny.hw()
    df = pd.concat([
        S._gemm(pd.DataFrame(dict(gemm_dtype=["bfloat16", "fp8"], m=[64, 64], n=[128, 128], k=[256, 256],
                                  latency=[0.01, 0.01]))),
        S._nccl(pd.DataFrame(dict(op_name=["all_gather"], nccl_dtype=["half"], num_gpus=[2], message_size=[500],
                                  latency=[0.005]))),
        S._attention(pd.DataFrame(dict(
            kv_cache_dtype=["bfloat16"], num_heads=[4], num_key_value_heads=[2], head_dim=[2], window_size=[0],
            batch_size=[3], isl=[1], step=[10], latency=[0.01])), "decode"),
    ], ignore_index=True)
    pred = S.predict_frame(df, hw)
    assert pred[0] == float(kernels.gemm(hw, 64, 128, 256, "bf16").time_s)
    assert pred[1] == float(kernels.gemm(hw, 64, 128, 256, "fp8").time_s)
    assert pred[2] == pytest.approx(0.5 * 1000 / 5e7 + 1e-6, rel=1e-12)  # 500 half elements = 1000 B
    assert pred[3] == pytest.approx(float(kernels.attention_core(tiny.gqa(), hw, 3, 10, 1).time_s), rel=1e-12)


def test_split_halves_are_seeded_and_groups_stay_whole():
    df = pd.DataFrame(dict(family=["gemm"] * 40, group=[f"g{i // 4}" for i in range(40)]))
    a, b = F.split(df, 0, by_group=True), F.split(df, 0, by_group=True)
    assert (a == b).all() and a.sum() == 20  # 5 of 10 groups
    for _, g in df.assign(t=a).groupby("group"):
        assert g["t"].nunique() == 1
    # each label of a family gets both halves (the comm family's collectives: all-to-all's four
    # groups once all fell in the train half, leaving it no groups-held-out figure)
    two = pd.DataFrame(dict(family=["comm"] * 16, label=["nccl all_reduce"] * 8 + ["nccl all_to_all"] * 8,
                            group=[f"g{i // 2}" for i in range(16)]))
    t = F.split(two, 0, by_group=True)
    for _, g in two.assign(t=t).groupby("label"):
        assert g["t"].sum() == 4  # 2 of its 4 groups


def test_version_order():
    assert sorted(["1.3.0", "1.3.0rc20", "1.3.0rc3", "1.2.0"], key=S._vkey) == ["1.2.0", "1.3.0rc3", "1.3.0rc20",
                                                                                "1.3.0"]


def test_missing_package_is_one_line_exit_2(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "aiconfigurator_core", None)  # import raises ImportError
    r = CliRunner().invoke(app, ["validate", "--silicon", "h200"])
    assert r.exit_code == 2
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1 and "pip install 'costsim[silicon]'" in lines[0]
    r = CliRunner().invoke(app, ["validate", "--silicon", "z900"])
    assert r.exit_code == 2 and "expected one of h200_sxm" in r.output


def test_comm_overhead_is_paid_once_per_collective():
    eff = dict(compute=0.5, memory=0.5, intra_node=0.5, inter_node=0.25, kernel_overhead=1e-6, comm_overhead=7e-6)
    h = tiny.hw(efficiency=eff)
    # all-reduce of 1e6 B on 2 ranks: 1e6 / 5e7 + 2 steps x 1 us + 7 us once
    assert collective_seconds(h, "all_reduce", 1e6, 2) == pytest.approx(0.02 + 2e-6 + 7e-6, rel=1e-12)
    assert collective_seconds(h, "all_reduce", 1e6, 1) == 0.0
    from costsim.simulator.roofline import rate_provenance

    assert rate_provenance(h, "bf16")["efficiency.comm_overhead"]["value"] == 7e-6
    assert "efficiency.comm_overhead" not in rate_provenance(tiny.hw(), "bf16")


def test_attention_rows_and_mla_families():
    from costsim.simulator.efficiency import resolved_family

    eff = dict(compute=0.5, memory=0.5, intra_node=0.5, inter_node=0.25, kernel_overhead=1e-6,
               families=dict(attention_decode=dict(per_row=1e-7, overhead=2e-6),
                             attention_mla_decode=dict(overhead=5e-6)))
    h = tiny.hw(efficiency=eff)
    # GQA decode works per (sequence, KV head): 3 sequences x 2 KV heads = 6 rows x 0.1 us,
    # + 2 us overhead, + the memory term 672 / 5e8 of test_attention_core_by_hand
    p = kernels.attention_core(tiny.gqa(), h, 3, 10, 1)
    assert float(p.time_s) == pytest.approx(672 / 5e8 + 6 * 1e-7 + 2e-6, rel=1e-12)
    # prefill rows are (sequence, query, head): nothing set for prefill, so no row term
    pre = kernels.attention_core(tiny.gqa(), h, 1, 0, 4)
    assert float(pre.extra_s) == pytest.approx(1e-6, rel=1e-12)  # the profile-wide overhead only
    # the MLA decode family takes attention_decode's per_row and its own overhead
    r = resolved_family(h, Family.ATTENTION_MLA_DECODE)
    assert r.per_row.value == 1e-7 and r.overhead.value == 5e-6
    assert resolved_family(h, Family.GEMM_FP8_BLOCK) == resolved_family(h, Family.GEMM)  # nothing set: gemm's


def test_tile_quantisation_with_an_array_of_columns():
    # (a bug: float(N) failed when N was an array of shapes) tiles 2 x 2, one unit: M = 3 rows
    # pad to 4; N = 2 stays 2, N = 3 pads to 4: shape efficiency 6/8 = 0.75 and 9/16 = 0.5625.
    # compute 2 M N K / (1e10 x 0.5 x eff): 12 / 3.75e9 = 3.2 ns, 18 / 2.8125e9 = 6.4 ns
    hw = _fam_hw(gemm=dict(tile_m=2, tile_n=2, units=1))
    p = kernels.gemm(hw, 3, np.array([2, 3]), 1)
    assert p.compute_s == pytest.approx([3.2e-9, 6.4e-9], rel=1e-12)


def test_fp8_block_format_bytes_and_family():
    from costsim.units import FORMATS

    f = FORMATS["fp8-block"]
    # one fp32 scale per 128 x 128 block: 16,384 weights -> 16,384 + 4 bytes
    assert f.bytes_for(16384) == 16388 and f.compute == "fp8"
    assert kernels.gemm_operators(tiny.hw(), 1, 128, 128, "fp8-block")[0].family is Family.GEMM_FP8_BLOCK


def test_tables_without_a_window_column_are_full_attention():
    # A100's sglang / vllm attention tables have no window_size column (fresh-user finding: a
    # KeyError traceback); their rows are full attention
    a = S._attention(pd.DataFrame(dict(
        attn_dtype=["bfloat16"], kv_cache_dtype=["bfloat16"], num_heads=[8], num_key_value_heads=[2], head_dim=[128],
        batch_size=[4], isl=[1], step=[512], latency=[0.1])), "decode")
    assert a["window"].tolist() == [0] and a["group"].iloc[0].endswith(":w0:bfloat16")


@pytest.mark.parametrize("args,says", [
    (["calibrate", "--silicon", "a100", "--seed", "-1", "-o", "{tmp}/p.yaml"], "--seed -1: expected an integer >= 0"),
    (["calibrate", "--silicon", "a100", "--comm", "-o", "{tmp}/p.yaml"], "--comm and --silicon cannot be combined"),
    (["calibrate", "--silicon", "a100", "--quick", "-o", "{tmp}/p.yaml"], "--silicon and --quick cannot be combined"),
    (["calibrate", "--silicon", "a100", "--from-csv", "{tmp}/m.csv", "-o", "{tmp}/p.yaml"],
     "--silicon and --from-csv cannot be combined"),
    (["validate", "--silicon", "a100", "--device", "cuda"], "--silicon and --device cannot be combined"),
    (["validate", "--silicon", "a100", "--from-csv", "{tmp}/m.csv"], "--silicon and --from-csv cannot be combined"),
    (["validate", "--silicon", "a100", "--csv", "{tmp}/s.png", "--plot", "{tmp}/s.png"], "the same file"),
    (["validate", "-H", "cpu-dev", "--from-csv", "{tmp}/m.csv", "--csv", "{tmp}/s.png", "--plot", "{tmp}/s.png"],
     "the same file"),
    # given explicitly, even at what was the default (second fresh-user run)
    (["calibrate", "--silicon", "a100", "--device", "cpu", "-o", "{tmp}/p.yaml"], "--silicon and --device cannot"),
    (["calibrate", "--silicon", "a100", "--ranks", "4", "-o", "{tmp}/p.yaml"], "--silicon and --ranks cannot"),
    (["calibrate", "--comm", "--seed", "3", "-o", "{tmp}/p.yaml"], "--comm and --seed cannot be combined"),
    (["calibrate", "--comm", "--backend", "vllm", "-o", "{tmp}/p.yaml"], "--comm and --backend cannot be combined"),
    (["calibrate", "--from-csv", "{tmp}/m.csv", "--seed", "2", "-o", "{tmp}/p.yaml"], "--seed: used only with --silicon"),
    (["validate", "-H", "cpu-dev", "--from-csv", "{tmp}/m.csv", "--backend", "vllm"], "--backend: used only with --silicon"),
])
def test_flags_silicon_does_not_use_are_refused(tmp_path, args, says):
    # refused before any table is read (none of these needs the package), one line, exit 2,
    # nothing written
    r = CliRunner().invoke(app, [a.format(tmp=tmp_path) for a in args])
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and says in lines[0], r.output
    assert not list(tmp_path.iterdir())


def test_an_output_in_a_directory_that_takes_no_file_is_refused_before_any_work(tmp_path):
    # /proc takes no new file: refused by the first check, so that the CSV of
    # `validate --csv ok.csv --plot /proc/x.png` is not written alone (second fresh-user run)
    from costsim.files import check_target

    with pytest.raises(CostsimError, match="cannot write the plot"):
        check_target("/proc/costsim-x.png", "plot")
    assert check_target(tmp_path / "ok.csv", "CSV") == tmp_path / "ok.csv" and not list(tmp_path.iterdir())
    r = CliRunner().invoke(app, ["validate", "--silicon", "a100", "--csv", str(tmp_path / "ok.csv"),
                                 "--plot", "/proc/costsim-x.png"])
    assert r.exit_code == 2 and not list(tmp_path.iterdir())
