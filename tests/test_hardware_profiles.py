"""Shipped hardware profiles: they load, carry datasheet values in SI units, are dense (not
with-sparsity) peaks, cite a source for every value, and bad profile files fail with a one-line
CostsimError naming the file and the field.
"""

from __future__ import annotations

import copy
from importlib import resources

import pytest
import yaml
from pydantic import BaseModel

from costsim.errors import CostsimError
from costsim.registry import hardware_names, load_hardware
from costsim.specs import HardwareProfile, _Sourced

SHIPPED = ["h800", "h100", "h200", "h20", "a100-40g", "a100-80g", "a800", "l40s", "b200", "mi300x", "cpu"]

TB, GB = 1e12, 1e9
TFLOPS = 1e12


def _value(hw: HardwareProfile, path: str) -> float:
    obj = hw
    for key in path.split("."):
        obj = getattr(obj, key)
    assert obj is not None, f"{hw.name}: {path} is missing"
    return obj.value


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------


def test_hardware_names_lists_the_shipped_profiles():
    names = hardware_names()
    missing = set(SHIPPED) - set(names)
    assert not missing, f"not shipped: {sorted(missing)}"
    assert names == sorted(names)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_loads(name):
    hw = load_hardware(name)
    assert isinstance(hw, HardwareProfile)
    assert hw.name == name  # the file's `name` matches its slug
    assert hw.source.strip()
    assert hw.peak("bf16") > 0  # every device answers a bf16 (or fp16) peak


@pytest.mark.parametrize("ref", ["H800", "h800", " H800 ", "B200", "Mi300X", "A100-80G"])
def test_name_matching_is_case_insensitive(ref):
    assert load_hardware(ref) == load_hardware(ref.strip().lower())


def test_unknown_hardware_is_a_one_line_error_listing_the_names():
    with pytest.raises(CostsimError, match=r"unknown hardware 'h9000'.*h100") as exc:
        load_hardware("h9000")
    assert "\n" not in str(exc.value)


# --------------------------------------------------------------------------------------
# Golden datasheet values, SI units (bytes, bytes/s, FLOP/s). Link figures are per GPU,
# per direction. rel=1e-12 is "exact": it only absorbs decimal-to-binary float rounding.
# --------------------------------------------------------------------------------------

GOLDEN = [
    # NVIDIA H100 architecture whitepaper theoretical peaks / H100 datasheet (SXM5, dense):
    # BF16 989.4 TFLOPS, FP8 1,978.9 TFLOPS, 80 GB HBM3, 3.35 TB/s, NVLink 900 GB/s bidirectional.
    ("h100", "peak_flops.bf16", 989.4 * TFLOPS),
    ("h100", "peak_flops.fp16", 989.4 * TFLOPS),
    ("h100", "peak_flops.fp8", 1978.9 * TFLOPS),
    ("h100", "peak_flops.tf32", 494.7 * TFLOPS),
    ("h100", "memory_bandwidth", 3.35 * TB),
    ("h100", "memory_capacity", 80 * GB),
    ("h100", "intra_node_bandwidth", 450 * GB),  # 900 GB/s bidirectional, halved
    # NVIDIA DGX H100 datasheet: one 400 Gb/s ConnectX-7 per GPU = 50 GB/s.
    ("h100", "inter_node_bandwidth", 50 * GB),
    # NVIDIA H200 datasheet (SXM): 141 GB HBM3e, 4.8 TB/s; same tensor cores as H100 SXM5.
    ("h200", "memory_capacity", 141 * GB),
    ("h200", "memory_bandwidth", 4.8 * TB),
    ("h200", "peak_flops.bf16", 989.4 * TFLOPS),
    ("h200", "intra_node_bandwidth", 450 * GB),
    # H800: DeepSeek FlashMLA deep dive 2025-04-22 (3.35 TB/s); ISCA 2025 (arXiv 2505.09343)
    # §4.3: NVLink 400 GB/s bidirectional = 200 GB/s per direction; §4.1: 400G CX7 per GPU.
    ("h800", "memory_bandwidth", 3.35 * TB),
    ("h800", "intra_node_bandwidth", 200 * GB),
    ("h800", "inter_node_bandwidth", 50 * GB),
    # NVIDIA HGX B200 datasheet, per GPU, with-sparsity figures halved: BF16 2.25 PF, FP8 4.5 PF,
    # FP4 9 PF; 180 GB HBM3e and 7.7 TB/s (not the launch-day 192 GB / 8 TB/s); NVLink 5 1.8 TB/s.
    ("b200", "peak_flops.bf16", 2.25e15),
    ("b200", "peak_flops.fp8", 4.5e15),
    ("b200", "peak_flops.fp4", 9.0e15),
    ("b200", "memory_capacity", 180 * GB),
    ("b200", "memory_bandwidth", 7.7 * TB),
    ("b200", "intra_node_bandwidth", 900 * GB),
    # AMD Instinct MI300X datasheet (dense): BF16 1,307.4 TFLOPS, FP8 2,614.9 TFLOPS, 192 GB HBM3,
    # 5.3 TB/s, Infinity Fabric 7 x 128 GB/s = 896 GB/s bidirectional aggregate.
    ("mi300x", "peak_flops.bf16", 1307.4 * TFLOPS),
    ("mi300x", "peak_flops.fp8", 2614.9 * TFLOPS),
    ("mi300x", "memory_capacity", 192 * GB),
    ("mi300x", "memory_bandwidth", 5.3 * TB),
    ("mi300x", "intra_node_bandwidth", 448 * GB),
    # NVIDIA A100 datasheet (SXM, dense): BF16 312 TFLOPS, INT8 624 TOPS; 80 GB HBM2e at
    # 2,039 GB/s, 40 GB HBM2 at 1,555 GB/s; NVLink 600 GB/s bidirectional. DGX A100: 200G HDR per GPU.
    ("a100-80g", "peak_flops.bf16", 312 * TFLOPS),
    ("a100-80g", "peak_flops.int8", 624 * TFLOPS),
    ("a100-80g", "memory_bandwidth", 2.039 * TB),
    ("a100-80g", "memory_capacity", 80 * GB),
    ("a100-80g", "intra_node_bandwidth", 300 * GB),
    ("a100-80g", "inter_node_bandwidth", 25 * GB),
    ("a100-40g", "memory_bandwidth", 1.555 * TB),
    ("a100-40g", "memory_capacity", 40 * GB),
    # A800: NVIDIA via Reuters: an A100 with NVLink limited to 400 GB/s (bidirectional).
    ("a800", "peak_flops.bf16", 312 * TFLOPS),
    ("a800", "intra_node_bandwidth", 200 * GB),
    # NVIDIA L40S datasheet (dense): BF16 362.05 TFLOPS, FP8 733 TFLOPS, 48 GB GDDR6, 864 GB/s;
    # no NVLink, PCIe Gen4 x16 64 GB/s bidirectional.
    ("l40s", "peak_flops.bf16", 362.05 * TFLOPS),
    ("l40s", "peak_flops.fp8", 733 * TFLOPS),
    ("l40s", "memory_capacity", 48 * GB),
    ("l40s", "memory_bandwidth", 864 * GB),
    ("l40s", "intra_node_bandwidth", 32 * GB),
    # H20 (unverified: no NVIDIA datasheet; alibaba/InferSim hardware/gpu.py + spec pages).
    ("h20", "peak_flops.bf16", 148 * TFLOPS),
    ("h20", "peak_flops.fp8", 296 * TFLOPS),
    ("h20", "memory_capacity", 96 * GB),
    ("h20", "memory_bandwidth", 4.0 * TB),
]


@pytest.mark.parametrize("name, path, expected", GOLDEN, ids=[f"{n}:{p}" for n, p, _ in GOLDEN])
def test_golden_datasheet_values(name, path, expected):
    assert _value(load_hardware(name), path) == pytest.approx(expected, rel=1e-12, abs=0)


def test_datasheet_provenance_of_golden_values():
    # The H20 has no public NVIDIA datasheet: its values must say so.
    for name, path, _ in GOLDEN:
        obj = load_hardware(name)
        for key in path.split("."):
            obj = getattr(obj, key)
        if name == "h20":
            assert obj.provenance == "unverified", f"{name}.{path}"
        else:
            assert obj.provenance in ("datasheet", "measured"), f"{name}.{path}: {obj.provenance}"


def test_ampere_has_no_fp8():
    # A100/A800 have no FP8 tensor cores (added in Hopper): the dtype must be absent, not zero.
    for name in ("a100-40g", "a100-80g", "a800"):
        hw = load_hardware(name)
        assert hw.peak_flops.fp8 is None
        with pytest.raises(CostsimError, match=rf"hardware {name}: no peak_flops.fp8"):
            hw.peak("fp8")


def test_b200_is_the_hgx_datasheet_not_launch_figures():
    hw = load_hardware("b200")
    assert hw.memory_capacity.value != 192 * GB
    assert hw.memory_bandwidth.value != 8 * TB


# --------------------------------------------------------------------------------------
# Consistency across all profiles (catches sparse-vs-dense mixups and missing provenance)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_peaks_are_dense(name):
    pf = load_hardware(name).peak_flops
    fp8 = pf.fp8.value if pf.fp8 else None
    for half in ("bf16", "fp16"):
        rate = getattr(pf, half)
        if rate is None:
            continue
        if fp8 is not None:
            # A with-sparsity 16-bit figure equals the dense fp8 figure; a sparse fp8 is 4x bf16.
            assert rate.value < fp8, f"{name}: {half} {rate.value:.4g} not below fp8 {fp8:.4g}"
            assert fp8 / rate.value == pytest.approx(2.0, rel=0.05), f"{name}: fp8/{half} = {fp8 / rate.value:.3f}"
        if pf.tf32 is not None:
            # tensor-core TF32 runs at half the 16-bit rate; a sparse/dense mix gives 1x or 4x
            assert rate.value / pf.tf32.value == pytest.approx(2.0, rel=0.05), f"{name}: {half}/tf32"
    if pf.fp4 is not None and fp8 is not None:
        assert pf.fp4.value / fp8 == pytest.approx(2.0, rel=0.05)
    if pf.bf16 is not None and pf.fp16 is not None:
        assert pf.bf16.value == pf.fp16.value


_INT8_CASES = SHIPPED


@pytest.mark.parametrize("name", _INT8_CASES)
def test_int8_peak_is_twice_the_16_bit_rate(name):
    # Every shipped GPU (Ampere, Ada, Hopper, Blackwell, CDNA3) runs dense INT8 at 2x its dense
    # BF16/FP16 tensor rate; a TOPS figure parsed without its prefix, or a sparse one, fails here.
    pf = load_hardware(name).peak_flops
    if pf.int8 is None:
        pytest.skip(f"{name} has no int8 peak")
    assert pf.int8.value / pf.bf16.value == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize("name", SHIPPED)
def test_links_are_unidirectional_and_plausible(name):
    hw = load_hardware(name)
    for field in ("intra_node_bandwidth", "inter_node_bandwidth"):
        bw = getattr(hw, field)
        if bw is not None:
            assert bw.direction == "unidirectional"
            assert 0 < bw.value <= 2 * TB, f"{name}.{field}"
    if hw.intra_node_bandwidth is not None and hw.inter_node_bandwidth is not None:
        assert hw.intra_node_bandwidth.value >= hw.inter_node_bandwidth.value  # scale-up >= scale-out
    if hw.kind == "gpu":
        assert hw.devices_per_node == 8
        assert hw.intra_node_bandwidth is not None and hw.inter_node_bandwidth is not None
    for field in ("compute", "memory", "intra_node", "inter_node"):
        assert 0 < getattr(hw.efficiency, field).value <= 1


def test_halved_links_say_so():
    for name in SHIPPED:
        bw = load_hardware(name).intra_node_bandwidth
        if bw is not None and name != "h800":  # h800's source itself quotes the per-direction 200 GB/s
            assert "halved" in bw.note, f"{name}: intra_node_bandwidth note must say the figure was halved"


def test_cpu_profile():
    hw = load_hardware("cpu")
    assert hw.kind == "cpu"
    assert hw.devices_per_node == 1
    assert hw.intra_node_bandwidth is None
    assert 0.5e12 <= hw.peak("fp32") <= 5e12
    assert 20 * GB <= hw.memory_bandwidth.value <= 200 * GB
    assert 16 * GB <= hw.memory_capacity.value <= 128 * GB


def _sourced_values(model, path=""):
    for key, val in model:
        where = f"{path}{key}"
        if isinstance(val, _Sourced):
            yield where, val
        elif isinstance(val, BaseModel):
            yield from _sourced_values(val, where + ".")


@pytest.mark.parametrize("name", SHIPPED)
def test_every_value_has_a_source(name):
    hw = load_hardware(name)
    values = list(_sourced_values(hw))
    assert len(values) >= 10
    raw = yaml.safe_load(resources.files("costsim.hardware_profiles").joinpath(f"{name}.yaml").read_text())
    for where, val in values:
        assert val.source.strip(), f"{name}.{where}: empty source"
        assert val.source != "what-if (--hw-set)", f"{name}.{where}: default source (bare value in YAML)"
    # every sourced value is written out in full in the YAML (no silent defaults)
    for key in ("intra_node_latency", "inter_node_latency"):
        assert key in raw, f"{name}: {key} not given"
    assert "kernel_overhead" in raw["efficiency"], f"{name}: efficiency.kernel_overhead not given"


# --------------------------------------------------------------------------------------
# Bad profile files: one-line CostsimError naming the file and the field
# --------------------------------------------------------------------------------------


def _template() -> dict:
    return yaml.safe_load(resources.files("costsim.hardware_profiles").joinpath("h800.yaml").read_text())


def _write(tmp_path, data) -> str:
    p = tmp_path / "bad-profile.yaml"
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(p)


def _mutated(mutate) -> dict:
    data = copy.deepcopy(_template())
    mutate(data)
    return data


BAD = [
    (
        "negative memory_bandwidth",
        lambda d: d["memory_bandwidth"].update(value="-3.35 TB/s"),
        r"bad-profile\.yaml: memory_bandwidth\.value: must be a finite number > 0",
    ),
    (
        "efficiency above 1",
        lambda d: d["efficiency"]["compute"].update(value=1.5),
        r"bad-profile\.yaml: efficiency\.compute\.value: efficiency must be in \(0, 1\], got 1\.5",
    ),
    (
        "zero efficiency",
        lambda d: d["efficiency"]["memory"].update(value=0),
        r"bad-profile\.yaml: efficiency\.memory\.value: efficiency must be in \(0, 1\]",
    ),
    (
        "bidirectional link",
        lambda d: d["intra_node_bandwidth"].update(value="400 GB/s", direction="bidirectional"),
        r"bad-profile\.yaml: .*intra_node_bandwidth\.direction must be 'unidirectional'",
    ),
    (
        "unknown top-level key",
        lambda d: d.update(memory_bandwith="3 TB/s"),
        r"bad-profile\.yaml: memory_bandwith: unknown field",
    ),
    (
        "unknown dtype",
        lambda d: d["peak_flops"].update(fp6="1 PFLOPS"),
        r"bad-profile\.yaml: peak_flops\.fp6: unknown field",
    ),
    (
        "unknown provenance",
        lambda d: d["memory_capacity"].update(provenance="rumour"),
        r"bad-profile\.yaml: memory_capacity\.provenance: ",
    ),
    (
        "wrong unit",
        lambda d: d["memory_bandwidth"].update(value="3.35 TFLOPS"),
        r"bad-profile\.yaml: memory_bandwidth: expected a bandwidth",
    ),
    (
        "missing efficiency",
        lambda d: d.pop("efficiency"),
        r"bad-profile\.yaml: efficiency: missing required field",
    ),
]


@pytest.mark.parametrize("case, mutate, pattern", BAD, ids=[b[0] for b in BAD])
def test_bad_profile_is_a_one_line_error(tmp_path, case, mutate, pattern):
    path = _write(tmp_path, _mutated(mutate))
    with pytest.raises(CostsimError, match=pattern) as exc:
        load_hardware(path)
    assert "\n" not in str(exc.value)
    assert str(exc.value).startswith(path)


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = _write(tmp_path, "name: x\npeak_flops: {bf16: [1, 2\nmemory_capacity: 80 GB\n")
    with pytest.raises(CostsimError, match=r"bad-profile\.yaml: malformed YAML at line \d+") as exc:
        load_hardware(path)
    assert "\n" not in str(exc.value)


def test_top_level_not_a_mapping(tmp_path):
    path = _write(tmp_path, "- just\n- a list\n")
    with pytest.raises(CostsimError, match=r"bad-profile\.yaml: expected a mapping"):
        load_hardware(path)


def test_missing_file():
    with pytest.raises(CostsimError, match=r"no-such-profile\.yaml: no such file"):
        load_hardware("no-such-profile.yaml")


def test_template_roundtrip_is_valid(tmp_path):
    # the unmodified template written the same way loads, so the failures above are the mutations
    hw = load_hardware(_write(tmp_path, _template()))
    assert hw == load_hardware("h800")
