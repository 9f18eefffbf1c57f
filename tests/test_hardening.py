"""Hostile inputs and outputs (issue 10): every one ends in an answer or one stderr line with
exit code 2 (130 for Ctrl-C, 0 for a reader that left), quickly. Each case below failed before
(traceback, hang, or a silent wrong answer), as the probe in the commit message lists."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from costsim.cli import app

ROOT = Path(__file__).resolve().parents[1]
SPEC = (ROOT / "costsim" / "model_specs" / "llama-3.1-8b.yaml").read_text()
HW = (ROOT / "costsim" / "hardware_profiles" / "h100.yaml").read_text()
runner = CliRunner()


def _bad(args, *needles):
    t = time.time()
    r = runner.invoke(app, [str(a) for a in args])
    assert time.time() - t < 10
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 2, r.output
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and r.stdout == "", r.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_integers_beyond_python_and_float_range(tmp_path):
    p = tmp_path / "c.json"
    p.write_text('{"model_type": "llama", "hidden_size": ' + "9" * 5000 + "}")
    _bad(["show", p], "c.json", "4300 digits")
    _bad(["show", "llama-3.1-8b", "--set", "hidden_size=" + "9" * 5000], "--set hidden_size")
    _bad(["show", "llama-3.1-8b", "--set", "hidden_size=" + "9" * 4000], "below 2^63")
    _bad(["perf", "llama-3.1-8b", "-H", "h100", "--hw-set", "memory_bandwidth=" + "9" * 4000], "below 2^63")
    y = tmp_path / "hw.yaml"
    y.write_text(HW.replace("devices_per_node: 8", "devices_per_node: " + "9" * 5000))
    _bad(["perf", "llama-3.1-8b", "-H", y], "hw.yaml")


def test_null_or_list_where_a_number_is_expected(tmp_path):
    for v in ("null", "[1, 2]"):
        p = tmp_path / "s.yaml"
        p.write_text(SPEC.replace("num_hidden_layers: 32", f"num_hidden_layers: {v}"))
        _bad(["show", p], "s.yaml", "num_hidden_layers")
        _bad(["perf", "llama-3.1-8b", "-H", "h100", "--hw-set", f"memory_bandwidth={v}"], "memory_bandwidth")


def test_deep_nesting_and_alias_bombs(tmp_path):
    for name in ("d.json", "d.yaml"):
        p = tmp_path / name
        p.write_text("[" * 5000 + "]" * 5000)
        _bad(["show", p], name, "nested")
    _bad(["show", "llama-3.1-8b", "--set", "hidden_size=" + "[" * 3000 + "]" * 3000], "nested")
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    for i in range(1, 9):
        prev = chr(96 + i)
        bomb += f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{prev}"] * 9) + "]\n"
    p = tmp_path / "bomb.yaml"
    p.write_text(bomb + HW.replace("memory_bandwidth:", "memory_bandwidth: *i\nunused:", 1))
    _bad(["perf", "llama-3.1-8b", "-H", p], "bomb.yaml", "aliases")


def test_duplicate_yaml_and_json_keys(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text(SPEC + "\nhidden_size: 1234\n")
    _bad(["show", p], "dup.yaml", "duplicate key 'hidden_size'")
    j = tmp_path / "dup.json"
    cfg = (ROOT / "tests" / "fixtures" / "hf" / "llama-3.1-8b.json").read_text()
    j.write_text(cfg.replace('"hidden_size": 4096,', '"hidden_size": 4096, "hidden_size": 8,'))
    _bad(["show", j], "dup.json", "duplicate key 'hidden_size'")


def test_devices_as_input_file():
    _bad(["show", "/dev/zero"], "/dev/zero", "not a regular file")
    _bad(["import-hf", "/dev/zero"], "/dev/zero", "not a regular file")


@pytest.mark.parametrize("args, needle", [
    (["--devices", "10000000000000000000000"], "--devices"),
    (["--devices", "1000000000"], "2^20"),
    (["--tp", "1000000000000"], "--tp"),
    (["--batch", "1e20"], "--batch"),
    (["--input", "1e20"], "--input"),
    (["--output", "10M"], "--output"),
])
def test_bounds_before_loops(args, needle):
    _bad(["perf", "mixtral-8x7b", "-H", "h100", *args], needle, "at most")


def test_layer_count_bound_before_loops(tmp_path):
    cfg = json.loads((ROOT / "tests" / "fixtures" / "hf" / "llama-3.1-8b.json").read_text())
    cfg["num_hidden_layers"] = 10**15
    p = tmp_path / "c.json"
    p.write_text(json.dumps(cfg))
    _bad(["show", p], "num_hidden_layers", "100,000")


def test_bare_number_on_a_unit_field_asks_for_the_unit():
    _bad(["perf", "llama-3.1-8b", "-H", "h100", "--hw-set", "memory_bandwidth=8"], "give the unit", "TB/s")
    _bad(["perf", "llama-3.1-8b", "-H", "h100", "--hw-set", "peak_flops.bf16=989"], "give the unit", "TFLOPS")
    ok = runner.invoke(app, ["perf", "llama-3.1-8b", "-H", "h100", "--hw-set", "efficiency.memory=0.8",
                             "--hw-set", "inter_node_latency=0", "--format", "json"])
    assert ok.exit_code == 0, ok.output  # fractions and zero need no unit


def test_write_errors_name_the_path(tmp_path):
    cfg = ROOT / "tests" / "fixtures" / "hf" / "llama-3.1-8b.json"
    _bad(["plan", "llama-3.1-8b", "-H", "h100", "--max-devices", "1", "-o", "/proc/version", "--force"],
         "/proc/version", "cannot write")
    # import-hf writes YAML, so a name that says otherwise is refused before anything is written
    _bad(["import-hf", cfg, "-o", tmp_path / "spec.json"], "spec.json", ".yaml")
    _bad(["import-hf", cfg, "-o", tmp_path / ("x" * 300 + ".yaml")], "cannot write", "too long")
    assert list(tmp_path.iterdir()) == []


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip().startswith("costsim ")


def _cli(*args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return [sys.executable, "-c", "from costsim.cli import main; main()", *args], env


def test_broken_and_closed_stdout_exit_quietly_with_0():
    for fmt in ("table", "json"):
        cmd, env = _cli("show", "deepseek-v3", "--format", fmt)
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        p.stdout.close()  # the reader leaves before the first byte
        err = p.stderr.read().decode()
        assert p.wait(timeout=30) == 0 and "Traceback" not in err, err
    cmd, env = _cli("show", "deepseek-v3")
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, timeout=30,
                       preexec_fn=lambda: os.close(1))
    assert r.returncode == 0 and r.stderr == b"", r.stderr


def test_sigint_exits_130_without_a_traceback():
    code = ("import time, costsim.registry as r\n"
            "r.load_model = lambda ref: (print('ready', flush=True), time.sleep(30))\n"
            "from costsim.cli import main\nmain()\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # a shell's background job inherits SIGINT ignored, and Python then installs no handler: give
    # the child the default disposition a terminal-started command has
    p = subprocess.Popen([sys.executable, "-c", code, "show", "llama-3.1-8b"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=20)[1]
    assert p.returncode == 130 and "Traceback" not in err and len(err.splitlines()) <= 1, err


def test_sigkill_mid_write_leaves_a_temp_that_the_next_write_removes(tmp_path):
    """A write killed with SIGKILL cannot clean up: its temp file (.<name>.costsim-<pid>-*)
    stays beside the target, the target untouched. The next write to the same target removes
    it, because its process is gone."""
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    code = ("import sys, time\nfrom costsim.files import atomic_write\n"
            "def slow(tmp):\n    open(tmp, 'w').write('half')\n    print('writing', flush=True)\n    time.sleep(60)\n"
            "atomic_write(sys.argv[1], slow)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.stdout.readline().strip() == "writing"
    p.kill()
    p.wait(timeout=20)
    left = [f.name for f in tmp_path.iterdir() if f.name != "out.csv"]
    assert len(left) == 1 and left[0].startswith(f".out.csv.costsim-{p.pid}-"), left
    assert target.read_text() == "old\n"
    from costsim.files import atomic_write_text

    atomic_write_text(target, "new\n")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["out.csv"] and target.read_text() == "new\n"


# ---- bounded fuzz of the exit-code contract ------------------------------------------------

_WORDS = ["llama-3.1-8b", "mixtral-8x7b", "deepseek-v2-lite", "h100", "a100-80g", "0", "1", "-1", "3", "1e20",
          "128k", "inf", "nan", "null", "[1]", "8TB/s", "9" * 30, "fp8", "int4-g32", "bogus", "", "=", "1.5"]
_FLAGS = ["--context", "--batch", "--devices", "--tp", "--ep", "--input", "--output", "--weight-dtype",
          "--kv-dtype", "--set", "--hw-set", "--tpot-slo", "-H", "--format"]
_SETS = ["hidden_size=", "attention.num_key_value_heads=", "memory_bandwidth=", "efficiency.memory=",
         "num_hidden_layers=", "ffn.n_routed_experts="]


@st.composite
def _argv(draw):
    cmd = draw(st.sampled_from(["show", "kv", "perf", "max-throughput", "compare"]))
    argv = [cmd, draw(st.sampled_from(_WORDS[:3] + ["/dev/zero", "nope.yaml"]))]
    if cmd in ("perf", "max-throughput", "compare"):
        argv += ["-H", draw(st.sampled_from(["h100", "a100-80g", "cpu"]))]
    for _ in range(draw(st.integers(0, 3))):
        flag = draw(st.sampled_from(_FLAGS))
        val = draw(st.sampled_from(_WORDS))
        if flag in ("--set", "--hw-set"):
            val = draw(st.sampled_from(_SETS)) + val
        argv += [flag, val]
    return argv


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_argv())
def test_fuzz_cli_exit_code_contract(argv):
    r = runner.invoke(app, argv)
    assert r.exception is None or isinstance(r.exception, SystemExit), (argv, repr(r.exception))
    assert r.exit_code in (0, 2), (argv, r.exit_code, r.output)
    if r.exit_code == 2 and not r.stderr.startswith("Usage:"):  # click usage errors: main() makes them one line
        assert len(r.stderr.splitlines()) == 1, (argv, r.stderr)
    else:
        assert "inf" not in r.stdout.split() and "nan" not in r.stdout.lower().split(), (argv, r.stdout)


# ---- MFU and MBU never exceed 1 ------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(model=st.sampled_from(["llama-3.1-8b", "mixtral-8x7b", "deepseek-v2-lite", "qwen3-235b-a22b"]),
       hw=st.sampled_from(["h100", "h200", "a100-80g", "mi300x"]),
       batch=st.integers(1, 4096), inp=st.integers(1, 65536), out=st.integers(1, 4096),
       devices=st.sampled_from([1, 2, 8, 16]))
def test_mfu_and_mbu_never_exceed_one(model, hw, batch, inp, out, devices):
    from costsim.api import LayoutRequest, Scenario, load_hardware, load_model, perf
    from costsim.errors import CostsimError

    try:
        rec = perf(Scenario(load_model(model), load_hardware(hw), layout=LayoutRequest(devices=devices),
                            batch=batch, input_len=inp, output_len=out))
    except CostsimError:
        return  # does not fit / not placeable: refused, not a number
    assert 0 < rec.prefill_mfu <= 1
    assert rec.decode_mbu is None or 0 < rec.decode_mbu <= 1


# ---- -o never replaces an existing file without --force; help and defaults agree ----------------

_HF_CFG = Path(__file__).parent / "fixtures" / "hf" / "llama-3.1-8b.json"
_WRITERS = [
    ["import-hf", str(_HF_CFG)],
    ["plot", "kv", "deepseek-v2"],
    ["sweep", "--models", "llama-3.1-8b", "--hardware", "h100", "--batch", "1", "--context", "1k", "--devices", "1"],
]


@pytest.mark.parametrize("args,name", zip(_WRITERS, ["spec.yaml", "kv.png", "rows.csv"]), ids=["import-hf", "plot", "sweep"])
def test_existing_output_needs_force(tmp_path, args, name):
    out = tmp_path / name
    out.write_text("keep me")
    _bad(args + ["-o", out], str(out), "exists; give --force")
    assert out.read_text() == "keep me" and [p.name for p in tmp_path.iterdir()] == [name]
    r = runner.invoke(app, args + ["-o", str(out), "--force"])
    assert r.exit_code == 0, r.output
    assert out.read_bytes() != b"keep me" and [p.name for p in tmp_path.iterdir()] == [name]


def _options():
    import typer
    from typer.core import TyperOption

    out = []

    def walk(c, path):
        if hasattr(c, "commands"):
            for n, sub in c.commands.items():
                walk(sub, path + [n])
            return
        out.extend((" ".join(path), p) for p in c.params)

    walk(typer.main.get_command(app), [])
    return out, TyperOption


def test_every_option_and_argument_has_help():
    params, _ = _options()
    assert len(params) > 150
    missing = [(cmd, p.name) for cmd, p in params if not getattr(p, "help", None)]
    assert missing == []


def test_shared_options_have_one_default_and_files_are_o_out():
    # one meaning, one default: --context 4096, --output 1024 generated tokens, --kv-dtype bf16,
    # --batch 1 (a sweep's list starts at 1); a file to write is always -o/--out (never --output)
    params, TyperOption = _options()
    seen = {}
    differs = {"--tokens", "--tp", "--ep", "--weight-dtype", "--batch"}  # kernel commands: a shape, not a layout
    for cmd, p in params:
        if not isinstance(p, TyperOption):
            continue
        long = max(p.opts, key=len)
        if "-o" in p.opts:
            assert long == "--out", (cmd, p.opts)
        if long == "--output":
            assert p.default in ("1024",), (cmd, p.default)
        if long not in differs or not cmd.startswith("kernel"):
            if cmd in ("sweep", "plan", "disagg") and p.default is not None and "," in str(p.default):
                # a list to search: it starts at the shared default
                seen.setdefault(long, set()).add(str(p.default).split(",")[0])
                continue
            if long == "--tp" and cmd == "kv":
                continue  # kv --tp 1: the cache of one rank of an unsplit layout
            seen.setdefault(long, set()).add(str(p.default))
    for opt in ("--context", "--kv-dtype", "--batch", "--output", "--weight-dtype", "--tp", "--ep"):
        assert len(seen[opt]) == 1, (opt, seen[opt])
    assert seen["--context"] == {"4096"} and seen["--batch"] == {"1"} and seen["--kv-dtype"] == {"bf16"}
