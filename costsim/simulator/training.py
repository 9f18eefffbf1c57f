"""Training cost: FLOPs per token, GPU-hours at an MFU, and the MFU a published GPU-hour
figure implies.

training FLOPs per token = 3 x forward (forward + backward = 2 x forward), with causal
attention over the sequence and logits for every token (``flops.training_flops_per_token``);
this reproduces ISCA 2025 (arXiv 2505.09343) Table 2 for DeepSeek-V2 (155) and DeepSeek-V3
(250 GFLOP/token) at sequence length 4096. MFU is measured against the dense BF16 peak, as
ISCA 2025 Table 4 does. Activation recomputation is not counted (it is not "model" FLOPs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from costsim.errors import CostsimError, FieldError
from costsim.simulator.flops import training_flops_per_token
from costsim.specs import HardwareProfile, ModelSpec


@dataclass(frozen=True)
class TrainCost:
    seq_len: int
    tokens: float
    flops_per_token: float  # training FLOPs per token
    total_flops: float
    peak_flops: float  # per device, FLOP/s, in ``dtype``
    dtype: str
    mfu: float | None  # given or implied
    gpu_hours: float | None  # given or implied
    gpu_hours_per_trillion_tokens: float | None
    tokens_per_s_per_device: float | None


def train_cost(spec: ModelSpec, hw: HardwareProfile, *, seq_len: int, tokens: float,
               mfu: float | None = None, gpu_hours: float | None = None, dtype: str = "bf16",
               causal: bool = True) -> TrainCost:
    """GPU-hours for ``tokens`` at ``mfu``, or the MFU implied by ``gpu_hours`` (one of the two).
    ``causal=False``: FLOPs in the full-attention convention (``flops.prefill_flops``).

    Raises CostsimError if neither or both are given, or if they are out of range.
    """
    if (mfu is None) == (gpu_hours is None):
        raise FieldError("mfu", mfu, "give exactly one of mfu (to get GPU-hours) or gpu_hours (to get the implied MFU)")
    if mfu is not None and not 0 < mfu <= 1:
        raise FieldError("mfu", mfu, "must be in (0, 1]")
    if gpu_hours is not None and not 0 < gpu_hours < math.inf:
        raise FieldError("gpu_hours", gpu_hours, "must be a finite number > 0")
    for name, v in (("tokens", tokens), ("seq_len", seq_len)):
        if not 0 < v < math.inf:
            raise FieldError(name, v, "must be finite and > 0")
    try:
        peak = hw.peak(dtype)
    except CostsimError as e:
        raise FieldError("dtype", dtype, str(e)) from None
    f = float(training_flops_per_token(spec, seq_len, causal=causal))
    total = f * tokens
    if mfu is not None:
        gpu_hours = total / (peak * mfu) / 3600.0
    else:
        mfu = total / (gpu_hours * 3600.0 * peak)
        if mfu > 1:
            raise FieldError("gpu_hours", f"{gpu_hours:.4g}", f"impossible on {hw.name}: it implies an MFU of "
                               f"{mfu * 100:.3g}% of the {dtype} dense peak (needs >= {total / (peak * 3600.0):.4g} GPU-hours)")
    return TrainCost(seq_len, tokens, f, total, peak, dtype, mfu, gpu_hours, gpu_hours * 1e12 / tokens,
                     tokens / (gpu_hours * 3600.0))
