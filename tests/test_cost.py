"""Money (costsim.simulator.cost): prices on the shipped profiles with their sources, the rent
arithmetic by hand, training dollars against DeepSeek-V3's published figure, and the USD fields
and rows of perf, max-throughput, compare and train."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
import yaml
from typer.testing import CliRunner

import tiny
from costsim.api import LayoutRequest, Scenario, load_hardware, load_model, max_throughput_record, perf, train
from costsim.cli import app
from costsim.errors import CostsimError, FieldError
from costsim.registry import apply_sets, hardware_names
from costsim.simulator.cost import serving_cost, training_cost, usd_per_million_tokens
from costsim.units import parse_price

runner = CliRunner()


def _cli(*args):
    r = runner.invoke(app, list(args))
    return r


# ---- prices on the profiles -------------------------------------------------------------------


def test_h800_price_is_deepseek_v3s_two_dollars():
    p = load_hardware("h800").price_per_device_hour
    assert p.value == 2.0  # arXiv 2412.19437 Table 1: "$2 per GPU hour"
    assert "2412.19437" in p.source and p.provenance == "assumed"


@pytest.mark.parametrize("name", hardware_names())
def test_every_shipped_profile_has_a_dated_sourced_price(name):
    p = load_hardware(name).price_per_device_hour
    assert p is not None and 0 < p.value < 20
    assert "2026-12-03" in p.source
    assert p.provenance == "assumed" or (p.provenance == "list_price" and "https://" in p.source)


@pytest.mark.parametrize("name", [n for n in hardware_names() if n.endswith("-calibrated")])
def test_calibrated_profiles_carry_their_base_price(name):
    base = load_hardware(name[: -len("-calibrated")]).price_per_device_hour
    assert load_hardware(name).price_per_device_hour.value == base.value


@pytest.mark.parametrize("text, usd_per_h", [("2 USD/h", 2.0), ("$2/h", 2.0), ("$2.5/GPU-hour", 2.5),
                                             ("3.99USD/hour", 3.99), ("0.05 USD/min", 3.0), ("0.001USD/s", 3.6)])
def test_price_units(text, usd_per_h):
    assert parse_price(text) == pytest.approx(usd_per_h)


@pytest.mark.parametrize("text", ["$2", "2 USD", "2/h", "2 EUR/h", "two"])
def test_price_without_a_currency_and_time_is_refused(text):
    with pytest.raises(ValueError):
        parse_price(text)


def test_hw_set_price_needs_its_unit_and_scales():
    h = load_hardware("h100")
    assert apply_sets(h, ["price_per_device_hour=3USD/h"], "--hw-set", require_units=True).price_per_device_hour.value == 3
    assert apply_sets(h, ["price_per_device_hour=x2"], "--hw-set", require_units=True) \
        .price_per_device_hour.value == pytest.approx(7.98)
    with pytest.raises(CostsimError, match="give the unit"):
        apply_sets(h, ["price_per_device_hour=3"], "--hw-set", require_units=True)
    with pytest.raises(CostsimError, match=">= 0"):
        apply_sets(h, ["price_per_device_hour=-1USD/h"], "--hw-set", require_units=True)


# ---- the arithmetic -----------------------------------------------------------------------------


def test_serving_cost_by_hand():
    # 8 devices at $2/h = $16/h; 4,000 decode tokens/s = 14.4M tokens/h -> 16 / 14.4 = $1.111 per 1M
    r = SimpleNamespace(devices=8, decode_tokens_per_s=4000.0, prefill_tokens_per_s=160000.0,
                        combined_tokens_per_s=3200.0)
    c = serving_cost(r, 2.0)
    assert c.usd_per_hour == 16.0
    assert c.usd_per_million_output_tokens == pytest.approx(10 / 9)
    assert c.usd_per_million_input_tokens == pytest.approx(16 / (160000 * 3600) * 1e6)  # $0.02778
    assert c.usd_per_million_output_tokens_combined == pytest.approx(16 / (3200 * 3600) * 1e6)  # $1.389
    assert usd_per_million_tokens(8, 2.0, 0.0) is None  # nothing produced, no price per token
    with pytest.raises(FieldError) as e:
        serving_cost(r, -1.0)
    assert e.value.field == "price"


def test_perf_cost_from_its_serve_result():
    rec = perf(Scenario(load_model("deepseek-v2"), load_hardware("h800"), LayoutRequest(weight_dtype="fp8"), batch=64))
    assert rec.devices == 8 and rec.usd_per_hour == 16.0  # 8 x $2
    assert rec.usd_per_million_output_tokens == pytest.approx(16 / 3600 / rec.decode_tokens_per_s * 1e6, rel=1e-12)
    assert rec.usd_per_million_input_tokens == pytest.approx(16 / 3600 / rec.prefill_tokens_per_s * 1e6, rel=1e-12)
    assert rec.usd_per_million_output_tokens_combined == pytest.approx(
        16 / 3600 / (64 * 1024 / rec.e2e_s) * 1e6, rel=1e-12)


def test_max_throughput_cost():
    rec = max_throughput_record(load_model("deepseek-v2"), load_hardware("h800"), LayoutRequest(weight_dtype="fp8"),
                                2048, 0.05)
    assert rec.usd_per_million_output_tokens == pytest.approx(16 / 3600 / rec.tokens_per_s * 1e6, rel=1e-12)


def test_training_dollars_match_deepseek_v3_table_1():
    # arXiv 2412.19437 Table 1: 2.788M H800 GPU-hours, $2 per GPU-hour -> $5.576M
    rec = train(load_model("deepseek-v3"), load_hardware("h800"), seq_len=4096, tokens=14.8e12, gpu_hours=2.788e6,
                devices=2048)
    assert rec.training_usd == pytest.approx(5.576e6, rel=1e-12)
    assert rec.wall_clock_days == pytest.approx(2.788e6 / 2048 / 24)  # 56.7 days on the 2,048 H800s of §3.1
    c = training_cost(180e3, 2.0, 2048)  # §1: 180K GPU-hours per trillion tokens = 3.7 days on 2,048 H800s
    assert c.usd == 360e3 and round(c.wall_clock_days, 1) == 3.7
    at_mfu = train(load_model("deepseek-v3"), load_hardware("h100"), seq_len=4096, tokens=1e12, mfu=0.4)
    assert at_mfu.training_usd == pytest.approx(at_mfu.gpu_hours * 3.99, rel=1e-12) and at_mfu.wall_clock_days is None


# ---- the commands -------------------------------------------------------------------------------


def test_train_cli_prints_the_papers_dollars():
    r = _cli("train", "deepseek-v3", "--hardware", "h800", "--tokens", "14.8T", "--gpu-hours", "2.788M",
             "--devices", "2048")
    assert r.exit_code == 0, r.output
    assert re.search(r"rent at 2 USD per GPU-hour \[USD\]\s*│\s*5,576,000", r.stdout)
    assert re.search(r"wall-clock on 2,048 devices \[days\]\s*│\s*56\.72", r.stdout)
    d = json.loads(_cli("train", "deepseek-v3", "--hardware", "h800", "--tokens", "14.8T", "--gpu-hours", "2.788M",
                        "--price", "3USD/h", "-f", "json").stdout)
    assert d["training_usd"] == pytest.approx(3 * 2.788e6) and d["price_usd_per_device_hour"] == 3


def test_perf_compare_and_max_throughput_json_carry_usd_keys():
    d = json.loads(_cli("perf", "llama-3.1-8b", "-H", "h100", "--devices", "1", "--price", "2USD/h", "-f", "json").stdout)
    assert d["usd_per_hour"] == 2 and d["price_provenance"] == "assumed"
    assert d["usd_per_million_output_tokens"] == pytest.approx(2 / 3600 / d["decode_tokens_per_s"] * 1e6)
    c = json.loads(_cli("compare", "deepseek-v2", "deepseek-llm-67b", "-H", "h800", "--weight-dtype", "fp8", "--batch",
                        "64", "-f", "json").stdout)
    for m in c["models"]:
        assert m["usd_per_hour"] == 16
        assert m["usd_per_million_output_tokens"] == pytest.approx(16 / 3600 / m["decode_tokens_per_s"] * 1e6)
    t = _cli("max-throughput", "deepseek-v2", "-H", "h800", "--weight-dtype", "fp8", "--tpot-slo", "50ms")
    assert "decode [USD per 1M output tokens]" in t.stdout and "rent of the 8 devices [USD/h]" in t.stdout


def test_a_profile_without_a_price_gives_no_dollars(tmp_path):
    f = tmp_path / "noprice.yaml"
    f.write_text(yaml.safe_dump(tiny.hw().model_dump(mode="json", exclude_none=True)))
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny.gqa().model_dump(mode="json", exclude_none=True)))
    r = _cli("perf", str(spec), "-H", str(f), "--devices", "1", "--input", "16", "--output", "4", "-f", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert not [k for k in d if k.startswith(("usd", "price"))]  # no price, no USD keys
    r = _cli("perf", str(spec), "-H", str(f), "--devices", "1", "--input", "16", "--output", "4")
    assert "give --price" in r.stdout


@pytest.mark.parametrize("price, needle", [("2", "--price 2: give the unit"), ("-2USD/h", "--price"),
                                           ("2EUR/h", "--price: expected a price in US dollars")])
def test_bad_price_is_one_line_exit_2(price, needle):
    r = _cli("perf", "llama-3.1-8b", "-H", "h100", "--devices", "1", "--price", price)
    assert r.exit_code == 2
    assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr
