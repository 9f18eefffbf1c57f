"""The timed (production-style) kernels of ``costsim.calibration.timed``:

- same output as the readable reference modules (``costsim.calibration.kernels``) on the
  same weights, cache and input (fp32 at fp32 tolerance; bf16 at bf16 tolerance);
- same FLOPs under FlopCounterMode as the engine's operators for that part of the layer
  (``step_operators``, the approach of ``tests/test_torch_crosscheck.py``): exact for decode,
  every GEMM, MoE (ep=1) and dense FFN; for causal steps with s > 1 new tokens the timed cores
  are counted dense (masked bmm, or FlopCounterMode's SDPA formula, which ignores causality),
  so they exceed the engine by exactly its per-pair cost x the s(s-1)/2 masked pairs (plus the
  zero-padding of V for the MLA naive SDPA core);
- the preallocated caches are written in place (same storage, no growth), and a decode step
  never concatenates the cache.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from costsim.calibration import kernels as K  # noqa: E402
from costsim.calibration import timed as T  # noqa: E402
from costsim.registry import load_model  # noqa: E402
from costsim.simulator.deployment import Deployment  # noqa: E402
from costsim.simulator.operators import StepShape, attended_pairs, step_operators, total  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# (batch, new_tokens, context)
STEPS = {"decode": (3, 1, 9), "prefill": (2, 6, 0), "chunked": (2, 4, 5)}


def _tiny(name: str, **kw):
    return K.scaled_down(load_model(name), **kw)


MLA = {"v2": _tiny("deepseek-v2"), "v2-lite": _tiny("deepseek-v2-lite")}
GQA = {"mha": _tiny("deepseek-llm-7b"), "gqa": _tiny("llama-3.1-8b"),
       "mqa": _tiny("llama-3.1-8b", attention=dict(kind="mqa", num_key_value_heads=1)),
       "gqa-qknorm-bias": _tiny("qwen3-235b-a22b", qkv_bias=True)}
MOE = {"v2": _tiny("deepseek-v2"), "v3": _tiny("deepseek-v3", n_shared_experts=2, num_experts_per_tok=3),
       "gpt-oss": _tiny("gpt-oss-120b", sliding_window=None)}


def engine_flops(spec, step: StepShape, group: str, form: str = "absorbed") -> float:
    """Engine FLOPs of one layer's ``group`` operators on one device (ep = tp = 1)."""
    ops = [o for o in step_operators(spec, Deployment(mla_form=form), step, include_comm=False) if o.group == group]
    n = {"attention": spec.num_hidden_layers, "ffn": spec.n_dense_layers, "moe": spec.n_moe_layers}[group]
    return float(total(ops)) / n


def engine_per_pair(spec, step: StepShape, form: str = "absorbed") -> float:
    core = next(o for o in step_operators(spec, Deployment(mla_form=form), step, include_comm=False)
                if o.kind == "attention")
    return float(core.flops) / float(step.batch * attended_pairs(step.context, step.new_tokens))


def _run(fn):
    with torch.no_grad():
        return fn()


class _OpLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


# ======================================================================================
# Outputs == reference modules
# ======================================================================================


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("form,core", [("absorbed", "bmm"), ("absorbed", "sdpa"), ("naive", "bmm"), ("naive", "sdpa")])
@pytest.mark.parametrize("variant", MLA)
def test_mla_matches_reference(variant, form, core, step):
    spec = MLA[variant]
    B, s, L = STEPS[step]
    ref = K.MLAAttention(spec, form=form)
    x, cache = torch.randn(B, s, spec.hidden_size), torch.randn(ref.empty_cache(B, L).shape)
    kern = T.MLAAttentionKernel(spec, B, L, s, form=form, core=core).load_reference(ref, cache)
    torch.testing.assert_close(_run(lambda: kern.forward(x)), _run(lambda: ref(x, cache)))
    # the step does not advance the cache: calling it again gives the same result
    torch.testing.assert_close(_run(lambda: kern.forward(x)), _run(lambda: ref(x, cache)))


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("variant", GQA)
def test_gqa_matches_reference(variant, step):
    spec = GQA[variant]
    B, s, L = STEPS[step]
    ref = K.GQAAttention(spec)
    if ref.q_norm is not None:  # non-trivial norm weights
        ref.q_norm.weight.data.uniform_(0.5, 1.5)
        ref.k_norm.weight.data.uniform_(0.5, 1.5)
    x, cache = torch.randn(B, s, spec.hidden_size), torch.randn(ref.empty_cache(B, L).shape)
    kern = T.GQAAttentionKernel(spec, B, L, s).load_reference(ref, cache)
    torch.testing.assert_close(_run(lambda: kern.forward(x)), _run(lambda: ref(x, cache)))


@pytest.mark.parametrize("step", ["decode", "prefill"])
@pytest.mark.parametrize("variant", MOE)
def test_moe_matches_reference(variant, step):
    spec = MOE[variant]
    B, s, _ = STEPS[step]
    ref = K.MoEFFN(spec)
    x = torch.randn(B, s, spec.hidden_size)
    kern = T.MoEKernel(spec, B, 0, s).load_reference(ref)
    torch.testing.assert_close(_run(lambda: kern.forward(x)), _run(lambda: ref(x)))
    assert sum(kern.last_counts) == B * s * spec.ffn.num_experts_per_tok
    # forced, maximally skewed routing: every token to experts 0..k-1
    k = spec.ffn.num_experts_per_tok
    idx = torch.arange(k).expand(B * s, k)
    torch.testing.assert_close(_run(lambda: kern.forward(x, idx)), _run(lambda: ref(x, idx)))


@pytest.mark.parametrize("name", ["deepseek-v2", "llama-3.1-8b"])
def test_dense_swiglu_matches_reference(name):
    spec = _tiny(name)
    ref = K.DenseFFN(spec)
    x = torch.randn(2, 6, spec.hidden_size)
    kern = T.DenseFFNKernel(spec, 2, 0, 6).load_reference(ref)
    torch.testing.assert_close(_run(lambda: kern.forward(x)), _run(lambda: ref(x)))


def test_bf16_kernels_match_reference_at_bf16_tolerance():
    """bf16 timed kernels against the fp32 reference on the same (bf16-representable) weights."""
    tol = dict(rtol=2e-2, atol=2e-2)
    spec = MLA["v2"]
    B, s, L = STEPS["decode"]
    for form, core in [("absorbed", "bmm"), ("absorbed", "sdpa"), ("naive", "bmm")]:
        ref = K.MLAAttention(spec, form=form).to(torch.bfloat16).float()
        x = torch.randn(B, s, spec.hidden_size).bfloat16().float()
        cache = torch.randn(ref.empty_cache(B, L).shape).bfloat16().float()
        kern = T.MLAAttentionKernel(spec, B, L, s, form=form, core=core, dtype="bf16").load_reference(ref, cache)
        torch.testing.assert_close(_run(lambda: kern.forward(x.bfloat16())).float(), _run(lambda: ref(x, cache)), **tol)
    gspec = GQA["gqa"]
    ref = K.GQAAttention(gspec).to(torch.bfloat16).float()
    x = torch.randn(B, s, gspec.hidden_size).bfloat16().float()
    cache = torch.randn(ref.empty_cache(B, L).shape).bfloat16().float()
    kern = T.GQAAttentionKernel(gspec, B, L, s, dtype="bf16").load_reference(ref, cache)
    torch.testing.assert_close(_run(lambda: kern.forward(x.bfloat16())).float(), _run(lambda: ref(x, cache)), **tol)
    mspec = MOE["v2"]
    ref = K.MoEFFN(mspec).to(torch.bfloat16).float()
    x = torch.randn(4, 1, mspec.hidden_size).bfloat16().float()
    kern = T.MoEKernel(mspec, 4, 0, 1, dtype="bf16").load_reference(ref)
    idx = _run(lambda: ref.router(x.reshape(4, -1))[1])  # same routing (bf16 rounding may flip near-ties)
    torch.testing.assert_close(_run(lambda: kern.forward(x.bfloat16(), idx)).float(), _run(lambda: ref(x, idx)), **tol)


def test_rmsnorm_and_silu_mul_match_reference():
    x = torch.randn(5, 64)
    norm = K.RMSNorm(64)
    norm.weight.data.uniform_(0.5, 1.5)
    kern = T.RMSNormKernel(5, 64)
    kern.weight = norm.weight.detach().clone()
    y = _run(lambda: kern.forward(x))
    torch.testing.assert_close(y, _run(lambda: norm(x)))
    assert y.data_ptr() == kern.out.data_ptr()  # into the preallocated output
    kb = T.RMSNormKernel(5, 64, dtype="bf16")
    kb.weight = norm.weight.detach().bfloat16()
    xb = x.bfloat16()
    torch.testing.assert_close(_run(lambda: kb.forward(xb)),
                               torch.nn.functional.rms_norm(xb, (64,), kb.weight, 1e-6))
    sm = T.SiluMulKernel(5, 32)
    y = _run(sm)
    torch.testing.assert_close(y, torch.nn.functional.silu(sm.x[:, :32]) * sm.x[:, 32:])
    assert y.data_ptr() == sm.out.data_ptr()
    assert T.count_flops(kern) == 0 and T.count_flops(sm) == 0


# ======================================================================================
# FLOPs == engine operators
# ======================================================================================


def _masked_extra(spec, step: StepShape, form: str = "absorbed") -> float:
    B, s = step.batch, step.new_tokens
    return engine_per_pair(spec, step, form) * B * s * (s - 1) / 2


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("form,core", [("absorbed", "bmm"), ("absorbed", "sdpa"), ("naive", "bmm"), ("naive", "sdpa")])
@pytest.mark.parametrize("variant", MLA)
def test_mla_flops_match_engine(variant, form, core, step):
    spec = MLA[variant]
    B, s, L = STEPS[step]
    st = StepShape(B, s, L)
    kern = T.MLAAttentionKernel(spec, B, L, s, form=form, core=core)
    want = engine_flops(spec, st, "attention", form) + _masked_extra(spec, st, form)
    a = spec.attention
    if core == "sdpa" and form == "naive":  # V zero-padded from d_h^v to the qk dim d_h + d_h^R
        want += 2.0 * B * a.num_attention_heads * s * (L + s) * (a.qk_nope_head_dim + a.qk_rope_head_dim - a.v_head_dim)
    if core == "sdpa" and form == "absorbed":  # V = the whole cache row: d_h^R extra value columns
        want += 2.0 * B * a.num_attention_heads * s * (L + s) * a.qk_rope_head_dim
    assert T.count_flops(kern) == want
    if s == 1 and core == "bmm":
        assert T.count_flops(kern) == engine_flops(spec, st, "attention", form)  # decode: exact


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("variant", GQA)
def test_gqa_flops_match_engine(variant, step):
    spec = GQA[variant]
    B, s, L = STEPS[step]
    st = StepShape(B, s, L)
    kern = T.GQAAttentionKernel(spec, B, L, s)
    assert T.count_flops(kern) == engine_flops(spec, st, "attention") + _masked_extra(spec, st)


def test_cpu_sdpa_is_counted():
    """torch's FlopCounterMode alone counts 0 for the CPU flash-attention op; flop_counter() fixes that."""
    from torch.utils.flop_counter import FlopCounterMode

    kern = T.GQAAttentionKernel(GQA["gqa"], 2, 8, 1)
    with FlopCounterMode(display=False) as plain, torch.no_grad():
        kern()
    assert T.count_flops(kern) > plain.get_total_flops()


@pytest.mark.parametrize("step", ["decode", "prefill"])
@pytest.mark.parametrize("variant", MOE)
def test_moe_flops_match_engine(variant, step):
    """ep = 1: the engine's busiest rank runs tokens * top_k token-expert pairs, exactly."""
    spec = MOE[variant]
    B, s, L = STEPS[step]
    kern = T.MoEKernel(spec, B, L, s)
    assert T.count_flops(kern) == engine_flops(spec, StepShape(B, s, L), "moe")
    k = spec.ffn.num_experts_per_tok
    skewed = torch.arange(k).expand(B * s, k)
    assert T.count_flops(lambda: kern.forward(kern.x, skewed)) == engine_flops(spec, StepShape(B, s, L), "moe")


@pytest.mark.parametrize("step", ["decode", "prefill"])
@pytest.mark.parametrize("name", ["deepseek-v2", "llama-3.1-8b"])
def test_dense_ffn_flops_match_engine(name, step):
    spec = _tiny(name)
    B, s, L = STEPS[step]
    assert T.count_flops(T.DenseFFNKernel(spec, B, L, s)) == engine_flops(spec, StepShape(B, s, L), "ffn")


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_gemm(dtype):
    g = T.Gemm(16, 24, 40, dtype=dtype)
    y = _run(g)
    assert y.data_ptr() == g.out.data_ptr() and y.dtype == T._dtype(dtype)
    torch.testing.assert_close(y.float(), g.x.float() @ g.w.float(), rtol=2e-2, atol=2e-2)
    assert T.count_flops(g) == g.flops == 2 * 16 * 24 * 40


def test_gemm_fp8_on_cuda_only():
    if not T.fp8_supported("cuda" if torch.cuda.is_available() else "cpu"):
        with pytest.raises(NotImplementedError):
            T.Gemm(16, 32, 32, dtype="fp8", device="cpu")
        pytest.skip("no FP8 _scaled_mm device")
    g = T.Gemm(64, 64, 64, dtype="fp8", device="cuda")
    assert _run(g).shape == (64, 64) and T.count_flops(g) == g.flops


# ======================================================================================
# Preallocated caches
# ======================================================================================


def test_latent_cache_append_in_place():
    c = T.LatentKVCache(2, 8, 16, 4, dtype=torch.float32, device="cpu")
    ptr, shape = c.buf.data_ptr(), c.buf.shape
    new = [torch.randn(2, 3, 20), torch.randn(2, 1, 20), torch.randn(2, 4, 20)]
    for t in new:
        c.append(t)
    assert c.buf.data_ptr() == ptr and c.buf.shape == shape and c.length == 8
    torch.testing.assert_close(c.view(), torch.cat(new, dim=1))
    assert c.view().data_ptr() == ptr  # a view, not a copy
    with pytest.raises(ValueError):
        c.append(torch.randn(2, 1, 20))


def test_head_cache_append_in_place():
    c = T.HeadKVCache(2, 6, 2, 8, dtype=torch.float32, device="cpu")
    ptrs = (c.k.data_ptr(), c.v.data_ptr())
    ks, vs = [torch.randn(2, 2, n, 8) for n in (2, 4)], [torch.randn(2, 2, n, 8) for n in (2, 4)]
    for k, v in zip(ks, vs):
        c.append(k, v)
    assert (c.k.data_ptr(), c.v.data_ptr()) == ptrs and c.k.shape == (2, 2, 6, 8) and c.length == 6
    k, v = c.view()
    torch.testing.assert_close(k, torch.cat(ks, dim=2))
    torch.testing.assert_close(v, torch.cat(vs, dim=2))
    with pytest.raises(ValueError):
        c.append(ks[0], vs[0])


@pytest.mark.parametrize("which", ["mla-absorbed", "mla-naive", "gqa"])
def test_decode_loop_appends_in_place_and_never_concatenates(which):
    """A decode loop with advance=True fills the preallocated cache in place and gives the
    same outputs as the reference (which concatenates); the timed step has no aten.cat."""
    B, L, steps = 2, 5, 3
    if which == "gqa":
        spec = GQA["gqa"]
        ref = K.GQAAttention(spec)
        cache = torch.randn(ref.empty_cache(B, L).shape)
        kern = T.GQAAttentionKernel(spec, B, L, 1, capacity=L + steps).load_reference(ref, cache)
        ptr = kern.cache.k.data_ptr()
    else:
        spec = MLA["v2"]
        form = which.split("-")[1]
        ref = K.MLAAttention(spec, form=form)
        cache = torch.randn(ref.empty_cache(B, L).shape)
        kern = T.MLAAttentionKernel(spec, B, L, 1, form=form, capacity=L + steps).load_reference(ref, cache)
        ptr = kern.cache.buf.data_ptr()
    for _ in range(steps):
        x = torch.randn(B, 1, spec.hidden_size)
        with torch.no_grad():
            torch.testing.assert_close(kern.forward(x, advance=True), ref(x, cache))
            # the reference's new cache entry, as the reference computes it
            if which == "gqa":
                kv = ref.qkv_proj(x)[..., ref.n_heads * ref.head_dim:].view(B, 1, 2, ref.n_kv, ref.head_dim)
            else:
                kv = ref.kv_a_proj(x)
                kv = torch.cat([ref.kv_a_layernorm(kv[..., :ref.kv_lora_rank]), kv[..., ref.kv_lora_rank:]], dim=-1)
        cache = torch.cat([cache, kv], dim=1)
    assert kern.cache.length == L + steps == kern.cache.capacity
    assert (kern.cache.k if which == "gqa" else kern.cache.buf).data_ptr() == ptr
    log = _OpLog()
    kern.cache.length = L
    with log, torch.no_grad():
        kern()
    assert "aten.cat" not in log.ops, log.ops


# ======================================================================================
# Timing helper
# ======================================================================================


@pytest.mark.parametrize("repeats", [None, 5])
def test_measure_records_min_and_median_and_restores_threads(repeats):
    from costsim.calibration.measure import measure

    before = torch.get_num_threads()  # 1, from the module fixture
    seen = []
    g = T.Gemm(8, 8, 8)
    r = measure(lambda: (seen.append(torch.get_num_threads()), g()), warmup=2, repeats=repeats,
                min_run_time=0.01, num_threads=2)
    assert set(seen) == {2} and torch.get_num_threads() == before
    assert 0 < r["min_s"] <= r["median_s"] <= r["max_s"] and r["iqr_s"] >= 0
    assert r["runs"] == (repeats or r["runs"]) and len(r["times_s"]) == r["runs"] >= 1
    assert r["num_threads"] == 2 and r["device"] == "cpu" and r["number_per_run"] >= 1
