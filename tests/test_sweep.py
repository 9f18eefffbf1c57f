"""Sweeps: the vectorised serving grid equals the scalar engine (``serving.serve`` / ``perf``)
point by point, infeasible points carry the right reason (sizes by hand), the CLI writes its
file atomically and refuses bad input with one line and exit 2, and a Dask cluster of two
workers gives the same DataFrame as the local run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from costsim.api import LayoutRequest, Scenario, apply_sets, load_hardware, load_model, perf, resolve_deployment
from costsim.cli.app import app
from costsim.simulator.serving import decode, serve
from costsim.simulator.sweep import decode_prefix, serve_grid
from costsim.sweeps import sweep

B = np.array([1.0, 7.0, 64.0, 256.0])
I = np.array([1.0, 100.0, 4096.0, 32768.0])
O = np.array([0.0, 1.0, 2.0, 77.0, 1024.0])
FIELDS = ("ttft_s", "tpot_s", "e2e_s", "prefill_tokens_per_s", "decode_tokens_per_s", "combined_tokens_per_s")


def _check_grid(spec, hw, dep, b=B, i=I, o=O):
    g = serve_grid(spec, hw, dep, b[:, None, None], i[None, :, None], o[None, None, :])
    shape = (len(b), len(i), len(o))
    for x, bv in enumerate(b):
        for y, iv in enumerate(i):
            for z, ov in enumerate(o):
                r = serve(spec, hw, dep, int(bv), int(iv), int(ov))
                for k in FIELDS:
                    assert np.broadcast_to(getattr(g, k), shape)[x, y, z] == pytest.approx(getattr(r, k), rel=1e-9), \
                        (k, bv, iv, ov)
                m = r.memory
                assert np.broadcast_to(g.kv_bytes, shape)[x, y, z] == pytest.approx(float(m.kv_bytes), rel=1e-12)
                assert np.broadcast_to(g.max_batch, shape)[x, y, z] == float(m.max_batch)
                assert bool(np.broadcast_to(g.fits, shape)[x, y, z]) == bool(m.fits)
                assert bool(np.broadcast_to(g.prefill_fits, shape)[x, y, z]) == bool(r.prefill_fits)
                assert np.broadcast_to(g.prefill_mfu, shape)[x, y, z] == pytest.approx(float(r.prefill.mfu), rel=1e-12)
                assert np.broadcast_to(g.decode_mbu, shape)[x, y, z] == pytest.approx(float(r.decode_first.mbu), rel=1e-12)


# Each case exercises one source of kinks in the decode time t(L): compute/memory crossovers
# (GQA, MLA), the MLA auto form (min of two forms), PP micro-batches, overlapped communication
# (max of compute and comm), a sliding window (gpt-oss: the window is full from L = W - 1).
CASES = [
    ("llama-3.1-8b", "h100", LayoutRequest(devices=1)),
    ("deepseek-v3", "h800", LayoutRequest(devices=16, weight_dtype="fp8", mla_form="auto")),
    ("deepseek-v2", "h800", LayoutRequest(devices=16, pp=2, overlap_comm=True, mla_form="auto")),
    ("deepseek-v2-lite", "h100", LayoutRequest(devices=1, mla_form="naive")),
    ("gpt-oss-120b", "h200", LayoutRequest(devices=2)),
    ("mixtral-8x7b", "a100-80g", LayoutRequest(devices=4, tp=2, ep=2, overlap_comm=True)),
]


@pytest.mark.parametrize("model,hardware,request_", CASES, ids=[c[0] for c in CASES])
def test_serve_grid_equals_serve_at_every_point(model, hardware, request_):
    spec, hw = load_model(model), load_hardware(hardware)
    _check_grid(spec, hw, resolve_deployment(spec, hw, request_))


def test_window_kink_inside_the_decode_range():
    # gpt-oss-120b: sliding window W = 128 on half the layers; a prompt of 100 tokens decoding
    # 77 tokens crosses L = W - 1 = 127 mid-range; 1000 tokens crosses every compute/memory kink
    spec, hw = load_model("gpt-oss-120b"), load_hardware("h100")
    assert spec.sliding_window.window == 128
    _check_grid(spec, hw, resolve_deployment(spec, hw, LayoutRequest(devices=2)), i=np.array([60.0, 126.0, 127.0, 128.0]),
                o=np.array([2.0, 3.0, 77.0, 1000.0]))


HF = __import__("pathlib").Path(__file__).parent / "fixtures" / "hf"


def test_dsa_top_k_kink_inside_the_decode_range():
    # DeepSeek-V3.2 DSA (config.json index_topk = 2048): a query attends to min(L + 1, 2048)
    # selected keys, so the core attention stops growing at L = 2047 while the indexer's
    # scores keep growing; prompts on both sides and decode ranges across it
    spec, hw = load_model(str(HF / "deepseek-v3.2.json")), load_hardware("h200")
    assert spec.attention.index_topk == 2048
    dep = resolve_deployment(spec, hw, LayoutRequest(devices=8, weight_dtype="fp8", mla_form="auto"))
    _check_grid(spec, hw, dep, b=np.array([1.0, 64.0]), i=np.array([1.0, 2000.0, 2047.0, 2048.0, 9000.0]),
                o=np.array([2.0, 100.0, 3000.0]))


def test_hybrid_linear_attention_and_alternating_windows():
    # Qwen3.5 (Gated DeltaNet on 3 of 4 layers: a fixed state, constant in L) and Gemma-2
    # (a 4096-token window on every other layer)
    for name, hwn, devices, i in (("qwen3.5-397b-a17b", "h200", 8, [1.0, 5000.0]), ("gemma-2-9b", "h100", 1, [4000.0, 4095.0, 4096.0])):
        spec, hw = load_model(str(HF / f"{name}.json")), load_hardware(hwn)
        dep = resolve_deployment(spec, hw, LayoutRequest(devices=devices))
        _check_grid(spec, hw, dep, b=np.array([1.0, 32.0]), i=np.array(i), o=np.array([2.0, 200.0]))


def test_chunked_prefill_points_equal_serve():
    # Llama-3.1-405B on 16 H100 (tp8 pp2): a 128k prompt's one-step prefill does not fit its
    # activations, so serve chunks it; the grid must give the same TTFT, e2e and MFU there
    spec, hw = load_model("llama-3.1-405b"), load_hardware("h100")
    dep = resolve_deployment(spec, hw, LayoutRequest(devices=16), 1, 131072)
    assert serve(spec, hw, dep, 1, 131072, 2).prefill_chunk_tokens is not None
    _check_grid(spec, hw, dep, b=np.array([1.0, 2.0]), i=np.array([1024.0, 131072.0]), o=np.array([2.0, 64.0]))


# Chunked prefill summed piecewise (``sweep.chunk_prefix``) equals ``serving.chunked_prefill``'s
# chunk-by-chunk sum: each case has a structural start of its own (gpt-oss and Gemma-2 sliding
# windows, V3.2's DSA top-k 2048, a cached prefix, MLA auto with PP and overlapped comm, the
# tile-quantised naive MLA that falls back to the padded sum). Memory is set per point so that
# 1-30% of the one-step prefill's activations fit: 4 to ~180 chunks per prompt.
CHUNK_CASES = [
    ("gpt-oss-120b", "h200", LayoutRequest(devices=2), []),
    ("deepseek-v3.2.json", "h200", LayoutRequest(devices=8, weight_dtype="fp8", mla_form="auto"), []),
    ("deepseek-v2", "h800", LayoutRequest(devices=16, pp=2, overlap_comm=True, mla_form="auto"), []),
    ("llama-3.1-8b", "h100", LayoutRequest(devices=1, prefix_hit=0.37), []),
    ("gemma-2-9b.json", "h100", LayoutRequest(devices=1), []),
    ("deepseek-v2-lite", "h100", LayoutRequest(devices=1, mla_form="auto", prefix_hit=0.5),
     ["efficiency.families.gemm.tile_m=128", "efficiency.families.gemm.tile_n=128", "efficiency.families.gemm.units=132"]),
]


@pytest.mark.parametrize("model,hardware,request_,sets", CHUNK_CASES, ids=[c[0] for c in CHUNK_CASES])
def test_chunked_prefill_grid_equals_chunk_by_chunk_sum(model, hardware, request_, sets):
    from costsim.simulator.memory import kv_bytes_per_device, resident_bytes  # weights + DeepEP buffers
    from costsim.simulator.serving import chunked_prefill, prefill_chunk_tokens, prefill_workspace
    from costsim.simulator.sweep import chunked_prefill_grid

    spec = load_model(str(HF / model) if model.endswith(".json") else model)
    hw0 = apply_sets(load_hardware(hardware), sets, "--hw-set") if sets else load_hardware(hardware)
    dep = resolve_deployment(spec, hw0, request_)
    counts = []
    for b, i, frac in ((1, 70000, 0.01), (3, 4097, 0.3), (16, 20000, 0.05), (5, 300, 0.1), (2, 2100, 0.02)):
        need = (resident_bytes(spec, dep) + float(kv_bytes_per_device(spec, dep, b, i))
                + frac * float(prefill_workspace(spec, dep, b, i - dep.cached_prefix(i), i)))
        hw = apply_sets(hw0, [f"memory_capacity={need / dep.gpu_memory_utilization:.0f}"], "--hw-set")
        chunk, t, mfu, mbu, _ = chunked_prefill_grid(spec, hw, dep, np.array([float(b)]), np.array([float(i)]))
        c = prefill_chunk_tokens(spec, hw, dep, b, i)
        assert c is not None and chunk[0] == c < i
        counts.append(int(np.ceil((i - float(dep.cached_prefix(i))) / c)))
        r = chunked_prefill(spec, hw, dep, b, i, c)
        assert (t[0], mfu[0], mbu[0]) == pytest.approx((float(r.time_s), r.mfu, r.mbu), rel=1e-12), (b, i, c)
    assert max(counts) >= 50 and min(counts) >= 2


def test_overlapped_comm_crossing_compute_inside_the_decode_range():
    # llama-3.1-8b TP 8 on H100, comm overlapped: at batch 64 the all-reduces (constant in L)
    # outlast the compute part below a few thousand tokens of context and are outlasted above;
    # the step time max(compute, comm) has its kink inside these decode ranges
    spec, hw = load_model("llama-3.1-8b"), load_hardware("h100")
    dep = resolve_deployment(spec, hw, LayoutRequest(devices=8, overlap_comm=True))
    _check_grid(spec, hw, dep, b=np.array([8.0, 64.0]), i=np.array([1000.0, 4096.0]), o=np.array([3000.0, 30000.0]))


def test_tile_quantised_naive_mla_uses_the_exact_dense_sum():
    # tile/wave quantisation makes the naive decompression GEMM a staircase in L: the sum runs
    # over every context (still exact)
    spec = load_model("deepseek-v2-lite")
    hw = apply_sets(load_hardware("h100"), ["efficiency.families.gemm.tile_m=128", "efficiency.families.gemm.tile_n=128",
                                            "efficiency.families.gemm.units=132"], "--hw-set")
    dep = resolve_deployment(spec, hw, LayoutRequest(devices=1, mla_form="auto"))
    _check_grid(spec, hw, dep, b=np.array([1.0, 9.0]), i=np.array([1.0, 300.0]), o=np.array([1.0, 2.0, 400.0]))


def test_mean_tpot_of_an_affine_decode_is_the_mean_of_first_and_last_step():
    # llama-3.1-8b batch 1 on one H100: every decode operator is memory-bound at every context
    # here, so t(L) is affine and the mean over L = 4096 .. 4096 + 1022 is (t(4096) + t(5118)) / 2
    spec, hw = load_model("llama-3.1-8b"), load_hardware("h100")
    dep = resolve_deployment(spec, hw, LayoutRequest(devices=1))
    g = serve_grid(spec, hw, dep, 1, 4096, 1024)
    t0, t1 = (float(decode(spec, hw, dep, 1, L).time_s) for L in (4096, 4096 + 1022))
    assert float(g.tpot_s) == pytest.approx((t0 + t1) / 2, rel=1e-12)
    F = decode_prefix(spec, hw, dep, 1.0, 10)
    # F(3) = t(0) + t(1) + t(2)
    assert float(F(3)) == pytest.approx(sum(float(decode(spec, hw, dep, 1, L).time_s) for L in range(3)), rel=1e-12)


# ---- the DataFrame ------------------------------------------------------------------------------


def _small():
    return sweep([load_model("llama-3.1-8b"), load_model("deepseek-v3")], [load_hardware("h100"), load_hardware("a100-80g")],
                 [LayoutRequest(devices=1, weight_dtype="bf16"), LayoutRequest(devices=8, tp=3), LayoutRequest(devices=16, weight_dtype="fp8")],
                 [1, 256], [4096, 131072], [1024])


@pytest.fixture(scope="module")
def small():
    return _small()


def test_sweep_shape_units_and_order(small):
    # 2 models x 2 hardware x 3 layouts x 2 batches x 2 contexts x 1 output = 48 rows
    assert len(small) == 48
    for c in ("ttft_s", "tpot_s", "tokens_per_s", "tokens_per_s_per_device", "memory_per_device_bytes", "max_batch",
              "prefill_mfu", "decode_mbu", "decode_bound", "tp", "ep", "pp", "dp", "devices", "weight_dtype",
              "kv_dtype", "reason"):
        assert c in small.columns
    assert list(small["batch"][:4]) == [1, 1, 256, 256] and list(small["input_tokens"][:2]) == [4096, 131072]


def test_infeasible_reasons_by_hand(small):
    def rows(model, hw, devices, **kw):
        d = small[(small.model == model) & (small.hardware == hw) & (small.devices == devices)]
        for k, v in kw.items():
            d = d[d[k] == v]
        return d

    # DeepSeek-V3 in BF16 on one H100: ~671e9 params x 2 B = 1.34e12 B > 0.9 x 80e9 B usable
    v3 = rows("deepseek-v3", "h100", 1)
    assert set(v3.reason) == {"weights_do_not_fit"} and v3.ttft_s.isna().all()
    assert v3.weight_bytes_per_device.iloc[0] == pytest.approx(1.342e12, rel=1e-3)
    # Llama-3.1-8B has 32 heads: TP 3 does not divide them
    assert set(rows("llama-3.1-8b", "h100", 8).reason) == {"layout_invalid"}
    # FP8 weights on an A100 (no FP8 tensor cores)
    assert set(rows("deepseek-v3", "a100-80g", 16).reason) == {"format_unsupported"}
    # Llama-3.1-8B BF16 on one H100: weights 2 x 8,030,261,248 B; KV per token 2 (K,V) x 32
    # layers x 8 KV heads x 128 x 2 B = 131,072 B. Batch 1 at 4096 + 1024 tokens: KV
    # 5120 x 131,072 = 671,088,640 B, fits. Batch 256 at 131,072 + 1024 tokens needs
    # 256 x 132,096 x 131,072 B = 4.4e12 B > 72e9: kv_does_not_fit.
    one = rows("llama-3.1-8b", "h100", 1)
    assert (one.weight_bytes_per_device == 2 * 8_030_261_248).all()
    ok = one[(one.batch == 1) & (one.input_tokens == 4096)].iloc[0]
    assert ok.feasible and ok.reason == "" and ok.kv_bytes_per_device == 5120 * 131072
    big = one[(one.batch == 256) & (one.input_tokens == 131072)].iloc[0]
    assert big.reason == "kv_does_not_fit" and np.isnan(big.tpot_s)
    assert big.kv_bytes_per_device == 256 * (131072 + 1024) * 131072
    # max batch at 132,096 tokens: floor((72e9 - 16,060,522,496 - workspace) / (132,096 x 131,072)) = 3
    assert big.max_batch == 3


def test_sweep_rows_equal_perf(small):
    feas = small[small.feasible]
    assert len(feas) >= 8
    for _, r in feas.sample(6, random_state=1).iterrows():
        req = LayoutRequest(devices=int(r.devices), tp=int(r.tp), ep=int(r.ep), pp=int(r.pp), weight_dtype=r.weight_dtype)
        p = perf(Scenario(load_model(r.model), load_hardware(r.hardware), req, int(r.batch), int(r.input_tokens),
                          int(r.output_tokens)))
        for a, b in (("ttft_s", "ttft_s"), ("tpot_s", "tpot_s"), ("e2e_s", "e2e_s"), ("tokens_per_s", "decode_tokens_per_s"),
                     ("tokens_per_s_per_device", "decode_tokens_per_s_per_device"),
                     ("combined_tokens_per_s", "combined_tokens_per_s"), ("prefill_mfu", "prefill_mfu"),
                     ("decode_mbu", "decode_mbu"), ("kv_bytes_per_device", "kv_bytes_per_device"),
                     ("max_batch", "max_batch")):
            assert r[a] == pytest.approx(getattr(p, b), rel=1e-9), a
        assert r.memory_per_device_bytes == pytest.approx(
            p.weight_bytes_per_device + p.comm_buffer_bytes_per_device + p.kv_bytes_per_device
            + p.workspace_bytes_per_device, rel=1e-12)


def test_dask_two_workers_give_the_same_frame(small):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        df = sweep([load_model("llama-3.1-8b"), load_model("deepseek-v3")],
                   [load_hardware("h100"), load_hardware("a100-80g")],
                   [LayoutRequest(devices=1, weight_dtype="bf16"), LayoutRequest(devices=8, tp=3), LayoutRequest(devices=16, weight_dtype="fp8")],
                   [1, 256], [4096, 131072], [1024], client=client)
    pd.testing.assert_frame_equal(df, small)


# ---- CLI ----------------------------------------------------------------------------------------

runner = CliRunner()
ENV = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
ARGS = ["sweep", "--models", "llama-3.1-8b,deepseek-v2-lite", "--hardware", "h100,h200", "--batch", "1,8",
        "--context", "1k,4k", "--output", "1k", "--devices", "1,2"]


def test_cli_writes_csv_and_parquet_atomically(tmp_path):
    for name in ("r.csv", "r.parquet"):
        path = tmp_path / name
        path.write_text("old")
        refused = runner.invoke(app, ARGS + ["-o", str(path)], env=ENV)
        assert refused.exit_code == 2 and "exists; give --force" in refused.stderr and path.read_text() == "old"
        res = runner.invoke(app, ARGS + ["-o", str(path), "--force"], env=ENV)
        assert res.exit_code == 0, res.stderr
        df = pd.read_csv(path) if name.endswith(".csv") else pd.read_parquet(path)
        # 2 models x 2 hardware x 2 device counts x 2 batches x 2 contexts = 32 rows
        assert len(df) == 32 and set(df.input_tokens) == {1024, 4096} and set(df.output_tokens) == {1024}
        assert "wrote 32 rows" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.parquet"]  # no temp file left


def test_cli_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "r.csv"
    path.write_text("old")

    def broken(self, tmp, **kw):
        open(tmp, "w").write("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    res = runner.invoke(app, ARGS + ["-o", str(path), "--force"], env=ENV)
    assert res.exit_code == 2 and "No space left on device" in res.stderr
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.csv"]


def test_cli_table_without_output_file():
    res = runner.invoke(app, ["sweep", "--models", "deepseek-v3", "--hardware", "h100", "--devices", "1", "--batch", "1"],
                        env=ENV)
    assert res.exit_code == 0
    assert "weights_do_not_fit" in res.stdout and "Sweep: 1 points (0 feasible)" in res.stdout


@pytest.mark.parametrize("extra,needle", [
    (["--batch", "0"], "--batch"), (["--batch", "1,,8"], "--batch"), (["--context", "4q"], "--context"),
    (["--kv-dtype", "fp7"], "--kv-dtype fp7"), (["--weight-dtype", "x"], "--weight-dtype x"),
    (["-o", "r.txt"], ".csv or .parquet"), (["-o", "/nonexistent-dir/r.csv"], "does not exist"),
    (["--models", "nope"], "nope"), (["--hardware", "tpu9"], "tpu9"), (["--hw-set", "memory_bandwidth=3"], "--hw-set"),
])
def test_cli_bad_input_exits_2_with_one_line(extra, needle):
    res = runner.invoke(app, ARGS + extra, env=ENV)
    assert res.exit_code == 2
    assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1 and res.stdout == ""


def test_cli_output_path_that_is_not_a_regular_file(tmp_path):
    (tmp_path / "d.csv").mkdir()
    res = runner.invoke(app, ARGS + ["-o", str(tmp_path / "d.csv")], env=ENV)
    assert res.exit_code == 2 and "is a directory" in res.stderr
