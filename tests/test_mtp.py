"""MTP speculative decoding (DeepSeek-V3, arXiv 2412.19437: §2.2 the MTP module, §5.4.3 "the
acceptance rate of the second token prediction ranges between 85% and 90%"): expected tokens
per step, the MTP module's operators, the step time, memory, the sweep and the CLI, by hand."""

import numpy as np
import pytest
from typer.testing import CliRunner

from costsim.api import LayoutRequest, load_hardware, load_model, resolve_deployment
from costsim.cli import app
from costsim.simulator.deployment import Deployment
from costsim.simulator.kv import kv_bytes_per_token_per_layer
from costsim.simulator.memory import kv_bytes_per_device, weight_bytes_per_device
from costsim.simulator.operators import mtp_operators
from costsim.simulator.params import param_counts
from costsim.simulator.roofline import time_step
from costsim.simulator.serving import decode, mtp_tokens_per_step, serve
from costsim.simulator.sweep import serve_grid
from costsim.simulator.types import StepShape

V3 = load_model("deepseek-v3")


def test_expected_tokens_per_step():
    assert mtp_tokens_per_step(0, 0.9) == 1.0
    assert mtp_tokens_per_step(1, 0.85) == pytest.approx(1.85)  # V3: depth 1, 85% -> 1.85 tokens/step
    assert mtp_tokens_per_step(2, 0.5) == pytest.approx(1 + 0.5 + 0.25)  # the 2nd draft counts only after the 1st
    assert mtp_tokens_per_step(3, 1.0) == 4.0


def test_mtp_module_operators_by_hand():
    # one MTP module pass of 4 tokens (4 sequences x 1) on one device: M_k (2h -> h), one MoE
    # block (8 of 256 routed experts + 1 shared, top-8), the shared LM head (vocab x h)
    h, V, inter = 7168, 129_280, 2048
    ops = {o.name: o for o in mtp_operators(V3, Deployment(), StepShape(4, 1, 1000, 1))}
    assert float(ops["mtp.eh_proj"].flops) == 2 * 4 * (2 * h) * h
    assert float(ops["mtp.lm_head"].flops) == 2 * 4 * V * h
    experts = float(ops["mtp.moe.experts.gate_up_proj"].flops + ops["mtp.moe.experts.down_proj"].flops)
    assert experts == 2 * 4 * 8 * 3 * h * inter
    assert all(n.startswith("mtp.") for n in ops)


def test_decode_step_is_a_verify_pass_plus_the_drafts_over_the_expected_tokens():
    h800 = load_hardware("h800")
    dep = resolve_deployment(V3, h800, LayoutRequest(devices=16, weight_dtype="fp8"), 64, 4096)
    mtp = dep.with_(mtp_depth=1, mtp_acceptance=0.85)
    r = decode(V3, h800, mtp, 64, 4096)
    verify = float(time_step(V3, h800, mtp, StepShape(64 / 1, 2, 4096, 2)).time_s)
    draft = float(time_step(V3, h800, mtp, StepShape(64 / 1, 1, 4096, 1), operators=mtp_operators).time_s)
    assert float(r.time_s) == pytest.approx((verify + draft) / 1.85, rel=1e-12)
    assert float(r.tokens_per_s) == pytest.approx(64 * 1.85 / (verify + draft), rel=1e-12)
    # the model's speed-up at this layout is 1.6x, below the paper's 1.8x TPS (its own deployment)
    plain = decode(V3, h800, dep, 64, 4096)
    assert 1.5 < float(r.tokens_per_s / plain.tokens_per_s) < 1.85


def test_memory_holds_the_mtp_module_and_its_cache():
    d = Deployment()  # one device, BF16: the module's bytes are 2 x its parameters
    m = d.with_(mtp_depth=1, mtp_acceptance=0.8)
    assert weight_bytes_per_device(V3, m) - weight_bytes_per_device(V3, d) == 2 * param_counts(V3).mtp
    extra = kv_bytes_per_device(V3, m, 3, 1000) - kv_bytes_per_device(V3, d, 3, 1000)
    assert float(extra) == 3 * 1000 * kv_bytes_per_token_per_layer(V3, d.kv_format, 1)  # one more layer's cache


def test_serve_grid_equals_serve_with_mtp():
    h800 = load_hardware("h800")
    dep = resolve_deployment(V3, h800, LayoutRequest(devices=16, weight_dtype="fp8", mtp_depth=1), 8, 1000)
    assert dep.mtp_depth == 1 and dep.mtp_acceptance == 0.85
    b, i, o = np.array([1.0, 8.0]), np.array([100.0, 1000.0]), np.array([2.0, 50.0])
    g = serve_grid(V3, h800, dep, b[:, None, None], i[None, :, None], o[None, None, :])
    for x, bv in enumerate(b):
        for y, iv in enumerate(i):
            for z, ov in enumerate(o):
                r = serve(V3, h800, dep, int(bv), int(iv), int(ov))
                for k in ("ttft_s", "tpot_s", "e2e_s", "decode_tokens_per_s"):
                    assert np.broadcast_to(getattr(g, k), (2, 2, 2))[x, y, z] == pytest.approx(getattr(r, k), rel=1e-9)


@pytest.mark.parametrize("args,needle", [
    (["perf", "llama-3.1-8b", "-H", "h100", "--mtp", "1"], "has no MTP module"),
    (["perf", "deepseek-v3", "-H", "h800", "--devices", "16", "--mtp", "1", "--mtp-acceptance", "1.5"], "probability"),
    (["perf", "deepseek-v3", "-H", "h800", "--devices", "16", "--mtp", "-1"], "--mtp"),
])
def test_cli_refuses_bad_mtp_flags(args, needle):
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output


def test_cli_perf_with_mtp():
    r = CliRunner().invoke(app, ["perf", "deepseek-v3", "-H", "h800", "--devices", "16", "--weight-dtype", "fp8",
                                 "--batch", "64", "--mtp", "1", "--format", "json"])
    assert r.exit_code == 0, r.output
    import json
    d = json.loads(r.stdout)
    assert d["mtp_depth"] == 1 and d["mtp_tokens_per_step"] == pytest.approx(1.85)


def test_prefill_includes_one_mtp_module_pass_over_the_prompt():
    # the MTP module's block attends over the prompt, so prefill must build its KV (DeepSeek-V3
    # §2.2, Fig. 3: the module is a transformer block over the sequence; SGLang's EAGLE/MTP runs
    # the draft's extend on every prefill): TTFT grows by one module pass over the computed tokens
    from costsim.simulator.roofline import per_layer_seconds

    h800 = load_hardware("h800")
    dep = resolve_deployment(V3, h800, LayoutRequest(devices=16, weight_dtype="fp8", prefix_hit=0.5), 8, 2048)
    plain = serve(V3, h800, dep, 8, 2048, 2)
    extra = serve(V3, h800, dep.with_(mtp_depth=1), 8, 2048, 2).ttft_s - plain.ttft_s
    one = time_step(V3, h800, dep.with_(mtp_depth=1), StepShape(8, 1024, 1024, 1), operators=mtp_operators)
    assert extra == pytest.approx(float(one.time_s), rel=1e-9)
    # one of the main model's 58 MoE layers at the same shape, plus the shared LM head again (one
    # row per sequence: it reads the whole 129,280 x 7168 head, as the main prefill's does), plus
    # M_k (2h -> h) and the embedding and norms: less than a fifth more
    layer = per_layer_seconds(plain.prefill.timing, V3)["moe"]
    head = next(float(t.time_s) for t in plain.prefill.timing.timings if t.op.name == "lm_head")
    assert layer + head < extra < 1.2 * (layer + head)
