"""Draft-model speculative decoding (``Deployment.draft_model``; Leviathan et al. 2023,
arXiv 2211.17192; issue 9): a step verifies D + 1 tokens in one target pass and drafts D with
D one-token passes of the draft model on the same devices (same TP); it gains 1 + a + ... + a^D
tokens per sequence. The draft's weights and KV cache sit beside the target's and its prefill
adds to TTFT."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from costsim.api import LayoutRequest, load_hardware, load_model, resolve_deployment
from costsim.cli.app import app
from costsim.errors import FieldError
from costsim.simulator.memory import kv_bytes_per_device, weight_bytes_per_device
from costsim.simulator.roofline import time_step
from costsim.simulator.serving import decode, prefill
from costsim.simulator.types import StepShape
from gridcheck import assert_grid_equals_serve


def _deps(D=4, a=0.7):
    spec, hw, draft = load_model("llama-3.1-70b"), load_hardware("h100"), load_model("llama-3.1-8b")
    base = resolve_deployment(spec, hw, LayoutRequest(devices=8, tp=8))
    dep = resolve_deployment(spec, hw, LayoutRequest(devices=8, tp=8, mtp_depth=D, mtp_acceptance=a, draft_model=draft))
    return spec, hw, draft, base, dep


def test_tpot_is_verify_plus_draft_passes_over_expected_tokens():
    spec, hw, draft, base, dep = _deps()
    verify = time_step(spec, hw, base, StepShape(16, 5, 2048, 5))
    one = time_step(draft, hw, base, StepShape(16, 1, 2048, 1))  # the 8B at TP 8 on the same devices
    E = 1 + 0.7 + 0.7 ** 2 + 0.7 ** 3 + 0.7 ** 4
    assert float(decode(spec, hw, dep, 16, 2048).time_s) == pytest.approx(
        (float(verify.time_s) + 4 * float(one.time_s)) / E, rel=1e-12)


def test_memory_adds_the_drafts_weights_and_kv_and_ttft_its_prefill():
    spec, hw, draft, base, dep = _deps()
    # Llama-3.1-8B: 8,030,261,248 parameters in BF16 over TP 8; KV 32 layers x 8 heads x 128 x 2 x 2 B
    assert weight_bytes_per_device(spec, dep) - weight_bytes_per_device(spec, base) == pytest.approx(
        weight_bytes_per_device(draft, base), rel=1e-12)
    assert weight_bytes_per_device(draft, base) == pytest.approx(8_030_261_248 * 2 / 8, rel=2e-3)
    extra = float(kv_bytes_per_device(spec, dep, 16, 2560)) - float(kv_bytes_per_device(spec, base, 16, 2560))
    assert extra == 16 * 2560 * 32 * 8 * 128 * 2 * 2 / 8
    d = time_step(draft, hw, base, StepShape(16, 2048, 0, 1))
    assert float(prefill(spec, hw, dep, 16, 2048).time_s) == pytest.approx(
        float(prefill(spec, hw, base, 16, 2048).time_s) + float(d.time_s), rel=1e-12)


def test_grid_equals_serve_with_a_draft_model():
    spec, hw, draft, base, dep = _deps(D=3, a=0.8)
    b, i, o = np.array([1.0, 32.0]), np.array([100.0, 4000.0]), np.array([2.0, 300.0])
    assert_grid_equals_serve(spec, hw, dep, b, i, o)


def test_a_draft_must_share_the_vocabulary_and_divide_by_tp():
    spec, hw = load_model("llama-3.1-70b"), load_hardware("h100")
    with pytest.raises(FieldError, match="vocab_size 102400 differs"):
        resolve_deployment(spec, hw, LayoutRequest(devices=8, tp=8, mtp_depth=2, draft_model=load_model("deepseek-v2-lite")))
    with pytest.raises(FieldError, match="needs mtp_depth"):
        resolve_deployment(spec, hw, LayoutRequest(devices=8, tp=8, draft_model=load_model("llama-3.1-8b")))


def test_cli_draft_model_in_perf_and_its_refusals():
    run = CliRunner().invoke
    r = run(app, ["perf", "llama-3.1-70b", "-H", "h100", "--devices", "8", "--batch", "16", "--input", "2048",
                  "--output", "512", "--draft-model", "llama-3.1-8b", "--mtp", "4", "--mtp-acceptance", "0.7"])
    assert r.exit_code == 0, r.output
    assert "draft model llama-3.1-8b" in r.output
    r = run(app, ["perf", "llama-3.1-70b", "-H", "h100", "--devices", "8", "--draft-model", "llama-3.1-8b"])
    assert r.exit_code == 2 and "give --mtp N" in r.output and "Traceback" not in r.output
    r = run(app, ["perf", "llama-3.1-70b", "-H", "h100", "--devices", "8", "--mtp", "2", "--draft-model", "nope-7b"])
    assert r.exit_code == 2 and "nope-7b" in r.output and "Traceback" not in r.output
