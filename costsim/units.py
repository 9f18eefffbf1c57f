"""Unit parsing and number formats, at the edges of costsim.

Internally everything is SI base units: bytes, FLOPs, seconds, bytes/s, FLOP/s; money in US
dollars (a rental price in USD per device-hour, as clouds list it).
These helpers turn user strings ("3.35 TB/s", "128k", "50ms", "80GiB") into those
units and describe numeric formats (bf16, fp8, int4 with block scales, ...) by their
bits per element.

Conventions (stated once, used everywhere):
- Decimal SI prefixes k/M/G/T/P = 1e3.. for bytes, FLOPs and rates ("80 GB" = 80e9 B);
  binary prefixes KiB/MiB/GiB/TiB = 2**10.. must be spelled with the "i".
- A lower-case "b" in a rate means bits ("400 Gb/s" = 50e9 B/s).
- Token counts: ``parse_count`` is decimal ("8.1T" = 8.1e12) except where a caller asks for
  the context-length convention, where "128k" = 131,072 tokens (as in "128K context").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from costsim.errors import CostsimError

_DEC = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_BIN = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}
_NUM = r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"


def _split(text: str | float | int) -> tuple[float, str]:
    if isinstance(text, bool):
        raise ValueError(f"expected a number with a unit, got {text!r}")
    if isinstance(text, (int, float)):
        return float(text), ""
    s = str(text).strip().replace("_", "").replace(",", "")
    m = re.fullmatch(_NUM + r"\s*([A-Za-z/%]*)", s)
    if not m:
        raise ValueError(f"expected a number with an optional unit, got {text!r}")
    return float(m.group(1)), m.group(2)


def _prefix(unit: str, base_units: tuple[str, ...], what: str, text) -> tuple[float, str]:
    """Split ``unit`` into (multiplier, base unit) for one of ``base_units``."""
    for base in sorted(base_units, key=len, reverse=True):
        if unit.endswith(base):
            p = unit[: len(unit) - len(base)]
            if p in _BIN:
                return _BIN[p], base
            if p in _DEC:
                return _DEC[p], base
    raise ValueError(f"expected {what} (e.g. {_EXAMPLES[what]}), got {text!r}")


_EXAMPLES = {
    "bytes": "'80 GB', '141GB', '80GiB'",
    "a bandwidth": "'3.35 TB/s', '900GB/s', '400 Gb/s'",
    "a FLOP rate": "'989 TFLOPS', '989e12 FLOP/s'",
    "a time": "'50ms', '3us', '1.5 s'",
}


def parse_bytes(text: str | float | int) -> float:
    """Parse a memory size to bytes. Plain numbers are bytes. ``'80 GB'`` -> 8e10."""
    v, unit = _split(text)
    if unit == "":
        return v
    mult, _ = _prefix(unit, ("B",), "bytes", text)
    return v * mult


def parse_bandwidth(text: str | float | int) -> float:
    """Parse a bandwidth to bytes/s. Plain numbers are bytes/s; ``'400 Gb/s'`` (bits) -> 5e10."""
    v, unit = _split(text)
    if unit == "":
        return v
    mult, base = _prefix(unit, ("B/s", "b/s", "Bps", "bps"), "a bandwidth", text)
    return v * mult / (8.0 if base in ("b/s", "bps") else 1.0)


def parse_flops_rate(text: str | float | int) -> float:
    """Parse a FLOP rate to FLOP/s. ``'989 TFLOPS'`` -> 9.89e14; plain numbers are FLOP/s."""
    v, unit = _split(text)
    if unit == "":
        return v
    mult, _ = _prefix(unit, ("FLOPS", "FLOP/s", "flops", "OPS", "OP/s"), "a FLOP rate", text)
    return v * mult


def parse_time(text: str | float | int) -> float:
    """Parse a duration to seconds. ``'50ms'`` -> 0.05, ``'0.9ps'`` -> 9e-13 (per-element terms); plain
    numbers are seconds."""
    v, unit = _split(text)
    table = {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9, "ps": 1e-12, "min": 60.0, "h": 3600.0}
    if unit not in table:
        raise ValueError(f"expected a time (e.g. {_EXAMPLES['a time']}), got {text!r}")
    return v * table[unit]


_PRICE = re.compile(r"\s*(\$)?\s*" + _NUM + r"\s*(USD|\$)?\s*(?:/\s*(?:(?:GPU|device)[-\s]?)?(h|hr|hour|min|s))?\s*",
                    re.IGNORECASE)
_PER_HOUR = {"h": 1.0, "hr": 1.0, "hour": 1.0, "min": 60.0, "s": 3600.0}


def parse_price(text: str | float | int) -> float:
    """Parse a rental price to USD per device-hour: ``'2 USD/h'``, ``'$2/h'``, ``'$2.5/GPU-hour'``,
    ``'0.05 USD/min'`` (= 3.0); plain numbers are USD per device-hour. Only US dollars; a
    currency without a time (``'$2'``) is refused, since it is not a rate."""
    if isinstance(text, bool):
        raise ValueError(f"expected a price such as '2 USD/h', got {text!r}")
    if isinstance(text, (int, float)):
        return float(text)
    m = _PRICE.fullmatch(str(text).replace(",", ""))
    if not m or (m.group(1) and m.group(3)) or ((m.group(1) or m.group(3)) and not m.group(4)) \
            or (m.group(4) and not (m.group(1) or m.group(3))):
        raise ValueError(f"expected a price in US dollars per device-hour (e.g. '2 USD/h', '$2/h', "
                         f"'$2.5/GPU-hour'), got {text!r}")
    return float(m.group(2)) * _PER_HOUR[m.group(4).lower()] if m.group(4) else float(m.group(2))


def parse_count(text: str | float | int, *, binary_k: bool = False) -> float:
    """Parse a count such as ``'8.1T'`` (decimal) or, with ``binary_k``, ``'128k'`` = 131072.

    With ``binary_k`` (context lengths), k/K = 1024 and M = 1024**2, matching the
    "128K context" = 131,072 tokens convention of model cards.
    """
    v, unit = _split(text)
    if binary_k:
        table = {"": 1.0, "k": 1024.0, "K": 1024.0, "M": 1024.0**2}
    else:
        table = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}
    if unit not in table:
        eg = "'4096' or '128k' (k = 1024)" if binary_k else "'4096', '14.8T' or '2.788M'"
        raise ValueError(f"expected a count such as {eg}, got {text!r}")
    return v * table[unit]


# --------------------------------------------------------------------------------------
# Number formats
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NumberFormat:
    """Storage format of a tensor: payload bits per element plus optional block scales.

    ``bytes_for(n)`` = n * bits / 8 + ceil(n / group_size) * scale_bits / 8.
    ``rope_bits`` applies to MLA KV caches only: the decoupled RoPE key (d_h^R elements)
    is stored at this precision instead (FlashMLA's FP8 cache keeps it in BF16).
    """

    name: str
    bits: float
    group_size: int | None = None
    scale_bits: int = 0
    rope_bits: float | None = None
    compute: str = "bf16"  # the tensor-core dtype that consumes it (peak_flops key)

    def bytes_for(self, n_elements):
        """Bytes to store ``n_elements`` (scalar or numpy array) in this format."""
        payload = n_elements * self.bits / 8.0
        if self.group_size:
            import numpy as np

            payload = payload + np.ceil(np.asarray(n_elements) / self.group_size) * self.scale_bits / 8.0
        return payload

    @property
    def bytes_per_element(self) -> float:
        """Average bytes per element, scales included (for large tensors)."""
        extra = self.scale_bits / self.group_size if self.group_size else 0.0
        return (self.bits + extra) / 8.0


FORMATS: dict[str, NumberFormat] = {
    "fp32": NumberFormat("fp32", 32, compute="fp32"),
    "tf32": NumberFormat("tf32", 32, compute="tf32"),
    "bf16": NumberFormat("bf16", 16),
    "fp16": NumberFormat("fp16", 16),
    "fp8": NumberFormat("fp8", 8, compute="fp8"),
    # FP8 E4M3 weights with one fp32 scale per 128 x 128 block (DeepSeek-V3 §3.3.1; TensorRT-LLM
    # FP8_BLOCK_SCALES): 4 bytes per 16,384 weights; GEMMs of the gemm_fp8_block family
    "fp8-block": NumberFormat("fp8-block", 8, group_size=128 * 128, scale_bits=32, compute="fp8"),
    "int8": NumberFormat("int8", 8, compute="int8"),
    "int4": NumberFormat("int4", 4),
    # 4-bit payload with one fp16 scale per 32 elements: 18 bytes per 32 elements.
    "int4-g32": NumberFormat("int4-g32", 4, group_size=32, scale_bits=16),
    # DeepSeek-V3 FP8 checkpoint (config.json quantization_config: fp8 e4m3, weight_block_size
    # [128, 128]): one fp32 scale (weight_scale_inv) per 128 x 128 block = 16,384 elements.
    "fp8-b128": NumberFormat("fp8-b128", 8, group_size=128 * 128, scale_bits=32, compute="fp8"),
    # OCP MXFP4: 4-bit E2M1 payload, one 8-bit E8M0 scale per 32 elements (OCP MX spec v1.0).
    "mxfp4": NumberFormat("mxfp4", 4, group_size=32, scale_bits=8),
    # FlashMLA FP8 KV cache (deepseek-ai/FlashMLA README, 2025-09-29 deep dive): per token per
    # layer 512 fp8 latent + 4 fp32 scales (one per 128) + 64 bf16 RoPE key = 656 bytes.
    "flashmla-fp8": NumberFormat("flashmla-fp8", 8, group_size=128, scale_bits=32, rope_bits=16, compute="fp8"),
    # llama.cpp / GGML block formats (``--cache-type-k/-v``, GGUF weights), blocks of 32 with
    # fp16 scales (ggml/src/ggml-common.h: sizeof(block_q8_0) = 34, q4_0 18, q4_1 20 (+ fp16
    # min), q5_0 22, q5_1 24, iq4_nl 18 bytes); dequantised to 16 bits to compute
    "q8_0": NumberFormat("q8_0", 8, group_size=32, scale_bits=16),
    "q4_0": NumberFormat("q4_0", 4, group_size=32, scale_bits=16),
    "q4_1": NumberFormat("q4_1", 4, group_size=32, scale_bits=32),
    "q5_0": NumberFormat("q5_0", 5, group_size=32, scale_bits=16),
    "q5_1": NumberFormat("q5_1", 5, group_size=32, scale_bits=32),
    "iq4_nl": NumberFormat("iq4_nl", 4, group_size=32, scale_bits=16),
}


def parse_format(text: str | float | int) -> NumberFormat:
    """Resolve a format name (``bf16``, ``fp8``, ``int4-g32``, ``flashmla-fp8``, ...) or a
    bits-per-element number (``6``, ``'6bit'``) to a :class:`NumberFormat`.

    Raises CostsimError naming the accepted names.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        bits = float(text)
    else:
        key = str(text).strip().lower()
        if key in FORMATS:
            return FORMATS[key]
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(?:bits?|b)?", key)
        if not m:
            raise CostsimError(
                f"unknown number format {text!r}: expected one of {', '.join(FORMATS)} "
                "or a bits-per-element number such as 6"
            )
        bits = float(m.group(1))
    if not (0 < bits <= 64) or math.isnan(bits):
        raise CostsimError(f"bits per element must be in (0, 64], got {text!r}")
    return NumberFormat(f"{bits:g}bit", bits)
