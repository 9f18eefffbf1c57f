"""Kernel-level predictions (costsim.simulator.kernels) and `costsim kernel`: hand-derived
values on a round-number profile, shapes from a CSV, and one-line errors."""

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from costsim.cli import app
from costsim.errors import FieldError
from costsim.registry import load_model
from costsim.simulator import kernels
from costsim.specs import HardwareProfile, ModelSpec

runner = CliRunner()
ROUND = dict(name="round", source="test", peak_flops={"bf16": 1e12, "fp8": 2e12}, memory_capacity="80GB",
             memory_bandwidth=1e11, efficiency=dict(compute=0.5, memory=0.8, intra_node=1.0, inter_node=1.0,
                                                    kernel_overhead="1us"))
HW = HardwareProfile.model_validate(ROUND)


def test_gemm_by_hand():
    # [64, 2048] x [2048, 7168] bf16: FLOPs 2 x 64 x 7168 x 2048 = 1.879e9 -> 3.758 ms at 0.5e12;
    # bytes (7168 x 2048 + 64 x 2048 + 64 x 7168) x 2 = 2.9540e7 -> 369.3 us at 0.8e11; + 1 us
    p = kernels.gemm(HW, 64, 7168, 2048)
    flops = 2 * 64 * 7168 * 2048
    nbytes = (7168 * 2048 + 64 * 2048 + 64 * 7168) * 2
    assert float(p.flops) == flops and float(p.bytes) == nbytes
    assert float(p.time_s) == pytest.approx(flops / 0.5e12 + 1e-6, rel=1e-12)
    assert p.bound == "compute"
    # fp8 weights: 1 byte per weight and the fp8 peak
    q = kernels.gemm(HW, 64, 7168, 2048, "fp8")
    assert float(q.bytes) == 7168 * 2048 + (64 * 2048 + 64 * 7168) * 2
    assert float(q.compute_s) == pytest.approx(flops / (2e12 * 0.5), rel=1e-12)


def test_gemm_rows_vectorise():
    p = kernels.gemm(HW, np.array([1, 4096]), 4096, 4096)
    assert p.time_s.shape == (2,)
    # M = 1: weights dominate, 4096^2 x 2 B / 0.8e11 = 419.4 us (+ tiny activations) -> memory-bound
    assert list(p.bound) == ["memory", "compute"]
    assert p.memory_s[0] == pytest.approx((4096 * 4096 + 2 * 4096) * 2 / 0.8e11, rel=1e-12)


@pytest.mark.parametrize("kw,field", [(dict(m=0, n=1, k=1), "m"), (dict(m=1.5, n=1, k=1), "m"),
                                      (dict(m=1, n=1, k=float("inf")), "k")])
def test_gemm_bad_shape_names_the_field(kw, field):
    with pytest.raises(FieldError) as e:
        kernels.gemm(HW, **kw)
    assert e.value.field == field


def _tiny_mha() -> ModelSpec:
    return ModelSpec.model_validate(dict(
        name="tiny", source="test", vocab_size=1000, hidden_size=256, num_hidden_layers=2,
        attention=dict(kind="mha", num_attention_heads=4, num_key_value_heads=4, head_dim=64),
        ffn=dict(kind="dense", intermediate_size=512)))


def test_attention_decode_by_hand():
    # MHA, h = 256, 4 heads x 64: batch 2 at context 100, one new token each (T = 2)
    spec = _tiny_mha()
    p = kernels.attention(spec, HW, batch=2, context=100)
    # qkv [2, 256] x [256, 768]; core 4 x n_h x d x pairs = 4 x 4 x 64 x (2 x 101); o [2, 256] x [256, 256]
    flops = 2 * 2 * 768 * 256 + 4 * 4 * 64 * 2 * 101 + 2 * 2 * 256 * 256
    assert float(p.flops) == flops
    kv_read = 2 * 101 * (2 * 4 * 64 * 2)  # 2 sequences x 101 tokens x K,V of 4 heads x 64 at 2 B
    assert float(p.bytes) > kv_read
    assert set(p.operators) == {"attn.qkv_proj", "attn.core", "attn.o_proj"}  # the layer norms are not attention


def test_moe_layer_by_hand():
    spec = load_model("deepseek-v2-lite")  # 64 routed (top-6) + 2 shared experts of 1408, h = 2048
    p = kernels.moe(spec, HW, tokens=8)
    # router 2 x 8 x 64 x 2048; shared 2 x 8 x (2 x 2816) x 2048 + 2 x 8 x 2048 x 2816;
    # routed: 8 x 6 token-expert pairs x (3 x 2048 x 1408) x 2
    flops = 2 * 8 * 64 * 2048 + 2 * 8 * 5632 * 2048 + 2 * 8 * 2048 * 2816 + 8 * 6 * 3 * 2048 * 1408 * 2
    assert float(p.flops) == flops
    with pytest.raises(FieldError, match="dense"):
        kernels.moe(load_model("llama-3.1-8b"), HW, tokens=8)


def test_dense_ffn_by_hand():
    p = kernels.dense_ffn(_tiny_mha(), HW, tokens=16)
    assert float(p.flops) == 2 * 16 * 1024 * 256 + 2 * 16 * 256 * 512  # gate+up, down (SwiGLU, I = 512)


def test_kernel_gemm_command_json_and_shapes_csv(tmp_path):
    hw = tmp_path / "round.yaml"
    hw.write_text(yaml.safe_dump(ROUND))
    r = runner.invoke(app, ["kernel", "gemm", "-H", str(hw), "--m", "64", "--n", "7168", "--k", "2048", "-f", "json"])
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.stdout)
    assert row["time_s"] == pytest.approx(2 * 64 * 7168 * 2048 / 0.5e12 + 1e-6, rel=1e-12)
    csv = tmp_path / "shapes.csv"
    csv.write_text("m,n,k,dtype\n1,4096,4096,bf16\n64,7168,2048,fp8\n4096,4096,4096,bf16\n")
    r = runner.invoke(app, ["kernel", "gemm", "-H", str(hw), "--shapes", str(csv), "-f", "json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [(x["row"], x["m"], x["dtype"]) for x in rows] == [(1, 1, "bf16"), (2, 64, "fp8"), (3, 4096, "bf16")]
    assert all(x["time_s"] > 0 for x in rows)


@pytest.mark.parametrize("text,needle", [("m,n\n1,2\n", "missing column(s) k"), ("m,n,k\n", "no rows"),
                                         ("m,n,k\n1,2,x\n", "row 2, column k"), ("m,n,k\n0,2,2\n", "row 2, column m")])
def test_kernel_gemm_bad_csv_is_one_line(tmp_path, text, needle):
    csv = tmp_path / "s.csv"
    csv.write_text(text)
    r = runner.invoke(app, ["kernel", "gemm", "-H", "h200", "--shapes", str(csv)])
    assert r.exit_code == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_kernel_gemm_refuses_a_device_file():
    r = runner.invoke(app, ["kernel", "gemm", "-H", "h200", "--shapes", "/dev/zero"])
    assert r.exit_code == 2 and "not a regular file" in r.stderr


def test_kernel_attention_and_moe_commands():
    r = runner.invoke(app, ["kernel", "attention", "deepseek-v2", "-H", "h800", "--batch", "64", "-f", "json"])
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)[0]
    assert row["form"] == "absorbed" and row["bound"] in ("compute", "memory")
    r = runner.invoke(app, ["kernel", "moe", "llama-3.1-8b", "-H", "h800"])
    assert r.exit_code == 2 and "dense" in r.stderr
    r = runner.invoke(app, ["kernel", "attention", "deepseek-v2", "-H", "h800", "--form", "fast"])
    assert r.exit_code == 2 and r.stderr.startswith("costsim: error: --form fast")
