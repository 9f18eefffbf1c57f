"""Issue 9: Sarathi-Serve chunked prefill (Agrawal et al., OSDI 2024, arXiv 2403.02310):
``scheduling.mixed_step`` (one step of B decode tokens + a prompt chunk, weights read once) and
``scheduling.at_rate_chunked`` / ``costsim rate --chunked-prefill T`` (a token budget per step)."""

from __future__ import annotations

import math

import pytest
from tiny import gqa, hw as tiny_hw
from typer.testing import CliRunner

from costsim.api import LayoutRequest, load_hardware, load_model, resolve_deployment
from costsim.cli.app import app
from costsim.errors import FieldError
from costsim.simulator.deployment import Deployment
from costsim.simulator.rate import at_rate
from costsim.simulator.scheduling import at_rate_chunked, mixed_step
from costsim.simulator.roofline import time_step
from costsim.simulator.serving import decode
from costsim.simulator.types import StepShape


def _setup():
    spec, hw = load_model("llama-3.1-70b"), load_hardware("h100")
    return spec, hw, resolve_deployment(spec, hw, LayoutRequest(devices=8, tp=8))


def test_mixed_step_reduces_to_decode_and_to_the_chunk_prefill():
    spec, hw, dep = _setup()
    for B, L in ((1, 100), (32, 3000), (300, 2303.5)):
        assert float(mixed_step(spec, hw, dep, B, L, 0, 0).time_s) == pytest.approx(
            float(decode(spec, hw, dep, B, L).time_s), rel=1e-12)
    for c, k, lg in ((512, 1024, 1), (2048, 0, 1), (100, 900, 0)):
        assert float(mixed_step(spec, hw, dep, 0, 0, c, k, lg).time_s) == pytest.approx(
            float(time_step(spec, hw, dep, StepShape(1, c, k, lg)).time_s), rel=1e-12)
    # the mixed step costs less than its two parts run apart (weights once) and more than either
    both = float(mixed_step(spec, hw, dep, 32, 3000, 512, 1024, 1).time_s)
    d = float(decode(spec, hw, dep, 32, 3000).time_s)
    p = float(time_step(spec, hw, dep, StepShape(1, 512, 1024, 1)).time_s)
    assert max(d, p) < both < d + p


def test_mixed_step_reads_the_weights_once():
    # tiny GQA (tests/tiny.py): h = 8, 2 layers, 4 heads of 2, 2 KV heads, SwiGLU 16, vocab 100,
    # bf16 (2 bytes). Weights per layer: qkv 8 x (4 + 2 x 2) x 2 = 128, o 8 x 8 = 64,
    # gate_up 8 x 32 = 256, down 16 x 8 = 128 -> 576 elements; 2 layers 1152; LM head 100 x 8 =
    # 800 -> 1952 elements = 3904 bytes. Every other byte (activations, KV, embedding rows) is
    # linear in the tokens or belongs to its own part, so decode + chunk apart move exactly
    # 3904 bytes more than the mixed step.
    spec, hw, dep = gqa(), tiny_hw(), Deployment()
    B, L, c, k = 3, 10, 5, 7
    mixed = float(mixed_step(spec, hw, dep, B, L, c, k, 1).bytes_moved)
    dec = float(time_step(spec, hw, dep, StepShape(B, 1, L, 1)).bytes_moved)
    chunk = float(time_step(spec, hw, dep, StepShape(1, c, k, 1)).bytes_moved)
    assert dec + chunk - mixed == pytest.approx(3904.0, rel=1e-12)
    # FLOPs are additive: nothing computed twice or dropped
    m = mixed_step(spec, hw, dep, B, L, c, k, 1)
    assert float(m.flops) == pytest.approx(float(time_step(spec, hw, dep, StepShape(B, 1, L, 1)).flops)
                                           + float(time_step(spec, hw, dep, StepShape(1, c, k, 1)).flops), rel=1e-12)
    assert [t.op.name for t in m.timings].count("attn.core.chunk") == 1


def test_chunked_steady_state_by_hand_and_against_prefill_first():
    spec, hw, dep = _setup()
    I, O, T = 2048, 512, 2048
    L = I + (O - 1) / 2
    for rate in (2.0, 5.0):
        r = at_rate_chunked(spec, hw, dep, rate, I, O, T)
        assert not r.saturated
        B, rho = r.batch, r.prefill_share
        spare = T - B
        c = rho * spare  # the chunk actually processed per step

        def s(b, cc):
            return float(mixed_step(spec, hw, dep, b, L, cc, (I - cc) / 2, cc / I).time_s)

        step = s(B, c)
        assert c == pytest.approx(rate * I * step, rel=1e-6)  # prefill balance: rate x I = c / s
        assert r.tpot_s == pytest.approx(step, rel=1e-12)  # TPOT: one mixed step, no stall
        assert B / step >= rate * O  # Little's law, the smallest such batch
        c1 = rate * I * s(B - 1, T - B + 1)  # at B - 1 the batch does not keep up: its own fixed point
        for _ in range(30):
            c1 = rate * I * s(B - 1, c1)
        assert c1 < T - B + 1 and (B - 1) / s(B - 1, c1) < rate * O
        # the prompt: n - 1 chunks of the spare budget, then one step carrying what is left
        n = math.ceil(I / spare)
        S = (n - 1) * s(B, spare) + s(B, I - (n - 1) * spare)
        assert r.ttft_s == pytest.approx(S + rho * S / (2 * (1 - rho)) + step / 2, rel=1e-9)
        assert r.e2e_s == pytest.approx(r.ttft_s + (O - 1) * step, rel=1e-12)
        # Sarathi-Serve (§5, Fig. 1): mixing removes the decode stall, TPOT is lower at the same rate
        first = at_rate(spec, hw, dep, rate, I, O)
        assert r.tpot_s < first.tpot_s and r.batch <= first.batch
    # the values printed in README.md (Llama-3.1-70B, 8 x H100, TP 8): prefill first 37.89 ms -> 24.96 ms at 5 req/s
    assert at_rate(spec, hw, dep, 5.0, I, O).tpot_s == pytest.approx(37.89e-3, abs=0.01e-3)
    assert at_rate_chunked(spec, hw, dep, 5.0, I, O, T).tpot_s == pytest.approx(24.96e-3, abs=0.01e-3)
    sat = at_rate_chunked(spec, hw, dep, 10.0, I, O, T)
    assert sat.saturated and "spare budget" in sat.reason and sat.tpot_s is None


def test_bad_budgets_are_refused():
    spec, hw, dep = _setup()
    for bad in (0, -5, 1.5, True, "2048", 2**24 + 1, 10**23):
        with pytest.raises(FieldError, match="chunked_prefill"):
            at_rate_chunked(spec, hw, dep, 1.0, 2048, 512, bad)
    run = CliRunner().invoke
    for bad in ("0", "x", "-3", "1.5", "", "99999999999999999999999"):
        r = run(app, ["rate", "llama-3.1-70b", "-H", "h100", "--devices", "8", "--rate", "2", "--chunked-prefill", bad])
        assert r.exit_code == 2 and "--chunked-prefill" in r.output and "Traceback" not in r.output, (bad, r.output)



# ------------------------------------------------------------------ DP attention and max_rate (issue 9)

def _tiny_moe():
    # tests/tiny.py's GQA with a MoE FFN: E = 4 routed experts, top-2, expert FFN 4 (SwiGLU), no shared
    return gqa(name="tiny-moe", ffn=dict(kind="moe", n_routed_experts=4, num_experts_per_tok=2,
                                         moe_intermediate_size=4))


def test_mixed_step_with_dp_attention_is_per_rank():
    # Dense, tp = 1, 2 devices: dp = 2 attention/FFN replicas with no collective between them, so
    # each rank's step is exactly the dp = 1 step of the same per-rank (B, c)
    spec, hw = gqa(), tiny_hw()
    one, two = Deployment(), Deployment(devices=2)
    assert two.dp == 2
    for B, L, c, k in ((3, 10, 5, 7), (0, 0, 6, 0), (4, 13.5, 0, 0)):
        a, b = mixed_step(spec, hw, one, B, L, c, k, 1), mixed_step(spec, hw, two, B, L, c, k, 1)
        assert float(b.time_s) == pytest.approx(float(a.time_s), rel=1e-12)
        assert float(b.flops) == pytest.approx(float(a.flops), rel=1e-12)
    # MoE with EP 2 over the 2 DP ranks: per rank B + c = 3 + 5 = 8 tokens, so the routed experts
    # see dp (B + c) = 16 tokens: 16 x top-2 / ep 2 = 16 token-expert pairs on the busiest rank,
    # over E (1 - (1 - k/E)^16) / ep = 2 (1 - 2^-16) busy experts of its 2 (operators.ffn_operators).
    # The EP dispatch sends the rank's own 8 tokens x h 8 x 2 bytes = 128 bytes.
    spec, dep = _tiny_moe(), Deployment(devices=2, ep=2)
    m = mixed_step(spec, hw, dep, 3, 10, 5, 7, 1)
    gu = m.by_name("moe.experts.gate_up_proj").op
    assert float(gu.shape["M"]) == pytest.approx(16.0, rel=1e-12)
    assert float(gu.shape["groups"]) == pytest.approx(2 * (1 - 2.0 ** -16), rel=1e-12)
    assert float(gu.flops) == pytest.approx(2 * 16 * (2 * 4) * 8, rel=1e-12)  # 2 x pairs x N (gate+up) x K (h)
    assert float(m.by_name("comm.ep_dispatch").op.comm_bytes) == pytest.approx(128.0, rel=1e-12)
    # ... while the attention of each part is the rank's own: as in the dp = 1 step
    ref = mixed_step(spec, hw, Deployment(), 3, 10, 5, 7, 1)
    for name in ("attn.core", "attn.core.chunk", "attn.qkv_proj"):
        assert float(m.by_name(name).total_s) == pytest.approx(float(ref.by_name(name).total_s), rel=1e-12)
    # and the mixed step still reduces to the decode step of dp x B sequences / the prefill of dp chunks
    spec, h100 = load_model("deepseek-v2-lite"), load_hardware("h100")
    dep = resolve_deployment(spec, h100, LayoutRequest(devices=2, tp=1, ep=2))
    assert dep.dp == 2
    assert float(mixed_step(spec, h100, dep, 32, 3000, 0, 0).time_s) == pytest.approx(
        float(decode(spec, h100, dep, 64, 3000).time_s), rel=1e-12)
    assert float(mixed_step(spec, h100, dep, 0, 0, 512, 1024, 1).time_s) == pytest.approx(
        float(time_step(spec, h100, dep, StepShape(2, 512, 1024, 1)).time_s), rel=1e-12)


def test_chunked_rate_with_dp_is_each_rank_at_rate_over_dp():
    # dense tiny model, dp = 2 with no cross-rank term: at rate R the replica is two dp = 1 ranks
    # at R / 2 each; the batch (per replica) doubles, the times do not change
    spec, hw = gqa(), tiny_hw()
    for rate in (2000.0, 8000.0):
        a = at_rate_chunked(spec, hw, Deployment(), rate / 2, 12, 4, 16)
        b = at_rate_chunked(spec, hw, Deployment(devices=2), rate, 12, 4, 16)
        assert not a.saturated and not b.saturated
        assert b.batch == 2 * a.batch and b.output_tokens_per_s == rate * 4
        for f in ("ttft_s", "tpot_s", "e2e_s", "prefill_share"):
            assert getattr(b, f) == pytest.approx(getattr(a, f), rel=1e-12), f
    # MoE with DP attention (DeepSeek-V2-Lite, 2 x H100, dp 2, EP 2): per rank the chunk balances
    # rate / 2 x I = c / step and B / 2 decodes rate / 2 x O tokens/s, the smallest such batch
    spec, h100 = load_model("deepseek-v2-lite"), load_hardware("h100")
    dep = resolve_deployment(spec, h100, LayoutRequest(devices=2, tp=1, ep=2))
    I, O, T = 2048, 512, 2048
    L = I + (O - 1) / 2
    r = at_rate_chunked(spec, h100, dep, 20.0, I, O, T)
    assert not r.saturated and r.batch % 2 == 0
    b = r.batch // 2
    c = r.prefill_share * (T - b)

    def s(bb, cc):
        return float(mixed_step(spec, h100, dep, bb, L, cc, (I - cc) / 2, cc / I).time_s)

    assert c == pytest.approx(10.0 * I * s(b, c), rel=1e-6)
    assert r.tpot_s == pytest.approx(s(b, c), rel=1e-12)
    assert b / s(b, c) >= 10.0 * O
    c1 = 10.0 * I * s(b - 1, c)
    for _ in range(30):
        c1 = 10.0 * I * s(b - 1, c1)
    assert (b - 1) / s(b - 1, c1) < 10.0 * O


def test_chunked_max_rate_by_hand():
    # Tiny GQA on the tiny profile, I = 12, O = 4, T = 16: the steady state balances rate x P = c / s
    # (prefill) and b / s = rate x O (decode) per rank, so c / b = P / O = 3 and the full budget
    # b + c = 16 gives b = 4, c = 12. That step (4 decodes at L = 13.5, a 12-token chunk from 0)
    # is memory bound in every kernel: 18 kernels x 1 us + 21,048 bytes / 5e8 B/s.
    # Bytes (bf16, 16 tokens, 2 layers): embedding 512; qkv 2 x (256 w + 256 in + 512 out);
    # decode core 2 x (64 q + 4 x 14.5 x 16 KV + 128 out and new KV); chunk core 2 x (384 + 384);
    # o 2 x (128 + 256 + 256); norms 2 x 1024; gate_up 2 x (512 + 256 + 1024); act 2 x 1536;
    # down 2 x (256 + 512 + 256); LM head (5 logit rows) 1600 + 80 + 1000 -> 21,048.
    from costsim.simulator.scheduling import max_rate_chunked
    spec, hw = gqa(), tiny_hw()
    s = 18e-6 + 21048 / 5e8
    assert float(mixed_step(spec, hw, Deployment(), 4, 13.5, 12, 0, 1).time_s) == pytest.approx(s, rel=1e-12)
    for dep in (Deployment(), Deployment(devices=2)):
        R = max_rate_chunked(spec, hw, dep, 12, 4, 16)
        assert R == pytest.approx(dep.dp * 12 / (12 * s), rel=1e-12)  # dp x c / (P x step)
        below, above = (at_rate_chunked(spec, hw, dep, R * f, 12, 4, 16) for f in (0.999, 1.001))
        assert not below.saturated and below.batch == 4 * dep.dp and below.prefill_share > 0.99
        assert above.saturated and "spare budget" in above.reason
    # a memory limit below the crossover: the decode binds at Bmax (max_batch sequences per rank)
    spec, h100 = load_model("llama-3.1-70b"), load_hardware("h100")
    dep = resolve_deployment(spec, h100, LayoutRequest(devices=8, tp=8))
    R = max_rate_chunked(spec, h100, dep, 2048, 512, 8192)  # b0 = 8192 x 512 / 2560 = 1638 > Bmax 517
    c = 517 * 2048 / 512  # 2068 > one prompt: whole prompts from position 0, c / I = 1.01 of them end per step
    assert R == pytest.approx(517 / (512 * float(mixed_step(spec, h100, dep, 517, 2303.5, c, 0, c / 2048,
                                                            prompt=2048).time_s)), rel=1e-12)
    assert not at_rate_chunked(spec, h100, dep, R * 0.999, 2048, 512, 8192).saturated
    assert "517 sequences (memory)" in at_rate_chunked(spec, h100, dep, R * 1.001, 2048, 512, 8192).reason


def test_small_budget_is_not_saturated_at_a_low_rate():
    # a budget below the memory batch (T - 1 = 511 < 517) used to be judged at B = T - 1 (one spare
    # token: always "saturated"); the batch is the smallest that decodes fast enough, as at T = 2048
    spec, hw, dep = _setup()
    r = at_rate_chunked(spec, hw, dep, 0.5, 2048, 512, 512)
    assert not r.saturated and r.batch == at_rate_chunked(spec, hw, dep, 0.5, 2048, 512, 2048).batch == 5
    c = r.prefill_share * (512 - 5)
    assert c == pytest.approx(0.5 * 2048 * r.tpot_s, rel=1e-6)


def test_cli_chunked_with_dp_prints_the_largest_rate():
    import json
    run = CliRunner().invoke
    args = ["rate", "deepseek-v2-lite", "-H", "h100", "--devices", "2", "--tp", "1", "--ep", "2", "--rate", "20",
            "--input", "2048", "--output", "512", "--chunked-prefill", "2048"]
    r = run(app, args)
    assert r.exit_code == 0, r.output
    assert "dp=2" in r.output and "largest sustainable rate" in r.output and "per DP rank" in r.output
    j = json.loads(run(app, args + ["--format", "json"]).stdout)
    assert j["dp"] == 2 and j["max_rate"] > 20 and j["points"][0]["batch"] % 2 == 0


def test_a_budget_beyond_the_prompt_is_one_step_and_a_budget_of_one_says_why():
    # fresh-user finding: a budget of 65,536 tokens for 2,048-token prompts charged the prompt a
    # step of the whole spare budget (Llama-3.1-8B on H100: TTFT 600 ms against 31 ms at 4,096)
    from costsim.registry import load_hardware, load_model
    from costsim.simulator.deployment import Deployment

    spec, hw = load_model("llama-3.1-8b"), load_hardware("h100")
    dep = Deployment(devices=1).check(spec)
    big, fit = (at_rate_chunked(spec, hw, dep, 0.5, 2048, 512, t) for t in (65536, 4096))
    assert big.ttft_s == pytest.approx(fit.ttft_s, rel=0.05)  # one step carrying the 2,048 tokens either way
    one = at_rate_chunked(spec, hw, dep, 0.5, 2048, 512, 1)
    assert one.saturated and one.prefill_share is None and "no room for a prompt" in one.reason


def _v3_mtp(depth=1):
    # DeepSeek-V3 (deepseek-ai/DeepSeek-V3 config.json: num_nextn_predict_layers 1) on 16 H800,
    # FP8, MTP at the engine's default acceptance 0.85 (V3 report §5.4.3: 85-90%)
    spec, hw = load_model("deepseek-v3"), load_hardware("h800")
    dep = resolve_deployment(spec, hw, LayoutRequest(devices=16, weight_dtype="fp8", mtp_depth=depth), 8, 4096)
    return spec, hw, dep


@pytest.mark.parametrize("depth", [1, 2])
def test_mixed_step_with_mtp_is_the_speculative_decode_and_the_prefill(depth):
    # no chunk: the mixed step is serving.decode's speculative step, TPOT x E (E = 1 + a + ... +
    # a^D: 1.85 at depth 1, 2.5725 at depth 2); no decodes: the prefill of one prompt per DP rank
    # with the MTP module's pass over it (serving.prefill's TTFT)
    from costsim.simulator.serving import prefill

    spec, hw, dep = _v3_mtp(depth)
    E = {1: 1.85, 2: 1 + 0.85 + 0.85 ** 2}[depth]
    for b, L in ((1, 1000), (4, 3000)):  # sequences per DP rank
        step = float(mixed_step(spec, hw, dep, b, L, 0, 0).time_s)
        assert step == pytest.approx(float(decode(spec, hw, dep, b * dep.dp, L).time_s) * E, rel=1e-9)
    assert float(mixed_step(spec, hw, dep, 0, 0, 2048, 0, 1).time_s) == pytest.approx(
        float(prefill(spec, hw, dep, dep.dp, 2048).time_s), rel=1e-9)
    # a chunk riding along costs more than the speculative decode alone and less than both apart
    both = float(mixed_step(spec, hw, dep, 4, 3000, 512, 1024, 1).time_s)
    alone = float(mixed_step(spec, hw, dep, 4, 3000, 0, 0).time_s)
    chunk = float(mixed_step(spec, hw, dep, 0, 0, 512, 1024, 1).time_s)
    assert alone < both < alone + chunk


def test_chunked_rate_with_mtp_balances_e_tokens_per_step():
    # at 2 requests/s of 1024 -> 256 tokens with a 2048-token budget per DP rank: each decode takes
    # V = 2 budget tokens (its verify pass) and gains E = 1.85; TPOT = step / E; the batch is the
    # smallest whose B E / s meets rate x O per rank; the chunk is rho x (T - V B)
    spec, hw, dep = _v3_mtp()
    I, O, T, rate = 1024, 256, 2048, 2.0
    r = at_rate_chunked(spec, hw, dep, rate, I, O, T)
    plain = at_rate_chunked(spec, hw, dep.with_(mtp_depth=0), rate, I, O, T)
    assert not r.saturated and r.tpot_s < plain.tpot_s
    b = r.batch / dep.dp
    c = r.prefill_share * (T - 2 * b)
    L = I + (O - 1) / 2

    def s(bb, cc):
        return float(mixed_step(spec, hw, dep, bb, L, cc, (I - cc) / 2, cc / I).time_s)

    assert r.tpot_s == pytest.approx(s(b, c) / 1.85, rel=1e-6)
    need = rate / dep.dp * O
    assert b * 1.85 / s(b, c) >= need * (1 - 1e-9)
    if b > 1:  # one fewer sequence would not keep up, whatever chunk it carried
        assert (b - 1) * 1.85 / s(b - 1, 0) < need


def test_cli_rate_chunked_with_mtp():
    args = ["rate", "deepseek-v3", "-H", "h800", "--devices", "16", "--weight-dtype", "fp8", "--rate", "2",
            "--input", "1024", "--output", "256", "--chunked-prefill", "2048", "-f", "json"]
    on, off = (CliRunner().invoke(app, args + extra) for extra in (["--mtp", "1"], []))
    assert on.exit_code == 0 and off.exit_code == 0, on.output
    import json

    a, b = json.loads(on.stdout), json.loads(off.stdout)
    rows = lambda d: d["points"] if isinstance(d, dict) and "points" in d else d
    assert rows(a)[0]["tpot_s"] < rows(b)[0]["tpot_s"]


def test_two_batch_overlap_splits_the_mixed_step_into_two_half_micro_batches():
    # DeepSeek-V3 on 32 H800 (EP32, DP attention), the layout the Day-6 prefill runs: with
    # two-batch overlap a step is 2 x (half the decodes and half the chunk, communication
    # overlapped with computation), as roofline.time_step times a decode or a prefill
    spec, hw = load_model("deepseek-v3"), load_hardware("h800")
    dep = resolve_deployment(spec, hw, LayoutRequest(devices=32, ep=32, tp=1, weight_dtype="fp8"))
    tbo = dep.with_(two_batch_overlap=True)
    half = mixed_step(spec, hw, dep.with_(overlap_comm=True), 32, 3000, 256, 1024, 0.5)
    got = mixed_step(spec, hw, tbo, 64, 3000, 512, 1024, 1.0)
    assert float(got.time_s) == pytest.approx(2 * float(half.time_s), rel=1e-12) and got.micro_batches == 2
    assert float(got.flops) == pytest.approx(2 * float(half.flops), rel=1e-12)
    # with no chunk it is serving.decode's two-batch-overlap step (64 sequences on each of the 32
    # DP ranks); with a 512-token chunk per rank the EP all-to-all (40 ms of the step without
    # overlap, 63 ms of compute) hides under the other micro-batch's compute: 66 ms against 103
    assert float(mixed_step(spec, hw, tbo, 64, 3000, 0, 0).time_s) == pytest.approx(
        float(decode(spec, hw, tbo, 64 * dep.dp, 3000).time_s), rel=1e-12)
    plain = mixed_step(spec, hw, dep, 64, 3000, 512, 1024, 1.0)
    assert float(plain.comm_part_s) > 0.03 and float(got.time_s) < 0.7 * float(plain.time_s)
    # the rate model takes it (it used to refuse two-batch overlap)
    r = at_rate_chunked(spec, hw, tbo, 2.0, 2048, 256, 2048)
    assert not r.saturated and r.tpot_s is not None


def test_pipeline_parallel_mixed_step_is_pp_stage_times_of_its_micro_batches():
    # as serving.decode: min(B, pp) micro-batches, each with 1/m of the decodes and of the chunk,
    # pp stage times per step (the chunk crosses every stage within the step)
    from costsim.simulator.scheduling import mixed_operators

    spec, hw = load_model("llama-3.1-70b"), load_hardware("h100")
    for tp, pp in ((4, 2), (2, 4)):
        dep = resolve_deployment(spec, hw, LayoutRequest(devices=8, tp=tp, pp=pp))
        for B in (1, 32):
            assert float(mixed_step(spec, hw, dep, B, 3000, 0, 0).time_s) == pytest.approx(
                float(decode(spec, hw, dep, B, 3000).time_s), rel=1e-12)
        m = min(32, pp)
        stage = time_step(spec, hw, dep, StepShape(32 / m, 1, 3000, 1),
                          operators=mixed_operators(32 / m, 3000, 512 / m, 1024, 1.0 / m))
        assert float(mixed_step(spec, hw, dep, 32, 3000, 512, 1024, 1.0).time_s) == pytest.approx(
            pp * float(stage.time_s), rel=1e-12)
    # the rate model takes it (it used to refuse pp > 1): PP 2 x TP 4 decodes slower than TP 8
    pp2 = resolve_deployment(spec, hw, LayoutRequest(devices=8, tp=4, pp=2))
    tp8 = resolve_deployment(spec, hw, LayoutRequest(devices=8, tp=8))
    a, b = at_rate_chunked(spec, hw, pp2, 2.0, 2048, 512, 2048), at_rate_chunked(spec, hw, tp8, 2.0, 2048, 512, 2048)
    assert not a.saturated and not b.saturated and a.tpot_s > b.tpot_s


def test_a_draft_model_drafts_in_the_mixed_step():
    # Llama-3.1-70B drafted by Llama-3.1-8B (depth 2) on 8 H100 at TP 8: with no chunk the mixed
    # step is serving.decode's (time per step = TPOT x tokens gained); with a chunk the draft's
    # first pass carries the chunk too (its KV cache), so it costs more than the decodes alone
    from costsim.simulator.serving import mtp_tokens_per_step

    spec, hw = load_model("llama-3.1-70b"), load_hardware("h100")
    dep = resolve_deployment(spec, hw, LayoutRequest(devices=8, tp=8, mtp_depth=2, draft_model=load_model("llama-3.1-8b")))
    E = mtp_tokens_per_step(2, dep.mtp_acceptance)
    for B in (1, 32):
        assert float(mixed_step(spec, hw, dep, B, 3000, 0, 0).time_s) == pytest.approx(
            E * float(decode(spec, hw, dep, B, 3000).time_s), rel=1e-12)
    plain = resolve_deployment(spec, hw, LayoutRequest(devices=8, tp=8, mtp_depth=0))
    extra = float(mixed_step(spec, hw, dep, 32, 3000, 512, 1024).time_s) - float(mixed_step(spec, hw, plain, 32, 3000, 512, 1024).time_s)
    extra0 = float(mixed_step(spec, hw, dep, 32, 3000, 0, 0).time_s) - float(mixed_step(spec, hw, plain, 32, 3000, 0, 0).time_s)
    assert extra > extra0 > 0
    # the rate model takes it (it used to refuse a draft model), and a CLI run gives a table
    r = at_rate_chunked(spec, hw, dep, 2.0, 2048, 512, 2048)
    assert not r.saturated and r.tpot_s < at_rate_chunked(spec, hw, plain, 2.0, 2048, 512, 2048).tpot_s
    out = CliRunner().invoke(app, ["rate", "llama-3.1-70b", "-H", "h100", "--devices", "8", "--mtp", "2",
                                   "--draft-model", "llama-3.1-8b", "--rate", "2", "--chunked-prefill", "2048"])
    assert out.exit_code == 0 and "steady" in out.stdout


def test_a_fractional_micro_batch_keeps_the_weights_read_once():
    # second fresh-user run: at pp 8, 17 decodes (micro-batches of 2.125 -> the busiest holds 3)
    # took 106.5 ms against 54.0 at 16: the decode part counted whole sequences, the fused batch
    # fractional ones, so no GEMM stayed fused and every weight was read twice
    spec, hw = load_model("llama-3.1-70b"), load_hardware("h100")
    dep = resolve_deployment(spec, hw, LayoutRequest(devices=8, tp=1, pp=8))
    t16, t17 = (mixed_step(spec, hw, dep, b, 3000, 100, 1024) for b in (16, 17))
    assert float(t17.time_s) < 1.05 * float(t16.time_s) and float(t17.bytes_moved) < 1.05 * float(t16.bytes_moved)
    # TPOT rises with the rate, and the prompt's last chunk pays the pipeline's fill: m + pp - 1
    # stage times of its m micro-batches, not the step's pp
    pts = [at_rate_chunked(spec, hw, dep, r, 2048, 512, 2048) for r in (0.5, 2.0, 5.0)]
    assert pts[0].tpot_s < pts[1].tpot_s < pts[2].tpot_s
    p = pts[0]
    B = p.batch  # >= 8: 8 micro-batches, so the last chunk leaves after 8 + 8 - 1 = 15 stage times
    assert B >= 8
    # the prompt: n = ceil(2048 / (2048 - B)) = 2 chunks, 2048 - B tokens then B (docstring of
    # at_rate_chunked: chunk attention at its mean position, c / P logit rows)
    L, P, spare = 2048 + 511 / 2, 2048, 2048 - B
    s_full = float(mixed_step(spec, hw, dep, B, L, spare, (P - spare) / 2, spare / P).time_s)
    s_last = float(mixed_step(spec, hw, dep, B, L, B, (P - B) / 2, B / P).time_s)
    service = s_full + s_last * 15 / 8
    rho = p.prefill_share
    assert service <= p.ttft_s <= service * (1 + rho / (2 * (1 - rho))) + s_full / 2


def test_a_budget_bound_saturation_names_the_budget():
    # third fresh-user run: one-token prompts at 39 req/s (38.8 sustainable) fill the 2,048-token
    # budget with 2,047 decodes; the reason named only the prefill ("needs 401% of the spare budget")
    spec, hw = load_model("llama-3.1-70b"), load_hardware("h100")
    dep = resolve_deployment(spec, hw, LayoutRequest(devices=8, tp=8))
    assert not at_rate_chunked(spec, hw, dep, 38.0, 1, 512, 2048).saturated
    r = at_rate_chunked(spec, hw, dep, 39.0, 1, 512, 2048)
    assert r.saturated and r.reason.startswith("the budget of 2048 tokens holds at most 2047 decodes, too few for 19,968")


def test_a_chunk_of_several_prompts_attends_within_each():
    # a budget above one prompt holds n whole prompts and the start of the next, each its own
    # causal attention: Llama-3.1-70B TP8, c = 2068 tokens of 2048-token prompts = one whole
    # prompt (2048^2 pairs) + 20 tokens of the next (20^2), not one 2068-token sequence (2068^2)
    from costsim.simulator.scheduling import mixed_operators
    spec, h100 = load_model("llama-3.1-70b"), load_hardware("h100")
    dep = resolve_deployment(spec, h100, LayoutRequest(devices=8, tp=8))
    core = lambda ops: {o.name: float(o.flops) for o in ops if o.name.startswith("attn.core.chunk")}  # noqa: E731
    one = core(mixed_operators(517, 2303.5, 2068, 0, 2068 / 2048)(spec, dep, None))
    split = core(mixed_operators(517, 2303.5, 2068, 0, 2068 / 2048, prompt=2048)(spec, dep, None))
    whole = core(mixed_operators(0, 0, 2048, 0, 1)(spec, dep, None))["attn.core.chunk"]
    assert split["attn.core.chunk"] == pytest.approx(whole, rel=1e-12)
    assert one["attn.core.chunk"] / whole == pytest.approx(2068 ** 2 / 2048 ** 2, rel=2e-3)  # causal: s(s+1)/2 pairs
    assert split["attn.core.chunk_next"] / whole == pytest.approx(20 * 21 / (2048 * 2049), rel=1e-9)
    # the other operators stay fused (weights read once for the 517 decodes and the chunk)
    names = [o.name for o in mixed_operators(517, 2303.5, 2068, 0, 2068 / 2048, prompt=2048)(spec, dep, None)]
    assert "ffn.down_proj" in names and not any(n.startswith("ffn.") and "chunk" in n for n in names)


def test_a_budget_of_ten_million_tokens_is_not_saturated_at_a_low_rate():
    # fresh-user finding: a 1e7-token budget reported every rate saturated ("prefill needs 206% of
    # the spare budget" at 1 request/s) while its largest sustainable rate said 16.3 requests/s: the
    # full-budget step was one 1e7-token sequence attending to itself, and a rate whose smallest
    # fixed point c = r P s(c) lies far below the budget was judged by the full-budget step
    from costsim.simulator.scheduling import max_rate_chunked
    spec, h100 = load_model("llama-3.1-8b"), load_hardware("h100")
    dep = resolve_deployment(spec, h100, LayoutRequest(devices=8))
    R = max_rate_chunked(spec, h100, dep, 4096, 1024, 10_000_000)
    for f in (0.05, 0.5, 0.98):
        p = at_rate_chunked(spec, h100, dep, R * f, 4096, 1024, 10_000_000)
        assert not p.saturated and p.prefill_share < 0.01, (f, p.reason)
        small = at_rate_chunked(spec, h100, dep, R * f, 4096, 1024, 8192)
        # an unfilled budget: the same batch and TPOT as a budget just large enough
        assert p.batch == small.batch and p.tpot_s == pytest.approx(small.tpot_s, rel=0.05)
    assert at_rate_chunked(spec, h100, dep, R * 1.02, 4096, 1024, 10_000_000).saturated
