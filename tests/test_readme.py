"""Keep the README honest: its example output and spec example come from today's code."""

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from costsim.cli import app

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
runner = CliRunner()


def _block_after(marker: str) -> str:
    i = README.index(marker) + len(marker)
    start = README.index("\n", README.index("```", i)) + 1  # after the fence and its language tag
    return README[start:README.index("```", start)]


def _run(cmdline: str) -> str:
    import os

    args = shlex.split(cmdline)
    assert args[0] == "costsim"
    here = os.getcwd()
    os.chdir(Path(__file__).resolve().parents[1])  # README paths are relative to the repository root
    try:
        r = runner.invoke(app, args[1:])
    finally:
        os.chdir(here)
    assert r.exit_code == 0, r.output
    return r.stdout


@pytest.mark.parametrize("command", [
    # the quick-start main job
    re.search(r"pip install -e \. && (costsim compare [^\n]+)", README).group(1),
    "costsim kv deepseek-v2 deepseek-llm-67b deepseek-v3 qwen2.5-72b llama-3.1-405b --context 128k --batch 8 --kv-dtype fp8",
    "costsim perf deepseek-v3 --hardware h800 --devices 32 --ep 32 --batch 1024 --input 4096 --output 1024 "
    "--weight-dtype fp8 --kv-dtype fp8",
    "costsim validate -H cpu-dev --from-csv benchmarks/data/cpu-dev-heldout-2026-12-03.csv",
    "costsim whatif deepseek-v2 --hardware h800 --weight-dtype fp8 --batch 64 --set attention.kv_lora_rank=256",
    "costsim whatif llama-3.1-70b --hardware h800 --batch 64 --convert mha-to-mla:d_c=512,d_h_r=64",
    "costsim reproduce deepseek-v2",
    "costsim sweep --models deepseek-v3,llama-3.1-70b --hardware h800,h200 --batch 1,64 --context 4k,32k --devices 8 "
    "--weight-dtype fp8",
    "costsim plan deepseek-v3 --hardware h200,h800,b200 --context 4k --output 1k --tpot-slo 50ms --ttft-slo 5s --target-tokens-per-s 1M --pp 1 --top 6 --kv-dtype fp8",
])
def test_readme_example_output_is_current(command):
    out = _run(command)
    first = out.splitlines()[0]
    shown = README[README.index(first):]
    shown = shown[:shown.index("```")]
    assert out.strip() == shown.strip()


def test_readme_v2_vs_67b_commands_give_the_quoted_figures():
    block = _block_after("The V2 vs 67B row comes from two commands")
    v2_cmd, b67_cmd = [line for line in block.splitlines() if line.startswith("costsim")]
    out = _run(v2_cmd) + _run(b67_cmd)
    shown = README[README.index(out.splitlines()[0]):]
    assert out.strip() == shown[:shown.index("```")].strip()


def test_readme_spec_example_loads(tmp_path):
    i = README.index("name: my-mla-moe")
    spec = tmp_path / "spec.yaml"
    spec.write_text(README[i:README.index("```", i)])
    r = runner.invoke(app, ["show", str(spec), "--format", "json"])
    assert r.exit_code == 0, r.output
    assert '"kv_cache_elements_per_token": 15552' in r.stdout  # (512 + 64) x 27


def test_readme_hardware_example_loads(tmp_path):
    i = README.index("name: my-gpu")
    hw = tmp_path / "gpu.yaml"
    hw.write_text(README[i:README.index("```", i)])
    r = runner.invoke(app, ["perf", "llama-3.1-8b", "--hardware", str(hw), "--devices", "1", "--format", "json"])
    assert r.exit_code == 0, r.output


def test_readme_python_example_runs_and_prints_what_is_shown():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from regen_readme import python_example, run_python_example

    code, a, b = python_example(README)
    assert run_python_example(code) == README[a:b]


def test_readme_report_table_is_current():
    # the serving table of docs/example-report (benchmarks/regen_readme.py REPORT), recomputed
    from costsim.registry import load_hardware, load_model
    from costsim.reports.report import ReportRequest, _md_table, _serving_rows, SERVING_HEAD
    from costsim.simulator.layout import LayoutRequest

    req = ReportRequest([load_model("deepseek-v2"), load_model("llama-3.1-70b")], [load_hardware("h200-calibrated")],
                        LayoutRequest(weight_dtype="fp8"))
    table = _md_table(SERVING_HEAD, _serving_rows(req, req.hardware[0]))
    assert table in README
    report = (Path(__file__).resolve().parents[1] / "docs" / "example-report" / "report.md").read_text()
    assert table in report
