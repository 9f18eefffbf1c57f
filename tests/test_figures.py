"""Plot data (not pixels) equals the engine, and ``costsim report`` writes what it links.

Sources: DeepSeek-V2 (arXiv 2405.04434) Table 1 / §3.1.2 for MLA's (d_c + d_h^R) = 512 + 64
elements per token per layer; HF configs for the GQA models; NVIDIA H800 datasheet peaks as
the shipped profile states them (989 TFLOP/s bf16, 1979 TFLOP/s fp8 dense).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from typer.testing import CliRunner

from costsim.cli import app
from costsim.errors import CostsimError
from costsim.registry import load_hardware, load_model
from costsim.reports.plots import label_offsets
from costsim.simulator import figures as F
from costsim.simulator.layout import LayoutRequest, resolve_deployment
from costsim.simulator.memory import memory_report
from costsim.simulator.serving import decode, max_throughput

runner = CliRunner()
V2, H800 = load_model("deepseek-v2"), load_hardware("h800")
FP8 = LayoutRequest(weight_dtype="fp8")


def test_kv_per_token_matches_the_papers_and_groups_by_kind():
    rows = F.kv_per_token([load_model(m) for m in ("deepseek-llm-7b", "llama-3.1-8b", "deepseek-v2",
                                                   "llama-2-70b")])
    kv = {r["label"]: r["kv_bytes_per_token"] for r in rows}
    assert kv["deepseek-v2"] == (512 + 64) * 60 * 2  # MLA: (d_c + d_h^R) x 60 layers x 2 bytes
    assert kv["llama-3.1-8b"] == 2 * 8 * 128 * 32 * 2  # GQA: K and V, 8 KV heads x 128, 32 layers
    assert kv["llama-2-70b"] == 2 * 8 * 128 * 80 * 2
    assert kv["deepseek-llm-7b"] == 2 * 32 * 128 * 30 * 2  # MHA: 32 heads x 128, 30 layers
    # grouped by kind, the kind with the smallest entry first, ascending inside a kind
    assert [r["attention"] for r in rows] == ["mla", "gqa", "gqa", "mha"]
    assert [r["label"] for r in rows][1:3] == ["llama-3.1-8b", "llama-2-70b"]
    assert F.kv_per_token([V2], "fp8")[0]["kv_bytes_per_token"] == (512 + 64) * 60


def test_kv_curve_and_memory_lines():
    c = F.kv_curve(V2, "bf16", np.array([0, 1024, 131072]), batch=8)
    assert list(c["kv_bytes"]) == [0, 69120 * 1024 * 8, 69120 * 131072 * 8]
    assert F.memory_lines([H800, load_hardware("h200")])[1]["memory_bytes"] == 141e9
    with pytest.raises(CostsimError):
        F.kv_curve(V2, "nosuch", [1])


def test_throughput_curve_points_equal_decode_and_end_at_the_memory_limit():
    c = F.throughput_curve(V2, H800, FP8, context=4096)
    dep = c["deployment"]
    assert c["layout"] == "8 devices, TP1 EP8 PP1, fp8 weights, bf16 KV"
    for i in (0, len(c["batch"]) // 2, -1):
        d = decode(V2, H800, dep, float(c["batch"][i]), 4096)
        assert c["tpot_s"][i] == pytest.approx(float(d.time_s))
        assert c["tokens_per_s_per_device"][i] == pytest.approx(float(d.tokens_per_s) / 8)
    assert c["batch"][-1] == c["max_batch"] == int(memory_report(V2, H800, dep, dep.dp, 4096).max_batch)
    assert list(c["mark_batch"]) == [1, 4, 16, 64, 256, c["max_batch"]]  # max batch 840 (see the README)
    for b, t, v in zip(c["mark_batch"], c["mark_tpot_s"], c["mark_tokens_per_s_per_device"]):
        d = decode(V2, H800, dep, float(b), 4096)
        assert t == pytest.approx(float(d.time_s)) and v == pytest.approx(b / t / 8)


def test_roofline_has_a_roof_per_dtype_and_numbers_by_share():
    r = F.decode_roofline(V2, H800, FP8, batch=64, context=4096)
    assert r["roofs"] == {"bf16": 989e12, "fp8": 1979e12}  # fp8 GEMMs, bf16 attention core and LM head
    assert r["achievable"]["fp8"] == pytest.approx(1979e12 * H800.efficiency.compute.value)
    assert {p["dtype"] for p in r["points"]} == {"bf16", "fp8"}
    shares = [p["share"] for p in r["points"]]
    assert shares == sorted(shares, reverse=True) and sum(shares) <= 1 + 1e-9
    assert [p["number"] for p in r["points"]] == list(range(1, len(shares) + 1))
    t = decode(V2, H800, r["deployment"], 64, 4096).timing
    ops = {x.op.name: x for x in t.timings}
    for p in r["points"]:
        x = ops[p["label"]]
        assert p["flops_per_s"] == pytest.approx(float(x.op.flops) / float(x.time_s))
        assert p["share"] == pytest.approx(float(x.total_s) / float(t.time_s))
    assert r["fits"] and not F.decode_roofline(V2, H800, FP8, batch=4096, context=131072)["fits"]


def test_max_batch_curve_equals_memory_report_at_each_context():
    ctx = [1024, 8192, 131072]
    c = F.max_batch_curve(V2, H800, FP8, ctx)
    dep = c["deployment"]
    for x, b in zip(ctx, c["max_batch"]):
        assert b == memory_report(V2, H800, dep, dep.dp, x).max_batch
    assert np.all(np.diff(c["max_batch"]) < 0)
    with pytest.raises(CostsimError):
        F.max_batch_curve(V2, H800, FP8, [])


@pytest.mark.parametrize("seed", range(5))
def test_pareto_mask_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    u, d = rng.random(60), rng.random(60)
    brute = [not any((u[j] >= u[i] and d[j] >= d[i]) and (u[j] > u[i] or d[j] > d[i]) for j in range(60))
             for i in range(60)]
    assert list(F.pareto_mask(u, d)) == brute


def test_pareto_mask_ties():
    # equal per-user rate: only the higher per-device point is on the frontier
    assert list(F.pareto_mask([1, 1, 2], [5, 3, 1])) == [True, False, True]


def test_frontier_points_come_from_max_throughput_and_cost_is_the_cheapest_meeting_the_slo():
    f = F.frontier(V2, H800, FP8, context=4096)
    assert len(set(f["layouts"])) > 1 and f["pareto"].any()
    # one layout's points, recomputed
    dep = resolve_deployment(V2, H800, LayoutRequest(devices=8, tp=1, ep=8, pp=1, weight_dtype="fp8"), 1, 4096)
    r = max_throughput(V2, H800, dep, 4096)
    m = np.array([lay == "8x TP1 EP8" for lay in f["layouts"]])
    assert np.allclose(f["tokens_per_s_per_device"][m], r.curve_tokens_per_s / 8)
    assert np.allclose(f["tokens_per_s_per_user"][m], r.curve_tokens_per_s / r.curve_batch)
    slos = [float(f["tpot_s"].min()) / 2, 0.02, 0.05]
    c = F.cost_vs_slo(f, slos)
    assert np.isnan(c["usd_per_million_output_tokens"][0])  # faster than any batch
    price = H800.price_per_device_hour.value
    for s, usd in zip(slos[1:], c["usd_per_million_output_tokens"][1:]):
        best = max(v for v, t in zip(f["tokens_per_s_per_device"], f["tpot_s"]) if t <= s)
        assert usd == pytest.approx(price / 3600 / best * 1e6)
    assert c["usd_per_million_output_tokens"][1] >= c["usd_per_million_output_tokens"][2]


def test_label_offsets_keep_close_labels_apart():
    x = np.array([10.0, 11.0, 12.0, 300.0])
    y = np.array([100.0, 101.0, 100.5, 100.0])
    off = label_offsets(x, y, gap=9, near=30)
    pos = y + np.array(off)
    close = pos[:3]
    assert min(np.diff(np.sort(close))) >= 9 - 1e-9
    assert off[3] == 0  # far away: not moved
    assert label_offsets([1.0, np.nan], [1.0, 1.0]) == [0.0, 0.0]


# ---- CLI: plots and the report ----------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["throughput", "llama-3.1-8b", "-H", "h100", "--tp", "2", "--devices", "2"],
    ["roofline", "deepseek-v2-lite", "-H", "h100", "--batch", "8", "--pp", "1"],
    ["kv", "deepseek-v2", "llama-3.1-8b", "-H", "h100,h200"],
    ["kv-models", "deepseek-v2", "llama-3.1-8b", "deepseek-llm-7b"],
    ["max-batch", "llama-3.1-8b", "-H", "h100,h800", "--max-context", "32k"],
    ["frontier", "llama-3.1-8b", "-H", "h100", "--max-devices", "2"],
    ["cost", "llama-3.1-8b", "-H", "h100", "--max-devices", "2", "--price", "2USD/h"],
])
def test_every_plot_command_writes_its_file(tmp_path, args):
    out = tmp_path / "p.svg"
    r = runner.invoke(app, ["plot", *args, "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_text().lstrip().startswith("<?xml") and "</svg>" in out.read_text()


def test_report_writes_figures_and_links_only_existing_files(tmp_path):
    d = tmp_path / "rep"
    r = runner.invoke(app, ["report", "llama-3.1-8b", "-H", "h100", "--max-devices", "2", "-o", str(d)])
    assert r.exit_code == 0, r.output
    md = (d / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", md)
    assert links and all((d / link).is_file() for link in links)
    names = {p.name for p in d.iterdir()}
    for fig in ("kv_per_token", "kv_vs_context", "max_batch", "throughput_h100", "roofline_llama-3.1-8b_h100",
                "frontier", "cost_vs_slo"):
        assert {f"{fig}.png", f"{fig}.svg"} <= names, fig
    # exact figures from the engine: 8,030,261,248 parameters (HF Llama-3.1-8B), 128 KiB KV per token
    assert "| llama-3.1-8b | GQA | dense |" in md and "| 8.03 |" in md and "| 128.0 |" in md
    assert "rates and their provenance" in md and "datasheet" in md
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp directory left


def test_report_refuses_a_nonempty_directory_and_a_file(tmp_path):
    (tmp_path / "x").write_text("keep")
    for target, needle in ((tmp_path, "not empty"), (tmp_path / "x", "not a directory"),
                           (tmp_path / "no" / "r", "does not exist")):
        r = runner.invoke(app, ["report", "llama-3.1-8b", "-H", "h100", "-o", str(target)])
        assert r.exit_code == 2 and needle in r.stderr, r.output
    assert (tmp_path / "x").read_text() == "keep"


def test_a_failed_report_leaves_nothing(tmp_path, monkeypatch):
    from costsim.reports import report

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(report, "_markdown", boom)
    with pytest.raises(OSError):
        report.write_report(report.ReportRequest([load_model("llama-3.1-8b")], [load_hardware("h100")],
                                                 LayoutRequest(), max_devices=1), tmp_path / "rep")
    assert list(tmp_path.iterdir()) == []


def test_scatter_rows_sample_each_label():
    pd = pytest.importorskip("pandas")
    from costsim.calibration.silicon_fit import scatter_rows

    frame = pd.DataFrame(dict(label=["a"] * 5 + ["b"] * 3, measured_s=np.arange(8.0) + 1,
                              predicted_s=np.arange(8.0) + 2))
    rows = scatter_rows(frame, per_label=4)
    assert [r["family"] for r in rows].count("a") == 4 and [r["family"] for r in rows].count("b") == 3
    assert all(r["predicted_s"] == r["min_s"] + 1 for r in rows)
