"""The operator contract shared by every part of the engine: what an operator is, what kind of
work it does, which layer type it belongs to, and which link a collective runs on.

Kept in its own module so ``operators`` (compute) and ``parallel`` (communication) both build
operators without importing each other.

Units, per operator occurrence, on ONE device (the busiest, for MoE):
  ``flops``         FLOPs, 2 per multiply-add; matmuls and attention only (norms and
                    activations count 0, as ``torch.utils.flop_counter.FlopCounterMode`` does)
  ``bytes_read``    bytes read from device memory (weights + activations + KV cache)
  ``bytes_written`` bytes written to device memory (activations + KV cache)
  ``comm_bytes``    bytes each device sends (communication operators only)
  ``count``         occurrences per step on the device (the layers of that type)
Any of the numeric fields may be a numpy array (a step broadcast over batch or context).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from costsim.units import FORMATS

# fp8 weight formats with one scale per 128 x 128 block (``fp8-block``, DeepSeek-V3's checkpoint
# ``fp8-b128``): their GEMMs are the block-scaled families
BLOCK_FP8 = frozenset(n for n, f in FORMATS.items() if f.compute == "fp8" and f.group_size == 128 * 128)


def decoding(shape: dict):
    """Per element of an attention operator's ``shape``: a decode step, one query per sequence
    over a cache. A one-token step on an empty cache (kv_len = q_len = 1) is a prompt's first
    pass, the prefill (context) kernel; without ``kv_len`` the query length alone decides."""
    q = np.asarray(shape.get("q_len", 1), dtype=float)
    if "kv_len" not in shape:
        return q <= 1
    return (q <= 1) & (np.asarray(shape["kv_len"], dtype=float) > q)


def attention_families(shape: dict) -> tuple:
    """(decode family, prefill family) of an attention core with ``shape``: MLA cores the
    ``attention_mla_*`` pair, others ``attention_decode`` / ``attention_prefill``. Over an 8-bit
    KV cache (``kv8``; TensorRT-LLM's FP8 XQA decode and FP8 context attention, their own
    kernels in the silicon tables) a grouped GQA decode (group > 1: MHA and fallback groups time
    as BF16) takes ``attention_decode_fp8``, and every prefill its ``_fp8`` prefill family."""
    kv8 = bool(shape.get("kv8"))
    if shape.get("mla"):
        return Family.ATTENTION_MLA_DECODE, (Family.ATTENTION_MLA_PREFILL_FP8 if kv8 else Family.ATTENTION_MLA_PREFILL)
    grouped = bool(np.all(np.asarray(shape.get("group", 1.0), dtype=float) > 1))
    return (Family.ATTENTION_DECODE_FP8 if kv8 and grouped else Family.ATTENTION_DECODE,
            Family.ATTENTION_PREFILL_FP8 if kv8 else Family.ATTENTION_PREFILL)


class OpKind(str, Enum):
    """What kind of work an operator does; decides how it is timed."""

    GEMM = "gemm"
    GROUPED_GEMM = "grouped_gemm"  # routed experts: one GEMM per busy expert
    ATTENTION = "attention"  # the attention core (scores and values)
    ELEMENTWISE = "elementwise"  # norms, activations, embedding lookup: bytes only
    COMM = "comm"  # a collective or a send between devices

    def __str__(self) -> str:
        return self.value


class Family(str, Enum):
    """The time model an operator is costed with (``costsim.simulator.efficiency``); each has
    its parameters in the profile's ``efficiency.families``."""

    GEMM = "gemm"
    GEMM_FP8 = "gemm_fp8"  # GEMMs on the fp8 tensor cores; falls back to gemm's parameters
    GEMM_FP8_BLOCK = "gemm_fp8_block"  # fp8 with 128x128 weight-block scales; falls back to gemm_fp8
    GROUPED_GEMM = "grouped_gemm"
    GROUPED_GEMM_FP8 = "grouped_gemm_fp8"  # expert GEMMs on the fp8 tensor cores; falls back to grouped_gemm
    GROUPED_GEMM_FP8_BLOCK = "grouped_gemm_fp8_block"  # 128x128 block-scaled; falls back to grouped_gemm_fp8
    GROUPED_GEMM_MXFP4 = "grouped_gemm_mxfp4"  # MXFP4 experts on BF16 compute (W4A16); falls back to grouped_gemm
    ATTENTION_DECODE = "attention_decode"  # one query per sequence
    ATTENTION_DECODE_FP8 = "attention_decode_fp8"  # over an 8-bit KV cache; falls back to attention_decode
    ATTENTION_PREFILL = "attention_prefill"  # more, or a first token on an empty cache (``decoding``)
    ATTENTION_PREFILL_FP8 = "attention_prefill_fp8"  # over an 8-bit KV cache; falls back to attention_prefill
    ATTENTION_MLA_DECODE = "attention_mla_decode"  # MLA cores; fall back to attention_decode / _prefill
    ATTENTION_MLA_PREFILL = "attention_mla_prefill"
    ATTENTION_MLA_PREFILL_FP8 = "attention_mla_prefill_fp8"  # over an 8-bit cache; falls back to attention_mla_prefill
    ELEMENTWISE = "elementwise"
    COMM = "comm"

    def __str__(self) -> str:
        return self.value


class OpGroup(str, Enum):
    """Which part of the model an operator belongs to (for breakdowns)."""

    EMBEDDING = "embedding"
    ATTENTION = "attention"
    FFN = "ffn"  # dense FFN
    MOE = "moe"  # router, shared and routed experts
    LM_HEAD = "lm_head"
    COMM = "comm"

    def __str__(self) -> str:
        return self.value


class LayerType(str, Enum):
    """The layer type an operator is counted in: ``count`` is the number of such layers on the
    device, or 1 for ``ONCE`` (embedding, LM head, PP send: once per step)."""

    DENSE = "dense"
    MOE = "moe"
    ONCE = "once"

    def __str__(self) -> str:
        return self.value


class LinkKind(str, Enum):
    """How a communication operator uses the network.

    - ``GROUP``: a collective inside a group of ``Link.span`` devices (TP all-reduce, expert-TP
      gather/scatter): intra-node when the group fits in a node, else the NIC.
    - ``ALL_TO_ALL``: EP dispatch/combine over the ``Link.span`` devices of a pipeline stage;
      each token goes to the remote ranks (or, across nodes, remote nodes) holding its experts.
    - ``STAGE``: a send to the next pipeline stage of ``Link.span`` devices: over the NIC when
      a stage fills at least a node, else inside the node.
    """

    GROUP = "group"
    ALL_TO_ALL = "all_to_all"
    STAGE = "stage"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Link:
    """The network a communication operator runs on: its kind and how many devices it spans."""

    kind: LinkKind
    span: int  # devices in the group / the pipeline stage

    def crosses_nodes(self, devices_per_node: int) -> bool:
        """True when this collective runs over the inter-node NIC (see ``LinkKind``)."""
        if self.kind is LinkKind.STAGE:
            return self.span >= devices_per_node
        return self.span > devices_per_node


@dataclass(frozen=True)
class Operator:
    """One kernel (or one collective) of a step, per device; units in the module docstring."""

    name: str
    kind: OpKind
    group: OpGroup
    layer: LayerType
    count: int
    flops: Any = 0.0
    bytes_read: Any = 0.0
    bytes_written: Any = 0.0
    dtype: str = "bf16"  # peak_flops key of the compute ("" = no compute)
    shape: dict = field(default_factory=dict)
    comm_bytes: Any = 0.0  # bytes each device sends (comm only)
    link: Link | None = None  # comm only
    hops: Any = 0  # latency terms per occurrence (comm only)

    @property
    def family(self) -> Family:
        """The family whose time model costs this operator (attention: decode when every
        sequence adds one query over a cache (``decoding``), else prefill; an array of query lengths is split per element
        by ``efficiency``; the pair is ``attention_families``'s; a GEMM on the fp8 tensor
        cores: ``gemm_fp8``, or ``gemm_fp8_block`` with block-scaled weights; grouped expert
        GEMMs likewise ``grouped_gemm_fp8`` / ``grouped_gemm_fp8_block``, MXFP4 experts
        ``grouped_gemm_mxfp4``)."""
        if self.kind is OpKind.ATTENTION:
            dec, pre = attention_families(self.shape)
            return dec if bool(np.all(decoding(self.shape))) else pre
        if self.kind is OpKind.GEMM and self.dtype == "fp8":
            return Family.GEMM_FP8_BLOCK if self.shape.get("format") in BLOCK_FP8 else Family.GEMM_FP8
        if self.kind is OpKind.GROUPED_GEMM and self.dtype == "fp8":
            return Family.GROUPED_GEMM_FP8_BLOCK if self.shape.get("format") in BLOCK_FP8 else Family.GROUPED_GEMM_FP8
        if self.kind is OpKind.GROUPED_GEMM and self.shape.get("format") == "mxfp4":
            return Family.GROUPED_GEMM_MXFP4
        return {OpKind.GEMM: Family.GEMM, OpKind.GROUPED_GEMM: Family.GROUPED_GEMM,
                OpKind.ELEMENTWISE: Family.ELEMENTWISE, OpKind.COMM: Family.COMM}[self.kind]

    @property
    def bytes_moved(self):
        """Bytes read + written, per occurrence."""
        return self.bytes_read + self.bytes_written

    @property
    def intensity(self):
        """Arithmetic intensity, FLOPs per byte moved to/from device memory (inf with no bytes)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(np.asarray(self.bytes_moved) > 0, np.asarray(self.flops) / np.asarray(self.bytes_moved), np.inf)


@dataclass(frozen=True)
class StepShape:
    """A step, per replica: ``batch`` sequences x ``new_tokens`` each, after ``context`` cached
    tokens. Prefill is (batch, prompt, 0), decode (batch, 1, L); fields may be numpy arrays.

    ``logit_tokens``: tokens per sequence that need logits (1 when serving; all
    ``new_tokens`` for training and for the per-token FLOP convention).
    """

    batch: Any
    new_tokens: Any
    context: Any
    logit_tokens: Any = 1
