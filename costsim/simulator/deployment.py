"""How a model is deployed: number formats and the parallel layout.

Layout conventions (per pipeline stage, ``devices / pp`` devices):
- Attention and dense FFN: ``dp`` data-parallel groups of ``tp`` tensor-parallel ranks
  (``dp = devices / (pp * tp)``). With tp=1 and dp>1 this is DeepSeek's DP-attention.
- MoE experts: spread over ``ep`` expert-parallel ranks; each expert is further split
  ``moe_tp = devices / (pp * ep)`` ways. Shared experts are replicated per attention DP
  group and split by ``tp`` like the dense FFN.
Infeasible layouts raise CostsimError when the Deployment is checked against a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from costsim.errors import CostsimError
from costsim.specs import GQAAttention, MLAAttention, MoEFFN, ModelSpec
from costsim.units import FORMATS, NumberFormat


@dataclass(frozen=True)
class Deployment:
    """Formats and parallelism of one serving (or training) replica.

    - ``weight_format``: matmul weights (``fp8`` -> FP8 GEMMs on the fp8 peak). Embedding,
      LM head, norms and router stay in ``high_precision`` (BF16), as DeepSeek's FP8
      checkpoints keep them (DeepSeek-V3 tech report §3.3).
    - ``kv_format``: KV cache storage (see ``costsim.units.FORMATS``).
    - ``act_bytes``: activations and communication payloads (2 = BF16).
    - ``mla_form``: "absorbed" (W_UK into q, W_UV into o; attend over the latent),
      "naive" (decompress K and V from the cached latent every step) or "auto" (the
      cheaper by roofline time, per phase).
    - ``imbalance``: busiest-rank MoE load over the mean (1.0 = perfectly balanced); scales
      the busiest expert rank's compute and all-to-all bytes.
    - ``dispatch_bytes`` / ``combine_bytes``: bytes per hidden element sent in the EP
      dispatch / combine (DeepSeek: FP8 dispatch = 1, BF16 combine = 2; Day-6 overview).
    - ``overlap_comm``: communication overlapped with compute (time = max, not sum).
    - ``gpu_memory_utilization``: fraction of device memory usable for weights + KV +
      workspace (vLLM's default 0.9).
    """

    devices: int = 1
    tp: int = 1
    ep: int = 1
    pp: int = 1
    weight_format: NumberFormat = field(default_factory=lambda: FORMATS["bf16"])
    kv_format: NumberFormat = field(default_factory=lambda: FORMATS["bf16"])
    high_precision: NumberFormat = field(default_factory=lambda: FORMATS["bf16"])
    act_bytes: float = 2.0
    mla_form: Literal["absorbed", "naive", "auto"] = "absorbed"
    block_size: int | None = None
    imbalance: float = 1.0
    dispatch_bytes: float = 2.0
    combine_bytes: float = 2.0
    overlap_comm: bool = False
    gpu_memory_utilization: float = 0.9

    @property
    def dp(self) -> int:
        return self.devices // (self.pp * self.tp)

    @property
    def moe_tp(self) -> int:
        return self.devices // (self.pp * self.ep)

    def seqs_per_rank(self, batch):
        """Sequences on the busiest attention DP rank: ceil(batch / dp) (batch may be an array)."""
        import numpy as np

        return np.ceil(np.asarray(batch, dtype=float) / self.dp - 1e-9)

    def with_(self, **kw) -> "Deployment":
        return replace(self, **kw)

    def check(self, spec: ModelSpec) -> "Deployment":
        """Raise CostsimError naming the parameter if this layout cannot run ``spec``."""
        for k in ("devices", "tp", "ep", "pp"):
            if getattr(self, k) < 1:
                raise CostsimError(f"--{k} must be >= 1, got {getattr(self, k)}")
        if self.devices % (self.tp * self.pp):
            raise CostsimError(f"--devices {self.devices} is not a multiple of tp*pp = {self.tp * self.pp}")
        if self.devices % (self.ep * self.pp):
            raise CostsimError(f"--devices {self.devices} is not a multiple of ep*pp = {self.ep * self.pp}")
        if self.pp > spec.num_hidden_layers:
            raise CostsimError(f"--pp {self.pp} exceeds the {spec.num_hidden_layers} layers of {spec.name}")
        a = spec.attention
        heads = a.num_attention_heads
        if heads % self.tp:
            raise CostsimError(f"--tp {self.tp} does not divide num_attention_heads={heads} of {spec.name}")
        if isinstance(a, GQAAttention):
            kv = a.num_key_value_heads
            if (self.tp <= kv and kv % self.tp) or (self.tp > kv and self.tp % kv):
                raise CostsimError(f"--tp {self.tp} and num_key_value_heads={kv} of {spec.name}: neither divides the other")
        f = spec.ffn
        if isinstance(f, MoEFFN):
            if f.n_routed_experts % self.ep:
                raise CostsimError(f"--ep {self.ep} does not divide n_routed_experts={f.n_routed_experts} of {spec.name}")
            if f.moe_intermediate_size % self.moe_tp:
                raise CostsimError(f"expert TP {self.moe_tp} (devices/(pp*ep)) does not divide moe_intermediate_size={f.moe_intermediate_size}")
        elif self.ep != 1:
            raise CostsimError(f"--ep {self.ep} given but {spec.name} is dense (no experts)")
        if not (0 < self.gpu_memory_utilization <= 1):
            raise CostsimError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if not (1 <= self.imbalance < float("inf")):
            raise CostsimError(f"--imbalance must be >= 1 (busiest rank over mean), got {self.imbalance}")
        if self.block_size is not None and self.block_size < 1:
            raise CostsimError(f"--block-size must be >= 1, got {self.block_size}")
        if not isinstance(a, MLAAttention) and self.kv_format.rope_bits is not None:
            raise CostsimError(f"--kv-dtype {self.kv_format.name} is an MLA cache layout; {spec.name} uses {a.kind}")
        return self
