"""The layout policy's resolved Deployment field by field, and the exact operator sequence of
a step, on tiny hand-made specs (names are user-visible in `perf --breakdown`)."""

import pytest

from costsim.errors import FieldError
from costsim.simulator.deployment import Deployment
from costsim.simulator.layout import LayoutRequest, resolve_deployment
from costsim.simulator.operators import step_operators
from costsim.simulator.types import StepShape
from costsim.specs import ModelSpec
from tiny import hw

HW = hw()  # 2 devices per node, 1 GB each


def moe_spec(**att):
    a = dict(kind="mla", num_attention_heads=4, kv_lora_rank=8, qk_rope_head_dim=2, qk_nope_head_dim=4,
             v_head_dim=4)
    a.update(att)
    return ModelSpec.model_validate(dict(
        name="tiny-mla-moe", source="test", vocab_size=100, hidden_size=8, num_hidden_layers=2, attention=a,
        ffn=dict(kind="moe", n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=8, n_shared_experts=1,
                 first_k_dense_replace=1, dense_intermediate_size=16)))


def test_resolved_deployment_carries_every_request_field():
    req = LayoutRequest(devices=2, pp=2, weight_dtype="fp8", kv_dtype="int8", mla_form="naive", imbalance=1.0,
                        overlap_comm=True, block_size=16)
    d = resolve_deployment(moe_spec(), HW, req, batch=3, context=5)
    # one device per stage: tp = ep = 1; FP8 weights dispatch in FP8 (1 B), combine in BF16 (2 B)
    assert (d.devices, d.tp, d.ep, d.pp, d.dp) == (2, 1, 1, 2, 1)
    assert (d.weight_format.name, d.kv_format.name, d.mla_form) == ("fp8", "int8", "naive")
    assert (d.overlap_comm, d.block_size, d.imbalance, d.dispatch_bytes, d.combine_bytes) == (True, 16, 1.0, 1.0, 2.0)
    b = resolve_deployment(moe_spec(), HW, LayoutRequest(), batch=1, context=0)
    # default: one node (2 devices), EP over both (4 experts), the smallest TP that fits (1); BF16 both ways
    assert (b.devices, b.tp, b.ep, b.pp) == (2, 1, 2, 1)
    assert (b.dispatch_bytes, b.combine_bytes, b.mla_form, b.overlap_comm, b.block_size) == (2.0, 2.0, "auto", False,
                                                                                               None)


def test_moe_tp_chosen_by_room():
    # 1 GB devices: everything fits at TP 1; an explicit TP and EP are kept
    assert resolve_deployment(moe_spec(), HW, LayoutRequest(tp=2), 1, 0).tp == 2
    assert resolve_deployment(moe_spec(), HW, LayoutRequest(ep=1), 1, 0).ep == 1


@pytest.mark.parametrize("req,field", [
    (LayoutRequest(weight_dtype="fp9"), "weight_dtype"), (LayoutRequest(kv_dtype="fp9"), "kv_dtype"),
    (LayoutRequest(weight_dtype="flashmla-fp8"), "weight_dtype"), (LayoutRequest(devices=3, pp=2), "devices"),
])
def test_request_errors_name_the_request_field(req, field):
    with pytest.raises(FieldError) as e:
        resolve_deployment(moe_spec(), HW, req)
    assert e.value.field == field


def test_kv_layout_for_mla_only():
    gqa = ModelSpec.model_validate(dict(
        name="g", source="t", vocab_size=100, hidden_size=8, num_hidden_layers=1,
        attention=dict(kind="gqa", num_attention_heads=4, num_key_value_heads=2, head_dim=2),
        ffn=dict(kind="dense", intermediate_size=16)))
    with pytest.raises(FieldError) as e:
        resolve_deployment(gqa, HW, LayoutRequest(kv_dtype="flashmla-fp8"))
    assert e.value.field == "kv_dtype"
    assert resolve_deployment(moe_spec(), HW, LayoutRequest(kv_dtype="flashmla-fp8")).kv_format.name == "flashmla-fp8"


def names(spec, dep, form):
    return [o.name for o in step_operators(spec, dep, StepShape(2, 1, 4), form=form)]


def test_operator_sequence_of_an_mla_moe_step():
    dense, moe = "[dense]", "[moe]"
    att = ["attn.q_proj", "attn.kv_a_proj", "attn.q_absorb(W_UK)", "attn.core(latent)", "attn.o_absorb(W_UV)",
           "attn.o_proj", "norms"]
    expected = (["embedding"] + [n + dense for n in att] + [n + moe for n in att]
                + ["ffn.gate_up_proj", "ffn.act", "ffn.down_proj", "moe.router", "moe.shared.gate_up_proj",
                   "moe.shared.down_proj", "moe.permute", "moe.experts.gate_up_proj", "moe.experts.down_proj",
                   "lm_head",
                   "comm.tp_allreduce[dense]", "comm.tp_allreduce[moe]", "comm.tp_allreduce[embedding]",
                   "comm.ep_dispatch", "comm.ep_combine"])
    assert names(moe_spec(), Deployment(devices=2, tp=2, ep=2), "absorbed") == expected


def test_operator_names_with_q_lora_and_naive_form():
    got = names(moe_spec(q_lora_rank=6), Deployment(), "naive")
    assert got[:7] == ["embedding", "attn.q_a_proj[dense]", "attn.q_b_proj[dense]", "attn.kv_a_proj[dense]",
                       "attn.kv_b_proj(decompress)[dense]", "attn.core(mha)[dense]", "attn.o_proj[dense]"]
    # MLA heads are split by TP: 4 heads / 2 -> q_proj N = 2 x (4 + 2) = 12 per device
    ops = step_operators(moe_spec(), Deployment(devices=2, tp=2, ep=2), StepShape(2, 1, 4), form="absorbed")
    q = next(o for o in ops if o.name == "attn.q_proj[dense]")
    assert (q.shape["N"], q.shape["K"]) == (12, 8)
    kv_a = next(o for o in ops if o.name == "attn.kv_a_proj[dense]")
    assert kv_a.shape["N"] == 8 + 2  # the latent and rope key are replicated, not split


def test_auto_form_keeps_the_faster_per_step_and_says_which():
    from costsim.simulator.roofline import time_step

    spec = moe_spec()
    for step in (StepShape(2, 1, 64), StepShape(1, 64, 0)):
        a = time_step(spec, HW, Deployment(mla_form="absorbed"), step)
        n = time_step(spec, HW, Deployment(mla_form="naive"), step)
        auto = time_step(spec, HW, Deployment(mla_form="auto"), step)
        best = "absorbed" if a.time_s <= n.time_s else "naive"
        assert auto.time_s == min(a.time_s, n.time_s) and auto.mla_form == best
        assert (a.mla_form, n.mla_form) == ("absorbed", "naive")
    # arrays: element by element, labelled "auto"
    import numpy as np

    arr = time_step(spec, HW, Deployment(mla_form="auto"), StepShape(1, np.array([1.0, 64.0]), 0))
    one = [time_step(spec, HW, Deployment(mla_form="auto"), StepShape(1, s, 0)).time_s for s in (1, 64)]
    assert arr.mla_form == "auto" and np.allclose(arr.time_s, one, rtol=1e-12)


def test_auto_form_on_a_non_mla_model_is_the_one_form_there_is():
    from costsim.simulator.roofline import time_step

    gqa = ModelSpec.model_validate(dict(
        name="g", source="t", vocab_size=100, hidden_size=8, num_hidden_layers=1,
        attention=dict(kind="gqa", num_attention_heads=4, num_key_value_heads=2, head_dim=2),
        ffn=dict(kind="dense", intermediate_size=16)))
    t = time_step(gqa, HW, Deployment(mla_form="auto"), StepShape(2, 1, 4))
    assert t.mla_form == "absorbed"
    assert t.time_s == time_step(gqa, HW, Deployment(mla_form="naive"), StepShape(2, 1, 4)).time_s


def test_step_form_follows_the_deployment_unless_given():
    spec = moe_spec()
    assert "attn.core(mha)[dense]" in names(spec, Deployment(mla_form="naive"), None)
    assert "attn.core(latent)[dense]" in names(spec, Deployment(mla_form="auto"), None)
    assert "attn.core(latent)[dense]" in names(spec, Deployment(mla_form="naive"), "absorbed")


def test_window_layers_are_tagged():
    spec = moe_spec().model_copy(update=dict(sliding_window=__import__("costsim.specs", fromlist=["x"]).SlidingWindow(
        window=2, layers=[0])))
    got = names(spec, Deployment(), "absorbed")
    assert "attn.core(latent)[dense,window=2]" in got and "attn.core(latent)[moe]" in got
    # the embedding and LM head carry their groups
    ops = step_operators(spec, Deployment(), StepShape(2, 1, 4), form="absorbed")
    assert [(o.name, str(o.group), o.dtype) for o in ops if o.name in ("embedding", "lm_head")] == [
        ("embedding", "embedding", ""), ("lm_head", "lm_head", "bf16")]
