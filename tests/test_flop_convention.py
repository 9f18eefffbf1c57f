"""The full-attention ("non-causal") FLOP convention against the papers that use it.

- DeepSeekMoE (arXiv 2401.06066) Table 1 / §5 (shared reference published-values.md): FLOPs per
  4K tokens (training, 3 x forward): DeepSeekMoE 16B 74.4T, DeepSeek 7B 183.5T, DeepSeekMoE
  145B 585.6T. Causal counting gives 70.1T / 171.9T / 560.5T: those tables count every pair.
- ISCA 2025 (arXiv 2505.09343) Table 4: DeepSeek-V3 training at 432 TFLOPS non-causal vs 385
  causal: a ratio of 1.1221 between the two conventions at seq 4096.
"""

import pytest
from typer.testing import CliRunner

from costsim.api import load_model
from costsim.cli import app
from costsim.simulator.flops import prefill_flops, training_flops_per_token


@pytest.mark.parametrize("name,published_t,tol", [
    ("deepseek-llm-7b", 183.5, 0.01), ("deepseekmoe-145b", 585.6, 0.005), ("deepseekmoe-16b", 74.4, 0.025)])
def test_deepseekmoe_flops_per_4k_tokens_are_full_attention(name, published_t, tol):
    spec = load_model(name)
    full = training_flops_per_token(spec, 4096, causal=False) * 4096 / 1e12
    causal = training_flops_per_token(spec, 4096) * 4096 / 1e12
    assert full == pytest.approx(published_t, rel=tol)
    assert abs(causal / published_t - 1) > 0.04  # the causal count misses them


def test_isca_v3_non_causal_over_causal_ratio():
    v3 = load_model("deepseek-v3")
    ratio = training_flops_per_token(v3, 4096, causal=False) / training_flops_per_token(v3, 4096)
    assert ratio == pytest.approx(432 / 385, rel=0.002)


def test_full_convention_scales_only_the_attention_cores_by_hand():
    # llama-3.1-8b prefill of s tokens: the cores (QK^T and PV, 32 heads x 128, 32 layers) go
    # from 4 x 4096 x s(s+1)/2 to 4 x 4096 x s^2 per layer; everything else is unchanged
    spec, s = load_model("llama-3.1-8b"), 1000
    extra = prefill_flops(spec, s, causal=False) - prefill_flops(spec, s)
    assert extra == pytest.approx(32 * 4 * 4096 * (s * s - s * (s + 1) / 2), rel=1e-12)


def test_cli_train_takes_the_convention():
    r = CliRunner().invoke(app, ["train", "deepseek-v3", "--hardware", "h800", "--tokens", "14.8T", "--mfu", "0.4",
                                 "--attention-flops", "full", "--format", "json"])
    assert r.exit_code == 0, r.output
    import json
    d = json.loads(r.stdout)
    assert d["attention_flops"] == "full"
    assert d["training_flops_per_token"] == pytest.approx(training_flops_per_token(load_model("deepseek-v3"), 4096,
                                                                                   causal=False))
