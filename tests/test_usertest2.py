"""Usertest of --ep-kernel, --two-batch-overlap and --draft-model: what a user found broken
or missing, one test each (CLI through typer's runner, numbers from the engine)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from costsim.cli.app import app

LLAMA = ["llama-3.1-70b", "-H", "h100", "--devices", "8", "--tp", "8"]
DRAFT = ["--draft-model", "llama-3.1-8b", "--mtp", "4", "--mtp-acceptance", "0.7"]


def _run(*args):
    return CliRunner().invoke(app, list(args))


def test_max_throughput_json_and_csv_carry_the_decode_modes():
    # max-throughput's JSON said nothing of the draft model, MTP, EP kernel or two-batch overlap
    r = _run("max-throughput", *LLAMA, *DRAFT, "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["draft_model"] == "llama-3.1-8b" and d["mtp_depth"] == 4 and d["mtp_acceptance"] == 0.7
    assert d["mtp_tokens_per_step"] == pytest.approx(1 + 0.7 + 0.7 ** 2 + 0.7 ** 3 + 0.7 ** 4)
    assert d["ep_kernel"] == "normal" and d["two_batch_overlap"] is False
    r = _run("max-throughput", "deepseek-v3", "-H", "h800", "--devices", "32", "--weight-dtype", "fp8",
             "--ep-kernel", "low-latency", "--two-batch-overlap", "--format", "json")
    d = json.loads(r.stdout)
    assert (d["ep_kernel"], d["two_batch_overlap"], d["draft_model"], d["mtp_depth"]) == ("low_latency", True, None, 0)
    r = _run("max-throughput", *LLAMA, *DRAFT, "--format", "csv")
    header, row = r.stdout.strip().splitlines()
    assert dict(zip(header.split(","), row.split(",")))["draft_model"] == "llama-3.1-8b"


def test_max_throughput_table_notes_the_decode_modes():
    r = _run("max-throughput", *LLAMA, *DRAFT)
    assert r.exit_code == 0 and "draft model llama-3.1-8b" in r.stdout
    r = _run("max-throughput", "deepseek-v3", "-H", "h800", "--devices", "32", "--weight-dtype", "fp8",
             "--ep-kernel", "auto", "--two-batch-overlap")
    assert "DeepEP auto kernels" in r.stdout and "two-batch overlap" in r.stdout


def test_perf_json_draft_fields_and_readme_example():
    # README: TPOT 15.78 -> 12.74 ms, TTFT 1.39 -> 1.59 s, +2.0 GB weights and +0.67 GB KV per device
    args = ["perf", *LLAMA, "--batch", "16", "--input", "2048", "--output", "512", "--format", "json"]
    a, b = json.loads(_run(*args).stdout), json.loads(_run(*args, *DRAFT).stdout)
    assert (a["draft_model"], b["draft_model"]) == (None, "llama-3.1-8b")
    assert round(a["tpot_s"] * 1e3, 2) == 15.78 and round(b["tpot_s"] * 1e3, 2) == 12.74
    assert round(a["ttft_s"], 2) == 1.39 and round(b["ttft_s"], 2) == 1.59
    assert round((b["weight_bytes_per_device"] - a["weight_bytes_per_device"]) / 1e9, 1) == 2.0
    assert round((b["kv_bytes_per_device"] - a["kv_bytes_per_device"]) / 1e9, 2) == 0.67


@pytest.mark.parametrize("ref,needle", [("nonexist", "unknown model 'nonexist'"),
                                        ("/nonexistent/draft.yaml", "no such file")])
def test_a_bad_draft_model_names_the_flag(ref, needle):
    # it read "unknown model 'nonexist'" with no word of --draft-model (the target is fine)
    r = _run("perf", *LLAMA, "--draft-model", ref, "--mtp", "2")
    assert r.exit_code == 2 and "Traceback" not in r.output
    line = r.stderr.strip()
    assert "\n" not in line and line.startswith("costsim: error: --draft-model: ") and needle in line


def test_a_draft_model_file_path_works(tmp_path):
    from importlib.resources import files

    path = files("costsim.model_specs") / "llama-3.1-8b.yaml"
    r = _run("perf", *LLAMA, "--draft-model", str(path), "--mtp", "2", "--format", "json")
    assert r.exit_code == 0 and json.loads(r.stdout)["draft_model"] == "llama-3.1-8b"


def test_ep_kernel_without_ep_warns_that_it_does_nothing():
    r = _run("perf", "llama-3.1-8b", "-H", "h100", "--devices", "1", "--ep-kernel", "low-latency")
    assert r.exit_code == 0 and "--ep-kernel low-latency (ep_kernel) has no effect: ep=1" in r.stderr
    r = _run("perf", "deepseek-v3", "-H", "h800", "--devices", "32", "--weight-dtype", "fp8", "--batch", "64",
             "--ep-kernel", "auto")
    assert r.exit_code == 0 and "has no effect" not in r.stderr
    # max-throughput says so too (fresh-user finding: only perf did)
    r = _run("max-throughput", "llama-3.1-8b", "-H", "h100", "--deepep-nvlink")
    assert r.exit_code == 0 and "--deepep-nvlink (deepep_nvlink) has no effect: it changes DeepEP's low-latency" \
        in r.stderr
    # --overlap under two-batch overlap (which already overlaps each micro-batch's communication)
    r = _run("perf", "llama-3.1-70b", "-H", "h100", "--devices", "8", "--batch", "8", "--two-batch-overlap", "--overlap")
    assert r.exit_code == 0 and "--overlap (overlap_comm) has no effect with --two-batch-overlap" in r.stderr
    r = _run("perf", "llama-3.1-70b", "-H", "h100", "--devices", "8", "--batch", "8", "--two-batch-overlap")
    assert r.exit_code == 0 and "has no effect" not in r.stderr


def test_disagg_and_plan_warn_of_ep_modes_that_change_nothing():
    # disagg: per pool (Llama-3.1-70B has no experts: both pools run ep=1)
    r = _run("disagg", "llama-3.1-70b", "-H", "h100", "--input", "2048", "--output", "512", "--ttft-slo", "2s",
             "--tpot-slo", "50ms", "--ep-kernel", "low-latency")
    assert r.exit_code == 0
    assert "prefill pool: --ep-kernel low-latency (ep_kernel) has no effect: ep=1" in r.stderr
    assert "decode pool: --ep-kernel low-latency (ep_kernel) has no effect: ep=1" in r.stderr
    # plan: when every layout shown has ep = 1; not when one runs EP (DeepSeek-V2 on 8 H100)
    r = _run("plan", "llama-3.1-70b", "--hardware", "h100", "--context", "2k", "--output", "512", "--tpot-slo", "50ms",
             "--ep-kernel", "auto", "--top", "2")
    assert r.exit_code == 0 and "--ep-kernel auto has no effect on the layouts shown: all have ep=1" in r.stderr
    r = _run("plan", "deepseek-v2", "--hardware", "h100", "--context", "2k", "--output", "512", "--tpot-slo", "50ms",
             "--ep-kernel", "auto", "--top", "2")
    assert r.exit_code == 0 and "has no effect" not in r.stderr


def test_two_batch_overlap_with_one_sequence_per_rank_warns():
    # batch 1: both micro-batches hold the one sequence, every step twice as long, silently
    r = _run("perf", "llama-3.1-8b", "-H", "h100", "--devices", "1", "--two-batch-overlap", "--format", "json")
    d = json.loads(r.stdout)
    assert any("two_batch_overlap with batch 1" in w for w in d["warnings"])
    r = _run("perf", "llama-3.1-8b", "-H", "h100", "--devices", "1", "--two-batch-overlap", "--batch", "2",
             "--format", "json")
    assert not any("two_batch_overlap" in w for w in json.loads(r.stdout)["warnings"])
    # DP attention: 32 sequences on 32 ranks is one per rank, 64 is two
    dsv3 = ["perf", "deepseek-v3", "-H", "h800", "--devices", "32", "--weight-dtype", "fp8", "--two-batch-overlap",
            "--format", "json", "--batch"]
    assert any("two_batch_overlap" in w for w in json.loads(_run(*dsv3, "32").stdout)["warnings"])
    assert not any("two_batch_overlap" in w for w in json.loads(_run(*dsv3, "64").stdout)["warnings"])


@pytest.mark.parametrize("extra,needle", [
    (["--ep-kernel", "fast"], "--ep-kernel 'fast': expected normal, low-latency or auto"),
    (["--draft-model", "llama-3.1-8b"], "--draft-model llama-3.1-8b: give --mtp N"),
    (DRAFT + ["--pp", "2", "--tp", "4"], "--draft-model llama-3.1-8b: with pp > 1 is not modelled"),
    (["--draft-model", "deepseek-v3", "--mtp", "1"], "a draft must share the tokenizer"),
])
@pytest.mark.parametrize("cmd", ["perf", "max-throughput", "whatif"])
def test_bad_input_is_one_line_and_exit_2(cmd, extra, needle):
    r = _run(cmd, "llama-3.1-70b", "-H", "h100", "--devices", "8", *extra)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.stderr.count("\n") == 1 and needle in r.stderr


@pytest.mark.parametrize("kw,field", [(dict(draft_model="llama-3.1-8b", mtp_depth=2), "draft_model"),
                                      (dict(two_batch_overlap="yes"), "two_batch_overlap"),
                                      (dict(two_batch_overlap=1), "two_batch_overlap")])
def test_python_api_refuses_a_draft_name_or_a_non_bool_overlap_by_field(kw, field):
    # a name for draft_model raised AttributeError ('str' object has no attribute 'vocab_size');
    # two_batch_overlap="yes" ran and reported "yes"
    from costsim.api import LayoutRequest, Scenario, load_hardware, load_model, perf
    from costsim.errors import FieldError

    with pytest.raises(FieldError) as e:
        perf(Scenario(load_model("llama-3.1-70b"), load_hardware("h100"), LayoutRequest(devices=8, **kw), 4, 512, 64))
    assert e.value.field == field


def test_mtp_on_a_model_without_mtp_module_points_to_the_draft_model():
    r = _run("perf", *LLAMA, "--mtp", "2")
    assert r.exit_code == 2 and "has no MTP module" in r.stderr and "--draft-model" in r.stderr


def test_whatif_json_and_table_carry_the_decode_modes():
    # whatif ran the flags but its JSON and table never said which modes the numbers are for
    r = _run("whatif", *LLAMA, *DRAFT, "--set", "num_hidden_layers=40", "--format", "json")
    d = json.loads(r.stdout)
    assert (d["draft_model"], d["mtp_depth"], d["mtp_acceptance"]) == ("llama-3.1-8b", 4, 0.7)
    assert (d["ep_kernel"], d["two_batch_overlap"]) == ("normal", False)
    r = _run("whatif", "deepseek-v3", "-H", "h800", "--devices", "16", "--weight-dtype", "fp8", "--batch", "64",
             "--ep-kernel", "low-latency", "--two-batch-overlap", "--set", "ffn.num_experts_per_tok=4")
    assert r.exit_code == 0 and "DeepEP low-latency kernels" in r.stdout and "two-batch overlap" in r.stdout


def _draft12(tmp_path):
    """llama-3.1-8b with 12 heads (4 KV heads): TP 4 splits them, TP 8 does not."""
    from importlib.resources import files

    text = (files("costsim.model_specs") / "llama-3.1-8b.yaml").read_text()
    text = text.replace("name: llama-3.1-8b", "name: draft12").replace("num_attention_heads: 32",
                                                                       "num_attention_heads: 12")
    path = tmp_path / "draft12.yaml"
    path.write_text(text.replace("num_key_value_heads: 8", "num_key_value_heads: 4"))
    return str(path)


def test_layout_policy_and_max_throughput_pick_a_tp_the_draft_can_use(tmp_path):
    # without --tp, perf's policy took TP 8 and max-throughput tried TP 8 first, then both
    # failed with "--draft-model draft12: tp=8: does not divide ..." though TP 4 serves both
    draft = _draft12(tmp_path)
    for cmd in ("perf", "max-throughput"):
        r = _run(cmd, "llama-3.1-70b", "-H", "h100", "--devices", "8", "--draft-model", draft, "--mtp", "2",
                 "--format", "json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["tp"] == 4
    # a TP given that the draft cannot use is still refused, by the flag
    r = _run("perf", *LLAMA, "--draft-model", draft, "--mtp", "2")
    assert r.exit_code == 2 and "--draft-model draft12: tp=8: does not divide" in r.stderr
