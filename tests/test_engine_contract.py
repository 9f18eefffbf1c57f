"""The engine's contract: entries reject invalid layouts, errors speak engine terms, the Python
API gives the CLI's numbers, and the bugs the house review found stay fixed (busiest pipeline
stage by stored weights, compare of two models with one name, KV of uneven stages)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from costsim.api import (FieldError, LayoutRequest, Scenario, compare, load_hardware, load_model,
                         max_throughput_record, perf)
from costsim.cli import app
from costsim.simulator.deployment import Deployment
from costsim.simulator.memory import weight_bytes_per_device
from costsim.simulator.roofline import per_layer_seconds, time_step
from costsim.simulator.serving import decode
from costsim.simulator.types import LayerType, StepShape
from costsim.specs import ModelSpec

runner = CliRunner()


# ---- engine entries check the layout ------------------------------------------------------


def test_decode_rejects_a_tp_that_does_not_split_the_heads():
    v2, h800 = load_model("deepseek-v2"), load_hardware("h800")  # 128 heads
    with pytest.raises(FieldError) as e:
        decode(v2, h800, Deployment(devices=3, tp=3), 1, 4096)
    assert e.value.field == "tp" and "num_attention_heads=128" in e.value.reason
    with pytest.raises(FieldError):
        weight_bytes_per_device(v2, Deployment(devices=3, tp=3))


def test_engine_errors_speak_engine_terms_and_the_cli_names_the_flag():
    spec, hw = load_model("llama-3.1-8b"), load_hardware("h100")
    with pytest.raises(FieldError, match=r"^imbalance=2: applies to MoE models only"):
        perf(Scenario(spec, hw, LayoutRequest(devices=1, imbalance=2)))
    r = runner.invoke(app, ["perf", "llama-3.1-8b", "-H", "h100", "--devices", "1", "--imbalance", "2"])
    assert r.exit_code == 2 and r.stderr.startswith("costsim: error: --imbalance 2.0: applies to MoE models only")


# ---- the Python API gives the CLI's numbers -------------------------------------------------


def _cli_json(*args):
    r = runner.invoke(app, [*args, "--format", "json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_api_perf_equals_cli():
    cli = _cli_json("perf", "deepseek-v2", "-H", "h800", "--weight-dtype", "fp8", "--batch", "64")
    rec = perf(Scenario(load_model("deepseek-v2"), load_hardware("h800"), LayoutRequest(weight_dtype="fp8"),
                        batch=64, input_len=4096, output_len=1024)).to_dict()
    for k in ("ttft_s", "tpot_s", "decode_tokens_per_s", "weight_bytes_per_device", "max_batch", "tp", "ep"):
        assert rec[k] == cli[k], k


def test_api_compare_equals_cli():
    cli = _cli_json("compare", "deepseek-v2", "deepseek-llm-67b", "-H", "h800", "--weight-dtype", "fp8", "--batch", "64")
    recs = compare([load_model("deepseek-v2"), load_model("deepseek-llm-67b")], load_hardware("h800"),
                   LayoutRequest(weight_dtype="fp8"), context=4096, batch=64)
    for api, shown in zip(recs, cli["models"]):
        assert api.tpot_s == shown["tpot_s"] and api.decode_tokens_per_s == shown["decode_tokens_per_s"]
        assert (api.tp, api.ep, api.max_batch) == (shown["tp"], shown["ep"], shown["max_batch"])


def test_compare_and_perf_agree_on_the_same_decode_step():
    # one engine, one FP8 dispatch choice: compare's TPOT at batch b and context L is perf's
    # TPOT at the last token of an (L-1) -> 1 request on the same layout
    v2, h800 = load_model("deepseek-v2"), load_hardware("h800")
    c = compare([v2], h800, LayoutRequest(weight_dtype="fp8"), context=4096, batch=64)[0]
    p = perf(Scenario(v2, h800, LayoutRequest(weight_dtype="fp8", tp=c.tp, ep=c.ep), 64, 4096, 1))
    assert p.tpot_last_s == pytest.approx(c.tpot_s, rel=1e-12)


def test_api_max_throughput_equals_cli():
    cli = _cli_json("max-throughput", "deepseek-v2", "-H", "h800", "--weight-dtype", "fp8", "--tpot-slo", "50ms")
    rec = max_throughput_record(load_model("deepseek-v2"), load_hardware("h800"), LayoutRequest(weight_dtype="fp8"),
                                context=4096, tpot_slo_s=0.05)
    assert (rec.batch, rec.tp, rec.tokens_per_s, rec.tpot_s) == (cli["batch"], cli["tp"], cli["tokens_per_s"],
                                                                 cli["tpot_s"])


# ---- bug 1: the busiest pipeline stage is the one with the most stored weights ---------------


def _two_stage_spec() -> ModelSpec:
    """4 layers: 0-1 dense (big FFN), 2-3 MoE (4 small experts, top-2). h = 64, vocab 100."""
    return ModelSpec.model_validate(dict(
        name="stages", source="test", vocab_size=100, hidden_size=64, num_hidden_layers=4,
        attention=dict(kind="mha", num_attention_heads=4, num_key_value_heads=4, head_dim=16),
        ffn=dict(kind="moe", n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=64,
                 first_k_dense_replace=2, dense_intermediate_size=320)))


def test_busiest_stage_weights_count_every_stored_expert_once():
    # Per layer, by hand (HF module shapes, bf16 = 2 bytes):
    #   attention q,k,v,o = 4 x 64 x 64 = 16,384; two RMSNorms = 128
    #   dense FFN (SwiGLU) = 3 x 64 x 320 = 61,440
    #   MoE FFN = 4 experts x 3 x 64 x 64 = 49,152 + router 64 x 4 = 256 -> 49,408
    # Stage 0 (dense) stores more than stage 1 (MoE); counting the top-2 "active" experts as
    # extra weights (2 x 12,288 = 24,576) would wrongly make the MoE stage the heavier one.
    dense_stage = 2 * (16_384 + 128 + 61_440)
    vocab = 100 * 64 * 2  # embedding + LM head, both costed on the busiest stage
    expected = (dense_stage + vocab + 64) * 2  # + final norm; bytes
    assert expected == 337_536
    assert weight_bytes_per_device(_two_stage_spec(), Deployment(devices=2, pp=2)) == expected


# ---- bug 2: compare keeps two models of one name apart ---------------------------------------


def test_compare_two_models_with_one_name(tmp_path):
    import yaml

    spec = load_model("deepseek-v2").model_dump(mode="json", exclude_none=True)
    spec["attention"]["kv_lora_rank"] = 256
    f = tmp_path / "deepseek-v2.yaml"
    f.write_text(yaml.safe_dump(spec))
    out = _cli_json("compare", "deepseek-v2", str(f), "-H", "h800", "--weight-dtype", "fp8")
    a, b = out["models"]
    # DeepSeek-V2 Table 1: (d_c + d_h^R) x layers = (512 + 64) x 60; the what-if (256 + 64) x 60
    assert (a["name"], a["kv_cache_elements_per_token"]) == ("deepseek-v2", 34_560)
    assert (b["name"], b["kv_cache_elements_per_token"]) == ("deepseek-v2 (2)", 19_200)
    table = runner.invoke(app, ["compare", "deepseek-v2", str(f), "-H", "h800", "--weight-dtype", "fp8"]).stdout
    row = next(line for line in table.splitlines() if "elements/token" in line)
    assert "34,560" in row and "19,200" in row


# ---- per-layer timing under PP --------------------------------------------------------------


def test_per_layer_seconds_at_pp2_cover_the_stage_once():
    # Llama-3.1-70B: 80 dense layers, pp = 2 -> 40 layers on the busiest stage
    spec, hw = load_model("llama-3.1-70b"), load_hardware("h100")
    dep = Deployment(devices=4, tp=2, pp=2)
    t = time_step(spec, hw, dep, StepShape(8, 1, 4096))
    per = per_layer_seconds(t, spec, dep.pp)
    assert set(per) == {"dense", "once"}
    assert per["dense"] * 40 + per["once"] == pytest.approx(float(t.time_s), rel=1e-12)
    # the PP send is counted once per step, with the embedding and the LM head
    once = sum(float(x.total_s) for x in t.timings if x.op.layer is LayerType.ONCE)
    # (and the TP all-reduce after the vocab-parallel embedding)
    assert {x.op.name for x in t.timings if x.op.layer is LayerType.ONCE} == {
        "embedding", "lm_head", "comm.pp_send", "comm.tp_allreduce[embedding]"}
    assert per["once"] == pytest.approx(once, rel=1e-12)


def test_kv_per_device_follows_the_busiest_uneven_stage():
    # 3 identical layers on pp = 2: stage 0 holds layers 0-1, stage 1 layer 2. The busiest
    # device holds 2 layers' KV: 2 x (2 x 4 heads x 64 x 2 B) = 2,048 B per token, x 1000 tokens
    # x 3 sequences = 6,144,000 B (1/pp of all layers would say 4,608,000).
    from costsim.simulator.memory import kv_bytes_per_device

    spec = ModelSpec.model_validate(dict(
        name="three", source="test", vocab_size=100, hidden_size=256, num_hidden_layers=3,
        attention=dict(kind="mha", num_attention_heads=4, num_key_value_heads=4, head_dim=64),
        ffn=dict(kind="dense", intermediate_size=512)))
    assert kv_bytes_per_device(spec, Deployment(devices=2, pp=2), 3, 1000) == 6_144_000


@pytest.mark.parametrize("target", ["/dev/null", "link"])
def test_output_never_replaces_what_is_not_a_regular_file(tmp_path, target):
    import os

    if target == "link":
        (tmp_path / "real.yaml").write_text("keep")
        os.symlink(tmp_path / "real.yaml", tmp_path / "link.yaml")
        target = str(tmp_path / "link.yaml")
    from pathlib import Path

    hf = str(Path(__file__).resolve().parent / "fixtures" / "hf" / "llama-3.1-8b.json")
    r = runner.invoke(app, ["import-hf", hf, "-o", target])
    assert r.exit_code == 2 and "not a regular file" in r.stderr
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    if target.endswith("link.yaml"):
        assert os.path.islink(target) and (tmp_path / "real.yaml").read_text() == "keep"


@pytest.mark.parametrize("call,needle", [
    (lambda h, v: perf(Scenario("deepseek-v2", h)), "expected a ModelSpec"),
    (lambda h, v: perf(Scenario(v, "h800")), "expected a HardwareProfile"),
    (lambda h, v: perf(Scenario(v, h, {"tp": 1})), "expected a LayoutRequest"),
    (lambda h, v: perf(Scenario(v, h, LayoutRequest(tp=2.0))), "tp=2.0: must be an integer"),
    (lambda h, v: compare([], h), "non-empty list"),
    (lambda h, v: load_model(None), "expected a name or a path"),
    (lambda h, v: load_hardware("/tmp"), "is a directory"),
])
def test_python_api_mistakes_raise_costsim_errors(call, needle):
    from costsim.api import CostsimError

    with pytest.raises(CostsimError, match=needle):
        call(load_hardware("h800"), load_model("deepseek-v2"))


def test_no_inf_reaches_the_output():
    r = runner.invoke(app, ["kernel", "gemm", "-H", "h800", "--m", "2", "--n", "64", "--k", "64",
                            "--hw-set", "memory_bandwidth=1e-300B/s"])
    assert r.exit_code == 2 and "not finite" in r.stderr and r.stdout == ""
