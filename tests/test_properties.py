"""Property tests (hypothesis) for invariants of the core engine."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costsim.registry import apply_sets, load_model, model_names
from costsim.simulator.flops import flops_per_token_decode
from costsim.simulator.kv import kv_bytes_per_token, kv_cache_bytes
from costsim.simulator.params import param_counts
from costsim.units import FORMATS, parse_format

NAMES = model_names()
FMT = st.sampled_from(["bf16", "fp8", "int4", "int4-g32", 6, 3.5])


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(NAMES), fmt=FMT, ctx=st.integers(0, 200_000), batch=st.integers(0, 4096),
       k=st.integers(1, 16))
def test_kv_bytes_linear_in_batch_and_in_context_without_windows(name, fmt, ctx, batch, k):
    spec = load_model(name)
    f = parse_format(fmt)
    one = kv_cache_bytes(spec, f, ctx, batch)
    assert kv_cache_bytes(spec, f, ctx, k * batch) == pytest.approx(k * one, rel=1e-12, abs=1e-6)
    if spec.sliding_window is None:
        assert kv_cache_bytes(spec, f, k * ctx, batch) == pytest.approx(k * one, rel=1e-12, abs=1e-6)
        assert one == pytest.approx(kv_bytes_per_token(spec, f) * ctx * batch, rel=1e-12, abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(NAMES), ctx=st.integers(0, 1_000_000), extra=st.integers(0, 100_000))
def test_kv_non_decreasing_in_context_and_windows_bounded(name, ctx, extra):
    spec = load_model(name)
    bf16 = FORMATS["bf16"]
    assert kv_cache_bytes(spec, bf16, ctx + extra, 1) >= kv_cache_bytes(spec, bf16, ctx, 1)
    assert kv_cache_bytes(spec, bf16, ctx, 1) <= kv_bytes_per_token(spec, bf16) * ctx


@settings(max_examples=30, deadline=None)
@given(heads=st.sampled_from([1, 2, 8, 16, 32, 64, 128, 256]), ctx=st.integers(1, 100_000))
def test_mla_kv_independent_of_head_count(heads, ctx):
    # DeepSeek-V2 Table 1: the MLA cache is (d_c + d_h^R) * l, with no n_h in it
    base = load_model("deepseek-v2")
    spec = apply_sets(base, [f"attention.num_attention_heads={heads}"], "--set")
    for fmt in ("bf16", "flashmla-fp8", 6):
        f = parse_format(fmt)
        assert kv_cache_bytes(spec, f, ctx, 3) == kv_cache_bytes(base, f, ctx, 3)


@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from([n for n in NAMES if load_model(n).ffn.kind == "moe"]),
       k=st.integers(1, 8), shared=st.integers(0, 4))
def test_moe_active_at_most_total(name, k, shared):
    spec = load_model(name)
    k = min(k, spec.ffn.n_routed_experts)
    spec = apply_sets(spec, [f"ffn.num_experts_per_tok={k}", f"ffn.n_shared_experts={shared}"], "--set")
    p = param_counts(spec)
    assert p.active <= p.total
    assert p.routed_experts_active <= p.routed_experts
    # activating every expert makes active == total minus the input embedding
    all_on = apply_sets(spec, [f"ffn.num_experts_per_tok={spec.ffn.n_routed_experts}"], "--set")
    q = param_counts(all_on)
    assert q.active == q.total - q.embedding


@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from(NAMES), ctx=st.integers(0, 100_000), d=st.integers(1, 10_000))
def test_decode_flops_increase_with_context(name, ctx, d):
    spec = load_model(name)
    assert flops_per_token_decode(spec, ctx + d) > flops_per_token_decode(spec, ctx)


@settings(max_examples=30, deadline=None)
@given(bits=st.floats(0.5, 32), n=st.integers(1, 10**6))
def test_format_bytes_scale_with_bits(bits, n):
    f = parse_format(bits)
    assert f.bytes_for(n) == pytest.approx(n * bits / 8)


def test_dense_model_active_equals_total_minus_embedding():
    for name in NAMES:
        spec = load_model(name)
        if spec.ffn.kind == "dense":
            p = param_counts(spec)
            assert p.active == p.total - p.embedding, name


def test_kv_vectorised_over_context_and_batch():
    spec = load_model("llama-3.1-8b")
    ctx = np.array([[0], [100], [1000]])
    batch = np.array([1, 2, 4])
    grid = kv_cache_bytes(spec, FORMATS["bf16"], ctx, batch)
    assert grid.shape == (3, 3)
    assert grid[2, 2] == kv_cache_bytes(spec, FORMATS["bf16"], 1000, 4)
