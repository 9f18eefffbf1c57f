"""Argument checks of the public engine entries and the edges of the max-throughput search,
on the tiny GQA spec with hand-derived times (tests/test_mutation_scenario_records.py)."""

import numpy as np
import pytest

from costsim.errors import CostsimError, FieldError
from costsim.simulator import kernels
from costsim.simulator import scenario as S
from costsim.simulator.deployment import Deployment
from costsim.simulator.layout import LayoutRequest
from costsim.simulator.serving import SLOError, max_throughput
from test_mutation_scenario_records import tpot
from tiny import gqa, hw

SPEC, HW = gqa(), hw()


WITH_HW = [
    lambda s, h: kernels.attention(s, h, 1, 8), lambda s, h: kernels.moe(s, h, 4),
    lambda s, h: kernels.dense_ffn(s, h, 4), lambda s, h: S.compare([s], h),
    lambda s, h: S.max_throughput_search(s, h, context=8), lambda s, h: S.train(s, h, seq_len=8, tokens=1e6, mfu=0.5),
    lambda s, h: S.throughput_curve(s, h, context=8), lambda s, h: S.decode_roofline(s, h, batch=1, context=8),
    lambda s, h: S.perf(S.Scenario(s, h)),
]


@pytest.mark.parametrize("call", WITH_HW + [lambda s, h: S.show(s), lambda s, h: S.kv(s)])
def test_every_entry_names_a_wrong_model(call):
    with pytest.raises(CostsimError, match="^model: expected a ModelSpec"):
        call("deepseek-v2", HW)


@pytest.mark.parametrize("call", WITH_HW)
def test_every_entry_names_a_wrong_hardware(call):
    with pytest.raises(CostsimError, match="^hardware: expected a HardwareProfile"):
        call(SPEC, "h800")


@pytest.mark.parametrize("call", [lambda h: kernels.gemm(h, 1, 1, 1), lambda h: kernels.elementwise(h, 1, 1)])
def test_shape_kernels_name_a_wrong_hardware(call):
    with pytest.raises(CostsimError, match="^hardware: expected a HardwareProfile"):
        call("h800")


@pytest.mark.parametrize("kw,field", [(dict(tp=2.0), "tp"), (dict(tp=True), "tp"), (dict(tp=0), "tp")])
def test_kernel_layout_degrees_are_integers(kw, field):
    with pytest.raises(FieldError) as e:
        kernels.attention(SPEC, HW, 1, 8, **kw)
    assert e.value.field == field and e.value.reason == "must be an integer >= 1"


@pytest.mark.parametrize("ep", [2.0, False, 0])
def test_moe_kernel_ep_is_an_integer(ep):
    moe = gqa(ffn=dict(kind="moe", n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=8))
    with pytest.raises(FieldError) as e:
        kernels.moe(moe, HW, 4, ep=ep)
    assert e.value.field == "ep"


def test_slo_error_names_batch_one_and_its_time():
    # tpot(9) = (3904 + 1400) B / 5e8 B/s + 16 kernels x 1 us = 26.608 us
    with pytest.raises(SLOError) as e:
        max_throughput(SPEC, HW, Deployment(), 9, 1e-5)
    assert e.value.fastest_s == pytest.approx(tpot(9), rel=1e-12)
    assert e.value.field == "tpot_slo_s" and e.value.value == 1e-5
    assert e.value.reason == "tiny-gqa on tiny-hw: no batch meets TPOT <= 0.01 ms (batch 1 takes 0.0266 ms)"


def test_max_throughput_curve_runs_from_batch_one_to_the_memory_limit():
    r = max_throughput(SPEC, HW, Deployment(), 9)
    # (9e8 - 5584) // (9 x 32 + 616) sequences fit
    max_b = (900_000_000 - 5584) // 904
    assert r.max_batch_memory == max_b and (r.batch, r.limit) == (max_b, "memory")
    assert r.curve_batch[0] == 1 and r.curve_batch[-1] == max_b and r.curve_batch.dtype.kind == "i"
    assert len(r.curve_batch) == len(np.unique(r.curve_batch)) >= 300
    assert r.curve_tpot_s[0] == pytest.approx(tpot(9), rel=1e-12)
    assert r.curve_tokens_per_s[0] == pytest.approx(1 / tpot(9), rel=1e-12)


def test_one_sequence_that_fits_is_a_valid_answer():
    # usable 0.9 x 7320 = 6588 B: (6588 - 5584) // 904 = 1 sequence of 9 tokens
    r = max_throughput(SPEC, hw(memory_capacity=7320), Deployment(), 9)
    assert (r.batch, r.max_batch_memory, r.limit) == (1, 1, "memory")
    with pytest.raises(CostsimError, match="not even one sequence"):
        max_throughput(SPEC, hw(memory_capacity=7000), Deployment(), 9)  # 6300 - 5584 < 904


def test_an_slo_equal_to_a_batch_time_admits_that_batch():
    free = max_throughput(SPEC, HW, Deployment(), 9)
    t1 = float(free.curve_tpot_s[0])
    r = max_throughput(SPEC, HW, Deployment(), 9, t1)
    assert r.batch == 1 and r.tpot_s == t1 and r.limit == "TPOT SLO"


def test_slo_between_batches_is_the_limit():
    # each extra sequence adds 1400 B (2.8 us) at context 9: an SLO of tpot(9, 10) admits 10
    r = max_throughput(SPEC, HW, Deployment(), 9, tpot(9, 10) * (1 + 1e-9))
    assert r.limit == "TPOT SLO" and r.batch <= 10 and r.tpot_s <= tpot(9, 10) * (1 + 1e-9)
    assert r.tokens_per_s == pytest.approx(r.batch / r.tpot_s, rel=1e-12)


def test_perf_accepts_a_one_token_prompt():
    r = S.perf(S.Scenario(SPEC, HW, Deployment(), batch=1, input_len=1, output_len=1))
    # prefill of 1 token: 16 kernels over the weights + one token's activations; TTFT > 0
    assert r.input == 1 and r.ttft_s > 16e-6 and r.tpot_s == pytest.approx(tpot(1), rel=1e-12)


def test_layout_request_degrees_and_imbalance_are_typed():
    for kw, field in ((dict(devices=1.5), "devices"), (dict(pp=True), "pp"), (dict(ep=2.0), "ep")):
        with pytest.raises(FieldError) as e:
            S.perf(S.Scenario(SPEC, HW, LayoutRequest(**kw)))
        assert e.value.field == field
    with pytest.raises(FieldError) as e:
        S.perf(S.Scenario(SPEC, HW, LayoutRequest(imbalance="2")))
    assert e.value.field == "imbalance"
