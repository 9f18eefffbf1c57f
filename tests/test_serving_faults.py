"""The serving and parallelism faults of the issue "Serving and parallelism as deployed", each
with its expected value worked out by hand (tests/tiny.py's spec and profile, or the published
config named in the test).

1. a token is dispatched to its experts once, not once per attention TP rank;
2. a pipeline with fewer sequences than stages: one micro-batch passes the pp stages once;
4. the vocab-parallel embedding's all-reduce (2 L + 1 per step under TP);
5. the prefill produces the first output token (n - 1 decode steps for n output tokens);
6. MFU never exceeds 1 (a full-precision run computes its attention core in FP32);
7. MLA's naive form with a sliding window decompresses every new token of a prefill chunk.
"""

import numpy as np
import pytest

from costsim.api import load_hardware, load_model
from costsim.simulator.deployment import Deployment
from costsim.simulator.layout import LayoutRequest, resolve_deployment
from costsim.simulator.operators import step_operators
from costsim.simulator.roofline import time_step
from costsim.simulator.serving import mfu_peak, prefill, serve
from costsim.simulator.types import StepShape
from costsim.specs import ModelSpec
from costsim.units import FORMATS

from tiny import MEM, OVH, gqa, hw


def mla_moe(**kw):
    d = dict(name="tiny-mla-moe", source="hand-made test spec", vocab_size=100, hidden_size=8, num_hidden_layers=2,
             attention=dict(kind="mla", num_attention_heads=4, kv_lora_rank=8, qk_rope_head_dim=2, qk_nope_head_dim=4,
                            v_head_dim=4),
             ffn=dict(kind="moe", n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=8,
                      n_shared_experts=1, first_k_dense_replace=1, dense_intermediate_size=16))
    d.update(kw)
    return ModelSpec.model_validate(d)


def op(spec, dep, step, name, form="absorbed"):
    return next(o for o in step_operators(spec, dep, step, form=form) if o.name == name)


# ------------------------------------------------------------------ 1. dispatch once


def test_a_token_is_dispatched_once_whatever_the_attention_tp():
    # 4 sequences decoding on 2 devices, EP 2. TP 2: one attention group holds all 4 tokens, each
    # rank sends its half: 4 / 2 tokens * h 8 * 2 B = 32 B. TP 1 (DP attention): each rank holds
    # 2 tokens and sends them: 2 * 8 * 2 = 32 B. The old model charged 64 B at TP 2.
    step = StepShape(4, 1, 4)
    for tp in (1, 2):
        dep = Deployment(devices=2, tp=tp, ep=2)
        for name in ("comm.ep_dispatch", "comm.ep_combine"):
            assert float(op(mla_moe(), dep, step, name).comm_bytes) == pytest.approx(32), (tp, name)


def test_qwen3_moe_prefill_tp8_ep8_sends_an_eighth_of_the_tokens():
    # Qwen3-235B-A22B (hidden_size 4096, HF config): 8k-token prefill on 8 H200, TP 8 and EP 8.
    # Each rank dispatches 8192 / 8 tokens * 4096 * 2 B (BF16) = 8,388,608 B per MoE layer.
    spec, h200 = load_model("qwen3-235b-a22b"), load_hardware("h200")
    dep = Deployment(devices=8, tp=8, ep=8)
    assert float(op(spec, dep, StepShape(1, 8192, 0), "comm.ep_dispatch").comm_bytes) == 8192 / 8 * 4096 * 2
    # so TTFT at EP 8 is now 190 ms, within 20% of EP 1 (170 ms); it was 338 ms, twice EP 1
    t_ep8 = float(prefill(spec, h200, dep, 1, 8192).time_s)
    t_ep1 = float(prefill(spec, h200, Deployment(devices=8, tp=8, ep=1), 1, 8192).time_s)
    assert t_ep8 < 1.2 * t_ep1


# ------------------------------------------------------------------ 2. pipeline with few sequences


def test_one_sequence_passes_the_pipeline_once():
    # Llama-3.1-70B, 8k prompt, TP 4 x PP 2 on 8 H100: one sequence is one micro-batch, so the
    # TTFT is 2 stage times (each stage: 40 of the 80 layers, the embedding/LM head and the send),
    # not the 3 of a full pipeline fill
    spec, h100 = load_model("llama-3.1-70b"), load_hardware("h100")
    dep = Deployment(devices=8, tp=4, pp=2)
    stage = float(time_step(spec, h100, dep, StepShape(1, 8192, 0)).time_s)
    assert float(prefill(spec, h100, dep, 1, 8192).time_s) == pytest.approx(2 * stage)
    # 3 sequences on 2 stages: 2 micro-batches of 1.5 sequences, 2 + 2 - 1 = 3 stage times
    stage3 = float(time_step(spec, h100, dep, StepShape(1.5, 8192, 0)).time_s)
    assert float(prefill(spec, h100, dep, 3, 8192).time_s) == pytest.approx(3 * stage3)


# ------------------------------------------------------------------ 4. embedding all-reduce


def test_a_64_layer_model_under_tp_runs_129_all_reduces_per_step():
    # the count for a 64-layer model under TP (Megatron-LM §3: two all-reduces per layer in
    # the forward pass, one after the vocab-parallel input embedding): 2 * 64 + 1
    spec = gqa(num_hidden_layers=64)
    ops = step_operators(spec, Deployment(devices=2, tp=2), StepShape(1, 1, 4))
    assert sum(o.count for o in ops if o.name.startswith("comm.tp_allreduce")) == 129


# ------------------------------------------------------------------ 5. first token from the prefill


def test_one_output_token_needs_no_decode_step():
    s = serve(gqa(), hw(), Deployment(), 1, 4, 1)
    assert s.e2e_s == pytest.approx(s.ttft_s)
    s = serve(gqa(), hw(), Deployment(), 1, 4, 3)
    # decode steps at contexts 4 and 5: each reads 32 B of KV per cached token over 2 layers
    # more than the one before (tests/test_formulas_roofline_parallel.py: 5304 B at context 9)
    t4, t5 = (5304 - 5 * 32) / MEM + 16 * OVH, (5304 - 4 * 32) / MEM + 16 * OVH
    assert s.e2e_s - s.ttft_s == pytest.approx(t4 + t5)
    assert s.tpot_s == pytest.approx((t4 + t5) / 2)


# ------------------------------------------------------------------ 6. MFU <= 1


def test_full_precision_run_computes_attention_in_fp32():
    # the case: Llama-3.1-8B, FP32 weights, 128k prompt on H100 gave "prefill MFU 197%":
    # the attention core ran at the BF16 peak (989 TFLOP/s) while MFU divided by FP32's 66.9
    spec, h100 = load_model("llama-3.1-8b"), load_hardware("h100")
    dep = resolve_deployment(spec, h100, LayoutRequest(weight_dtype="fp32"), 1, 131072)
    assert dep.act_format.name == dep.high_precision.name == "fp32"
    r = prefill(spec, h100, dep, 1, 131072)
    assert 0 < float(r.mfu) <= 1
    assert {t.op.dtype for t in r.timing.timings if t.op.kind in ("gemm", "attention")} == {"fp32"}


def test_mfu_divides_by_the_fastest_format_of_the_step():
    # a hand-built FP32-weight deployment that keeps BF16 activations: its attention core runs at
    # the bf16 peak (1e10), its GEMMs at the fp32 peak (1e9), so MFU is taken against 1e10
    h = hw(peak_flops=dict(bf16=1e10, fp8=2e10, fp32=1e9))
    t = time_step(gqa(), h, Deployment(weight_format=FORMATS["fp32"]), StepShape(1, 4, 0))
    assert mfu_peak(h, t) == 1e10
    t = time_step(gqa(), h, Deployment(weight_format=FORMATS["fp32"], act_format=FORMATS["fp32"],
                                       high_precision=FORMATS["fp32"]), StepShape(1, 4, 0))
    assert mfu_peak(h, t) == 1e9
    # FP8 GEMMs beside a BF16 core: the fp8 peak
    t = time_step(gqa(), h, Deployment(weight_format=FORMATS["fp8"]), StepShape(1, 4, 0))
    assert mfu_peak(h, t) == 2e10


@pytest.mark.parametrize("wd", ["bf16", "fp8", "fp32", "int4"])
@pytest.mark.parametrize("prompt", [16, 4096, 131072])
def test_mfu_and_mbu_never_exceed_one(wd, prompt):
    spec, h100 = load_model("llama-3.1-8b"), load_hardware("h100")
    dep = resolve_deployment(spec, h100, LayoutRequest(devices=1, weight_dtype=wd), 1, prompt)
    s = serve(spec, h100, dep, 1, prompt, 2)
    for x in (s.prefill.mfu, s.prefill.mbu, s.decode_first.mfu, s.decode_first.mbu):
        assert 0 < float(x) <= 1


# ------------------------------------------------------------------ 7. MLA + sliding window


def test_mla_naive_prefill_decompresses_every_new_token_in_a_window():
    # window 4 on both layers; a prefill of 8 tokens: the queries attend to keys 1..8, so all 8
    # latents are decompressed (min(L + s, s + W - 1) = min(8, 11)); the old model took 4
    spec = mla_moe(sliding_window=dict(window=4, layers=[0, 1]))
    dep = Deployment()
    d = op(spec, dep, StepShape(1, 8, 0), "attn.kv_b_proj(decompress)[dense,window=4]", form="naive")
    assert float(d.shape["M"]) == 8
    # a chunk of 2 tokens after 10 cached: keys 8..12 are in some query's window, 5 = 2 + 4 - 1
    d = op(spec, dep, StepShape(1, 2, 10), "attn.kv_b_proj(decompress)[dense,window=4]", form="naive")
    assert float(d.shape["M"]) == 5
    # decode is unchanged: the last W = 4 tokens
    d = op(spec, dep, StepShape(1, 1, 10), "attn.kv_b_proj(decompress)[dense,window=4]", form="naive")
    assert float(d.shape["M"]) == 4
    assert np.ndim(d.shape["M"]) == 0


# ---- 3. a dense model too big for TP within a node gets PP across nodes -------------------------


def test_dense_405b_gets_pipeline_stages_when_tp_in_a_node_does_not_fit():
    # Llama-3.1-405B in BF16 is 2 x 405.9e9 B = 811.7 GB of weights. On 16 H100 (80 GB, 90% usable)
    # the old default (TP8 in a node, 2 data-parallel replicas) needs 101.5 GB per device; PP2 x TP8
    # holds one replica in 50.7 GB per device, and 32 devices hold two such replicas.
    from costsim.errors import CostsimError
    from costsim.simulator.memory import memory_report
    from costsim.simulator.params import param_counts
    from costsim.simulator.scenario import max_throughput_search

    spec, h100 = load_model("llama-3.1-405b"), load_hardware("h100")
    for devices, dp in ((16, 1), (32, 2)):
        dep = resolve_deployment(spec, h100, LayoutRequest(devices=devices), 1, 4096)
        assert (dep.tp, dep.pp, dep.dp) == (8, 2, dp)
        assert "pp=2" in dep.layout_reason and "do not fit" in dep.layout_reason
        m = memory_report(spec, h100, dep, 1, 4096)
        # the busiest stage: half the layers plus a vocabulary matrix (within 1.1% of an even split)
        assert bool(m.fits) and m.weight_bytes == pytest.approx(2 * param_counts(spec).total / 16, rel=0.011)
    # a given pp is kept: pp=1 still does not fit, and says so
    with pytest.raises(CostsimError, match="does not fit"):
        from costsim.simulator.scenario import Scenario, perf
        perf(Scenario(spec, h100, LayoutRequest(devices=16, pp=1), 1, 4096, 16))
    # max-throughput takes the same layout and twice the devices serve twice the tokens/s
    d16, r16 = max_throughput_search(spec, h100, LayoutRequest(devices=16), 4096)
    d32, r32 = max_throughput_search(spec, h100, LayoutRequest(devices=32), 4096)
    assert d16.pp == d32.pp == 2 and r32.tokens_per_s == pytest.approx(2 * r16.tokens_per_s, rel=0.02)
    # a model that fits at pp=1 keeps it, with no reason given
    small = resolve_deployment(load_model("llama-3.1-70b"), h100, LayoutRequest(devices=16), 1, 4096)
    assert (small.tp, small.pp, small.dp, small.layout_reason) == (8, 1, 2, "")


# ---- 8. a prefill whose activations do not fit is chunked, as a server does ---------------------


def test_prefill_that_does_not_fit_is_chunked_with_the_largest_chunk_that_fits():
    from costsim.simulator.memory import kv_bytes_per_device, weight_bytes_per_device
    from costsim.simulator.serving import chunked_prefill, prefill_chunk_tokens, prefill_workspace

    # Llama-3.1-405B, 16 H100 (tp8 pp2), one 128k-token prompt: 51.3 GB of weights and 4.2 GB of
    # KV per device leave 16.5 GB; a one-step prefill needs M = 131,072 rows of the 53,248-wide
    # gate/up GEMM in activations (~32 GB), so the prefill runs in chunks
    spec, h100 = load_model("llama-3.1-405b"), load_hardware("h100")
    dep = resolve_deployment(spec, h100, LayoutRequest(devices=16), 1, 131072)
    I = 131072
    r = serve(spec, h100, dep, 1, I, 16)
    c = r.prefill_chunk_tokens
    room = 0.9 * 80e9 - weight_bytes_per_device(spec, dep) - float(kv_bytes_per_device(spec, dep, 1, I))
    assert float(prefill_workspace(spec, dep, 1, I, I)) > room  # one step does not fit
    assert float(prefill_workspace(spec, dep, 1, c, I)) <= room < float(prefill_workspace(spec, dep, 1, c + 1, I))
    assert r.prefill_fits and r.prefill_workspace_bytes <= room and c == prefill_chunk_tokens(spec, h100, dep, 1, I)
    # two chunks (c, I - c), each through the two stages before the next starts (the second
    # attends to the first's KV on both stages; one sequence, m = 1 < pp): pp (t0 + t1)
    t0 = float(time_step(spec, h100, dep, StepShape(1.0, float(c), 0.0, 0.0)).time_s)
    t1 = float(time_step(spec, h100, dep, StepShape(1.0, float(I - c), float(c), 1.0)).time_s)
    assert -(-I // c) == 2 and r.ttft_s == pytest.approx(2 * (t0 + t1), rel=1e-12)
    assert r.e2e_s == pytest.approx(r.ttft_s + 15 * r.tpot_s, rel=1e-12)


def test_one_chunk_is_the_one_step_prefill_and_chunks_do_the_same_flops():
    from costsim.simulator.serving import chunked_prefill

    # (GQA: MLA's naive form would decompress the cached latent again in every chunk)
    spec, h100 = load_model("llama-3.1-8b"), load_hardware("h100")
    dep = resolve_deployment(spec, h100, LayoutRequest(devices=1), 3, 1000)
    one, whole = prefill(spec, h100, dep, 3, 1000), chunked_prefill(spec, h100, dep, 3, 1000, 1000)
    assert whole.time_s == pytest.approx(float(one.time_s), rel=1e-12)
    assert whole.mfu == pytest.approx(float(one.mfu), rel=1e-12)
    # chunks of 300 (300, 300, 300, 100): the causal pairs and the GEMM rows add up to the one
    # step's, and only the last chunk computes the logits, so the FLOPs are the same
    parts = chunked_prefill(spec, h100, dep, 3, 1000, 300)
    flops = sum(float(time_step(spec, h100, dep, StepShape(3.0, float(n), float(k), float(k == 900))).flops)
                for k, n in ((0, 300), (300, 300), (600, 300), (900, 100)))
    assert flops == pytest.approx(float(one.timing.flops), rel=1e-12)
    assert parts.mfu * parts.time_s == pytest.approx(float(one.timing.flops) / h100.peak("bf16"), rel=1e-9)


def test_disaggregated_prefill_to_decode_device_ratio_by_hand():
    # a request of I input and O output tokens takes I / (prefill tokens/s) device-time units to
    # prefill and O / (decode tokens/s) to decode on the same layout: the pools' device ratio
    from costsim.simulator.scenario import Scenario, perf

    spec, h800 = load_model("deepseek-v3"), load_hardware("h800")
    r = perf(Scenario(spec, h800, LayoutRequest(devices=16, weight_dtype="fp8"), 64, 4096, 1024))
    want = (4096 / r.prefill_tokens_per_s) / (1024 / r.decode_tokens_per_s)
    assert r.prefill_devices_per_decode_device == pytest.approx(want, rel=1e-12)
    assert 0.05 < want < 0.1  # decode-heavy: about 13 decode devices per prefill device
    assert perf(Scenario(spec, h800, LayoutRequest(devices=16, weight_dtype="fp8"), 64, 4096, 0)
                ).prefill_devices_per_decode_device is None


def test_a_chunked_prompt_under_pp_is_not_faster_than_a_shorter_whole_one():
    # fresh-user finding: Llama-3.1-405B on 16 H100 (tp4 pp4), batch 1: 100k tokens prefilled
    # whole took 53.1 s and 120k, chunked because it does not fit, 22.1 s (its chunks had been
    # pipelined over the stages). A sequence's chunk k + 1 needs chunk k's KV on every stage.
    spec, h100 = load_model("llama-3.1-405b"), load_hardware("h100")
    dep = resolve_deployment(spec, h100, LayoutRequest(devices=16, tp=4, pp=4), 1, 120_000)
    a, b = (serve(spec, h100, dep, 1, i, 16) for i in (100_000, 120_000))
    assert a.prefill_chunk_tokens is None and b.prefill_chunk_tokens < 120_000  # whole, then chunked
    assert b.ttft_s > a.ttft_s * 1.2  # 51.4 s -> 67.7 s (resolved at 120k tokens here)
