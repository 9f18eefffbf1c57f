"""FLOP counts (forward and training), derived from the operator list.

2 FLOPs per multiply-add; matmuls and attention (scores QK^T and values PV) only.
Forward FLOPs per token = 2 x activated matmul weights (``ParamBreakdown.matmul_active``)
+ attention FLOPs that grow with the context; the tests check that identity against
the parameter counter and against ``torch.utils.flop_counter.FlopCounterMode``.

MLA has two forms (DeepSeek-V2 §2.1.2, "absorb W^UK into W^Q and W^UV into W^O"):
- naive: decompress K^C and V^C from the cached latent (kv_b_proj over every cached token,
  each step), then standard MHA with qk dim d_h + d_h^R and v dim d_h^v;
- absorbed: fold W^UK into the query and W^UV into the output, attend over the latent
  (MQA-like over d_c + d_h^R), no decompression.
Prefill of a fresh prompt costs the same projection FLOPs in both forms but the naive
attention core is cheaper; decode with a latent cache is far cheaper absorbed.
"""

from __future__ import annotations

from costsim.simulator.deployment import Deployment
from costsim.simulator.operators import step_operators, total
from costsim.simulator.types import OpKind, StepShape
from costsim.specs import ModelSpec


def forward_flops(spec: ModelSpec, *, batch=1, new_tokens=1, context=0, logit_tokens=None,
                  form: str = "absorbed"):
    """Forward FLOPs of one step on a single device (no parallelism).

    ``logit_tokens`` defaults to ``new_tokens`` (logits for every token, the per-token
    convention). Shapes broadcast (numpy); returns FLOPs.
    """
    lt = new_tokens if logit_tokens is None else logit_tokens
    ops = step_operators(spec, Deployment(mla_form=form), StepShape(batch, new_tokens, context, lt),
                         include_comm=False)
    return total(ops, "flops")


def flops_per_token_decode(spec: ModelSpec, context, form: str = "absorbed"):
    """Forward FLOPs to generate one token with ``context`` tokens already cached.

    ``form`` ("absorbed" | "naive") matters for MLA only. Returns FLOPs (float/ndarray).
    """
    return forward_flops(spec, batch=1, new_tokens=1, context=context, logit_tokens=1, form=form)


def prefill_flops(spec: ModelSpec, prompt, form: str = "naive", logits_for_all: bool = False,
                  causal: bool = True):
    """Forward FLOPs to prefill one sequence of ``prompt`` tokens.

    Logits for the last token only unless ``logits_for_all`` (training / per-token figures).
    ``causal=False`` is the full-attention FLOP convention of papers that count every
    (query, key) pair, s^2 instead of s(s + 1)/2 (DeepSeekMoE's "FLOPs per 4K tokens",
    ISCA 2025 Table 4's "non-causal" TFLOPS): the attention cores of full-attention layers
    are scaled by s^2 / (s(s + 1)/2); sliding-window and linear-attention layers are kept.
    """
    if causal:
        return forward_flops(spec, batch=1, new_tokens=prompt, context=0,
                             logit_tokens=prompt if logits_for_all else 1, form=form)
    s = float(prompt)
    ops = step_operators(spec, Deployment(mla_form=form), StepShape(1, s, 0, s if logits_for_all else 1),
                         include_comm=False)
    scale = s * s / (s * (s + 1) / 2)
    return sum(float(o.flops) * o.count * (scale if o.kind is OpKind.ATTENTION and "window=" not in o.name
                                           and "linear" not in o.name else 1.0) for o in ops)


def training_flops_per_token(spec: ModelSpec, seq_len, form: str = "naive", causal: bool = True):
    """Training FLOPs per token: 3 x forward (backward = 2 x forward), causal attention over
    ``seq_len`` (``causal=False``: the full-attention convention, see ``prefill_flops``),
    logits for every token. MLA trains in its naive (MHA) form (DeepSeek-V3.2
    paper App. A: MHA mode for training and prefill).

    ISCA 2025 (arXiv 2505.09343) Table 2 at seq 4096: DeepSeek-V2 155, DeepSeek-V3 250
    GFLOP per token.
    """
    return 3.0 * prefill_flops(spec, seq_len, form=form, logits_for_all=True, causal=causal) / seq_len
