"""Measured silicon kernel tables (NVIDIA aiconfigurator-core) read as costsim measurements.

``pip install 'costsim[silicon]'`` brings ``aiconfigurator-core==0.12.0`` (Apache-2.0), whose
wheel ships parquet tables under ``aiconfigurator_core/systems/data/<system>/<op>/<backend>/
<version>/``. Only this module reads them; the engine (``costsim.simulator``) never does.

Which version directory: the backend's ``current`` version for the system in the package's
``systems/query_versions.yaml`` (per-system overrides win); an op without that version uses the
newest older one (the package's own backward fill), else the newest. NCCL tables
(``comm/nccl/<nccl version>/``) do not depend on the backend: the newest is used.

Every row becomes one record: ``family`` (the costsim time model it exercises), ``label`` (the
reporting class: GEMM per dtype, NCCL per collective, ...), ``group`` (the shape group held out
together), ``measured_s`` and its shape. ``predict_frame`` predicts every record on a profile
through the public kernel API (``costsim.simulator.kernels``, ``parallel.collective_seconds``).

What a row's latency includes, read from the collector scripts of github.com/ai-dynamo/
aiconfigurator (``collector/``, commit 095f58a of 2026-08-21); these are the mapping
assumptions:

- Units: every ``latency`` column is milliseconds per call (``results["latency_ms"]``; the
  NCCL collector converts nccl-tests' microseconds with ``* 1e-3``). Records carry seconds.
- GEMM (``gemm/gemm_perf``, ``collect_gemm.py``): one TensorRT-LLM ``Linear`` forward of a
  BF16 [m, k] input against [n, k] weights, BF16 output. ``bfloat16``: one cuBLAS GEMM.
  ``fp8`` (per-tensor scales) and ``fp8_block`` (1x128 activation, 128x128 weight blocks): the
  forward **includes the dynamic quantisation of the activations** before the FP8 GEMM. Weights
  are rotated over several copies when they fit in L2, so the weights come from HBM. Mapped to
  ``kernels.gemm(m, n, k, dtype)`` with dtype bf16, fp8 or fp8-block (families ``gemm``,
  ``gemm_fp8``, ``gemm_fp8_block``); the quantisation is carried by the fp8 families' overhead
  and efficiencies, not by a separate operator.
- NCCL (``comm/nccl/*/nccl_perf``, ``collect_nccl.py``): nccl-tests ``*_perf -b S -e S -t n``,
  out-of-place time; ``message_size`` is S **in elements** (bytes / 2 for ``half``, / 1 for
  ``int8``), S being nccl-tests' per-rank buffer size (all-reduce buffer, all-gather output,
  reduce-scatter input, all-to-all send buffer). Mapped to ``parallel.collective_seconds``
  (ring; one-shot all-to-all) on ``num_gpus`` ranks inside one node.
- Attention (``attention/*_attention_perf``, ``collect_attn.py``): one TensorRT-LLM attention
  op forward on fused QKV input: RoPE, KV-cache append and the attention kernel (no
  projections). Generation: ``batch_size`` sequences, one new token each, ``step`` cached
  tokens (``isl`` = 1); context: ``isl`` new tokens, empty cache. ``window_size`` 0 = full,
  else a sliding window. Mapped to ``kernels.attention_core`` of a GQA/MHA/MQA layer with
  ``num_heads`` / ``num_key_value_heads`` / ``head_dim``; RoPE and the KV append are carried
  by the fitted overhead and efficiencies; a context row of isl = 1 (empty cache) is a prefill,
  costed by the prefill family like every context row. Context rows with FP8 attention compute
  (``attn_dtype`` fp8) are left out: the engine's attention core computes in BF16.
- MLA kernels (``mla/{generation,context}_mla_perf``, ``collect_mla.py``): the attention op of
  DeepSeek-V3 MLA (d_c 512, d_h^R 64, nope 128, v 128); ``num_heads`` is the heads **per GPU**
  (the collector keys rows on local heads). Generation = absorbed attention over the latent
  (FlashMLA on SM90); context = attention over decompressed keys and values. Mapped to
  ``kernels.attention_core`` of a DeepSeek-V3-shaped spec with that many heads, form absorbed
  (generation) or naive (context). On a system without FP8 (A100) the fp8-KV rows take the
  BF16 rows' times to within noise (generation, 128 heads, batch 1, 131k tokens: 15.54 ms
  both): they are mapped as BF16 KV (the collector's fp8 request runs the BF16 path there).
- MLA module (``mla/mla_{generation,context}_module_perf``, ``collect_mla_module.py``): the
  whole MLA block of DeepSeek-V3 (projections, norms, RoPE, attention) with ``gemm_type``
  weights. Mapped to ``kernels.attention`` (projections + core; the small norms are not in it).
- MoE (``moe/moe_perf``, ``collect_moe.py``): one TensorRT-LLM fused MoE forward on one GPU
  standing for EP rank 0 of ``moe_ep_size`` (and TP rank 0 of ``moe_tp_size``): routing
  (top-k over **given** router logits: no router GEMM), token permute, FC1, activation, FC2,
  unpermute and weighted sum; no all-to-all (``reduce_results=False``). ``num_tokens`` is every
  token of the step, and rank 0 routes and permutes them all (``routed_tokens`` = num_tokens:
  predicted / measured was 0.6-0.75 at EP 128-256 without it, H200). ``balanced``: each expert
  gets tokens x top-k / experts; ``power_law_a``: expert loads drawn from a power law with EP
  rank 0 made the busiest. Mapped to
  ``kernels.moe(router=False)`` on a spec with that hidden/intermediate size, experts and top-k
  (gated unless the kernel source is ``nongated``), which assumes uniform routing; a
  power-law row is predicted as the balanced kernel of tokens x ``power_law_imbalance`` (the
  busiest rank's expected load over the mean under the collector's generator), so the extra
  pairs of rank 0 are charged but not the skew among its experts (reported apart, as
  ``moe power_law``).
  ``w4a16_mxfp4`` weights map to costsim's ``mxfp4`` format (BF16 compute). Rows are fitted per
  weight format's expert-GEMM family: bf16 ``grouped_gemm``, fp8 ``grouped_gemm_fp8``, mxfp4
  ``grouped_gemm_mxfp4``, fp8_block ``grouped_gemm_fp8_block``.
  **EP-inconsistent rows** are reported apart (label ``moe ep-inconsistent``) and not fitted:
  a row more than ``EP_JUMP`` x slower than the same kernel, shape, TP, routing and token count
  on half the EP degree (doubling EP halves the rank's experts at the same tokens, so its time
  cannot grow). In the H200 tables the BF16 and per-tensor FP8 CUTLASS rows have whole (TP, EP)
  configurations 3-7x slow at every token count (4096 x 1024, 512 experts, top-10, BF16, 128
  tokens, TP1: EP 1 / 2 / 4 / 8 / 16 = 2,978 / 1,500 / 772 / 2,613 / 214 us), while the
  fp8_block rows of the same shapes halve smoothly (1 such row in 19k): a tactic choice of the
  collected build, not a property of the shape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from costsim.errors import CostsimError

PACKAGE = "aiconfigurator-core"
PACKAGE_VERSION = "0.12.0"
BACKENDS = ("trtllm", "sglang", "vllm")
# costsim hardware profile of each table system (the profile whose peaks a prediction uses)
SYSTEMS = {"h200_sxm": "h200", "h100_sxm": "h100", "b200_sxm": "b200", "a100_sxm": "a100-80g"}
MS = 1e-3  # the tables' latency unit
# families in fitting order: later kernels contain no operators of the earlier families
FAMILIES = ("gemm", "gemm_fp8", "gemm_fp8_block", "attention_decode", "attention_decode_fp8", "attention_prefill",
            "attention_prefill_fp8", "attention_mla_decode", "attention_mla_prefill", "attention_mla_prefill_fp8", "grouped_gemm", "grouped_gemm_fp8", "grouped_gemm_fp8_block", "grouped_gemm_mxfp4",
            "comm")


def data_root() -> Path:
    """``aiconfigurator_core/systems`` of the installed package; one-line CostsimError if absent."""
    try:
        import importlib.metadata as md

        import aiconfigurator_core  # noqa: F401
        version = md.version(PACKAGE)
    except ImportError:
        raise CostsimError(f"--silicon needs the {PACKAGE} tables: pip install 'costsim[silicon]' "
                           f"({PACKAGE}=={PACKAGE_VERSION})") from None
    import aiconfigurator_core

    if version != PACKAGE_VERSION:
        raise CostsimError(f"--silicon reads {PACKAGE}=={PACKAGE_VERSION}; {version} is installed")
    return Path(aiconfigurator_core.__file__).parent / "systems"


def system_name(system: str) -> str:
    """The table system for a name: ``h200_sxm`` as is, or a costsim profile name (``h200``)."""
    s = system.strip().lower()
    if s in SYSTEMS:
        return s
    for k, v in SYSTEMS.items():
        if v == s or k.split("_")[0] == s:
            return k
    raise CostsimError(f"--silicon {system}: expected one of {', '.join(SYSTEMS)} "
                       f"(or {', '.join(SYSTEMS.values())})")


def _vkey(v: str):
    """Sort key of a version string: numbers compared as numbers, a pre-release before the
    release (1.3.0rc20 < 1.3.0)."""
    parts = re.findall(r"\d+|[a-z]+", v.lower())
    key = []
    for p in parts:
        key.append((1, int(p)) if p.isdigit() else (0, p))
    if not re.search(r"(rc|dev|a|b)\d*", v.lower()):
        key.append((2, 0))  # a release sorts after its pre-releases
    return tuple(key)


def current_version(root: Path, system: str, backend: str) -> str | None:
    """The backend's ``current`` version for ``system`` (``query_versions.yaml``)."""
    import yaml

    doc = yaml.safe_load((root / "query_versions.yaml").read_text())
    over = ((doc.get("overrides") or {}).get(system) or {}).get(backend)
    slot = over or (doc.get("defaults") or {}).get(backend) or {}
    return slot.get("current")


def table_path(root: Path, system: str, op: str, backend: str, filename: str) -> Path | None:
    """The parquet file of one table: the current version's, else the newest older, else the
    newest (see the module docstring); None when no version has it."""
    base = root / "data" / system / op / backend
    if not base.is_dir():
        return None
    have = sorted((d.name for d in base.iterdir() if (d / filename).is_file()), key=_vkey)
    if not have:
        return None
    cur = current_version(root, system, backend) if backend in BACKENDS else None
    if cur is None:
        return base / have[-1] / filename
    older = [v for v in have if _vkey(v) <= _vkey(cur)]
    return base / (older[-1] if older else have[-1]) / filename


@dataclass(frozen=True)
class Tables:
    """The records of one system and backend, and where they came from."""

    system: str
    backend: str
    frame: pd.DataFrame  # one row per measurement (columns: see ``load``)
    sources: dict  # table name -> "op/backend/version/file"

    def source_text(self) -> str:
        vers = sorted({s.split("/")[2] for k, s in self.sources.items() if not k.startswith("nccl")})
        nccl = [s.split("/")[2] for k, s in self.sources.items() if k.startswith("nccl")]
        return (f"{PACKAGE} {PACKAGE_VERSION} silicon tables, system {self.system}, backend {self.backend} "
                f"{'/'.join(vers)}" + (f", NCCL {nccl[0]}" if nccl else ""))


_DT = {"bfloat16": "bf16", "fp8": "fp8", "fp8_block": "fp8-block", "float16": "bf16", "w4a16_mxfp4": "mxfp4"}
_KV = {"bfloat16": "bf16", "fp8": "fp8"}


def _read(path: Path, columns=None) -> pd.DataFrame:
    return pd.read_parquet(path, columns=columns)


def _gemm(df: pd.DataFrame) -> pd.DataFrame:
    df = df[df["gemm_dtype"].isin(["bfloat16", "fp8", "fp8_block"])]
    dt = df["gemm_dtype"].map(_DT)
    return pd.DataFrame(dict(
        family=dt.map({"bf16": "gemm", "fp8": "gemm_fp8", "fp8-block": "gemm_fp8_block"}), label="gemm " + df["gemm_dtype"].str.replace("bfloat16", "bf16"),
        kernel="gemm", dtype=dt, m=df["m"], n=df["n"], k=df["k"],
        group=df["gemm_dtype"] + ":" + df["n"].astype(str) + "x" + df["k"].astype(str),
        measured_s=df["latency"] * MS))


def _nccl(df: pd.DataFrame) -> pd.DataFrame:
    op = df["op_name"].replace({"alltoall": "all_to_all"})
    nbytes = df["message_size"] * np.where(df["nccl_dtype"] == "half", 2, 1)
    return pd.DataFrame(dict(family="comm", label="nccl " + op, kernel=op, dtype=df["nccl_dtype"],
                             size_bytes=nbytes.astype(float), ranks=df["num_gpus"],
                             group=op + ":" + df["num_gpus"].astype(str), measured_s=df["latency"] * MS))


def _attention(df: pd.DataFrame, phase: str) -> pd.DataFrame:
    if phase == "prefill":
        df = df[df["attn_dtype"] == "bfloat16"]
    df = df[df["kv_cache_dtype"].isin(list(_KV))]
    if "window_size" not in df:  # tables collected without sliding windows (A100 sglang / vllm): full attention
        df = df.assign(window_size=0)
    dec = phase == "decode"
    return pd.DataFrame(dict(
        family=("attention_" + phase + np.where((df["kv_cache_dtype"] == "fp8")
                                                & ((df["num_heads"] > df["num_key_value_heads"]) | (not dec)), "_fp8", "")),
        label=("decode" if dec else "prefill") + " attention", kernel="attention_core",
        dtype=df["kv_cache_dtype"].map(_KV), heads=df["num_heads"], kv_heads=df["num_key_value_heads"],
        head_dim=df["head_dim"], window=df["window_size"], batch=df["batch_size"],
        new_tokens=1 if dec else df["isl"], context=df["step"] if dec else 0,
        group=(phase + ":" + df["num_heads"].astype(str) + "/" + df["num_key_value_heads"].astype(str) + "x"
               + df["head_dim"].astype(str) + ":w" + df["window_size"].astype(str) + ":" + df["kv_cache_dtype"]),
        measured_s=df["latency"] * MS))


def _mla(df: pd.DataFrame, phase: str, module: bool) -> pd.DataFrame:
    if module:  # weight formats costsim has (nvfp4 module rows are left out)
        df = df[df["gemm_type"].isin(["bfloat16", "fp8_block"])]
    df = df[df["kv_cache_dtype"].isin(list(_KV))]
    dec = phase == "decode"
    what = "mla module" if module else "mla"
    wdt = df["gemm_type"].map(_DT) if module else "bf16"
    return pd.DataFrame(dict(
        family="mla_module" if module else "attention_mla_" + phase + np.where(
            (df["kv_cache_dtype"] == "fp8") & (phase == "prefill"), "_fp8", ""), label=f"{phase} {what}",
        kernel="mla_block" if module else "mla_core", dtype=df["kv_cache_dtype"].map(_KV), weight_dtype=wdt,
        heads=df["num_heads"], batch=df["batch_size"], new_tokens=1 if dec else df["isl"],
        context=df["step"] if dec else 0,
        group=(what + ":" + phase + ":" + df["num_heads"].astype(str) + ":" + df["kv_cache_dtype"]
               + (":" + df["gemm_type"] if module else "")),
        measured_s=df["latency"] * MS))


# MoE weight format -> the grouped-GEMM family its expert GEMMs use
_MOE_FAMILY = {"bf16": "grouped_gemm", "mxfp4": "grouped_gemm_mxfp4", "fp8": "grouped_gemm_fp8",
               "fp8-block": "grouped_gemm_fp8_block"}


def _moe(df: pd.DataFrame) -> pd.DataFrame:
    df = df[df["moe_dtype"].isin(list(_DT))]
    dist = np.where(df["distribution"] == "balanced", "balanced", "power_law")
    out = pd.DataFrame(dict(
        family=df["moe_dtype"].map(_DT).map(_MOE_FAMILY), label="moe " + pd.Series(dist, index=df.index), kernel="moe",
        dtype=df["moe_dtype"].map(_DT), tokens=df["num_tokens"], hidden=df["hidden_size"], inter=df["inter_size"],
        topk=df["topk"], experts=df["num_experts"], moe_tp=df["moe_tp_size"], ep=df["moe_ep_size"],
        gated=df["kernel_source"] != "moe_torch_flow_nongated", distribution=df["distribution"],
        group=("moe:" + df["moe_dtype"] + ":" + df["hidden_size"].astype(str) + "x" + df["inter_size"].astype(str)
               + ":e" + df["num_experts"].astype(str) + "k" + df["topk"].astype(str) + ":tp"
               + df["moe_tp_size"].astype(str) + "ep" + df["moe_ep_size"].astype(str)),
        measured_s=df["latency"] * MS))
    bad = _ep_inconsistent(out)
    out.loc[bad, "label"] = "moe ep-inconsistent"
    return out.assign(fitted=~bad)


EP_JUMP = 1.5  # a MoE row this much slower than its half-EP neighbour is EP-inconsistent


def _ep_inconsistent(out: pd.DataFrame) -> np.ndarray:
    """Rows of a ``_moe`` frame more than ``EP_JUMP`` x slower than the same kernel at half the EP."""
    key = ["dtype", "hidden", "inter", "experts", "topk", "gated", "moe_tp", "distribution", "tokens"]
    half = out.groupby(key + ["ep"], sort=False)["measured_s"].median().rename("half_s").reset_index()
    half["ep"] = half["ep"] * 2
    j = out[key + ["ep", "measured_s"]].merge(half, on=key + ["ep"], how="left")
    return (j["measured_s"] > EP_JUMP * j["half_s"]).to_numpy()


# table name -> (op dir, file, reader)
TABLES = {
    "gemm": ("gemm", "gemm_perf.parquet", _gemm),
    "generation_attention": ("attention", "generation_attention_perf.parquet", lambda d: _attention(d, "decode")),
    "context_attention": ("attention", "context_attention_perf.parquet", lambda d: _attention(d, "prefill")),
    "generation_mla": ("mla", "generation_mla_perf.parquet", lambda d: _mla(d, "decode", False)),
    "context_mla": ("mla", "context_mla_perf.parquet", lambda d: _mla(d, "prefill", False)),
    "mla_generation_module": ("mla", "mla_generation_module_perf.parquet", lambda d: _mla(d, "decode", True)),
    "mla_context_module": ("mla", "mla_context_module_perf.parquet", lambda d: _mla(d, "prefill", True)),
    "moe": ("moe", "moe_perf.parquet", _moe),
}


def _has_fp8(system: str) -> bool:
    """Whether the costsim profile of table ``system`` has FP8 tensor cores (a peak for fp8)."""
    from costsim.registry import load_hardware

    return bool(load_hardware(SYSTEMS[system]).peak_flops.fp8)


def load(system: str, backend: str = "trtllm", tables: tuple[str, ...] | None = None) -> Tables:
    """Every mapped row of ``system``'s tables for ``backend`` (plus the NCCL tables), as one
    DataFrame of records (seconds). Raises CostsimError naming what is missing."""
    backend = str(backend).strip().lower()
    if backend not in BACKENDS:
        raise CostsimError(f"--backend {backend}: expected one of {', '.join(BACKENDS)}")
    root = data_root()
    system = system_name(system)
    frames, sources = [], {}
    for name, (op, fname, reader) in TABLES.items():
        if tables is not None and name not in tables:
            continue
        p = table_path(root, system, op, backend, fname)
        if p is None:
            continue
        f = reader(_read(p))
        if len(f):
            frames.append(f.assign(table=name))
            sources[name] = str(p.relative_to(root / "data" / system))
    if tables is None or "nccl" in tables:
        p = table_path(root, system, "comm", "nccl", "nccl_perf.parquet")
        if p is not None:
            frames.append(_nccl(_read(p)).assign(table="nccl"))
            sources["nccl"] = str(p.relative_to(root / "data" / system))
    if not frames:
        raise CostsimError(f"--silicon {system}: no {backend} tables in {PACKAGE} {PACKAGE_VERSION}")
    df = pd.concat(frames, ignore_index=True)
    df = df[np.isfinite(df["measured_s"]) & (df["measured_s"] > 0)].reset_index(drop=True)
    if not _has_fp8(system):  # fp8-KV MLA rows ran the BF16 path (module docstring)
        mla = df["table"].str.contains("mla").to_numpy() & (df["dtype"] == "fp8").to_numpy()
        df.loc[mla, "dtype"] = "bf16"
        df.loc[mla, "family"] = df.loc[mla, "family"].str.replace("_fp8", "", regex=False)
    return Tables(system, backend, df, sources)


# --------------------------------------------------------------------------------------
# Predictions: operators built once per shape group, timed on any profile
# --------------------------------------------------------------------------------------

# DeepSeek-V3 MLA (HF config.json of deepseek-ai/DeepSeek-V3): the collector's MLA dimensions
DSV3 = dict(hidden_size=7168, q_lora_rank=1536, kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128,
            v_head_dim=128)


def _spec(attention: dict, hidden: int, ffn: dict | None = None):
    from costsim.specs import ModelSpec

    return ModelSpec.model_validate(dict(
        name="silicon-probe", source="aiconfigurator-core table row", vocab_size=1, hidden_size=hidden,
        num_hidden_layers=1, attention=attention,
        ffn=ffn or dict(kind="dense", intermediate_size=1)))


def _gqa_spec(heads: int, kv: int, d: int):
    kind = "mha" if kv == heads else ("mqa" if kv == 1 else "gqa")
    return _spec(dict(kind=kind, num_attention_heads=heads, num_key_value_heads=kv, head_dim=d), heads * d)


def _mla_spec(heads: int):
    a = {k: v for k, v in DSV3.items() if k != "hidden_size"}
    return _spec(dict(kind="mla", num_attention_heads=heads, **a), DSV3["hidden_size"])


def _moe_spec(hidden: int, inter: int, experts: int, topk: int, gated: bool):
    return _spec(dict(kind="mha", num_attention_heads=1, num_key_value_heads=1, head_dim=1), hidden,
                 dict(kind="moe", n_routed_experts=experts, num_experts_per_tok=topk, moe_intermediate_size=inter,
                      gated=bool(gated)))


def power_law_imbalance(tokens: int, experts: int, topk: int, ep: int, alpha: float, draws: int = 32,
                        seed: int = 0) -> float:
    """Busiest EP rank's token-expert pairs over the mean (tokens x top-k / ep) under the MoE
    collector's power-law routing, averaged over ``draws`` seeded draws (the collector
    averages 5 draws per row). A numpy replica of ``_generate_power_law_distribution`` in
    aiconfigurator ``collector/helper.py``: expert loads x ~ inverse-CDF power law on [1, 0.8 T]
    (on [0.01, 2] when T k <= E), scaled to T k pairs and rounded, each expert capped at T with
    the overflow spread evenly over the ranks; the busiest rank is then made rank 0."""
    if ep <= 1:
        return 1.0
    rng = np.random.default_rng(seed)
    lo, hi = (1.0, tokens * 0.8) if tokens * topk > experts else (0.01, 2.0)
    u = rng.random((draws, experts))
    a = 1.0 - alpha
    x = ((hi ** a - lo ** a) * u + lo ** a) ** (1.0 / a)
    counts = np.round(x / x.sum(axis=1, keepdims=True) * tokens * topk)
    overflow = np.clip(counts - tokens, 0, None).sum(axis=1)
    counts = np.minimum(counts, tokens)
    rank = counts.reshape(draws, ep, experts // ep).sum(axis=2) + overflow[:, None] / ep
    mean = tokens * topk / ep
    return float(np.clip(np.mean(rank.max(axis=1)) / mean, 1.0, ep))


@dataclass
class Plan:
    """The operators of a frame's rows, built once: ``parts`` is a list of (row positions,
    operators) for compute kernels and (row positions, (collective, bytes, ranks)) for NCCL."""

    n: int
    parts: list

    def predict(self, hw) -> np.ndarray:
        """Predicted seconds of every row on ``hw``."""
        from costsim.simulator.kernels import predict
        from costsim.simulator.parallel import collective_seconds

        out = np.full(self.n, np.nan)
        for idx, what in self.parts:
            if isinstance(what, tuple):
                out[idx] = collective_seconds(hw, what[0], what[1], what[2])
            else:
                out[idx] = np.broadcast_to(np.asarray(predict(what, hw, "silicon").time_s, dtype=float), idx.shape)
        return out


def h_decode(g: pd.DataFrame) -> bool:
    """A group of MLA rows is decode (one new token per sequence)."""
    return bool(np.all(g["new_tokens"].to_numpy() == 1) and np.all(g["context"].to_numpy() > 0))


def plan(df: pd.DataFrame, hw) -> Plan:
    """Build the operators of every row of ``df`` (a ``load`` frame), validated against ``hw``."""
    from costsim.simulator import kernels as K

    parts = []
    pos = np.arange(len(df))
    for kernel, sub in df.groupby("kernel", sort=False):
        i = pos[df["kernel"].to_numpy() == kernel]
        sub = df.iloc[i].reset_index(drop=True)  # g.index below: positions in sub
        if kernel == "gemm":
            for dt, g in sub.groupby("dtype", sort=False):
                j = i[g.index]
                parts.append((j, K.gemm_operators(hw, g["m"].to_numpy(), g["n"].to_numpy(), g["k"].to_numpy(), dt)))
        elif kernel in ("all_reduce", "all_gather", "reduce_scatter", "all_to_all"):
            parts.append((i, (kernel, sub["size_bytes"].to_numpy(float), sub["ranks"].to_numpy(float))))
        elif kernel == "attention_core":
            for key, g in sub.groupby(["heads", "kv_heads", "head_dim", "window", "dtype"], sort=False):
                j = i[g.index]
                h, kv, d, w, dt = key
                parts.append((j, K.attention_core_operators(
                    _gqa_spec(int(h), int(kv), int(d)), hw, g["batch"].to_numpy(float), g["context"].to_numpy(float),
                    g["new_tokens"].to_numpy(float), tp=1, kv_dtype=dt, window=int(w) or None)))
        elif kernel in ("mla_core", "mla_block"):
            for key, g in sub.groupby(["heads", "dtype", "weight_dtype", "family", "label"], sort=False):
                j = i[g.index]
                h, dt, wdt, fam, _ = key
                form = "absorbed" if h_decode(g) else "naive"
                args = (_mla_spec(int(h)), hw, g["batch"].to_numpy(float), g["context"].to_numpy(float),
                        g["new_tokens"].to_numpy(float))
                if kernel == "mla_core":
                    ops = K.attention_core_operators(*args, form=form, tp=1, kv_dtype=dt)
                else:
                    ops = K.attention_block_operators(*args, form=form, tp=1, weight_dtype=wdt, kv_dtype=dt)
                parts.append((j, ops))
        elif kernel == "moe":
            keys = ["hidden", "inter", "experts", "topk", "gated", "moe_tp", "ep", "dtype"]
            for key, g in sub.groupby(keys, sort=False):
                j = i[g.index]
                h, inter, e, k, gated, mtp, ep, dt = key
                spec = _moe_spec(int(h), int(inter), int(e), int(k), bool(gated))
                tok = g["tokens"].to_numpy(float)
                alpha = g["distribution"].str.extract(r"power_law_([\d.]+)")[0].astype(float).to_numpy()
                imb = np.array([1.0 if np.isnan(al) else power_law_imbalance(int(t), int(e), int(k), int(ep), al)
                                for t, al in zip(tok, alpha)])
                # the busiest rank of a power-law row: the balanced kernel of tokens x imbalance
                # (rounded to whole tokens)
                # every rank is given all the step's tokens and routes and permutes them all
                parts.append((j, K.moe_operators(spec, hw, np.maximum(1.0, np.round(tok * imb)), int(ep), dt, int(mtp),
                                                 router=False, routed_tokens=tok)))
        else:
            raise CostsimError(f"silicon: no prediction for kernel {kernel!r}")
    return Plan(len(df), parts)


def predict_frame(df: pd.DataFrame, hw) -> np.ndarray:
    """Predicted seconds for every row of ``df`` on ``hw``."""
    return plan(df, hw).predict(hw)
