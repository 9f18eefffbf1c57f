"""Collective timings on ``torch.distributed`` and their fit into a profile's communication
model (``costsim calibrate --comm``; issue 7, item 6).

Measure: ``ranks`` processes (``torch.multiprocessing.spawn``; gloo on CPU, NCCL on CUDA, one
GPU per rank) time all-reduce, all-gather, reduce-scatter and all-to-all over message sizes.
Sizes follow nccl-tests (``costsim.simulator.parallel.COLLECTIVES``): S is the all-reduce
buffer, the gathered output, the scattered input, the all-to-all send buffer, in bytes.
Each point: a warm-up, then ``repeats`` timed calls, each between two barriers, CUDA
synchronised; the slowest rank's time per call (max over ranks), minimum and median over
calls. A collective the backend lacks is left out and said so.

Fit: per collective, t = steps(n) x latency + fraction(n) x S / bandwidth (the engine's
``collective_seconds`` with one protocol and no per-collective overhead: the constant term is
all latency), by least squares on relative error of the minimum times over the train sizes
(every other size);
the other sizes are held out and re-predicted through the engine with the written profile.

Units: bytes, seconds, bytes/s. Torch is imported only inside the measuring functions.
"""

from __future__ import annotations

import os
import socket
import statistics
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from costsim.errors import CostsimError
from costsim.simulator.parallel import COLLECTIVES

NAMES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")
SIZES = tuple(2 ** k for k in range(10, 25, 1))  # 1 KiB .. 16 MiB
QUICK_SIZES = tuple(2 ** k for k in range(10, 23, 2))  # 1 KiB .. 4 MiB, every other power


@dataclass(frozen=True)
class CommPoint:
    collective: str
    ranks: int
    size_bytes: int
    min_s: float
    median_s: float
    backend: str
    split: str  # "train" or "held_out"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, backend, sizes, repeats, out_dir):  # pragma: no cover - runs in a child
    import warnings

    import torch
    import torch.distributed as dist

    warnings.filterwarnings("ignore", category=FutureWarning)  # reduce_scatter_tensor's rename notice
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dev = torch.device(f"cuda:{rank}") if backend == "nccl" else torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend, rank=rank, world_size=world)

    def sync():
        if backend == "nccl":
            torch.cuda.synchronize(dev)

    rows = []
    for name in NAMES:
        for S in sizes:
            n = max(S // 4 // world * world, world)  # float32 elements, a multiple of the ranks
            try:
                if name == "all_reduce":
                    x = torch.ones(n, device=dev)
                    call = lambda: dist.all_reduce(x)  # noqa: E731
                elif name == "all_gather":
                    x = torch.ones(n // world, device=dev)
                    outs = [torch.empty_like(x) for _ in range(world)]
                    call = lambda: dist.all_gather(outs, x)  # noqa: E731
                elif name == "reduce_scatter":
                    x, y = torch.ones(n, device=dev), torch.empty(n // world, device=dev)
                    call = lambda: dist.reduce_scatter_tensor(y, x)  # noqa: E731
                else:
                    x, y = torch.ones(n, device=dev), torch.empty(n, device=dev)
                    call = lambda: dist.all_to_all_single(y, x)  # noqa: E731
                call()  # warm-up (also: does the backend have it?)
                sync()
            except (RuntimeError, NotImplementedError, ValueError):
                rows.append((name, S, None))
                continue
            ts = []
            for _ in range(repeats):
                dist.barrier()
                sync()
                t = time.perf_counter()
                call()
                sync()
                ts.append(time.perf_counter() - t)
            rows.append((name, n * 4, ts))
    with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as f:
        for name, S, ts in rows:
            f.write(f"{name} {S} " + (" ".join(f"{t:.9e}" for t in ts) if ts else "missing") + "\n")
    dist.barrier()
    dist.destroy_process_group()


def measure(ranks: int = 2, device: str = "cpu", quick: bool = False, repeats: int | None = None):
    """(points, missing): every collective x size timed over ``ranks`` processes on ``device``
    ("cpu": gloo; "cuda": NCCL, one GPU per rank). ``missing``: collectives the backend lacks.
    Raises CostsimError without torch, with fewer than 2 ranks or too few GPUs."""
    try:
        import torch
        import torch.multiprocessing as mp
    except ImportError:
        raise CostsimError("calibrate --comm needs torch: pip install 'costsim[kernels]'") from None
    if ranks < 2:
        raise CostsimError(f"--ranks {ranks}: a collective needs at least 2 ranks")
    backend = "gloo" if device == "cpu" else "nccl"
    if backend == "nccl" and torch.cuda.device_count() < ranks:
        raise CostsimError(f"--ranks {ranks}: only {torch.cuda.device_count()} CUDA devices here")
    sizes = QUICK_SIZES if quick else SIZES
    repeats = repeats or (5 if quick else 15)
    with tempfile.TemporaryDirectory() as d:
        # fork for gloo (no re-import of the caller's main module); spawn for CUDA (no forked context)
        mp.start_processes(_worker, args=(ranks, _free_port(), backend, sizes, repeats, d), nprocs=ranks, join=True,
                           start_method="fork" if backend == "gloo" else "spawn")
        per_rank = []
        for r in range(ranks):
            with open(os.path.join(d, f"rank{r}.txt")) as f:
                per_rank.append([line.split() for line in f])
    points, missing = [], []
    for i, row in enumerate(per_rank[0]):
        name, S = row[0], int(row[1])
        if row[2] == "missing":
            if name not in missing:
                missing.append(name)
            continue
        # the slowest rank bounds each call
        ts = np.max([[float(t) for t in pr[i][2:]] for pr in per_rank], axis=0)
        k = sorted({int(r[1]) for r in per_rank[0] if r[0] == name}).index(S)
        points.append(CommPoint(name, ranks, S, float(ts.min()), float(statistics.median(ts)), backend,
                                "train" if k % 2 == 0 else "held_out"))
    return points, missing


def fit(points) -> dict[str, tuple[float, float]]:
    """Per collective: (latency per step in s, bandwidth in bytes/s) of t = steps(n) latency +
    fraction(n) S / bandwidth, least squares on relative error over the train points (minimum
    times: on a shared machine the median carries other jobs' time). Raises CostsimError when a collective has fewer than 2 train sizes or the fit is
    not physical (negative latency is clipped to 0; a non-positive slope is refused)."""
    out = {}
    for name in dict.fromkeys(p.collective for p in points):
        tr = [p for p in points if p.collective == name and p.split == "train"]
        if len(tr) < 2:
            raise CostsimError(f"calibrate --comm: {name} has {len(tr)} train sizes; need at least 2")
        frac, steps = COLLECTIVES[name]
        n = float(tr[0].ranks)
        t = np.array([p.min_s for p in tr])
        x = np.array([frac(n) * p.size_bytes for p in tr])
        A = np.stack([np.ones_like(x), x], axis=1) / t[:, None]
        (a, b), *_ = np.linalg.lstsq(A, np.ones_like(t), rcond=None)
        if b <= 0:
            raise CostsimError(f"calibrate --comm: {name} time does not grow with size; cannot fit a bandwidth")
        out[name] = (max(float(a), 0.0) / float(steps(n)), 1.0 / float(b))
    return out


def apply(hw, fitted: dict, ranks: int, source: str):
    """``hw`` with the fitted collectives (provenance ``calibrated``): ``intra_node_bandwidth``
    is kept if the profile has one, else set to the fastest fitted bandwidth (a CPU profile);
    each collective's efficiency = its bandwidth / that, its latency the fitted one, overhead
    0; ``devices_per_node`` raised to ``ranks``."""
    data = hw.model_dump(mode="json", exclude_none=True)
    bw = hw.intra_node_bandwidth.value if hw.intra_node_bandwidth else max(b for _, b in fitted.values())
    if not hw.intra_node_bandwidth:
        data["intra_node_bandwidth"] = dict(value=bw, direction="unidirectional", provenance="calibrated",
                                            source=f"{source}: the fastest collective's fitted bandwidth")
    data["devices_per_node"] = max(hw.devices_per_node, ranks)
    coll = data["efficiency"].setdefault("collectives", {})
    for name, (lat, b) in fitted.items():
        coll[name] = dict(
            efficiency=dict(value=min(b / bw, 1.0), provenance="calibrated", source=source),
            latency=dict(value=lat, provenance="calibrated", source=source),
            overhead=dict(value=0.0, provenance="calibrated", source=f"{source}: constant term charged as latency"))
    return type(hw).model_validate(data)


def held_out_errors(hw, points) -> dict[str, float]:
    """MAPE per collective of the engine's ``collective_seconds`` on ``hw`` against the held-out
    points' minimum times (as fitted)."""
    from costsim.simulator.parallel import collective_seconds

    out = {}
    for name in dict.fromkeys(p.collective for p in points):
        ho = [p for p in points if p.collective == name and p.split == "held_out"]
        if ho:
            pred = np.array([collective_seconds(hw, name, p.size_bytes, p.ranks) for p in ho], dtype=float)
            meas = np.array([p.min_s for p in ho])
            out[name] = float(np.mean(np.abs(pred / meas - 1)))
    return out


def calibrate(dev: str, ranks: int, quick: bool, output, base: str, name: str, measurements=None) -> list[str]:
    """``costsim calibrate --comm``: measure on ``dev`` ("cpu" or "cuda[:N]"), fit, write the
    profile YAML at ``output`` (from the profile ``base``, named ``name``) and, if given, the
    measurements CSV; returns the summary lines. Files are written atomically."""
    import csv
    import datetime

    import yaml

    from costsim.files import atomic_write, atomic_write_text
    from costsim.registry import load_hardware

    points, missing = measure(ranks, "cpu" if dev == "cpu" else "cuda", quick)
    fitted = fit(points)
    backend = points[0].backend
    day = datetime.date.today().isoformat()
    src = f"costsim calibrate --comm: {backend}, {ranks} ranks on {dev}, {day}, fit on the train sizes"
    hw = apply(load_hardware(base), fitted, ranks, src)
    errs = held_out_errors(hw, points)
    hw = hw.model_validate(dict(hw.model_dump(mode="json", exclude_none=True), name=name))
    atomic_write_text(output, "# written by costsim calibrate --comm\n" + yaml.safe_dump(
        hw.model_dump(mode="json", exclude_none=True), sort_keys=False), "profile YAML")
    if measurements is not None:
        def write(tmp):
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["collective", "ranks", "size_bytes", "min_s", "median_s", "backend", "split", "device",
                            "date"])
                for p in points:
                    w.writerow([p.collective, p.ranks, p.size_bytes, f"{p.min_s:.9e}", f"{p.median_s:.9e}",
                                p.backend, p.split, dev, day])

        atomic_write(measurements, write, "measurements CSV")
    lines = [f"wrote {output} ({hw.name}; {len(points)} collective timings, {backend}, {ranks} ranks)"]
    for c, (lat, bw) in fitted.items():
        lines.append(f"  {c:15s} latency {lat * 1e6:8.2f} us per step  bandwidth {bw / 1e9:7.3f} GB/s  "
                     f"held-out MAPE {errs.get(c, float('nan')):6.1%}")
    if missing:
        lines.append(f"  not measured ({backend} lacks them): {', '.join(missing)}")
    return lines
