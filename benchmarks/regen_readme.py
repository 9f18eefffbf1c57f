"""Re-run the README's example commands and paste their real output into README.md.

    python benchmarks/regen_readme.py

Each example block in the README starts with the first line its command prints; that block
is replaced by today's output. tests/test_readme.py fails when the README falls behind.
"""

import shlex
from pathlib import Path

from typer.testing import CliRunner

from costsim.cli import app

ROOT = Path(__file__).resolve().parents[1]
VALIDATE = "costsim validate -H cpu-dev --from-csv benchmarks/data/cpu-dev-heldout-2026-12-03.csv"
SWEEP = ("costsim sweep --models deepseek-v3,llama-3.1-70b --hardware h800,h200 --batch 1,64 --context 4k,32k "
         "--devices 8 --weight-dtype fp8")
PLAN = ("costsim plan deepseek-v3 --hardware h200,h800,b200 --context 4k --outp"
        "ut 1k --tpot-slo 50ms --ttft-slo 5s --target-tokens-per-s 1M --pp 1 --top 6 --kv-dtype fp8")
COMMANDS = [
    ["costsim compare deepseek-v2 deepseek-llm-67b --hardware h800 --weight-dtype fp8 --batch 64"],
    ["costsim kv deepseek-v2 deepseek-llm-67b deepseek-v3 qwen2.5-72b llama-3.1-405b --context 128k --batch 8 --kv-dtype fp8"],
    ["costsim perf deepseek-v3 --hardware h800 --devices 32 --ep 32 --batch 1024 --input 4096 --output 1024 "
     "--weight-dtype fp8 --kv-dtype fp8"],
    ["costsim max-throughput deepseek-v2 --hardware h800 --weight-dtype fp8 --kv-dtype 6 --context 2048 --tpot-slo 50ms",
     "costsim max-throughput deepseek-llm-67b --hardware h800 --context 2048 --tpot-slo 50ms"],
    [VALIDATE],
    ["costsim whatif deepseek-v2 --hardware h800 --weight-dtype fp8 --batch 64 --set attention.kv_lora_rank=256"],
    ["costsim whatif llama-3.1-70b --hardware h800 --batch 64 --convert mha-to-mla:d_c=512,d_h_r=64"],
    ["costsim reproduce deepseek-v2"],
    [SWEEP],
    [PLAN],
]


PY_START = "```python\nfrom costsim.api"


def python_example(readme: str) -> tuple[str, int, int]:
    """The README's Python API example, and the span of the output block that follows it."""
    i = readme.index(PY_START) + len("```python\n")
    code = readme[i:readme.index("```", i)]
    out_start = readme.index("\n", readme.index("```", readme.index("```", i) + 3)) + 1
    return code, out_start, readme.index("```", out_start)


def run_python_example(code: str) -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, "README.md", "exec"), {})
    return buf.getvalue()


REPORT = "costsim report deepseek-v2 llama-3.1-70b -H h200-calibrated --weight-dtype fp8 -o docs/example-report"
TABLE_HEAD = "| model | layout | max-throughput batch |"


def report_table(md: str) -> str:
    """The first serving table of a report.md."""
    i = md.index(TABLE_HEAD)
    return md[i:md.index("\n\n", i)]


def regen_example_report(readme: str) -> str:
    """Rewrite docs/example-report with the real command; paste its serving table into the README."""
    import subprocess

    subprocess.run(shlex.split(REPORT) + ["--force"], check=True, cwd=ROOT)
    table = report_table((ROOT / "docs" / "example-report" / "report.md").read_text())
    return readme.replace(report_table(readme), table)


def main() -> None:
    import os

    os.chdir(ROOT)  # the README's paths are relative to the repository root
    readme = (ROOT / "README.md").read_text()
    code, a, b = python_example(readme)
    readme = readme[:a] + run_python_example(code) + readme[b:]
    runner = CliRunner()
    for group in COMMANDS:
        out = ""
        for cmd in group:
            r = runner.invoke(app, shlex.split(cmd)[1:])
            assert r.exit_code == 0, r.output
            out += r.stdout
        first = out.splitlines()[0]
        i = readme.index(first)
        j = readme.index("```", i)
        readme = readme[:i] + out.rstrip("\n") + "\n" + readme[j:]
    readme = regen_example_report(readme)
    (ROOT / "README.md").write_text(readme)


if __name__ == "__main__":
    main()
