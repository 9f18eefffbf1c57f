"""Whole `show` and `compare` records of the tiny GQA spec, every field derived by hand.

Tiny spec (tests/test_mutation_scenario_records.py): h = 8, vocab 100, 2 layers, 4 heads of 2,
2 KV heads, SwiGLU FFN of 16.
  attention 8*8 + 2*8*4 + 8*8 = 192; FFN 3*8*16 = 384; norms 2*8 = 16 per layer -> 592 per layer
  embedding 800, LM head 800, final norm 8 -> total 2*592 + 1600 + 8 = 2792
  active (no input embedding) = 2792 - 800 = 1992; matmul-active = 1992 - 40 norms = 1952
  KV per token per layer 2*2*2 = 8 elements (16 B bf16); 2 layers -> 16 elements, 32 B
  decode FLOPs at context L: 2*1952 + 2 layers * 4*4*2*(L+1)
  prefill FLOPs per token over c tokens (logits for all): (2*1952*c + 2 * 4*4*2 * c(c+1)/2) / c
"""

import pytest

from costsim.simulator.layout import LayoutRequest
from costsim.simulator.scenario import compare, show
from test_mutation_scenario_records import tpot
from tiny import MEM, OVH, gqa, hw  # tests/ is on sys.path under pytest


def test_show_record_by_hand():
    r = show(gqa(), "bf16", context=4, batch=3).to_dict()
    assert r.pop("params")["total"] == 2792
    assert r == dict(
        name="tiny-gqa", source="hand-made test spec", params_total=2792, params_active=1992,
        params_active_incl_embedding=2792, params_mtp=0, kv_dtype="bf16", kv_cache_elements_per_token=16,
        kv_cache_bytes_per_token=32.0, kv_cache_bytes_per_token_per_layer=16.0, context=4, batch=3, tp=1,
        block_size=None, kv=32.0 * 4 * 3,
        flops_per_token_decode=2 * 1952 + 2 * 4 * 4 * 2 * 5, flops_per_token_decode_naive=2 * 1952 + 2 * 4 * 4 * 2 * 5,
        flops_per_token_prefill=(2 * 1952 * 4 + 2 * 4 * 4 * 2 * 10) / 4, warnings=())


def test_show_context_zero_counts_one_token_of_prefill():
    r = show(gqa(), "fp8", context=0, batch=1)
    # context 0: decode attends 1 key; the prefill figure is per token of a 1-token prompt
    assert r.flops_per_token_decode == 2 * 1952 + 2 * 4 * 4 * 2 * 1
    assert r.flops_per_token_prefill == 2 * 1952 + 2 * 4 * 4 * 2 * 1
    assert (r.kv_dtype, r.kv_cache_bytes_per_token, r.kv) == ("fp8", 16.0, 0.0)


def test_show_warns_beyond_max_position_embeddings():
    assert show(gqa(max_position_embeddings=8), context=9).warnings == (
        "9 tokens exceed tiny-gqa's max_position_embeddings (8); figures are extrapolated",)
    assert show(gqa(max_position_embeddings=8), context=8).warnings == ()


def test_compare_record_by_hand_on_one_device():
    (r,) = compare([gqa()], hw(), LayoutRequest(devices=1), context=9, batch=1)
    d = r.to_dict()
    t = tpot(9)  # (3904 + 1400) / 5e8 + 16 us
    # memory: usable 0.9 x 1e9 - 5584 B of weights, per sequence KV 9 x 32 = 288 B + decode
    # workspace (LM head activations (8 + 100) x 2 = 216 + FP32 logits 400 = 616 B)
    max_b = (900_000_000 - 5584) // (288 + 616)
    assert d == dict(
        name="tiny-gqa", source="hand-made test spec", params_total=2792, params_active=1992,
        params_active_incl_embedding=2792, params_mtp=0, kv_dtype="bf16", kv_cache_elements_per_token=16,
        kv_cache_bytes_per_token=32.0, kv_cache_bytes_per_token_per_layer=16.0, context=9, batch=1, tp=1,
        block_size=None, kv=288.0, flops_per_token_decode=2 * 1952 + 2 * 4 * 4 * 2 * 10,
        flops_per_token_decode_naive=2 * 1952 + 2 * 4 * 4 * 2 * 10,
        flops_per_token_prefill=(2 * 1952 * 9 + 2 * 4 * 4 * 2 * 45) / 9, hardware="tiny-hw", devices=1, ep=1,
        weight_dtype="bf16", weight_bytes_per_device=5584.0, decode_tokens_per_s=pytest.approx(1 / t, rel=1e-12),
        tpot_s=pytest.approx(t, rel=1e-12), max_batch=max_b, fits=True, note="", warnings=(), pp=1,
        band="uncalibrated")  # the tiny profile has no residuals


def test_compare_default_is_one_node_with_tp_inside_it():
    # no devices: one node of 2; a dense model takes the largest TP that splits its heads (2)
    (r,) = compare([gqa()], hw(), context=9, batch=1)
    assert (r.devices, r.tp, r.ep) == (2, 2, 1)
    # TP 2 halves attention (192) and FFN (384) weights, keeps the norms, splits the vocab:
    # 2 x ((96 + 192) x 2 + 16 x 2) + 1600 x 2 / 2 + 8 x 2 = 2832 B
    assert r.weight_bytes_per_device == 2832.0


def test_compare_batch_beyond_memory_and_weights_that_do_not_fit():
    small = hw(memory_capacity=10_000)  # 9,000 B usable
    (r,) = compare([gqa()], small, LayoutRequest(devices=1), context=9, batch=8)
    # (9000 - 5584) // 904 = 3 sequences fit; batch 8 does not
    assert (r.max_batch, r.fits) == (3, False)
    assert r.note == "batch 8 at context 9 exceeds memory (max batch 3)"
    assert r.tpot_s == pytest.approx(tpot(9, 8), rel=1e-12)
    (w,) = compare([gqa()], hw(memory_capacity=5000), LayoutRequest(devices=1), context=9, batch=1)
    assert (w.fits, w.tpot_s, w.decode_tokens_per_s) == (False, None, None)
    assert w.note == "weights do not fit (0.0 GB per device)"


def test_compare_names_repeated_models_apart_and_keeps_order():
    recs = compare([gqa(), gqa(name="other"), gqa()], hw(), LayoutRequest(devices=1), context=9, batch=1)
    assert [r.name for r in recs] == ["tiny-gqa", "other", "tiny-gqa (2)"]


def test_compare_warns_per_model():
    (r,) = compare([gqa(max_position_embeddings=4)], hw(), LayoutRequest(devices=1), context=9, batch=1)
    assert r.warnings == ("9 tokens exceed tiny-gqa's max_position_embeddings (4); figures are extrapolated",)
    assert MEM == 5e8 and OVH == 1e-6  # the hand formula's profile
