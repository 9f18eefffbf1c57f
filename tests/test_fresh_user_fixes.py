"""Defects a fresh user found, each pinned by a test:

1. ``plan --pp 3`` ended its error with an empty reason ("h800: "): now it says why no layout exists.
2. The max_position_embeddings warning (``scenario.context_warnings``, shown by ``perf``) was missing
   from ``sweep``, ``plan`` and ``kernel attention``.
3. ``perf`` at a 1M-token prompt on one device named the weights; the messages now name what does not
   fit (KV cache, activations) with its bytes.
4. ``kv`` / ``show`` / ``compare`` accepted ``--context 0``; they refuse it as ``perf`` refuses ``--input 0``.
5. ``--mtp-acceptance`` without ``--mtp`` was silently ignored; it is refused.
"""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

import tiny
from costsim.cli import app
from costsim.errors import CostsimError, FieldError
from costsim.registry import load_hardware, load_model
from costsim.simulator.planner import HardwareSummary, Plan, infeasible_message, plan

runner = CliRunner()
WIDE = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


def _run(*args):
    return runner.invoke(app, [str(a) for a in args], env=WIDE)


def _one_error_line(r) -> str:
    assert r.exit_code == 2, (r.exit_code, r.output)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and r.stdout == "", r.output
    return lines[0]


def _warnings(r) -> list[str]:
    assert r.exit_code == 0, r.output
    return [ln for ln in r.stderr.splitlines() if ln.startswith("costsim: warning: ")]


def _priced_hw():
    return tiny.hw(memory_capacity=2e5, price_per_device_hour=dict(value=1.5, source="test", provenance="assumed"))


def _files(tmp_path, **spec_kw):
    s, h = tmp_path / "tiny-gqa.yaml", tmp_path / "tiny-hw.yaml"
    s.write_text(yaml.safe_dump(tiny.gqa(**spec_kw).model_dump(mode="json", exclude_none=True)))
    h.write_text(yaml.safe_dump(_priced_hw().model_dump(mode="json", exclude_none=True)))
    return str(s), str(h)


# ---- 1. plan with a PP degree that gives no layout ---------------------------------------------


def test_plan_pp3_says_why_no_layout_exists():
    # the planner tries 1, 2, 4, ..., 64 devices per replica: 3 divides none of them
    line = _one_error_line(_run("plan", "llama-3.1-70b", "-H", "h800", "--pp", "3", "--context", "8k",
                                "--output", "1k"))
    assert line == ("costsim: error: --pp 3: no layout to search: PP 3 divides none of the device counts searched "
                    "(powers of two up to --max-devices 64); give a power of two <= 64")


def test_plan_engine_names_each_pp_problem_and_keeps_a_good_pp():
    spec, hw = tiny.gqa(num_hidden_layers=4), _priced_hw()
    with pytest.raises(FieldError) as e:  # devices searched: 1, 2, 4
        plan(spec, [hw], 64, 8, max_devices=4, pp=(3, 8))
    assert e.value.field == "pp" and e.value.value == "3,8"
    assert e.value.reason == ("no layout to search: PP 3 divides none of the device counts searched (powers of two "
                              "up to --max-devices 4); give a power of two <= 4; PP 8 exceeds the 4 layers of "
                              "tiny-gqa")
    # 3 is skipped when another degree has layouts: every plan is at pp = 2
    rows = plan(spec, [hw], 64, 8, max_devices=4, pp=(3, 2), top=None).rows
    assert rows and {r.pp for r in rows} == {2}


def test_infeasible_message_never_ends_with_an_empty_reason():
    summary = HardwareSummary("h800", 0, 0, 0, 0, {}, None, None, 2.0, "list_price")
    p = Plan("m", 8192, 1024, None, None, None, None, 64, (3,), {}, ("bf16",), [], [summary], True)
    msg = infeasible_message(p)
    assert msg.endswith("h800: no layout to search with PP 3 within 64 devices (--pp, --max-devices)")


# ---- 2. the max_position_embeddings warning in sweep, plan and kernel attention ----------------

# tiny-gqa with max_position_embeddings 64: 64 prompt + 8 output tokens = 72 > 64
WARN72 = "costsim: warning: 72 tokens exceed tiny-gqa's max_position_embeddings (64); figures are extrapolated"


def test_sweep_warns_beyond_max_position_embeddings(tmp_path):
    s, h = _files(tmp_path, max_position_embeddings=64)
    r = _run("sweep", "--models", s, "-H", h, "--batch", "1", "--context", "16,64", "--output", "1,8")
    assert _warnings(r) == [WARN72]  # the largest context + output of the grid
    s2, _ = _files(tmp_path, max_position_embeddings=72)  # 72 tokens are within it
    assert _warnings(_run("sweep", "--models", s2, "-H", h, "--batch", "1", "--context", "64", "--output", "8")) == []


def test_plan_warns_beyond_max_position_embeddings(tmp_path):
    s, h = _files(tmp_path, max_position_embeddings=64)
    r = _run("plan", s, "-H", h, "--context", "64", "--output", "8", "--max-devices", "2", "-f", "json")
    assert _warnings(r) == [WARN72] and json.loads(r.stdout)["rows"]
    s2, _ = _files(tmp_path, max_position_embeddings=72)
    assert _warnings(_run("plan", s2, "-H", h, "--context", "64", "--output", "8", "--max-devices", "2")) == []


def test_kernel_attention_warns_beyond_max_position_embeddings(tmp_path):
    s, h = _files(tmp_path, max_position_embeddings=64)
    # 60 cached + 4 new tokens = 64: within; 61 + 4 = 65: beyond
    assert _warnings(_run("kernel", "attention", s, "-H", h, "--context", "60", "--new-tokens", "4")) == []
    r = _run("kernel", "attention", s, "-H", h, "--context", "61", "--new-tokens", "4")
    assert _warnings(r) == ["costsim: warning: 65 tokens exceed tiny-gqa's max_position_embeddings (64); "
                            "figures are extrapolated"]


# ---- 3. perf names what does not fit, with its bytes -------------------------------------------


def test_perf_1m_prompt_names_the_kv_cache_not_the_weights():
    r = _run("perf", "llama-3.1-8b", "-H", "h100", "--input", "1M", "--devices", "1", "-f", "json")
    warns = _warnings(r)
    # Llama-3.1-8B KV: 2 (K, V) x 8 KV heads x 128 x 32 layers x 2 B = 131,072 B/token
    # at 1,048,576 + 1,024 tokens: 137,573,171,200 B = 137.6 GB (the prompt alone: 137,438,953,472 B)
    # weights 8,030,261,248 params x 2 B = 16.06 GB; usable 0.9 x 80 GB = 72 GB; left 55.94 GB
    rec = json.loads(r.stdout)
    assert rec["weight_bytes_per_device"] == 2 * 8_030_261_248 and rec["max_batch"] == 0
    fit = [w for w in warns if w.startswith("costsim: warning: batch 1 does not fit")]
    assert len(fit) == 1 and "its KV cache (137.6 GB) and activations" in fit[0]
    assert "exceed the 55.94 GB left beside 16.06 GB of weights (72 GB usable; GB = 1e9 bytes); max batch 0" in fit[0]
    pre = [w for w in warns if "cannot be chunked" in w]
    assert len(pre) == 1 and "their KV cache (137.4 GB)" in pre[0] and "55.94 GB left beside 16.06 GB" in pre[0]
    assert not any("weights do not fit" in w for w in warns)


def test_pp_layout_reason_names_the_weights_with_bytes_when_they_are_what_does_not_fit():
    from costsim.simulator.layout import LayoutRequest, resolve_deployment
    from costsim.simulator.params import param_counts

    spec, h100 = load_model("llama-3.1-405b"), load_hardware("h100")
    dep = resolve_deployment(spec, h100, LayoutRequest(devices=16), 1, 4096)
    # TP8 x 2 replicas at pp=1: 2 B x 405.9e9 / 8 = 101.5 GB of weights per device > 0.9 x 80 GB
    assert round(2 * param_counts(spec).total / 8 / 1e9, 1) == 101.5
    assert dep.layout_reason.startswith("pp=2: at pp=1 (tp=8, dp=2) the weights do not fit: weights 101.5 GB + ")
    assert "GB per device > 72 GB usable (GB = 1e9 bytes)" in dep.layout_reason


# ---- 4. --context 0 refused by kv, show and compare --------------------------------------------


@pytest.mark.parametrize("args", [["kv", "llama-3.1-8b"], ["show", "llama-3.1-8b"],
                                  ["compare", "llama-3.1-8b", "-H", "h100"]])
def test_context_zero_is_refused_like_perf_input_zero(args):
    line = _one_error_line(_run(*args, "--context", "0"))
    assert line == "costsim: error: --context: expected a finite integer >= 1, got '0'"
    assert "--input" in _one_error_line(_run("perf", "llama-3.1-8b", "-H", "h100", "--input", "0"))


def test_context_one_still_works():
    # one token of Llama-3.1-8B in bf16: 131,072 B (see above)
    r = _run("kv", "llama-3.1-8b", "--context", "1", "-f", "json")
    assert r.exit_code == 0 and json.loads(r.stdout)["kv"] == 131072.0


# ---- 5. --mtp-acceptance needs --mtp -------------------------------------------------------------

MTP_ERR = ("costsim: error: --mtp-acceptance 0.9: applies only with --mtp N (N >= 1 draft tokens); give --mtp or "
           "drop --mtp-acceptance")


@pytest.mark.parametrize("cmd", [["perf"], ["max-throughput"], ["whatif", "--hw-set", "memory_bandwidth=+10%"]])
@pytest.mark.parametrize("mtp", [[], ["--mtp", "0"]])
def test_mtp_acceptance_without_mtp_is_refused(cmd, mtp):
    r = _run(cmd[0], "deepseek-v3", "-H", "h800", "--devices", "16", *cmd[1:], *mtp, "--mtp-acceptance", "0.9")
    assert _one_error_line(r) == MTP_ERR


def test_mtp_acceptance_with_mtp_is_used_and_defaults_to_085():
    base = ["perf", "deepseek-v3", "-H", "h800", "--devices", "16", "--mtp", "1", "-f", "json"]
    given = json.loads(_run(*base, "--mtp-acceptance", "0.9").stdout)
    default = json.loads(_run(*base).stdout)
    # depth 1: 1 + a tokens per step
    assert (given["mtp_acceptance"], given["mtp_tokens_per_step"]) == (0.9, pytest.approx(1.9))
    assert (default["mtp_acceptance"], default["mtp_tokens_per_step"]) == (0.85, pytest.approx(1.85))
    off = json.loads(_run("perf", "deepseek-v3", "-H", "h800", "--devices", "16", "-f", "json").stdout)
    assert (off["mtp_depth"], off["mtp_acceptance"], off["mtp_tokens_per_step"]) == (0, 0.0, 1.0)


def test_api_layout_helper_refuses_acceptance_without_depth():
    from costsim.cli import options as O

    with pytest.raises(CostsimError, match="--mtp-acceptance 0.8: applies only with --mtp"):
        O.layout(mtp=0, mtp_acceptance=0.8)
    assert O.layout().mtp_acceptance == 0.85 and O.layout(mtp=1, mtp_acceptance=0.7).mtp_acceptance == 0.7
