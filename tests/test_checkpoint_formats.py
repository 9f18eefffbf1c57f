"""The checkpoint's weight formats (HF ``quantization_config``) as the default of every query.

Sources: DeepSeek-V3 ``config.json`` quantization_config (fp8 e4m3, weight_block_size
[128, 128], one fp32 ``weight_scale_inv`` per block); gpt-oss ``config.json`` quantization_config
(mxfp4, modules_to_not_convert: self_attn, router, embed_tokens, lm_head); OCP MX spec v1.0
(MXFP4: 32 E2M1 elements share one E8M0 scale). published-values.md: gpt-oss-120b "runs on a
single 80 GB GPU with MXFP4 experts".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from costsim.cli import app
from costsim.errors import CostsimWarning, FieldError
from costsim.hf import spec_from_hf_config
from costsim.registry import load_hardware, load_model
from costsim.simulator.deployment import Deployment
from costsim.simulator.layout import LayoutRequest, resolve_deployment, weight_formats
from costsim.simulator.memory import weight_bytes_per_device
from costsim.simulator.params import layer_params, param_counts
from costsim.units import FORMATS

FIXTURES = Path(__file__).parent / "fixtures" / "hf"


def _cfg(stem):
    return json.loads((FIXTURES / f"{stem}.json").read_text())


def test_fp8_block_format_bytes():
    f = FORMATS["fp8-b128"]
    assert f.bytes_for(128 * 128) == 128 * 128 + 4  # one fp32 scale per 128 x 128 block
    assert f.bytes_for(3 * 128 * 128) == 3 * (128 * 128 + 4)
    assert f.compute == "fp8"
    assert FORMATS["mxfp4"].bytes_for(32) == 16 + 1  # 32 x 4 bits + one 8-bit scale


def test_quantization_config_sets_the_spec_formats():
    v3 = load_model(str(FIXTURES / "deepseek-v3.json"))
    assert (v3.weight_dtype, v3.expert_weight_dtype) == ("fp8-b128", None)
    oss = load_model(str(FIXTURES / "gpt-oss-120b.json"))
    assert (oss.weight_dtype, oss.expert_weight_dtype) == ("bf16", "mxfp4")
    llama = load_model(str(FIXTURES / "llama-3.1-8b.json"))  # no quantization_config
    assert (llama.weight_dtype, llama.expert_weight_dtype) == (None, None)
    # the shipped specs carry the same checkpoint formats
    assert load_model("deepseek-v3").weight_dtype == "fp8-b128"
    assert load_model("gpt-oss-120b").expert_weight_dtype == "mxfp4"


def test_quantization_config_variants():
    cfg = _cfg("deepseek-v3")
    del cfg["quantization_config"]["weight_block_size"]  # per-tensor scales: plain fp8
    assert spec_from_hf_config(cfg, "x.json").weight_dtype == "fp8"
    cfg = _cfg("deepseek-v3")
    cfg["quantization_config"]["weight_block_size"] = [64, 64]
    with pytest.warns(CostsimWarning, match="weight_block_size"):
        assert spec_from_hf_config(cfg, "x.json").weight_dtype == "fp8"
    cfg = _cfg("llama-3.1-8b")
    cfg["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    with pytest.warns(CostsimWarning, match="'gptq' is not modelled"):
        assert spec_from_hf_config(cfg, "x.json").weight_dtype is None
    cfg = _cfg("gpt-oss-120b")
    cfg["quantization_config"]["modules_to_not_convert"] = []  # attention converted too
    assert spec_from_hf_config(cfg, "x.json").weight_dtype == "mxfp4"


def test_gpt_oss_weights_at_the_checkpoint_formats_fit_one_80gb_gpu():
    spec, hw = load_model("gpt-oss-120b"), load_hardware("h100")
    dep = resolve_deployment(spec, hw, LayoutRequest(devices=1))
    assert dep.weights_name == "bf16+mxfp4-experts"
    p, lp = param_counts(spec), layer_params(spec, True)
    routed = spec.num_hidden_layers * lp["routed"]
    rest = p.total - routed  # attention, router, norms, embedding, LM head: BF16
    assert weight_bytes_per_device(spec, dep) == pytest.approx(routed * 4.25 / 8 + rest * 2,
                                                               rel=1e-12)
    assert weight_bytes_per_device(spec, dep) < 80e9  # published: one 80 GB GPU
    bf16 = Deployment(weight_format=FORMATS["bf16"])  # one device, every weight BF16
    assert weight_bytes_per_device(spec, bf16) == pytest.approx(p.total * 2)
    assert weight_bytes_per_device(spec, dep) - weight_bytes_per_device(spec, bf16) == pytest.approx(
        routed * (4.25 / 8 - 2), rel=1e-12)


def test_named_weight_dtype_overrides_every_matmul_weight():
    spec, hw = load_model("gpt-oss-120b"), load_hardware("h100")
    wf, ef = weight_formats(spec, hw, "fp8")
    assert (wf.name, ef) == ("fp8", None)
    wf, ef = weight_formats(spec, hw, None)
    assert (wf.name, ef.name) == ("bf16", "mxfp4")


def test_checkpoint_fp8_on_hardware_without_fp8_is_weight_only():
    spec = load_model("deepseek-v3")
    wf, ef = weight_formats(spec, load_hardware("a100-80g"), None)
    assert (wf.name, wf.compute, wf.bits, ef) == ("fp8-b128@bf16", "bf16", 8, None)  # stored fp8, bf16 GEMMs
    assert weight_formats(spec, load_hardware("h200"), None)[0] == FORMATS["fp8-b128"]
    with pytest.raises(FieldError, match="no peak_flops.fp8"):  # asked for by name: refused as before
        weight_formats(spec, load_hardware("a100-80g"), "fp8")[0] and resolve_deployment(
            spec, load_hardware("a100-80g"), LayoutRequest(weight_dtype="fp8"))


def test_expert_weight_dtype_needs_experts():
    from costsim.errors import CostsimError
    from costsim.registry import apply_sets

    with pytest.raises(CostsimError, match="expert_weight_dtype is for MoE models"):
        apply_sets(load_model("llama-3.1-8b"), ["expert_weight_dtype=mxfp4"], "--set")
    with pytest.raises(CostsimError, match="unknown number format 'fp7'"):
        apply_sets(load_model("llama-3.1-8b"), ["weight_dtype=fp7"], "--set")


def test_cli_perf_deepseek_v3_on_h200_runs_at_its_fp8_checkpoint_by_default():
    res = CliRunner().invoke(app, ["perf", "deepseek-v3", "-H", "h200", "--format", "json"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    assert rec["weight_dtype"] == "fp8-b128"
    # BF16 weights (1.34 TB) do not fit 8 x 141 GB: asked for by name, the old refusal stays
    res = CliRunner().invoke(app, ["perf", "deepseek-v3", "-H", "h200", "--weight-dtype", "bf16"])
    assert res.exit_code == 2


def test_expert_gemms_read_expert_format_bytes_attention_reads_weight_format():
    from costsim.simulator.operators import step_operators
    from costsim.simulator.types import StepShape

    spec = load_model("gpt-oss-120b")
    dep = Deployment(weight_format=FORMATS["bf16"], expert_format=FORMATS["mxfp4"])
    ops = {o.name: o for o in step_operators(spec, dep, StepShape(1, 1, 0), include_comm=False)}
    e = ops["moe.experts.gate_up_proj"]
    n, k = 2 * 2880, 2880  # gate+up of one expert: [2 x intermediate, hidden]
    # one token, top-4: 4 distinct experts, each 2880 x 5760 MXFP4 weights (+ activations)
    assert float(e.bytes_read) == pytest.approx(4 * n * k * 4.25 / 8 + 4 * k * 2)
    qkv = ops["attn.qkv_proj[moe]"]  # q/k/v of the full-attention layers: (64 + 2 x 8) x 64 = 5120 outputs
    assert float(qkv.bytes_read) == 5120 * 2880 * 2 + 2880 * 2  # BF16 weights + one token's activations
