"""Independent expected values for whole scenario records: perf, kv, max-throughput
(costsim.simulator.scenario), every field derived by hand.

Profile and tiny GQA spec as in tests/test_formulas_roofline_parallel.py (5e8 B/s achievable,
1 us per kernel, 1 GB per device x 0.9 usable, 2 devices per node). Hand facts reused from
tests/test_formulas_memory_serving.py:
  weights 2792 params x 2 B = 5584 B; KV 32 B per token (2 layers x 16 B)
  decode step at context L, batch b per device, TP 1: every operator memory-bound (the
  largest intensity, the LM head's, tends to 1600/216 < 10 FLOP/B), 16 kernels;
  bytes = 3904 B of weights + 1400 B per sequence at L = 9 (5304 B at b = 1), + 32 B per
  sequence per extra cached token
  prefill of a 4-token prompt: 7704 B, 11,456 FLOPs
"""

from __future__ import annotations

import math

import pytest

from costsim.errors import FieldError
from costsim.simulator.deployment import Deployment
from costsim.simulator.layout import LayoutRequest
from costsim.simulator.scenario import Scenario, kv, max_throughput_record, max_throughput_search, perf
from costsim.simulator.serving import SLOError

from tiny import MEM, OVH, gqa, hw  # the hand-made spec and profile (tests/tiny.py)


def tpot(L, b=1):
    """Decode step of b sequences per device at context L, TP 1 (hand formula above)."""
    return (3904 + b * (1400 + 32 * (L - 9))) / MEM + 16 * OVH


TTFT = 7704 / MEM + 16 * OVH


# ============================================================== perf


def test_perf_record_every_field_by_hand():
    r = perf(Scenario(gqa(), hw(), Deployment(), batch=1, input_len=4, output_len=2))
    d = r.to_dict()
    rates = d.pop("rates")
    t4 = tpot(4)  # 2 output tokens: the prefill's, then one decode step at context 4
    e2e = TTFT + t4
    # memory at 4 + 2 = 6 tokens: KV 6 * 32 = 192; decode workspace = the LM head's activations
    # (8 + 100) * 2 = 216 + FP32 logits 100 * 4 = 400 -> 616; max batch floor((9e8 - 5584) / (192 + 616))
    # = 1,113,854, limited by the workspace (616 > 192)
    # prefill workspace: ffn.act 4 * (32 + 16) * 2 = 384 + logits 400 = 784
    # per layer: decode at context 4 (5 keys) 1648 B in 7 kernels, prefill 2880 B; once: embedding + LM head
    expected = dict(
        model="tiny-gqa", hardware="tiny-hw", devices=1, devices_per_node=2, tp=1, ep=1, pp=1, dp=1,
        weight_dtype="bf16", kv_dtype="bf16", batch=1, input=4, output=2,
        ttft_s=TTFT, tpot_s=t4, tpot_last_s=t4, e2e_s=e2e,
        prefill_tokens_per_s=4 / TTFT, prefill_tokens_per_s_per_device=4 / TTFT,
        decode_tokens_per_s=1 / t4, decode_tokens_per_s_per_device=1 / t4,
        decode_tokens_per_s_per_node=2 / t4, combined_tokens_per_s=2 / e2e,
        prefill_mfu=11456 / (TTFT * 1e10), decode_mbu=(5304 - 5 * 32) / (t4 * 1e9),
        prefill_mla_form="absorbed", decode_mla_form="absorbed",
        weight_bytes_per_device=5584, kv_bytes_per_device=192, workspace_bytes_per_device=616,
        memory_usable_bytes=9e8, prefill_workspace_bytes_per_device=784, prefill_fits=True, fits=True,
        max_batch=1113854, max_batch_limit="memory: workspace", warnings=(),
        decode_seconds_per_layer=dict(dense=1648 / MEM + 7 * OVH, once=(32 + 1816) / MEM + 2 * OVH),
        prefill_seconds_per_layer=dict(dense=2880 / MEM + 7 * OVH, once=(128 + 1816) / MEM + 2 * OVH),
        layout_reason="", prefill_chunk_tokens=None, mtp_depth=0, mtp_acceptance=0.0, mtp_tokens_per_step=1.0,
        ep_kernel="normal", deepep_nvlink=False, two_batch_overlap=False, draft_model=None,
        prefill_devices_per_decode_device=(4 / (4 / TTFT)) / (2 / (1 / t4)), ttft_band_s=None, tpot_band_s=None,
        tpot_last_band_s=None, e2e_band_s=None, band="uncalibrated",  # the tiny profile has no residuals
        comm_buffer_bytes_per_device=0.0, deepep_max_tokens=0,  # no EP: no DeepEP buffers
    )
    assert set(d) == set(expected)
    for k, v in expected.items():
        assert d[k] == pytest.approx(v), k
    assert rates["memory_bandwidth"]["value"] == 1e9 and rates["peak_flops.bf16"]["value"] == 1e10
    # breakdown adds the operator tables (16 rows: 9 operators of the decode step, as in prefill)
    b = perf(Scenario(gqa(), hw(), Deployment(), batch=1, input_len=4, output_len=2), breakdown=True)
    assert [row["op"] for row in b.decode_operators] == [row["op"] for row in b.prefill_operators]
    assert len(b.decode_operators) == 9


def test_perf_prefill_only_and_warnings():
    # output 0: no decode step, so no TPOT, no decode utilisation, no per-layer decode split
    r = perf(Scenario(gqa(max_position_embeddings=3), hw(), Deployment(), batch=1, input_len=4, output_len=0))
    assert r.tpot_s is None and r.tpot_last_s is None and r.decode_mbu is None
    assert r.decode_seconds_per_layer == {}
    assert r.e2e_s == pytest.approx(TTFT)
    (w,) = r.warnings  # 4 tokens > 3 positions
    assert "4 tokens" in w
    # a device of 6000 B (x 0.9 = 5400 B usable) does not hold the 5584 B of weights at all;
    # at 6400 B (5760 usable) the weights fit, but not 1 sequence of 6 tokens (192 + 616 B) and
    # not the prefill (5584 + 128 + 784 = 6496 B)
    r = perf(Scenario(gqa(), hw(memory_capacity=6400), Deployment(), batch=1, input_len=4, output_len=2))
    assert r.fits is False and r.prefill_fits is False and r.max_batch == 0
    assert len(r.warnings) == 2 and "does not fit" in r.warnings[0] and "chunk" in r.warnings[1]


def test_perf_through_the_layout_policy():
    # LayoutRequest(devices=2, tp=1): two DP replicas, batch 2 -> one sequence per device
    r = perf(Scenario(gqa(), hw(), LayoutRequest(devices=2, tp=1), batch=2, input_len=4, output_len=1))
    assert (r.devices, r.tp, r.dp) == (2, 1, 2)
    assert r.tpot_s == pytest.approx(tpot(4))
    assert r.decode_tokens_per_s == pytest.approx(2 / tpot(4))
    assert r.decode_tokens_per_s_per_device == pytest.approx(1 / tpot(4))
    assert r.decode_tokens_per_s_per_node == pytest.approx(2 / tpot(4))


@pytest.mark.parametrize("kw,field", [
    (dict(batch=0), "batch"), (dict(input_len=0), "input_len"), (dict(output_len=-1), "output_len"),
    (dict(batch=1.0), "batch"), (dict(batch=True), "batch"),
])
def test_perf_names_the_bad_field(kw, field):
    args = dict(batch=1, input_len=4, output_len=1)
    args.update(kw)
    with pytest.raises(FieldError) as e:
        perf(Scenario(gqa(), hw(), Deployment(), **args))
    assert e.value.field == field


# ============================================================== kv


def test_kv_record_by_hand():
    # defaults: bf16, context 4096, batch 1, TP 1: 2 kv heads x dim 2 x (K, V) x 2 B = 16 B per
    # layer, 32 B per token, 16 elements per token (whole model)
    assert kv(gqa()).to_dict() == dict(
        name="tiny-gqa", kv_dtype="bf16", kv_cache_elements_per_token=16, kv_cache_bytes_per_token=32,
        kv_cache_bytes_per_token_per_layer=16, context=4096, batch=1, tp=1, block_size=None, kv=4096 * 32)
    # fp8, TP 2 (1 kv head per device): 4 B per layer, 8 B per token; 10 tokens in blocks of 4 -> 12
    # slots, 3 sequences: 12 * 8 * 3 = 288 B
    assert kv(gqa(), "fp8", context=10, batch=3, tp=2, block_size=4).to_dict() == dict(
        name="tiny-gqa", kv_dtype="fp8", kv_cache_elements_per_token=16, kv_cache_bytes_per_token=8,
        kv_cache_bytes_per_token_per_layer=4, context=10, batch=3, tp=2, block_size=4, kv=288)
    # context 0 and batch 0 are valid (nothing cached)
    assert kv(gqa(), context=0).kv == 0 and kv(gqa(), batch=0).kv == 0


@pytest.mark.parametrize("kw,field", [
    (dict(context=-1), "context"), (dict(batch=-1), "batch"), (dict(tp=0), "tp"), (dict(block_size=0), "block_size"),
    (dict(block_size=1.5), "block_size"), (dict(kv_dtype="bf17"), "kv_dtype"), (dict(kv_dtype="flashmla-fp8"), "kv_dtype"),
    (dict(context=2.0), "context"), (dict(tp=True), "tp"),
])
def test_kv_record_names_the_bad_field(kw, field):
    with pytest.raises(FieldError) as e:
        kv(gqa(), **kw)
    assert e.value.field == field


# ============================================================== max-throughput

# TP 1 replicas at context 9: per device floor((9e8 - 5584) / (9 * 32 + 616)) = 995,569 sequences.
# Throughput b / tpot(9, b) grows with b, so under an SLO the best batch is the largest that meets
# it. SLO 52 us: tpot(9, 10) = 17904 / 5e8 + 16 us = 51.808 us meets it, 11 sequences (54.608 us) do not.
# TP 2 on the same 2 devices (one replica) costs tpot = (1952 + 852 b) / 5e8 + 16 us + 5 all-reduces
# (2 per layer + the embedding's) of (16 b / 5e7 + 2 us): 29.904 us + 3.304 us * b -> at most 6
# sequences, 6 / 49.728 us, fewer tokens/s
# than 2 replicas x 10 sequences at TP 1, so the search picks TP 1 over the policy's TP 2.
SLO = 52e-6


def test_max_throughput_record_searches_tp_by_hand():
    r = max_throughput_record(gqa(), hw(), LayoutRequest(devices=2), context=9, tpot_slo_s=SLO)
    t = tpot(9, 10)
    assert r.to_dict() == pytest.approx(dict(
        model="tiny-gqa", hardware="tiny-hw", devices=2, tp=1, ep=1, pp=1, weight_dtype="bf16", kv_dtype="bf16",
        context=9, tpot_slo_s=SLO, batch=20, tpot_s=t, tokens_per_s=20 / t, tokens_per_s_per_device=10 / t,
        tokens_per_s_per_node=20 / t, max_batch_memory=2 * 995569, limit="TPOT SLO", warnings=(),
        mtp_depth=0, mtp_acceptance=0.0, mtp_tokens_per_step=1.0, ep_kernel="normal", deepep_nvlink=False,
        draft_model=None, two_batch_overlap=False, band="uncalibrated"))
    # TP given: only that layout is costed
    dep, m = max_throughput_search(gqa(), hw(), LayoutRequest(devices=2, tp=2), context=9, tpot_slo_s=SLO)
    assert dep.tp == 2 and m.batch == 6
    assert m.tpot_s == pytest.approx(29.904e-6 + 6 * 3.304e-6)
    assert m.tokens_per_s == pytest.approx(6 / (29.904e-6 + 6 * 3.304e-6))


def test_max_throughput_without_slo_is_memory_bound():
    # no SLO: the largest batch memory allows, 995,569 sequences on one device
    r = max_throughput_record(gqa(max_position_embeddings=8), hw(), LayoutRequest(devices=1), context=9)
    assert r.batch == r.max_batch_memory == 995569 and r.limit == "memory" and r.tpot_slo_s is None
    assert r.tpot_s == pytest.approx(tpot(9, 995569))
    assert len(r.warnings) == 1  # 9 tokens > 8 positions


@pytest.mark.parametrize("slo", [0.0, -1.0, math.inf, math.nan])
def test_max_throughput_rejects_a_bad_slo(slo):
    with pytest.raises(FieldError) as e:
        max_throughput_search(gqa(), hw(), LayoutRequest(devices=1), context=9, tpot_slo_s=slo)
    assert type(e.value) is FieldError and e.value.field == "tpot_slo_s"


def test_max_throughput_rejects_context_and_unmeetable_slo():
    with pytest.raises(FieldError) as e:
        max_throughput_search(gqa(), hw(), LayoutRequest(devices=1), context=0)
    assert e.value.field == "context"
    # 20 us is below the batch-1 step of every layout: TP 1 takes tpot(9) = 26.608 us, TP 2
    # 30.888 us; the error reports the fastest
    with pytest.raises(SLOError) as e:
        max_throughput_search(gqa(), hw(), LayoutRequest(devices=2), context=9, tpot_slo_s=20e-6)
    assert e.value.field == "tpot_slo_s" and e.value.value == 20e-6
    assert e.value.fastest_s == pytest.approx(tpot(9))
