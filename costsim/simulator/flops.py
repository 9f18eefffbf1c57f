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
from costsim.simulator.types import StepShape
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


def prefill_flops(spec: ModelSpec, prompt, form: str = "naive", logits_for_all: bool = False):
    """Forward FLOPs to prefill one sequence of ``prompt`` tokens (causal attention).

    Logits for the last token only unless ``logits_for_all`` (training / per-token figures).
    """
    return forward_flops(spec, batch=1, new_tokens=prompt, context=0,
                         logit_tokens=prompt if logits_for_all else 1, form=form)


def training_flops_per_token(spec: ModelSpec, seq_len, form: str = "naive"):
    """Training FLOPs per token: 3 x forward (backward = 2 x forward), causal attention over
    ``seq_len``, logits for every token. MLA trains in its naive (MHA) form (DeepSeek-V3.2
    paper App. A: MHA mode for training and prefill).

    ISCA 2025 (arXiv 2505.09343) Table 2 at seq 4096: DeepSeek-V2 155, DeepSeek-V3 250
    GFLOP per token.
    """
    return 3.0 * prefill_flops(spec, seq_len, form=form, logits_for_all=True) / seq_len
