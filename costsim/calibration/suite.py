"""The kernel suites that calibration fits on and validation checks against, disjoint by shape.

A ``Point`` names one kernel at one shape. ``build(point, device)`` makes the production-style
torch kernel (``costsim.calibration.timed``) and ``predict(point, hw)`` asks the engine's
kernel API (``costsim.simulator.kernels``) for the same kernel, so a measurement and a
prediction always describe the same work. A measured point is one record (a dict: the point's
fields + ``min_s``, ``median_s``, device, threads, torch version, date); a silicon table row
would have the same shape.

Families (``Point.family``) are the engine's time-model families a point informs:
gemm, elementwise, attention_decode, attention_prefill, grouped_gemm (a whole MoE layer), and
dense_ffn (validation only: gemm + elementwise composed).

The attention shapes are one layer of the named small specs below: real per-layer widths
(DeepSeek-V2-Lite's MLA, Llama-style GQA/MHA/MQA) with few heads, and a fine-grained MoE
(16 routed top-4 + 2 shared experts) with a dense FFN of the same activated width, so a CPU
times them in milliseconds. FP32 on CPU (no bf16 matrix units on the development machine), BF16 on CUDA.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from costsim.specs import ModelSpec

_ATT = {
    # DeepSeek-V2-Lite MLA widths (d_c 512, d_h^R 64, d_h 128, d_h^v 128), 8 heads, h = 2048
    "mla": dict(kind="mla", num_attention_heads=8, kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128,
                v_head_dim=128),
    "mha": dict(kind="mha", num_attention_heads=8, num_key_value_heads=8, head_dim=128),
    "gqa": dict(kind="gqa", num_attention_heads=16, num_key_value_heads=4, head_dim=128),
    "mqa": dict(kind="mqa", num_attention_heads=16, num_key_value_heads=1, head_dim=128),
}
_FFN = {
    # DeepSeekMoE-style: 16 routed (top-4) + 2 shared experts of width 704 (fine-grained, as
    # V2-Lite's 64 x 1408 halved twice, so the weights fit a CPU's caches of a few hundred MB)
    "moe": dict(kind="moe", n_routed_experts=16, num_experts_per_tok=4, moe_intermediate_size=704,
                n_shared_experts=2),
    # a dense SwiGLU of the same activated width (4 x 704 routed + 2 x 704 shared = 4224)
    "dense": dict(kind="dense", intermediate_size=4224),
}


def small_spec(name: str) -> ModelSpec:
    """One of the suite's specs: ``<attention>-<ffn>``, e.g. ``mla-moe``, ``gqa-dense``."""
    att, ffn = name.split("-")
    return ModelSpec.model_validate(dict(
        name=name, source="costsim calibration suite (one layer of small real-width specs)", vocab_size=32000,
        hidden_size=2048, num_hidden_layers=1, attention=_ATT[att], ffn=_FFN[ffn]))


FAMILIES = ("gemm", "elementwise", "attention_decode", "attention_prefill", "grouped_gemm", "dense_ffn")
KERNELS = ("gemm", "rmsnorm", "silu_mul", "attention", "moe", "ffn")


@dataclass(frozen=True)
class Point:
    """One kernel at one shape; unused fields stay at their defaults."""

    family: str
    kernel: str  # gemm | rmsnorm | silu_mul | attention | moe | ffn
    split: str  # train | held-out
    dtype: str = "fp32"
    model: str = ""  # a ``small_spec`` name
    m: int = 0
    n: int = 0
    k: int = 0
    batch: int = 0
    context: int = 0
    new_tokens: int = 0
    form: str = ""
    tokens: int = 0
    dim: int = 0

    @property
    def label(self) -> str:
        shape = {f.name: getattr(self, f.name) for f in fields(self)
                 if f.name not in ("family", "kernel", "split", "dtype") and getattr(self, f.name)}
        return f"{self.kernel}(" + ", ".join(f"{k}={v}" for k, v in shape.items()) + f") {self.dtype}"

    def to_dict(self) -> dict:
        return asdict(self)


def _gemms(split, dtype, ms, nks):
    return [Point("gemm", "gemm", split, dtype, m=m, n=n, k=k) for m in ms for n, k in nks]


def suite(device: str = "cpu", quick: bool = False) -> list[Point]:
    """The train and held-out points for ``device`` (``quick``: a smaller train split)."""
    dt = "fp32" if device == "cpu" else "bf16"
    P = Point
    train = _gemms("train", dt, (1, 3, 16, 256, 1024) if quick else (1, 3, 4, 16, 64, 256, 1024),
                   ((2048, 2048), (1024, 4096)) if quick else ((2048, 2048), (4096, 1024), (1024, 4096)))
    train += [P("elementwise", "rmsnorm", "train", dt, tokens=t, dim=2048) for t in (1, 64, 1024, 16384)]
    train += [P("elementwise", "silu_mul", "train", dt, tokens=t, dim=1408) for t in (1, 32, 256, 4096)]
    dec = [("mla-moe", "absorbed", 4, 1024), ("mla-moe", "naive", 2, 512), ("gqa-dense", "", 4, 1024),
           ("mha-dense", "", 8, 512)]
    if not quick:
        dec += [("mla-moe", "absorbed", 16, 512), ("mqa-dense", "", 8, 1024), ("mla-moe", "absorbed", 1, 1024),
                ("mha-dense", "", 1, 2048), ("gqa-dense", "", 8, 2048), ("mqa-dense", "", 2, 4096)]
    train += [P("attention_decode", "attention", "train", dt, model=m, batch=b, context=c, new_tokens=1, form=f)
              for m, f, b, c in dec]
    pre = [("mla-moe", "naive", 1, 512), ("gqa-dense", "", 1, 256)] + ([] if quick else [("mha-dense", "", 2, 256)])
    train += [P("attention_prefill", "attention", "train", dt, model=m, batch=b, context=0, new_tokens=s, form=f)
              for m, f, b, s in pre]
    train += [P("grouped_gemm", "moe", "train", dt, model="mla-moe", tokens=t)
              for t in ((1, 64, 512) if quick else (1, 8, 64, 256, 1024))]

    held = _gemms("held-out", dt, (2, 8, 32, 128, 512), ((3072, 2048), (2048, 5632)))
    held += [P("elementwise", "rmsnorm", "held-out", dt, tokens=t, dim=4096) for t in (16, 512, 8192)]
    held += [P("elementwise", "silu_mul", "held-out", dt, tokens=t, dim=5632) for t in (4, 128, 2048)]
    held += [P("attention_decode", "attention", "held-out", dt, model=m, batch=b, context=c, new_tokens=1, form=f)
             for m, f, b, c in [("mla-moe", "absorbed", 8, 2048), ("mla-moe", "absorbed", 1, 4096),
                                ("mla-moe", "absorbed", 32, 1024),
                                ("mla-moe", "naive", 4, 1024), ("mla-moe", "naive", 1, 2048),
                                ("mla-moe", "absorbed", 1, 2048),
                                ("mha-dense", "", 4, 2048), ("mha-dense", "", 1, 4096),
                                ("gqa-dense", "", 16, 512), ("gqa-dense", "", 2, 4096),
                                ("mqa-dense", "", 16, 2048), ("mqa-dense", "", 4, 512)]]
    held += [P("attention_prefill", "attention", "held-out", dt, model=m, batch=b, context=0, new_tokens=s, form=f)
             for m, f, b, s in [("mla-moe", "naive", 1, 1024), ("mla-moe", "naive", 2, 256),
                                ("mha-dense", "", 1, 512), ("gqa-dense", "", 1, 1024), ("mqa-dense", "", 2, 512),
                                ("gqa-dense", "", 4, 128)]]
    held += [P("grouped_gemm", "moe", "held-out", dt, model="mla-moe", tokens=t) for t in (2, 16, 128, 512)]
    held += [P("dense_ffn", "ffn", "held-out", dt, model="mla-dense", tokens=t) for t in (2, 16, 512)]
    return train + held


def last_level_cache_bytes(device: str = "cpu") -> int:
    """Size of the cache that repeated calls of one kernel would run from: the CPU's L3 (sysfs;
    32 MiB if unknown) or the GPU's L2."""
    if device.startswith("cuda"):
        import torch

        return int(getattr(torch.cuda.get_device_properties(torch.device(device)), "L2_cache_size", 50 * 2**20))
    try:
        from costsim.units import parse_bytes

        text = open("/sys/devices/system/cpu/cpu0/cache/index3/size", encoding="ascii").read().strip()
        return int(parse_bytes(text.replace("K", "KiB").replace("M", "MiB")))
    except (OSError, ValueError):
        return 32 * 2**20


class Rotating:
    """Calls a ring of copies of one kernel in turn, so that together they exceed the last-level
    cache by 3x and each call finds its weights and cache in memory, not in the cache, as a
    layer of a real model does (its neighbours' weights evicted them). ``copies`` of them."""

    def __init__(self, kernels: list):
        self.kernels, self.i = kernels, 0
        for k in kernels:  # first touches (page faults, lazy allocations) are not the kernel's time
            k()

    @property
    def copies(self) -> int:
        return len(self.kernels)

    def __call__(self):
        k = self.kernels[self.i]
        self.i = (self.i + 1) % len(self.kernels)
        return k()


def build(p: Point, device: str = "cpu", cold: bool = True, max_copies: int = 64):
    """The timed torch kernel of ``p`` (a callable running one step) on ``device``; with
    ``cold``, a ``Rotating`` ring of copies whose bytes moved add up to 3x the last-level cache
    (at most ``max_copies``), so the timing is of memory, not of cache."""
    if not cold:
        return _build(p, device, 0)
    from costsim.registry import load_hardware

    import copy

    moved = float(predict(p, load_hardware("cpu")).bytes)
    n = int(min(max_copies, max(1, -(-3 * last_level_cache_bytes(device) // max(moved, 1.0)))))
    first = _build(p, device, 0)
    # copies of the first (same values, own memory): cloning is ~100x faster than drawing
    # new random tensors, which dominated the suite's run time
    return Rotating([first] + [copy.deepcopy(first) for _ in range(n - 1)])


def _build(p: Point, device: str, seed: int):
    from costsim.calibration import timed

    kw = dict(dtype=p.dtype, device=device, seed=seed)
    if p.kernel == "gemm":
        return timed.Gemm(p.m, p.n, p.k, **kw)
    if p.kernel == "rmsnorm":
        return timed.RMSNormKernel(p.tokens, p.dim, **kw)
    if p.kernel == "silu_mul":
        return timed.SiluMulKernel(p.tokens, p.dim, **kw)
    spec = small_spec(p.model)
    if p.kernel == "attention":
        form = dict(form=p.form) if p.form else {}
        return timed.make_attention_kernel(spec, p.batch, p.context, p.new_tokens, **kw, **form)
    if p.kernel == "moe":
        return timed.MoEKernel(spec, p.tokens, 0, 1, **kw)
    if p.kernel == "ffn":
        return timed.DenseFFNKernel(spec, p.tokens, 0, 1, **kw)
    raise ValueError(f"unknown kernel {p.kernel!r}")


def predict(p: Point, hw):
    """The engine's prediction (``simulator.kernels.KernelPrediction``) for the kernel of ``p``."""
    from costsim.simulator import kernels

    if p.kernel == "gemm":
        return kernels.gemm(hw, p.m, p.n, p.k, p.dtype)
    if p.kernel == "rmsnorm":  # read x, write y (weights negligible)
        return kernels.elementwise(hw, p.tokens * p.dim, p.tokens * p.dim, p.dtype)
    if p.kernel == "silu_mul":
        return kernels.elementwise(hw, 2 * p.tokens * p.dim, p.tokens * p.dim, p.dtype)
    spec = small_spec(p.model)
    if p.kernel == "attention":
        return kernels.attention(spec, hw, p.batch, p.context, p.new_tokens, p.form or "absorbed",
                                 weight_dtype=p.dtype, kv_dtype=p.dtype)
    if p.kernel == "moe":
        return kernels.moe(spec, hw, p.tokens, weight_dtype=p.dtype)
    if p.kernel == "ffn":
        return kernels.dense_ffn(spec, hw, p.tokens, weight_dtype=p.dtype)
    raise ValueError(f"unknown kernel {p.kernel!r}")


# Pairs whose measured order the predictions must reproduce (issue: "the measured orderings are
# predicted"), as (name, point A, point B); both points are in the held-out split.
def orderings(device: str = "cpu") -> list[tuple[str, Point, Point]]:
    dt = "fp32" if device == "cpu" else "bf16"

    def dec(model, form, b, c):
        return Point("attention_decode", "attention", "held-out", dt, model=model, batch=b, context=c,
                     new_tokens=1, form=form)

    def moe(t):
        return Point("grouped_gemm", "moe", "held-out", dt, model="mla-moe", tokens=t)

    def dense(t):
        return Point("dense_ffn", "ffn", "held-out", dt, model="mla-dense", tokens=t)

    return [("MLA decode: absorbed vs naive (batch 1, context 2048)", dec("mla-moe", "absorbed", 1, 2048),
             dec("mla-moe", "naive", 1, 2048)),
            ("decode at context 4096: MLA (absorbed) vs MHA", dec("mla-moe", "absorbed", 1, 4096),
             dec("mha-dense", "", 1, 4096)),
            ("2 tokens: MoE vs dense FFN of equal activated width", moe(2), dense(2)),
            ("512 tokens: MoE vs dense FFN of equal activated width", moe(512), dense(512))]
