"""Money: US dollars per hour, per million tokens served and per training run, from a rental
price per device-hour (``HardwareProfile.price_per_device_hour``, ``--price``).

Every figure is a rent: devices x price x time. Nothing else is charged (no power, storage,
network egress or idle capacity beyond what the arithmetic says):

- serving: USD per million tokens = devices x price / 3600 / tokens per s x 1e6, with the
  tokens per s of the whole deployment (``serving.serve``). Output tokens are priced at the
  decode rate (batch / TPOT: a decode pool that does nothing else), input tokens at the
  prefill rate (a prefill pool), and "combined" output tokens at output tokens / end-to-end
  latency (the same devices prefill and then decode the batch, so the prompt is paid for).
- training: USD = GPU-hours x price (DeepSeek-V3, arXiv 2412.19437, Table 1: 2.788M H800
  GPU-hours x $2 = $5.576M); wall-clock days on N devices = GPU-hours / N / 24.

Units: USD, seconds, tokens; prices in USD per device-hour (as clouds list them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from costsim.errors import FieldError

SECONDS_PER_HOUR = 3600.0
HOURS_PER_DAY = 24.0


def check_price(price_per_device_hour: float) -> float:
    """``price_per_device_hour`` as a float (USD per device-hour, finite, >= 0); else FieldError
    (field ``price``)."""
    p = price_per_device_hour
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < math.inf:
        raise FieldError("price", p, "must be a finite number of USD per device-hour >= 0")
    return float(p)


def usd_per_hour(devices: int, price_per_device_hour: float) -> float:
    """Rent of ``devices`` devices for one hour (USD)."""
    return devices * check_price(price_per_device_hour)


def usd_per_million_tokens(devices: int, price_per_device_hour: float, tokens_per_s) -> float | None:
    """USD per 1e6 tokens produced at ``tokens_per_s`` (all ``devices`` together):
    devices x price / 3600 / tokens_per_s x 1e6. None when nothing is produced (rate <= 0)."""
    tps = float(tokens_per_s)
    if not tps > 0:
        return None
    return usd_per_hour(devices, price_per_device_hour) / SECONDS_PER_HOUR / tps * 1e6


@dataclass(frozen=True)
class ServingCost:
    """What a serving deployment costs (USD), at one price per device-hour."""

    price_usd_per_device_hour: float
    devices: int
    usd_per_hour: float  # all ``devices``
    usd_per_million_output_tokens: float | None  # at the decode rate (batch / TPOT)
    usd_per_million_input_tokens: float | None  # at the prefill rate (prompt tokens / TTFT)
    usd_per_million_output_tokens_combined: float | None  # output tokens / e2e: prefill and decode on the same devices


def serving_cost(result, price_per_device_hour: float) -> ServingCost:
    """The cost of a ``serving.serve`` result (or any object with ``devices``,
    ``decode_tokens_per_s``, ``prefill_tokens_per_s`` and ``combined_tokens_per_s``, tokens/s
    of all the devices). Raises FieldError (``price``) for a negative or non-finite price."""
    n, p = int(result.devices), check_price(price_per_device_hour)
    return ServingCost(p, n, usd_per_hour(n, p), usd_per_million_tokens(n, p, result.decode_tokens_per_s),
                       usd_per_million_tokens(n, p, result.prefill_tokens_per_s),
                       usd_per_million_tokens(n, p, result.combined_tokens_per_s))


@dataclass(frozen=True)
class TrainingCost:
    """The rent of a training run: GPU-hours x price; its wall-clock time on ``devices``."""

    price_usd_per_device_hour: float
    gpu_hours: float
    usd: float
    devices: int | None
    wall_clock_days: float | None  # GPU-hours / devices / 24; None without ``devices``


def training_cost(gpu_hours: float, price_per_device_hour: float, devices: int | None = None) -> TrainingCost:
    """USD = ``gpu_hours`` x price; days = ``gpu_hours`` / ``devices`` / 24 (all devices busy
    the whole time). FieldError names ``price``, ``gpu_hours`` or ``devices`` when out of range."""
    p = check_price(price_per_device_hour)
    if not 0 <= float(gpu_hours) < math.inf:
        raise FieldError("gpu_hours", gpu_hours, "must be a finite number >= 0")
    days = None
    if devices is not None:
        if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
            raise FieldError("devices", devices, "must be an integer >= 1")
        days = float(gpu_hours) / devices / HOURS_PER_DAY
    return TrainingCost(p, float(gpu_hours), float(gpu_hours) * p, devices, days)
