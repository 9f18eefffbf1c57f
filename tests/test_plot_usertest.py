"""Fresh-user findings on ``costsim plot ...`` and ``costsim report`` (usertest branch).

Each test fails on the code before its fix: the throughput plot drew another layout than
``max-throughput`` reports; a report lost every model's curve when one model did not fit;
``report --context 16M`` wrote a report of nothing but "not drawn"; ``plot cost --price 0``
wrote an empty log plot; ``plot roofline --context 0`` was accepted; ``python -m costsim.cli``
did not run; batch labels of nearby marks overlapped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from costsim.cli import app
from costsim.registry import load_hardware, load_model
from costsim.simulator import figures as F
from costsim.simulator.layout import LayoutRequest
from costsim.simulator.scenario import max_throughput_search
from costsim.simulator.serving import decode

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def _err_line(r) -> str:
    """The one stderr line of a refused command (exit 2, no traceback)."""
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_throughput_curve_uses_the_layout_max_throughput_picks():
    # deepseek-v2 bf16 on 8 x h800: the default (perf) layout is TP2 (max batch 36, 196 tokens/s per
    # device); max-throughput tries every TP and answers TP4 (batch 64, 283 tokens/s per device; both
    # beside 0.285 GB of DeepEP buffers, memory.deepep_buffers).
    # The plot used to draw TP2, so its best point disagreed with `costsim max-throughput`.
    v2, h800 = load_model("deepseek-v2"), load_hardware("h800")
    c = F.throughput_curve(v2, h800, LayoutRequest(), 4096)
    dep, r = max_throughput_search(v2, h800, LayoutRequest(), 4096)
    assert (c["deployment"].tp, c["deployment"].ep) == (dep.tp, dep.ep) == (4, 8)
    assert c["max_batch"] == r.max_batch_memory == 64
    best = int(np.argmax(c["tokens_per_s_per_device"]))
    assert c["tokens_per_s_per_device"][best] == pytest.approx(r.tokens_per_s_per_device)
    # and the point is the engine's decode at that batch: batch / TPOT / 8 devices
    d = decode(v2, h800, dep, float(r.batch), 4096)
    assert r.tokens_per_s_per_device == pytest.approx(r.batch / float(d.time_s) / 8)
    # an explicit --tp is kept
    assert F.throughput_curve(v2, h800, LayoutRequest(tp=2), 4096)["max_batch"] == 36


def test_throughput_curve_with_an_slo_takes_max_throughputs_layout_and_survives_an_impossible_one():
    l70, h800 = load_model("llama-3.1-70b"), load_hardware("h800")
    dep, _ = max_throughput_search(l70, h800, LayoutRequest(), 4096, 0.030)
    c = F.throughput_curve(l70, h800, LayoutRequest(), 4096, 0.030)
    assert c["deployment"].tp == dep.tp
    # 1 us: no layout meets it; the curve is still drawn (the most tokens/s without the SLO)
    free, _ = max_throughput_search(l70, h800, LayoutRequest(), 4096)
    assert F.throughput_curve(l70, h800, LayoutRequest(), 4096, 1e-6)["deployment"].tp == free.tp


def test_report_keeps_the_curves_of_models_that_fit(tmp_path):
    out = tmp_path / "rep"
    r = runner.invoke(app, ["report", "deepseek-v3", "llama-3.1-8b", "-H", "h800", "-o", str(out)])
    assert r.exit_code == 0, r.output
    names = {p.name for p in out.iterdir()}
    # deepseek-v3 (100.8 GB of fp8 weights per device on 8 x h800) does not fit; llama-3.1-8b does
    assert {"throughput_h800.png", "throughput_h800.svg", "max_batch.png", "max_batch.svg"} <= names
    md = (out / "report.md").read_text()
    assert "Decode throughput against TPOT on h800 (deepseek-v3): deepseek-v3 does not fit on h800" in md
    assert "Largest batch that fits against context (deepseek-v3 on h800)" in md
    assert "](throughput_h800.png)" in md


def test_report_refuses_context_plus_output_beyond_the_cap(tmp_path):
    out = tmp_path / "rep"
    r = runner.invoke(app, ["report", "llama-3.1-8b", "-H", "h800", "-o", str(out), "--context", "16M"])
    line = _err_line(r)
    # 16M = 16,777,216 = 2^24 alone is allowed, but 16,777,216 + 1,024 output tokens is not
    assert "--context 16M + --output 1024: 16,778,240 tokens" in line and "16,777,216" in line
    assert not out.exists()


def test_cost_plot_with_a_zero_price_is_refused_not_an_empty_plot(tmp_path):
    out = tmp_path / "c.png"
    r = runner.invoke(app, ["plot", "cost", "llama-3.1-8b", "-H", "h800", "--price", "0USD/h", "-o", str(out)])
    assert "price 0 USD/h" in _err_line(r) and "--price" in r.stderr
    assert not out.exists()


def test_roofline_refuses_context_zero(tmp_path):
    out = tmp_path / "r.png"
    r = runner.invoke(app, ["plot", "roofline", "llama-3.1-8b", "-H", "h800", "--context", "0", "-o", str(out)])
    assert _err_line(r) == "costsim: error: --context: expected a finite integer >= 1, got '0'"
    assert not out.exists()


def test_python_dash_m_runs_the_cli_and_names_costsim_in_usage_errors():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "costsim.cli", "plot", "frontier", "llama-3.1-8b", "-H", "h800",
                        "-o", "x.png", "--max-devices", "abc"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith("costsim plot frontier: error: Invalid value for '--max-devices'"), r.stderr
    r = subprocess.run([sys.executable, "-m", "costsim", "models", "--format", "csv"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 0 and "deepseek-v2" in r.stdout


def test_throughput_batch_labels_do_not_overlap(tmp_path, monkeypatch):
    # llama-3.1-70b on h200 at TP4: b=1 and b=4 are ~1 px apart; their labels used to print on top of each other
    from costsim.reports import plots as P

    placed = []
    import matplotlib.axes

    orig = matplotlib.axes.Axes.annotate

    def spy(self, text, xy, *a, **k):
        ann = orig(self, text, xy, *a, **k)
        if text.startswith("b="):
            placed.append(ann)
        return ann

    monkeypatch.setattr(matplotlib.axes.Axes, "annotate", spy)
    c = F.throughput_curve(load_model("llama-3.1-70b"), load_hardware("h200"), LayoutRequest(tp=4), 4096)
    P.throughput_latency([c], tmp_path / "t.png", "t")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(placed[0].figure).get_renderer()
    boxes = [ann.get_window_extent(renderer) for ann in placed]
    assert len(boxes) == len(c["mark_batch"]) - 1 >= 4
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (placed[i].get_text(), placed[j].get_text())
