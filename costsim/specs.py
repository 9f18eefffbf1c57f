"""Validated, frozen specs: model architectures and hardware profiles (pydantic v2).

Field names follow the HuggingFace ``config.json`` keys where those exist
(``num_attention_heads``, ``kv_lora_rank``, ``n_routed_experts``, ...). Unknown keys are
rejected, so a typo in a YAML file or a ``--set`` path is an error, not a silent default.

Nothing here reads files: ``costsim.registry`` loads YAML and HF configs into these models.
"""

from __future__ import annotations

from typing import Annotated, Any, Callable, ClassVar, Literal, Optional, TypeVar, Union

from pydantic import (BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt, ValidationError, field_validator,
                      model_validator)

from costsim import units
from costsim.errors import CostsimError


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Strict(_Frozen):
    """Model-spec fields take YAML/JSON types as they are: ``hidden_size: true`` or ``"2048"``
    is an error, not 1 or 2048."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# ======================================================================================
# Model spec
# ======================================================================================


class GQAAttention(_Strict):
    """Multi-head (mha), grouped-query (gqa) or multi-query (mqa) attention.

    KV cache per token per layer: 2 * num_key_value_heads * head_dim elements
    (DeepSeek-V2 paper, arXiv 2405.04434, Table 1).
    """

    kind: Literal["mha", "gqa", "mqa"]
    num_attention_heads: PositiveInt
    num_key_value_heads: PositiveInt
    head_dim: PositiveInt  # may differ from hidden_size / num_attention_heads (Qwen3, gpt-oss)
    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm: bool = False  # RMSNorm on q and k (Qwen3, OLMoE, MiniMax-M2, Gemma-3, GLM-4.5)
    # "head": one RMSNorm(head_dim) shared by the heads (Qwen3, Gemma-3, GLM-4.5): 2 * head_dim
    # weights per layer; "projection": RMSNorm over the whole q and k projections (OLMoE,
    # MiniMax-M2 ``qk_norm_type: per_layer``): (num_attention_heads + num_key_value_heads) * head_dim
    qk_norm_scope: Literal["head", "projection"] = "head"
    sinks: bool = False  # one learned attention-sink logit per head (gpt-oss)
    # Qwen3-Next / Qwen3.5 ``attn_output_gate``: q_proj also emits a sigmoid gate per head
    # channel (num_attention_heads * head_dim more outputs), multiplied into the attention output
    output_gate: bool = False

    @model_validator(mode="after")
    def _check_heads(self):
        h, kv = self.num_attention_heads, self.num_key_value_heads
        if self.kind == "mha" and kv != h:
            raise ValueError(f"kind mha needs num_key_value_heads == num_attention_heads ({h}), got {kv}")
        if self.kind == "mqa" and kv != 1:
            raise ValueError(f"kind mqa needs num_key_value_heads == 1, got {kv}")
        if h % kv:
            raise ValueError(f"num_attention_heads ({h}) must be a multiple of num_key_value_heads ({kv})")
        return self


class MLAAttention(_Strict):
    """Multi-head Latent Attention (DeepSeek-V2, arXiv 2405.04434, §2.1, eqs. 9-19).

    KV cache per token per layer: kv_lora_rank (d_c) + qk_rope_head_dim (d_h^R) elements
    (Table 1: (d_c + d_h^R) * l). ``q_lora_rank`` (d'_c) is None when queries are not
    compressed (DeepSeek-V2-Lite).
    """

    kind: Literal["mla"]
    num_attention_heads: PositiveInt
    q_lora_rank: Optional[PositiveInt] = None
    kv_lora_rank: PositiveInt
    qk_rope_head_dim: PositiveInt
    qk_nope_head_dim: PositiveInt
    v_head_dim: PositiveInt
    # DeepSeek Sparse Attention (DeepSeek-V3.2-Exp, DSA): a lightning indexer of
    # ``index_n_heads`` heads of ``index_head_dim`` scores every cached token (ReLU, FP8) and
    # each query attends to its ``index_topk`` best. The indexer caches one key of
    # index_head_dim per token per layer (FP8 + an FP32 scale per 128: 132 B for 128).
    index_n_heads: Optional[PositiveInt] = None
    index_head_dim: Optional[PositiveInt] = None
    index_topk: Optional[PositiveInt] = None

    @model_validator(mode="after")
    def _check_indexer(self):
        given = [self.index_n_heads is not None, self.index_head_dim is not None, self.index_topk is not None]
        if any(given) and not all(given):
            raise ValueError("index_n_heads, index_head_dim and index_topk (DeepSeek Sparse Attention) go together")
        if all(given) and self.q_lora_rank is None:
            raise ValueError("the DSA indexer projects the compressed query: q_lora_rank is required with index_topk")
        return self

    @property
    def sparse(self) -> bool:
        """DeepSeek Sparse Attention (an indexer selects ``index_topk`` keys per query)."""
        return self.index_topk is not None


Attention = Annotated[Union[GQAAttention, MLAAttention], Field(discriminator="kind")]


class DenseFFN(_Strict):
    """A dense FFN: gated (SwiGLU: gate, up, down = 3 matrices) or not (up, down = 2)."""

    kind: Literal["dense"]
    intermediate_size: PositiveInt
    gated: bool = True
    bias: bool = False


class MoEFFN(_Strict):
    """DeepSeekMoE-style FFN: routed experts (top-k) plus always-on shared experts.

    Layer i is MoE when ``i >= first_k_dense_replace and i % moe_layer_freq == 0`` (the HF
    DeepSeek-V2/V3 rule); other layers use a dense FFN of ``dense_intermediate_size``.
    Sources: DeepSeekMoE (arXiv 2401.06066) §3; DeepSeek-V2 §2.2; HF config keys.
    """

    kind: Literal["moe"]
    n_routed_experts: PositiveInt
    num_experts_per_tok: PositiveInt  # routed top-k
    moe_intermediate_size: PositiveInt
    n_shared_experts: NonNegativeInt = 0
    shared_expert_intermediate_size: Optional[PositiveInt] = None  # per shared expert; default moe_intermediate_size
    first_k_dense_replace: NonNegativeInt = 0
    moe_layer_freq: PositiveInt = 1
    dense_intermediate_size: Optional[PositiveInt] = None  # HF `intermediate_size` of the dense layers
    n_group: Optional[PositiveInt] = None  # router groups (device/node-limited routing)
    topk_group: Optional[PositiveInt] = None
    gated: bool = True
    expert_bias: bool = False  # biases inside each expert (gpt-oss)
    router_bias: bool = False
    # DeepSeek-V3 ``gate.e_score_correction_bias``: n_routed_experts per MoE layer, added to the
    # routing scores (aux-loss-free balancing, arXiv 2412.19437 §2.1.2); a checkpoint tensor
    router_correction_bias: bool = False
    # Qwen2-MoE ``shared_expert_gate``: Linear(hidden_size, 1), a sigmoid gate on the shared expert
    shared_expert_gate: bool = False
    dense_bias: bool = False  # biases of the dense-layer FFN (DeepSeek-V2 ``mlp_bias``)
    # biases of the shared-expert MLP, built as one MLP n_shared_experts x shared size wide
    # (DeepSeek-V2 ``mlp_bias``: 2 x n_shared x I + hidden_size)
    shared_expert_bias: bool = False
    # explicit 0-based MoE layer indices, overriding first_k_dense_replace / moe_layer_freq
    # (Llama-4 ``moe_layers``: every ``interleave_moe_layer_step``-th layer, from step - 1)
    moe_layers: Optional[list[NonNegativeInt]] = None

    @model_validator(mode="after")
    def _check(self):
        if self.num_experts_per_tok > self.n_routed_experts:
            raise ValueError(
                f"num_experts_per_tok ({self.num_experts_per_tok}) exceeds n_routed_experts ({self.n_routed_experts})"
            )
        if (self.n_group is None) != (self.topk_group is None):
            raise ValueError("n_group and topk_group must be given together")
        if self.n_group is not None:
            if self.n_routed_experts % self.n_group:
                raise ValueError(f"n_group ({self.n_group}) must divide n_routed_experts ({self.n_routed_experts})")
            if self.topk_group > self.n_group:
                raise ValueError(f"topk_group ({self.topk_group}) exceeds n_group ({self.n_group})")
        return self

    @property
    def shared_size(self) -> int:
        return self.shared_expert_intermediate_size or self.moe_intermediate_size


FFN = Annotated[Union[DenseFFN, MoEFFN], Field(discriminator="kind")]


def moe_layer_rule(i: int, first_k_dense_replace: int, moe_layer_freq: int) -> bool:
    """Layer ``i`` (0-based) is MoE: ``i >= first_k_dense_replace and i % moe_layer_freq == 0``
    (HF DeepseekV2/V3 modeling; the one statement of the rule)."""
    return i >= first_k_dense_replace and i % moe_layer_freq == 0


class LinearAttention(_Strict):
    """Gated DeltaNet linear-attention layers beside full-attention ones (Qwen3-Next, Qwen3.5;
    Yang, Kautz & Hatamizadeh, arXiv 2412.06464; HF Qwen3NextGatedDeltaNet).

    A linear layer caches no keys or values: each sequence keeps a state of
    ``num_value_heads`` x ``key_head_dim`` x ``value_head_dim`` elements in ``state_dtype``
    (HF ``mamba_ssm_dtype``, FP32) plus a causal-conv state of conv_dim x (``conv_kernel_dim`` -
    1) elements in BF16, conv_dim = 2 num_key_heads key_head_dim + num_value_heads
    value_head_dim, whatever the context length.
    """

    kind: Literal["gated_deltanet"] = "gated_deltanet"
    layers: list[NonNegativeInt]  # 0-based indices of the linear-attention layers
    num_key_heads: PositiveInt
    num_value_heads: PositiveInt
    key_head_dim: PositiveInt
    value_head_dim: PositiveInt
    conv_kernel_dim: PositiveInt = 4
    state_dtype: Literal["fp32", "bf16", "fp16"] = "fp32"

    @model_validator(mode="after")
    def _check_heads(self):
        if self.num_value_heads % self.num_key_heads:
            raise ValueError(f"num_value_heads ({self.num_value_heads}) must be a multiple of num_key_heads "
                             f"({self.num_key_heads})")
        return self

    @property
    def conv_dim(self) -> int:
        return 2 * self.num_key_heads * self.key_head_dim + self.num_value_heads * self.value_head_dim


class SlidingWindow(_Strict):
    """Sliding-window attention on some layers: those layers cache at most ``window`` tokens."""

    window: PositiveInt
    layers: list[NonNegativeInt]  # 0-based layer indices that use the window


class ModelSpec(_Strict):
    """A decoder-only transformer, as published (HF config keys where they exist).

    ``source`` names the paper section / config file the values were copied from.
    """

    name: str
    source: str
    vocab_size: PositiveInt
    hidden_size: PositiveInt
    num_hidden_layers: Annotated[int, Field(gt=0, le=100_000)]  # bounded: layer loops stay O(layers)
    attention: Attention
    ffn: FFN
    # layernorm: weight and bias (2 x hidden); layernorm_nobias (DBRX) and rmsnorm: a weight
    norm: Literal["rmsnorm", "layernorm", "layernorm_nobias"] = "rmsnorm"
    # Gemma-2/3 "sandwich" norms: besides the input and post-attention norms, each layer has a
    # pre- and a post-feedforward norm (4 per layer instead of 2; HF Gemma2DecoderLayer)
    sandwich_norm: bool = False
    tie_word_embeddings: bool = False
    num_nextn_predict_layers: NonNegativeInt = 0  # MTP modules (DeepSeek-V3 §2.2)
    sliding_window: Optional[SlidingWindow] = None
    linear_attention: Optional[LinearAttention] = None  # hybrid models: these layers are linear
    max_position_embeddings: Optional[PositiveInt] = None
    # formats of the published checkpoint (HF quantization_config), the default when a query
    # names none: matmul weights, and the routed experts where they differ (gpt-oss: MXFP4
    # experts, BF16 attention). Names of costsim.units.FORMATS.
    weight_dtype: Optional[str] = None
    expert_weight_dtype: Optional[str] = None
    description: str = ""

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        v = v.strip().lower()
        if not v:
            raise ValueError("name must not be empty")
        return v

    @field_validator("weight_dtype", "expert_weight_dtype")
    @classmethod
    def _format_name(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and v not in units.FORMATS:
            raise ValueError(f"unknown number format {v!r}: expected one of {', '.join(units.FORMATS)}")
        return v

    @model_validator(mode="after")
    def _check(self):
        if self.expert_weight_dtype is not None and not isinstance(self.ffn, MoEFFN):
            raise ValueError("expert_weight_dtype is for MoE models (routed experts); this model is dense")
        if isinstance(self.ffn, MoEFFN):
            if self.n_moe_layers == 0:
                raise ValueError(f"ffn: no layer is MoE (first_k_dense_replace={self.ffn.first_k_dense_replace}, "
                                 f"moe_layer_freq={self.ffn.moe_layer_freq}, {self.num_hidden_layers} layers); "
                                 "use kind: dense for a dense model")
            has_dense = any(not self.is_moe_layer(i) for i in range(self.num_hidden_layers))
            if has_dense and self.ffn.dense_intermediate_size is None:
                raise ValueError("ffn.dense_intermediate_size is required when some layers are dense")
        if isinstance(self.ffn, MoEFFN) and self.ffn.moe_layers is not None:
            bad = [i for i in self.ffn.moe_layers if i >= self.num_hidden_layers]
            if bad:
                raise ValueError(f"ffn.moe_layers {bad} out of range 0..{self.num_hidden_layers - 1}")
        if self.linear_attention is not None:
            lin = set(self.linear_attention.layers)
            bad = sorted(i for i in lin if i >= self.num_hidden_layers)
            if bad:
                raise ValueError(f"linear_attention.layers {bad} out of range 0..{self.num_hidden_layers - 1}")
            if self.sliding_window is not None and lin & set(self.sliding_window.layers):
                raise ValueError("a layer cannot be both linear-attention and sliding-window")
        if self.sliding_window is not None:
            bad = [i for i in self.sliding_window.layers if i >= self.num_hidden_layers]
            if bad:
                raise ValueError(f"sliding_window.layers {bad} out of range 0..{self.num_hidden_layers - 1}")
        return self

    def is_moe_layer(self, i: int) -> bool:
        f = self.ffn
        if not isinstance(f, MoEFFN):
            return False
        if f.moe_layers is not None:
            return i in f.moe_layers
        return moe_layer_rule(i, f.first_k_dense_replace, f.moe_layer_freq)

    def is_linear_layer(self, i: int) -> bool:
        """Layer ``i`` is a linear-attention (Gated DeltaNet) layer of a hybrid model."""
        return self.linear_attention is not None and i in self.linear_attention.layers

    @property
    def n_linear_layers(self) -> int:
        return len(set(self.linear_attention.layers)) if self.linear_attention else 0

    @property
    def norms_per_layer(self) -> int:
        """Norms of one decoder layer: 2 (input, post-attention), 4 with ``sandwich_norm``."""
        return 4 if self.sandwich_norm else 2

    @property
    def n_moe_layers(self) -> int:
        return sum(self.is_moe_layer(i) for i in range(self.num_hidden_layers))

    @property
    def n_dense_layers(self) -> int:
        return self.num_hidden_layers - self.n_moe_layers

    @property
    def n_window_layers(self) -> int:
        return len(set(self.sliding_window.layers)) if self.sliding_window else 0


# ======================================================================================
# Hardware profile
# ======================================================================================

# list_price: a vendor's published rental rate card (an on-demand price, with its URL and date)
Provenance = Literal["datasheet", "measured", "calibrated", "derived", "assumed", "unverified", "list_price"]


class _Sourced(_Frozen):
    """A value with its unit parsed to SI and where it came from.

    In YAML: ``{value: "3.35 TB/s", source: "NVIDIA H100 datasheet", provenance: datasheet}``.
    A bare value (``"8TB/s"``, e.g. from ``--hw-set``) is accepted with provenance ``assumed``.
    """

    value: float
    source: str = "what-if (--hw-set)"
    provenance: Provenance = "assumed"
    note: str = ""

    _parser: ClassVar[Callable] = staticmethod(float)

    @model_validator(mode="before")
    @classmethod
    def _wrap(cls, data):
        if not isinstance(data, dict):
            data = {"value": data}
        if "value" in data:
            data = dict(data)
            v = data["value"]
            if v is None or isinstance(v, (bool, list, dict)):  # float(None) is a TypeError pydantic would not catch
                raise ValueError(f"expected a number{' with a unit' if cls._parser is not float else ''}, "
                                 f"got {'null' if v is None else type(v).__name__}")
            data["value"] = cls._parser(v)
        return data

    @field_validator("value")
    @classmethod
    def _nonneg(cls, v: float) -> float:
        if not 0 <= v < float("inf"):  # also rejects NaN
            raise ValueError(f"must be a finite number >= 0, got {v}")
        return v


class _Positive(_Sourced):
    @field_validator("value")
    @classmethod
    def _nonneg(cls, v: float) -> float:  # replaces the >= 0 check: rates and sizes must be > 0
        if not (0 < v < float("inf")):
            raise ValueError(f"must be a finite number > 0, got {v}")
        return v


class FlopRate(_Positive):
    """FLOP/s (dense tensor-core peak unless stated; never a with-sparsity figure)."""

    _parser: ClassVar[Callable] = staticmethod(units.parse_flops_rate)


class Bandwidth(_Positive):
    """Bytes/s. ``direction`` says whether a link figure is per direction or both summed."""

    _parser: ClassVar[Callable] = staticmethod(units.parse_bandwidth)
    direction: Literal["unidirectional", "bidirectional", "n/a"] = "n/a"


class Bytes(_Positive):
    _parser: ClassVar[Callable] = staticmethod(units.parse_bytes)


class Seconds(_Sourced):
    _parser: ClassVar[Callable] = staticmethod(units.parse_time)


class Price(_Sourced):
    """A rental price in US dollars per device-hour (``units.parse_price``: ``2 USD/h``, ``$2/h``);
    >= 0. The one money input of costsim (``costsim.simulator.cost``)."""

    _parser: ClassVar[Callable] = staticmethod(units.parse_price)


class Fraction(_Sourced):
    """An efficiency factor in (0, 1]: achievable / peak."""

    @field_validator("value")
    @classmethod
    def _unit_interval(cls, v: float) -> float:
        if not 0 < v <= 1:
            raise ValueError(f"efficiency must be in (0, 1], got {v}")
        return v


class Share(_Sourced):
    """A share in [0, 1] (0 allowed: a term that does not apply)."""

    @field_validator("value")
    @classmethod
    def _closed_unit_interval(cls, v: float) -> float:
        if not 0 <= v <= 1:
            raise ValueError(f"must be a share from 0 to 1, got {v}")
        return v


class PeakFlops(_Frozen):
    """Dense peak FLOP/s per dtype. Missing dtypes are unsupported on the device."""

    fp32: Optional[FlopRate] = None
    tf32: Optional[FlopRate] = None
    bf16: Optional[FlopRate] = None
    fp16: Optional[FlopRate] = None
    fp8: Optional[FlopRate] = None
    int8: Optional[FlopRate] = None
    fp4: Optional[FlopRate] = None


class Count(_Positive):
    """A positive number without a unit (rows, tiles, compute units)."""


class KernelFamily(_Frozen):
    """The time model of one operator family (``costsim.simulator.efficiency``). Every field is
    optional: an absent one falls back to the profile-wide factor (``compute``, ``memory``,
    ``kernel_overhead``) or, for shape terms, to no effect.

    - ``compute`` / ``memory``: achievable fraction of the dense peak / of the bandwidth.
    - ``overhead``: seconds per launch of the family's kernel.
    - ``per_group_overhead``: grouped GEMMs, seconds per busy expert (one GEMM launch each).
    - ``per_slot_overhead``: grouped GEMMs, seconds per expert slot the rank holds, busy or not
      (a grouped kernel sets up every local group: TensorRT-LLM's fp8_block MoE at one token
      takes 4x longer with 512 local experts than with 1 in aiconfigurator's H200 tables).
    - ``per_element``: attention, seconds per (head, query, key) score for scale, mask and
      softmax when a kernel does not fuse them (0 for FlashAttention-style kernels).
    - ``per_row``: attention, seconds per (sequence, query, head) row: the per-row work of an
      attention kernel (RoPE, KV append, softmax state, output rescale) and its scheduling;
      per (sequence, KV head) for GQA decode, whose kernels handle a KV head's queries together.
    - ``m_half``: GEMM rows (per group) at which compute efficiency reaches half its maximum:
      efficiency x M / (M + m_half); small-M GEMMs use the tensor units poorly.
    - ``gemv_rows``: GEMMs of at most this many rows run as matrix-vector products (BLAS
      gemv-like kernels that stream the weights once): no ``m_half`` penalty. Default 1. On
      this project's Xeon development machine MKL sgemm takes 1-3 rows at the one-row time,
      4 rows at twice it (``costsim calibrate`` picks the value from the train split).
    - ``group_reread``: GQA/MQA decode, the share of the KV cache each further query head of a
      group reads again: KV bytes x (1 + group_reread x (group - 1)). 0 for kernels that load a
      KV head once for its whole group (FlashDecoding, XQA); CPU ``scaled_dot_product_attention``
      with ``enable_gqa`` walks the query heads and re-reads (partly from cache).
    - ``tile_m``, ``tile_n``, ``units``: output tile and compute units (SMs) for tile and wave
      quantisation: work is padded to whole tiles and whole waves of ``units`` tiles.
    - ``n_half``: GEMMs, the output columns N (grouped GEMMs: the narrower weight dimension
      min(N, K) of an expert GEMM) at which compute efficiency reaches half: x n / (n + n_half) (an expert split over moe_tp
      ranks has inter / moe_tp columns in gate/up and rows in down; narrow GEMMs use the
      tensor units poorly).
    - ``group_limit``, ``group_compute``: decode attention whose query heads per KV head exceed
      ``group_limit`` runs at ``group_compute`` of the peak instead of ``compute`` (TensorRT-LLM's
      grouped decode kernel handles groups up to 32; larger ones fall back to a kernel that
      runs 4-16x slower per FLOP in aiconfigurator's H200/H100/B200 tables).
    - ``split_tokens``, ``split_memory``: decode attention split over the context (FlashDecoding,
      TensorRT-LLM's multi-block mode, FlashMLA's splits): each (sequence, KV head) row's cache is
      cut into chunks of at most ``split_tokens`` tokens, one thread block each, and the step
      waits for one chunk streamed by one block at ``split_memory`` of the bandwidth:
      + min(kv_len, split_tokens) x row bytes per token / (bandwidth x split_memory), on top of
      the whole cache at ``memory``. The pipeline's fill: why a single short sequence takes
      5-10 us more than its bytes (aiconfigurator's H200 tables: one 1k-token row 16 us, one
      16k-token row 19 us, 256 16k rows at 4.5 TB/s).
    - ``per_row_query``: grouped decode attention (1 < group <= group_limit), seconds per query
      element of a KV row: + per_row_query x rows x group x head_dim. A grouped kernel's block
      loads and reduces its group's queries (aiconfigurator's H200 tables, context <= 7, 2,048
      sequences, BF16: 32 / 37 / 52 ns per row at head_dim 64 / 128 / 256 and group 4; 36 / 42
      / 57 ns at group 2 / 16 / 32, head_dim 128).
    - ``kv8_memory``: ``attention_decode`` only, the fraction of the bandwidth an ungrouped
      (MHA: one query head per KV head) decode over an 8-bit cache streams at, in place of
      ``memory``: the kernel dequantises each element (the H200 tables: an fp8 MHA cache
      streams 1.6 TB/s at 16k+ tokens, a BF16 one 3.1 TB/s; both about 1.6 T elements/s).
    - ``per_output``: GEMMs and grouped GEMMs, seconds per output element of the epilogue
      (scale, convert, store), added to the roofline: + per_output x M x N. A short K loop does
      not hide it (aiconfigurator's H200 tables: an fp8 block-scale GEMM at K = 128, M = 16,384,
      N = 65,536 takes 1,372 us, 3.1x its BF16 output's write time at the datasheet bandwidth).
    - ``per_row_tile``, ``kv_tile``: decode attention, seconds per (row, tile of ``kv_tile``
      cached tokens, default 256) of a row's loop over its cache: + per_row_tile x rows x
      ceil(kv_len / kv_tile).
    - ``overlap_p``: GEMMs, compute and memory as (c^p + m^p)^(1/p) instead of their max; decode
      attention, the row terms R (per_row, per_row_query, per_row_tile) and the roofline T as
      (T^p + R^p)^(1/p) instead of T + R. 1 to 64; absent: max (GEMM), sum (decode).
    """

    compute: Optional[Fraction] = None
    memory: Optional[Fraction] = None
    overhead: Optional[Seconds] = None
    per_group_overhead: Optional[Seconds] = None
    per_slot_overhead: Optional[Seconds] = None
    per_element: Optional[Seconds] = None
    per_row: Optional[Seconds] = None
    per_row_group: Optional[Seconds] = None
    per_tile: Optional[Seconds] = None
    per_k: Optional[Seconds] = None
    per_output: Optional[Seconds] = None
    per_row_tile: Optional[Seconds] = None
    overlap_p: Optional[Count] = None
    k_split: Optional[Count] = None
    q_tile: Optional[Count] = None
    kv_tile: Optional[Count] = None
    m_half: Optional[Count] = None
    tile_m: Optional[Count] = None
    tile_n: Optional[Count] = None
    units: Optional[Count] = None
    group_limit: Optional[Count] = None
    group_compute: Optional[Fraction] = None
    n_half: Optional[Count] = None
    gemv_rows: Optional[Count] = None
    group_reread: Optional[Share] = None
    split_tokens: Optional[Count] = None
    split_memory: Optional[Fraction] = None
    per_row_query: Optional[Seconds] = None
    kv8_memory: Optional[Fraction] = None

    @model_validator(mode="after")
    def _tiles_together(self):
        given = [k for k in ("tile_m", "tile_n", "units") if getattr(self, k) is not None]
        if given and len(given) != 3:
            raise ValueError(f"tile_m, tile_n and units go together (got only {', '.join(given)})")
        for k in given:
            v = getattr(self, k).value
            if v != int(v) or v > 2**20:
                raise ValueError(f"{k} must be a whole number of rows/columns/units (1 to 2^20), got {v}")
        if self.split_tokens is not None and not 1 <= self.split_tokens.value <= 2**40:
            raise ValueError(f"split_tokens must be a number of tokens per chunk, 1 to 2^40, got {self.split_tokens.value}")
        if self.m_half is not None and self.m_half.value > 2**20:
            raise ValueError(f"m_half must be at most 2^20 rows, got {self.m_half.value}")
        if self.n_half is not None and self.n_half.value > 2**20:
            raise ValueError(f"n_half must be at most 2^20 columns, got {self.n_half.value}")
        if self.gemv_rows is not None and not (1 <= self.gemv_rows.value <= 2**20
                                               and self.gemv_rows.value == int(self.gemv_rows.value)):
            raise ValueError(f"gemv_rows must be a whole number of rows, 1 to 2^20, got {self.gemv_rows.value}")
        if self.q_tile is not None and not (1 <= self.q_tile.value <= 2**20 and self.q_tile.value == int(self.q_tile.value)):
            raise ValueError(f"q_tile must be a whole number of query tokens, 1 to 2^20, got {self.q_tile.value}")
        if self.kv_tile is not None and not (1 <= self.kv_tile.value <= 2**20
                                             and self.kv_tile.value == int(self.kv_tile.value)):
            raise ValueError(f"kv_tile must be a whole number of cached tokens, 1 to 2^20, got {self.kv_tile.value}")
        if self.overlap_p is not None and not 1 <= self.overlap_p.value <= 64:
            raise ValueError(f"overlap_p must be from 1 (no overlap) to 64 (the max), got {self.overlap_p.value}")
        if self.k_split is not None and not 1 <= self.k_split.value <= 2**40:
            raise ValueError(f"k_split must be a reduction length, 1 to 2^40, got {self.k_split.value}")
        for k in ("overhead", "per_group_overhead", "per_slot_overhead", "per_element", "per_row", "per_row_group",
                  "per_tile", "per_k", "per_row_query", "per_output", "per_row_tile"):
            q = getattr(self, k)
            if q is not None and q.value > 1.0:
                raise ValueError(f"{k} must be at most 1 s per launch/element, got {q.value} s")
        for k in ("compute", "memory"):
            q = getattr(self, k)
            if q is not None and q.value < 1e-6:
                raise ValueError(f"{k} efficiency must be at least 1e-6, got {q.value}")
        return self


# the parameters each family's formula reads (costsim.simulator.efficiency); others are refused
_GROUPED_FIELDS = {"compute", "memory", "overhead", "per_group_overhead", "per_slot_overhead", "m_half", "n_half",
                   "gemv_rows", "per_output"}
_DECODE_FIELDS = {"compute", "memory", "overhead", "per_element", "per_row", "per_row_group", "group_limit",
                  "group_compute", "group_reread", "split_tokens", "split_memory", "per_row_query", "kv8_memory",
                  "overlap_p", "per_row_tile", "kv_tile"}
_GEMM_FIELDS = {"compute", "memory", "overhead", "m_half", "n_half", "gemv_rows", "tile_m", "tile_n", "units", "per_k",
                "k_split", "overlap_p", "per_output"}
_PREFILL_FIELDS = {"compute", "memory", "overhead", "per_element", "per_row", "per_tile", "q_tile"}
_FAMILY_FIELDS = {
    "gemm": _GEMM_FIELDS,
    "gemm_fp8": _GEMM_FIELDS,
    "gemm_fp8_block": _GEMM_FIELDS,
    "grouped_gemm": _GROUPED_FIELDS,
    "grouped_gemm_fp8": _GROUPED_FIELDS,
    "grouped_gemm_fp8_block": _GROUPED_FIELDS,
    "grouped_gemm_mxfp4": _GROUPED_FIELDS,
    "attention_decode": _DECODE_FIELDS,
    "attention_decode_fp8": _DECODE_FIELDS,
    "attention_prefill": _PREFILL_FIELDS,
    "attention_prefill_fp8": _PREFILL_FIELDS,
    "attention_mla_decode": {"compute", "memory", "overhead", "per_element", "per_row", "split_tokens",
                             "split_memory"},
    "attention_mla_prefill": _PREFILL_FIELDS,
    "attention_mla_prefill_fp8": _PREFILL_FIELDS,
    "elementwise": {"memory", "overhead"},
}


class Families(_Frozen):
    """Per-family time models; ``comm`` is the link factors and latencies of the profile."""

    gemm: KernelFamily = Field(default_factory=KernelFamily)
    # GEMMs on the fp8 tensor cores (their activation-quantisation kernels included); every
    # absent field falls back to ``gemm``'s, then to the profile-wide factor
    gemm_fp8: KernelFamily = Field(default_factory=KernelFamily)
    gemm_fp8_block: KernelFamily = Field(default_factory=KernelFamily)  # absent fields: gemm_fp8's
    grouped_gemm: KernelFamily = Field(default_factory=KernelFamily)
    # expert GEMMs on the fp8 tensor cores (per-tensor / 128x128 block scales); absent fields:
    # grouped_gemm_fp8's, then grouped_gemm's
    grouped_gemm_fp8: KernelFamily = Field(default_factory=KernelFamily)
    grouped_gemm_fp8_block: KernelFamily = Field(default_factory=KernelFamily)
    grouped_gemm_mxfp4: KernelFamily = Field(default_factory=KernelFamily)  # W4A16 experts; absent: grouped_gemm's
    attention_decode: KernelFamily = Field(default_factory=KernelFamily)
    # GQA/MHA decode over an 8-bit KV cache (its own kernels: TensorRT-LLM's FP8 XQA path);
    # absent fields: attention_decode's
    attention_decode_fp8: KernelFamily = Field(default_factory=KernelFamily)
    attention_prefill: KernelFamily = Field(default_factory=KernelFamily)
    attention_prefill_fp8: KernelFamily = Field(default_factory=KernelFamily)  # 8-bit KV; absent: attention_prefill's
    # MLA attention cores (FlashMLA-style decode over the latent; prefill over decompressed
    # keys and values); absent fields: attention_decode's / attention_prefill's
    attention_mla_decode: KernelFamily = Field(default_factory=KernelFamily)
    attention_mla_prefill: KernelFamily = Field(default_factory=KernelFamily)
    attention_mla_prefill_fp8: KernelFamily = Field(default_factory=KernelFamily)  # absent: attention_mla_prefill's
    elementwise: KernelFamily = Field(default_factory=KernelFamily)

    @model_validator(mode="after")
    def _fields_of_each_family(self):
        for fam, allowed in _FAMILY_FIELDS.items():
            extra = [k for k, v in getattr(self, fam) if v is not None and k not in allowed]
            if extra:
                raise ValueError(f"{fam}: {', '.join(extra)} is not a parameter of this family "
                                 f"(it takes {', '.join(sorted(allowed))})")
        return self


class CollectiveModel(_Frozen):
    """The intra-node time model of one NCCL collective, as NCCL's own tuner builds it
    (``src/graph/tuning.cc``: per algorithm and protocol a latency and a bandwidth, the fastest
    one chosen per message size). Two protocols:

    - ``simple``: full link bandwidth (``efficiency`` of the intra-node peak), higher
      per-step ``latency``: large messages.
    - ``ll`` (NCCL's low-latency protocol LL: 8-byte stores of 4 data bytes and a 4-byte
      flag, so half the bandwidth), low per-step ``ll_latency`` at ``ll_efficiency`` (default:
      half of ``efficiency``): small messages. Present when ``ll_latency`` is given.

    t(S, n) = min over protocols of fraction(n) S / (B x efficiency) + steps(n) x latency +
    ``overhead``. Absent fields fall back to the profile-wide ``intra_node`` efficiency,
    ``intra_node_latency`` and ``comm_overhead`` (one ring protocol: the datasheet model).
    """

    efficiency: Optional[Fraction] = None
    latency: Optional[Seconds] = None
    overhead: Optional[Seconds] = None
    ll_efficiency: Optional[Fraction] = None
    ll_latency: Optional[Seconds] = None
    ll_threshold: Optional[Count] = None

    @model_validator(mode="after")
    def _ll_needs_latency(self):
        if self.ll_efficiency is not None and self.ll_latency is None:
            raise ValueError("ll_efficiency needs ll_latency (the low-latency protocol's per-step latency)")
        if self.ll_threshold is not None and not 1 <= self.ll_threshold.value <= 2**40:
            raise ValueError(f"ll_threshold must be bytes per peer, 1 to 2^40, got {self.ll_threshold.value}")
        return self


class Collectives(_Frozen):
    """Per-collective intra-node models (``CollectiveModel``), fitted on measured NCCL tables."""

    all_reduce: CollectiveModel = Field(default_factory=CollectiveModel)
    all_gather: CollectiveModel = Field(default_factory=CollectiveModel)
    reduce_scatter: CollectiveModel = Field(default_factory=CollectiveModel)
    all_to_all: CollectiveModel = Field(default_factory=CollectiveModel)


class ResidualBand(_Frozen):
    """The spread of measured / predicted time of one kernel family on held-out measurements:
    its 10th and 90th percentiles (a time t is expected within [p10 t, p90 t] for 80% of
    kernels), the number of held-out rows and where they came from."""

    p10: Annotated[float, Field(gt=0, lt=1e3)]
    p90: Annotated[float, Field(gt=0, lt=1e3)]
    rows: PositiveInt
    source: str

    @model_validator(mode="after")
    def _ordered(self):
        if self.p10 > self.p90:
            raise ValueError(f"p10 ({self.p10}) exceeds p90 ({self.p90})")
        return self


class Efficiency(_Frozen):
    """Achievable fraction of each peak, with sources (kernel benchmarks or calibration)."""

    compute: Fraction  # GEMM FLOP/s over peak
    memory: Fraction  # streaming bandwidth over peak
    intra_node: Fraction  # achieved over peak link bandwidth (NVLink / xGMI)
    inter_node: Fraction  # achieved over NIC line rate
    kernel_overhead: Seconds = Field(default_factory=lambda: Seconds(value=0.0, provenance="assumed"))
    # seconds per collective (launch and protocol set-up), once per communication operator on
    # top of its per-step latencies; 0 unless measured (costsim calibrate --silicon)
    comm_overhead: Seconds = Field(default_factory=lambda: Seconds(
        value=0.0, provenance="assumed", source="default: no per-collective overhead charged (not measured)"))
    families: Families = Field(default_factory=Families)
    collectives: Collectives = Field(default_factory=Collectives)


class HardwareProfile(_Frozen):
    """One accelerator (or CPU) and the links around it.

    Link bandwidths are stored per device and per direction (``unidirectional``) for the
    engine; the YAML says which direction its figure is and the loader checks it.
    """

    name: str
    full_name: str = ""
    source: str
    kind: Literal["gpu", "cpu", "tpu"] = "gpu"
    peak_flops: PeakFlops
    memory_capacity: Bytes
    memory_bandwidth: Bandwidth
    intra_node_bandwidth: Optional[Bandwidth] = None  # per GPU, one direction
    inter_node_bandwidth: Optional[Bandwidth] = None  # per GPU, one direction (NIC)
    intra_node_latency: Seconds = Field(default_factory=lambda: Seconds(value=0.0))
    inter_node_latency: Seconds = Field(default_factory=lambda: Seconds(value=0.0))
    devices_per_node: PositiveInt = 8
    efficiency: Efficiency
    # rental price per device-hour (USD), with its source and date; None: no price known
    # (costs are then not computed; give --price or --hw-set price_per_device_hour=2USD/h)
    price_per_device_hour: Optional[Price] = None
    # held-out residual spread per kernel family (``costsim calibrate --silicon``); empty when
    # the profile was never compared with measurements (then its times are uncalibrated)
    residuals: dict[str, ResidualBand] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        return v.strip().lower()

    @model_validator(mode="after")
    def _check(self):
        for field in ("intra_node_bandwidth", "inter_node_bandwidth"):
            bw = getattr(self, field)
            if bw is not None and bw.direction != "unidirectional":
                raise ValueError(
                    f"{field}.direction must be 'unidirectional' (per direction, per device); "
                    f"halve a bidirectional figure and say so in its note"
                )
        return self

    def peak(self, dtype: str) -> float:
        """Dense peak FLOP/s for a compute dtype. Raises CostsimError if the profile lacks it."""
        if dtype not in PeakFlops.model_fields:
            raise CostsimError(f"unknown compute dtype {dtype!r}: expected one of {', '.join(PeakFlops.model_fields)}")
        rate = getattr(self.peak_flops, dtype, None)
        if rate is None:
            # fp16 and bf16 share tensor-core rates on every shipped device
            alt = {"fp16": "bf16", "bf16": "fp16"}.get(dtype)
            rate = getattr(self.peak_flops, alt, None) if alt else None
        if rate is None:
            have = [k for k, v in self.peak_flops if v is not None]
            raise CostsimError(f"hardware {self.name}: no peak_flops.{dtype} (has {', '.join(have)})")
        return rate.value


# ======================================================================================
# Validation: dict -> spec, with one-line errors
# ======================================================================================

T = TypeVar("T", bound=BaseModel)


def format_validation_error(where: str, err: ValidationError) -> str:
    """One line: ``WHERE: field.path: message`` for the first error (+ count of others)."""
    errs = err.errors()
    e = errs[0]
    tags = {"mha", "gqa", "mqa", "mla", "dense", "moe"}  # discriminator tags pydantic puts in the path
    loc = ".".join(str(p) for p in e["loc"] if str(p) not in tags and not str(p).startswith("function-"))
    msg = e["msg"].replace("\n", " ")
    if e["type"] == "missing":
        msg = "missing required field"
    elif e["type"] == "extra_forbidden":
        msg = "unknown field (not part of the schema)"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    more = f" (and {len(errs) - 1} more error{'s' * (len(errs) > 2)})" if len(errs) > 1 else ""
    return f"{where}: {loc or '<top level>'}: {msg}{more}"


def validate(cls: type[T], data: Any, where: str) -> T:
    """Build ``cls`` from ``data`` or raise a one-line CostsimError naming ``where``."""
    if not isinstance(data, dict):
        raise CostsimError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise CostsimError(format_validation_error(where, err)) from None
