"""DeepEP communication buffers in the memory report (issue 9), and the serving-mode flags of
``plan`` / ``plot`` (the same options as ``perf``).

Source of the sizes: github.com/deepseek-ai/DeepEP at 567632d (the last tree before EPv2):
``get_low_latency_rdma_size_hint`` = ``LowLatencyLayout`` (csrc/config.hpp:136-193),
``Config.get_nvl_buffer_size_hint`` / ``get_rdma_buffer_size_hint`` (config.hpp:52-104) with
``Buffer.get_dispatch_config`` / ``get_combine_config`` (deep_ep/buffer.py:233-290, num_sms 20),
the 32 MiB workspace (csrc/deep_ep.cpp:197). SGLang allocates one buffer of the larger sizes
(python/sglang/srt/layers/moe/token_dispatcher/deepep.py ``get_deepep_buffer``) with 128 tokens
per rank by default (``SGLANG_DEEPEP_NUM_MAX_DISPATCH_TOKENS_PER_RANK``). Every expected number
below is worked by hand from those formulas for DeepSeek-V3 (hidden 7168, 256 experts).
"""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from costsim.api import load_hardware, load_model
from costsim.cli import app
from costsim.errors import FieldError
from costsim.simulator.deployment import Deployment
from costsim.simulator.memory import (decode_dispatch_tokens, deepep_buffers, deepep_low_latency_rdma_bytes, deepep_normal_nvl_bytes,
                                      deepep_normal_rdma_bytes, kv_bytes_per_device, memory_report,
                                      weight_bytes_per_device, workspace_bytes)
from costsim.simulator.types import StepShape
from costsim.units import FORMATS

V3 = load_model("deepseek-v3")
H800 = load_hardware("h800")
MIB32 = 32 * 2**20

# ---- DeepSeek-V3 messages (config.hpp:148-149): hidden 7168, 56 scales of 128 channels ----
DISPATCH_MSG = 16 + max(7168 * 2, 7168 + 56 * 4)  # 16 + max(14336, 7392) = 14352 bytes
COMBINE_MSG = 56 * 4 + 7168 * 2  # 224 + 14336 = 14560 bytes


def ll_by_hand(T, E):
    send = max(T * DISPATCH_MSG, E * T * COMBINE_MSG)
    recv = max(E * T * DISPATCH_MSG, E * T * COMBINE_MSG)
    signal = math.ceil(E * 4 / 128) * 128
    total = 2 * (send + recv + signal)
    return (total + 128) // 128 * 128


def test_message_sizes():
    assert (DISPATCH_MSG, COMBINE_MSG) == (14352, 14560)


def test_low_latency_rdma_v3_ep32_128_tokens():
    # send = max(128 x 14352, 256 x 128 x 14560 = 477,102,080); recv = 256 x 128 x 14560 = 477,102,080;
    # signal = 1,024; 2 x (477,102,080 x 2 + 1,024) = 1,908,410,368, aligned total + 128 -> 1,908,410,496
    assert ll_by_hand(128, 256) == 1_908_410_496
    assert deepep_low_latency_rdma_bytes(128, 7168, 32, 256) == 1_908_410_496


def test_low_latency_rdma_v3_ep144_with_day6_redundant_slots():
    # EP144 holds 256 + 32 = 288 expert slots (Day 6): 288 x 128 x 14560 = 536,739,840 each way, signal
    # 1,152: 2 x (2 x 536,739,840 + 1,152) = 2,146,961,664 (a multiple of 128) + 128 = 2,146,961,792
    assert ll_by_hand(128, 288) == 2_146_961_792
    assert deepep_low_latency_rdma_bytes(128, 7168, 144, 288) == 2_146_961_792
    # the rank count does not enter DeepEP's formula; 256 tokens: 2 x (2 x 954,204,160 + 1,024) + 128
    assert deepep_low_latency_rdma_bytes(128, 7168, 144, 256) == 1_908_410_496
    assert deepep_low_latency_rdma_bytes(256, 7168, 32, 256) == ll_by_hand(256, 256) == 3_816_818_816


def test_normal_nvl_and_rdma_v3():
    per_token = 14336 + 8 + 128 * 8 + 128 * 4 + 128 * 4  # hidden BF16, SourceMeta, top-k idx/weights, scales
    assert per_token == 16392
    # EP 8 (config 20 SMs -> 10 channels, 256 NVL tokens): 10 x 8 x (2 + 3) x 4 + 10 x 8 x 256 x 16392
    assert 1600 + 80 * 256 * per_token == 335_709_760
    assert deepep_normal_nvl_bytes(14336, 8, 256) == 335_709_824  # aligned up to 128
    assert deepep_normal_rdma_bytes(14336, 8, 6, 128) == 0  # one NVLink domain: no RDMA buffer
    # EP 32: 4 RDMA ranks, 288 NVL tokens: 80 x 11 x 4 + 80 x 288 x 16392 = 377,675,200 -> 377,675,264
    assert 80 * 11 * 4 + 80 * 288 * per_token == 377_675_200
    assert deepep_normal_nvl_bytes(14336, 32, 288) == 377_675_264
    # RDMA: 10 x 4 x 18 x 2 x 4 + 2 x 10 x 4 x 128 x (16392 + 16) = 168,023,680 (already aligned)
    assert 5760 + 2 * 40 * 128 * (per_token + 16) == 168_023_680
    assert deepep_normal_rdma_bytes(14336, 32, 8, 128) == 168_023_680
    # EP 144 dispatch config (720, 12, 128): RDMA recv aligned up to 12 -> 132 tokens, 18 RDMA ranks
    assert deepep_normal_nvl_bytes(14336, 144, 720) == math.ceil((80 * 39 * 4 + 80 * 720 * per_token) / 128) * 128 \
        == 944_191_744
    assert deepep_normal_rdma_bytes(14336, 144, 12, 128) == \
        math.ceil((180 * 18 * 8 + 2 * 180 * 132 * (per_token + 16)) / 128) * 128 == 779_734_144


def dep(ep_kernel="auto", devices=32, **kw):
    return Deployment(devices=devices, tp=1, ep=devices, weight_format=FORMATS["fp8"], ep_kernel=ep_kernel,
                      dispatch_bytes=1.0, **kw)


def test_buffers_per_kernel_as_sglang_allocates():
    nvl = 377_675_264 + 160  # + barrier signals and pointers (deep_ep.cpp:146-148)
    assert deepep_buffers(V3, dep("normal")).total == nvl + 168_023_680 + MIB32
    assert deepep_buffers(V3, dep("low_latency")).total == 1_908_410_496 + MIB32  # README get_buffer: no NVL
    auto = deepep_buffers(V3, dep("auto"))  # one buffer: normal NVL + the larger RDMA size
    assert (auto.nvl_bytes, auto.rdma_bytes, auto.tokens) == (nvl, 1_908_410_496, 128)
    assert auto.total == 2_319_640_352
    day6 = deepep_buffers(V3, dep("auto", devices=144, redundant_experts=32))
    assert day6.total == 944_191_744 + 160 + 2_146_961_792 + MIB32 == 3_124_708_128
    assert deepep_buffers(V3, dep("auto", deepep_max_tokens=256)).rdma_bytes == 3_816_818_816
    # no EP all-to-all: nothing
    assert deepep_buffers(V3, Deployment(devices=8, tp=8, ep=1, weight_format=FORMATS["fp8"])).total == 0
    with pytest.raises(FieldError) as e:
        deepep_buffers(V3, dep(deepep_max_tokens=2048))
    assert e.value.field == "deepep_max_tokens"


def test_memory_report_charges_the_buffers_beside_the_weights():
    d = dep("auto")
    m = memory_report(V3, H800, d, 256, 5120)
    assert m.comm_buffer_bytes == 2_319_640_352
    assert m.fits == (m.weight_bytes + 2_319_640_352 + m.kv_bytes + m.workspace_bytes <= m.usable_bytes)
    per_seq = kv_bytes_per_device(V3, d, d.dp, 5120) + workspace_bytes(V3, d, StepShape(d.dp, 1, 5120, 1))
    free = 0.9 * 80e9 - weight_bytes_per_device(V3, d) - 2_319_640_352
    assert m.max_batch == math.floor(free / per_seq) * d.dp
    # the normal kernels' smaller buffer leaves room for more sequences
    assert memory_report(V3, H800, dep("normal"), 256, 5120).max_batch > m.max_batch


def test_decode_dispatch_tokens():
    # 8192 sequences over dp 32: 256 per rank; MTP 1 verifies 2 tokens each; two-batch overlap halves them
    assert decode_dispatch_tokens(dep(), 8192) == 256
    assert decode_dispatch_tokens(dep(mtp_depth=1), 8192) == 512
    assert decode_dispatch_tokens(dep(mtp_depth=1, two_batch_overlap=True), 8192) == 256
    assert decode_dispatch_tokens(dep(two_batch_overlap=True), 32) == 1  # one sequence: both micro-batches hold it
    # attention TP 4 (dp 8): 1024 sequences per group, each rank dispatches its quarter
    assert decode_dispatch_tokens(Deployment(devices=32, tp=4, ep=32), 8192) == 256


R = CliRunner()
WIDE = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


def run(*args):
    res = R.invoke(app, [str(a) for a in args], env=WIDE)
    assert res.exit_code == 0, res.output
    return res


def js(*args):
    return json.loads(run(*args, "--format", "json").stdout)


V3_EP32 = ("deepseek-v3", "-H", "h800", "--devices", 32, "--tp", 1, "--ep", 32, "--weight-dtype", "fp8")


def test_perf_memory_line_and_flag():
    out = run("perf", *V3_EP32, "--batch", 256, "--input", 4096, "--output", 1024, "--ep-kernel", "auto").stdout
    line = next(l for l in out.splitlines() if "DeepEP buffers" in l)
    assert "low-latency: 128 tokens per rank" in line and "2.320" in line
    rec = js("perf", *V3_EP32, "--batch", 256, "--input", 4096, "--output", 1024, "--ep-kernel", "auto",
             "--deepep-max-tokens", 256)
    assert rec["comm_buffer_bytes_per_device"] == 377_675_424 + 3_816_818_816 + MIB32
    assert rec["deepep_max_tokens"] == 256
    dense = run("perf", "llama-3.1-8b", "-H", "h100", "--batch", 8, "--input", 512, "--output", 64).stdout
    assert "DeepEP" not in dense
    bad = R.invoke(app, ["perf", *map(str, V3_EP32), "--deepep-max-tokens", "0"], env=WIDE)
    assert bad.exit_code == 2 and "--deepep-max-tokens 0: must be an integer from 1 to 1024" in bad.stderr


def test_perf_warns_when_decode_dispatch_exceeds_the_buffer():
    # 8192 sequences over 32 ranks: 256 per rank > 128
    res = R.invoke(app, ["perf", *map(str, V3_EP32), "--batch", "8192", "--input", "1024", "--output", "16",
                         "--ep-kernel", "auto"], env=WIDE)
    assert res.exit_code == 0
    assert "at batch 8192 a decode step's low-latency dispatch sends 256 tokens per rank, more than the 128" \
        in res.stderr


# ---- plan / plot take the serving-mode flags, and answer as perf / max-throughput do -------------

PLAN = ("plan", "deepseek-v3", "-H", "h800", "--context", 4096, "--output", 256, "--tpot-slo", "60ms",
        "--max-devices", 16, "--pp", 1, "--top", 1, "--weight-dtype", "fp8", "--kv-dtype", "bf16")


@pytest.mark.parametrize("flags", [("--ep-kernel", "low-latency"), ("--two-batch-overlap",), ("--mtp", "1")])
def test_plan_flag_changes_the_answer_as_perf(flags):
    base = js(*PLAN)["rows"][0]
    row = js(*PLAN, *flags)["rows"][0]
    assert (row["tpot_s"], row["batch"]) != (base["tpot_s"], base["batch"])
    p = js("perf", "deepseek-v3", "-H", "h800", "--devices", row["devices"], "--tp", row["tp"], "--ep", row["ep"],
           "--pp", 1, "--weight-dtype", "fp8", "--kv-dtype", "bf16", "--batch", row["batch"], "--input", 4096,
           "--output", 256, *flags)
    assert row["tpot_s"] == pytest.approx(p["tpot_s"], rel=1e-9)
    assert row["ttft_s"] == pytest.approx(p["ttft_s"], rel=1e-9)


def test_plan_draft_model_as_perf():
    args = ("plan", "llama-3.1-70b", "-H", "h100", "--context", 2048, "--output", 512, "--tpot-slo", "40ms",
            "--max-devices", 8, "--pp", 1, "--top", 1, "--weight-dtype", "bf16", "--kv-dtype", "bf16")
    base = js(*args)["rows"][0]
    row = js(*args, "--draft-model", "llama-3.1-8b", "--mtp", 4, "--mtp-acceptance", 0.7)["rows"][0]
    assert row["tpot_s"] != base["tpot_s"]
    p = js("perf", "llama-3.1-70b", "-H", "h100", "--devices", row["devices"], "--tp", row["tp"], "--weight-dtype",
           "bf16", "--batch", row["batch"], "--input", 2048, "--output", 512, "--draft-model", "llama-3.1-8b",
           "--mtp", 4, "--mtp-acceptance", 0.7)
    assert row["tpot_s"] == pytest.approx(p["tpot_s"], rel=1e-9)


@pytest.mark.parametrize("flags", [("--ep-kernel", "low-latency"), ("--two-batch-overlap",), ("--mtp", "1")])
def test_plot_throughput_flag_as_max_throughput(flags, monkeypatch, tmp_path):
    import costsim.reports.plots as plots

    seen = []
    monkeypatch.setattr(plots, "throughput_latency", lambda curves, *a, **k: seen.append(curves))
    layout = ("deepseek-v3", "-H", "h800", "--devices", 16, "--tp", 1, "--ep", 16, "--weight-dtype", "fp8",
              "--context", 4096)
    run("plot", "throughput", *layout, "-o", tmp_path / "a.png")
    run("plot", "throughput", *layout, "-o", tmp_path / "b.png", *flags)
    base, curve = seen[0][0], seen[1][0]
    mt = js("max-throughput", *layout, *flags)
    assert max(curve["tokens_per_s_per_device"]) == pytest.approx(mt["tokens_per_s_per_device"], rel=1e-9)
    assert max(curve["tokens_per_s_per_device"]) != pytest.approx(max(base["tokens_per_s_per_device"]), rel=1e-6)


def test_plot_max_batch_charges_the_low_latency_buffer(monkeypatch, tmp_path):
    import costsim.reports.plots as plots

    seen = []
    monkeypatch.setattr(plots, "max_batch", lambda curves, *a, **k: seen.append(curves))
    layout = ("deepseek-v3", "-H", "h800", "--devices", 32, "--tp", 1, "--ep", 32, "--weight-dtype", "fp8")
    run("plot", "max-batch", *layout, "--max-context", 4096, "-o", tmp_path / "a.png", "--ep-kernel", "auto")
    curve = seen[0][0]
    i = list(curve["context"]).index(4096)
    p = js("perf", *layout, "--batch", 1, "--input", 4095, "--output", 1, "--ep-kernel", "auto")
    assert curve["max_batch"][i] == p["max_batch"]
