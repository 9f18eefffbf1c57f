"""Independent cross-check of the engine's exact arithmetic against real PyTorch modules.

The reference modules (``costsim.calibration.kernels``) are built from the same
ModelSpec; FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add,
aten mm/bmm/addmm only: norms, softmax and activations are 0, the engine's convention),
KV bytes from ``Tensor.nbytes``, parameters from ``numel()``. Equalities are EXACT.

Causal attention: the engine charges only unmasked (query, key) pairs, s*L + s(s+1)/2
(``operators.attended_pairs``). A dense masked score matmul [s, L+s] charges s*(L+s). So
the FLOP checks use the reference's ``causal="rows"`` implementation, in which query row i
multiplies only the L+i+1 keys it sees: FlopCounterMode then counts exactly the unmasked
pairs from the tensor shapes, with no pair formula on the torch side, and a wrong pair
count (or per-pair cost) in the engine makes these tests fail. The dense ``"mask"`` form is
also checked: it must exceed the rows form by exactly the engine's per-pair cost times the
s(s-1)/2 masked pairs per sequence (0 for decode, where both forms are the same kernel).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from costsim.calibration import kernels as K  # noqa: E402
from costsim.calibration.timing import benchmark_attention_decode, benchmark_operator_gemm, time_fn  # noqa: E402
from costsim.registry import load_model  # noqa: E402
from costsim.simulator.deployment import Deployment  # noqa: E402
from costsim.simulator.flops import forward_flops  # noqa: E402
from costsim.simulator.kv import kv_cache_bytes  # noqa: E402
from costsim.simulator.operators import StepShape, attended_pairs, step_operators, total  # noqa: E402
from costsim.simulator.params import attention_params, ffn_matrix_params, param_counts  # noqa: E402
from costsim.units import FORMATS  # noqa: E402

torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add contention (10x slower on a busy 2-core box)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

# (batch, new_tokens, context): decode, prefill, chunked prefill (new tokens after a cache)
STEPS = {"decode": (3, 1, 9), "prefill": (2, 6, 0), "chunked": (2, 4, 5)}


def _tiny(name: str, **kw):
    return K.scaled_down(load_model(name), **kw)


MLA_SPECS = {
    "v2": _tiny("deepseek-v2"),  # q_lora_rank (q_a_proj / q_b_proj)
    "v2-lite": _tiny("deepseek-v2-lite"),  # no q_lora_rank (q_proj)
}
GQA_SPECS = {
    "mha": _tiny("deepseek-llm-7b"),
    "gqa": _tiny("llama-3.1-8b"),
    "mqa": _tiny("llama-3.1-8b", attention=dict(kind="mqa", num_key_value_heads=1)),
    "gqa-bias-sinks": _tiny("gpt-oss-120b", sliding_window=None),
    "gqa-qknorm": _tiny("qwen3-235b-a22b"),
}


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


def engine_group_flops(spec, step: StepShape, group: str, form: str = "absorbed", dep: Deployment | None = None) -> float:
    """Engine FLOPs of one layer's ``group`` ops on one device: operators of the step,
    summed x count, divided by the number of layers they cover (the attention layers
    compared here are all identical: no sliding windows)."""
    dep = (dep or Deployment()).with_(mla_form=form)
    ops = [o for o in step_operators(spec, dep, step, include_comm=False) if o.group == group]
    n = {"attention": spec.num_hidden_layers, "ffn": spec.n_dense_layers, "moe": spec.n_moe_layers}[group]
    return float(total(ops)) / n


def engine_flops_per_pair(spec, step: StepShape, form: str = "absorbed") -> float:
    """The engine's attention-core FLOPs per attended (query, key) pair."""
    core = next(o for o in step_operators(spec, Deployment(mla_form=form), step, include_comm=False)
                if o.kind == "attention")
    return float(core.flops) / float(step.batch * attended_pairs(step.context, step.new_tokens))


def _inputs(spec, attn, B, s, L, dtype=torch.float32):
    x = torch.randn(B, s, spec.hidden_size, dtype=dtype)
    cache = torch.randn(attn.empty_cache(B, L).shape, dtype=dtype)
    return x, cache


# ======================================================================================
# Attention FLOPs
# ======================================================================================


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("form", ["naive", "absorbed"])
@pytest.mark.parametrize("variant", MLA_SPECS)
def test_mla_attention_flops_exact(variant, form, step):
    spec = MLA_SPECS[variant]
    B, s, L = STEPS[step]
    attn = K.MLAAttention(spec, form=form, causal="rows")
    x, cache = _inputs(spec, attn, B, s, L)
    got = count_flops(lambda: attn(x, cache))
    want = engine_group_flops(spec, StepShape(B, s, L), "attention", form)
    assert got == want, f"MLA {variant} {form} B={B} s={s} L={L}: torch {got} vs engine {want}"

    # the dense masked kernel: extra FLOPs = per-pair cost x masked pairs s(s-1)/2 per sequence
    attn.causal = "mask"
    dense = count_flops(lambda: attn(x, cache))
    assert dense - got == engine_flops_per_pair(spec, StepShape(B, s, L), form) * B * s * (s - 1) / 2


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("variant", GQA_SPECS)
def test_gqa_attention_flops_exact(variant, step):
    spec = GQA_SPECS[variant]
    B, s, L = STEPS[step]
    attn = K.GQAAttention(spec, causal="rows")
    x, cache = _inputs(spec, attn, B, s, L)
    got = count_flops(lambda: attn(x, cache))
    want = engine_group_flops(spec, StepShape(B, s, L), "attention")
    assert got == want, f"{variant} B={B} s={s} L={L}: torch {got} vs engine {want}"
    attn.causal = "mask"
    dense = count_flops(lambda: attn(x, cache))
    assert dense - got == engine_flops_per_pair(spec, StepShape(B, s, L)) * B * s * (s - 1) / 2


@pytest.mark.parametrize("step", STEPS)
def test_sliding_window_attention_flops_exact(step):
    """gpt-oss-like layer with a window of 4 keys: pairs sum_p min(p, W) (engine) vs keys
    the rows kernel actually multiplies."""
    spec = _tiny("gpt-oss-120b")
    B, s, L = STEPS[step]
    W = spec.sliding_window.window
    attn = K.GQAAttention(spec, causal="rows", window=W)
    x, cache = _inputs(spec, attn, B, s, L)
    got = count_flops(lambda: attn(x, cache))
    from costsim.simulator.operators import attention_operators

    want = sum(float(o.flops) for o in attention_operators(spec, Deployment(), StepShape(B, s, L), 1, W, "absorbed", ""))
    assert got == want


@pytest.mark.parametrize("step", ["decode", "chunked"])
@pytest.mark.parametrize("variant,tp", [("v2", 2), ("v2-lite", 4), ("gqa", 2), ("gqa", 4), ("mha", 2)])
def test_tensor_parallel_shard_flops_exact(variant, tp, step):
    """One TP rank runs the attention of n_h/TP heads (MLA: d'_c and the latent projection
    kv_a_proj replicated; GQA: ceil(n_kv/TP) KV heads, replicated when TP > n_kv) and a
    dense FFN of width I/TP: the module of a spec sliced that way must match the engine's
    per-device operators under Deployment(devices=TP, tp=TP)."""
    spec = {**MLA_SPECS, **GQA_SPECS}[variant]
    a, f = spec.attention, spec.ffn
    B, s, L = STEPS[step]
    dep = Deployment(devices=tp, tp=tp).check(spec)
    heads = dict(num_attention_heads=a.num_attention_heads // tp)
    if a.kind != "mla":
        heads["num_key_value_heads"] = max(1, a.num_key_value_heads // tp)
    inter = "dense_intermediate_size" if f.kind == "moe" else "intermediate_size"
    shard = K.scaled_down(spec, **heads, **{inter: getattr(f, inter) // tp})
    for form in (["naive", "absorbed"] if a.kind == "mla" else ["absorbed"]):
        attn = K.make_attention(shard, form=form, causal="rows")
        x, cache = _inputs(shard, attn, B, s, L)
        got = count_flops(lambda: attn(x, cache))
        assert got == engine_group_flops(spec, StepShape(B, s, L), "attention", form, dep)
    ffn = K.DenseFFN(shard)
    x = torch.randn(B, s, spec.hidden_size)
    assert count_flops(lambda: ffn(x)) == engine_group_flops(spec, StepShape(B, s, L), "ffn", dep=dep)


def test_mla_forms_and_causal_modes_agree_numerically():
    """Absorption is exact algebra (no RoPE rotation here): naive and absorbed, rows and
    mask give the same output from the same weights."""
    spec = MLA_SPECS["v2"]
    B, s, L = STEPS["chunked"]
    naive = K.MLAAttention(spec, "naive").double()
    absorbed = K.MLAAttention(spec, "absorbed").double()
    absorbed.load_state_dict(naive.state_dict())
    x, cache = _inputs(spec, naive, B, s, L, torch.float64)
    with torch.no_grad():
        ref = naive(x, cache)
        torch.testing.assert_close(absorbed(x, cache), ref)
        absorbed.causal = "rows"
        torch.testing.assert_close(absorbed(x, cache), ref)
        # causality: the first new token does not see later ones
        torch.testing.assert_close(naive(x[:, :1], cache), ref[:, :1])


def test_gqa_rows_and_mask_agree_numerically():
    spec = GQA_SPECS["gqa-bias-sinks"]
    B, s, L = STEPS["chunked"]
    attn = K.GQAAttention(spec, window=3).double()
    x, cache = _inputs(spec, attn, B, s, L, torch.float64)
    with torch.no_grad():
        ref = attn(x, cache)
        attn.causal = "rows"
        torch.testing.assert_close(attn(x, cache), ref)


# ======================================================================================
# FFN / MoE FLOPs
# ======================================================================================


@pytest.mark.parametrize("step", ["decode", "prefill"])
@pytest.mark.parametrize("name", ["deepseek-v2", "llama-3.1-8b", "deepseek-llm-7b"])
def test_dense_ffn_flops_exact(name, step):
    spec = _tiny(name)
    B, s, L = STEPS[step]
    ffn = K.DenseFFN(spec)
    x = torch.randn(B, s, spec.hidden_size)
    assert count_flops(lambda: ffn(x)) == engine_group_flops(spec, StepShape(B, s, L), "ffn")


@pytest.mark.parametrize("routing", ["router", "forced-skewed"])
@pytest.mark.parametrize("step", ["decode", "prefill"])
@pytest.mark.parametrize("name", ["deepseek-v2", "deepseek-v3", "gpt-oss-120b"])
def test_moe_flops_exact(name, step, routing):
    """Router + shared + routed experts. Each token picks k distinct experts, so the expert
    loop runs exactly B*s*k token rows whatever the routing: the engine's ``assign`` =
    tokens*k/ep (ep=1, imbalance 1). "forced-skewed" sends every token to experts 0..k-1
    (maximally unbalanced) to show the FLOPs do not depend on the distribution."""
    spec = _tiny(name)
    B, s, L = STEPS[step]
    moe = K.MoEFFN(spec)
    x = torch.randn(B, s, spec.hidden_size)
    k = spec.ffn.num_experts_per_tok
    idx = torch.arange(k).expand(B * s, k) if routing == "forced-skewed" else None
    rows = []
    hooks = [e.up_proj.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0])) for e in moe.experts]
    got = count_flops(lambda: moe(x, idx))
    for h in hooks:
        h.remove()
    assert sum(rows) == B * s * k
    assert got == engine_group_flops(spec, StepShape(B, s, L), "moe")


# ======================================================================================
# Whole model: FlopCounterMode of a forward == costsim.simulator.flops.forward_flops
# ======================================================================================


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("name,form", [("deepseek-v2", "naive"), ("deepseek-v2", "absorbed"),
                                       ("deepseek-v3", "absorbed"), ("gpt-oss-120b", "absorbed"),
                                       ("llama-3.1-8b", "absorbed")])
def test_whole_model_forward_flops_exact(name, form, step):
    spec = _tiny(name)
    B, s, L = STEPS[step]
    model = K.Transformer(spec, form=form, causal="rows")
    tokens = torch.randint(0, spec.vocab_size, (B, s))
    caches = [torch.randn(c.shape) for c in model.empty_caches(B, L)]
    lt = 1 if step == "decode" else s
    got = count_flops(lambda: model(tokens, caches, logit_tokens=lt))
    want = float(forward_flops(spec, batch=B, new_tokens=s, context=L, logit_tokens=lt, form=form))
    assert got == want, f"{name} {form} B={B} s={s} L={L}: torch {got} vs engine {want}"


# ======================================================================================
# KV cache bytes
# ======================================================================================


def _fp8():
    return getattr(torch, "float8_e4m3fn", None)


@pytest.mark.parametrize("fmt,dtype", [("bf16", torch.bfloat16), ("fp8", _fp8())])
@pytest.mark.parametrize("which", ["v2-tiny", "gqa-tiny", "v2-full", "v3-full", "llama-70b-full", "gpt-oss-full"])
def test_kv_cache_bytes_match_tensor_nbytes(which, fmt, dtype):
    if dtype is None:
        pytest.skip("torch has no float8_e4m3fn")
    spec = {"v2-tiny": lambda: MLA_SPECS["v2"], "gqa-tiny": lambda: GQA_SPECS["gqa"],
            "v2-full": lambda: load_model("deepseek-v2"), "v3-full": lambda: load_model("deepseek-v3"),
            "llama-70b-full": lambda: load_model("llama-3.1-70b"),
            "gpt-oss-full": lambda: load_model("gpt-oss-120b")}[which]()
    B, L = 3, 1000
    win = spec.sliding_window
    with torch.device("meta"):  # shapes only, no memory
        attn = K.make_attention(spec)
    # one cache tensor per layer; a sliding-window layer keeps only the last `window` tokens
    caches = [attn.empty_cache(B, min(L, win.window) if win and i in win.layers else L, dtype=dtype, device="meta")
              for i in range(spec.num_hidden_layers)]
    assert sum(c.nbytes for c in caches) == kv_cache_bytes(spec, FORMATS[fmt], L, B)


def test_flashmla_fp8_layout_bytes():
    """FlashMLA FP8 cache entry: 512 FP8 latent + 4 FP32 scales (1 per 128) + 64 BF16 RoPE
    = 656 B per token per layer (``units.FORMATS['flashmla-fp8']``)."""
    spec = load_model("deepseek-v3")
    a, B, L = spec.attention, 2, 4096
    per_layer = [torch.empty(B, L, a.kv_lora_rank, dtype=_fp8() or torch.uint8, device="meta"),
                 torch.empty(B, L, a.kv_lora_rank // 128, dtype=torch.float32, device="meta"),
                 torch.empty(B, L, a.qk_rope_head_dim, dtype=torch.bfloat16, device="meta")]
    assert sum(t.nbytes for t in per_layer) == 656 * B * L
    assert spec.num_hidden_layers * sum(t.nbytes for t in per_layer) == kv_cache_bytes(spec, FORMATS["flashmla-fp8"], L, B)


# ======================================================================================
# Parameter counts (full-size specs on the meta device)
# ======================================================================================


def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", ["deepseek-v2", "deepseek-v3", "deepseek-v2-lite", "llama-3.1-8b",
                                  "deepseek-llm-7b", "gpt-oss-120b", "qwen3-235b-a22b"])
def test_attention_params_full_size(name):
    spec = load_model(name)
    with torch.device("meta"):
        attn = K.make_attention(spec)
    assert _numel(attn) == attention_params(spec)


@pytest.mark.parametrize("name", ["deepseek-v2", "deepseek-v3", "gpt-oss-120b", "mixtral-8x7b"])
def test_moe_and_dense_ffn_params_full_size(name):
    spec = load_model(name)
    f, h, pc = spec.ffn, spec.hidden_size, param_counts(spec)
    with torch.device("meta"):
        moe = K.MoEFFN(spec)
        dense = K.DenseFFN(spec) if spec.n_dense_layers else None
    n = spec.n_moe_layers
    assert _numel(moe.router) == pc.router // n
    assert sum(_numel(e) for e in moe.experts) == pc.routed_experts // n
    assert (_numel(moe.shared_experts) if moe.shared_experts else 0) == pc.shared_experts // n
    if dense is not None:
        assert _numel(dense) == pc.dense_ffn // spec.n_dense_layers == ffn_matrix_params(h, f.dense_intermediate_size, f.gated)


@pytest.mark.parametrize("name,kw", [("deepseek-v2", {}), ("deepseek-v3", {}), ("gpt-oss-120b", {}),
                                     ("llama-3.1-8b", {"tie_word_embeddings": True}),
                                     ("llama-2-70b", {"norm": "layernorm"})])
def test_whole_tiny_model_params(name, kw):
    spec = _tiny(name, **kw)
    with torch.device("meta"):
        model = K.Transformer(spec)
    assert _numel(model) == param_counts(spec).total


# ======================================================================================
# Helpers and timing
# ======================================================================================


def test_scaled_down_keeps_kind_and_overrides():
    spec = _tiny("deepseek-v2", n_routed_experts=4, num_attention_heads=2, num_hidden_layers=3)
    assert spec.attention.kind == "mla" and spec.attention.q_lora_rank == 96
    assert spec.ffn.n_routed_experts == 4 and spec.attention.num_attention_heads == 2
    assert spec.num_hidden_layers == 3 and spec.n_dense_layers == 1
    assert _tiny("deepseek-v2-lite").attention.q_lora_rank is None
    with pytest.raises(TypeError):
        K.scaled_down(load_model("deepseek-v2"), no_such_field=1)


def test_engine_does_not_import_torch():
    code = ("import sys, costsim.cli, costsim.simulator.flops, costsim.simulator.roofline, "
            "costsim.calibration, costsim.calibration.timing; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_timing_returns_positive_times_and_shapes():
    r = time_fn(lambda: torch.ones(8).sum(), min_run_time=0.01)
    assert r["median_s"] > 0 and r["runs"] >= 1 and r["iqr_s"] >= 0
    g = benchmark_operator_gemm(16, 32, 64, "fp32", "cpu", min_run_time=0.01)
    assert g["median_s"] > 0 and g["shape"] == dict(M=16, N=32, K=64) and g["flops"] == 2 * 16 * 32 * 64
    spec = MLA_SPECS["v2"]
    for form in ("naive", "absorbed"):
        a = benchmark_attention_decode(spec, 2, 16, form, "cpu", dtype="fp32", min_run_time=0.01)
        assert a["median_s"] > 0
        assert a["shape"] == dict(batch=2, new_tokens=1, context=16, kv_len=17, heads=4, kv_heads=1, form=form)
        assert a["flops"] == engine_group_flops(spec, StepShape(2, 1, 16), "attention", form)
    a = benchmark_attention_decode(GQA_SPECS["gqa"], 2, 16, device="cpu", dtype="bf16", min_run_time=0.01)
    assert a["median_s"] > 0 and a["shape"]["kv_heads"] == 2 and a["cache_bytes"] == 2 * 16 * 2 * 2 * 32 * 2
