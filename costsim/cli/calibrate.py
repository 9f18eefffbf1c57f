"""``costsim calibrate`` (measure this machine, fit a profile) and ``costsim validate`` (score a
profile on held-out kernels, beside the shipped profile of the same device kind)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from costsim.cli import options as O
from costsim.cli.app import app
from costsim.cli.silicon import calibrate_silicon, check_seed, refuse_unused, same_file, validate_silicon
from costsim.errors import CostsimError

Device = typer.Option(None, "--device", help="cpu or cuda (cuda:N); default cpu.")
Silicon = typer.Option(None, "--silicon", help="Use the aiconfigurator-core measured tables of this system "
                                               "(h200_sxm, h100_sxm, b200_sxm, a100_sxm; or h200, ...) instead of "
                                               "timing here; needs pip install 'costsim\\[silicon]'.")
Backend = typer.Option(None, "--backend", help="With --silicon: tables of this framework, trtllm (default), sglang "
                                              "or vllm.")
Seed = typer.Option(None, "--seed", help="With --silicon: seed of the train/held-out halves (default 0).")
Threads = typer.Option(None, "--threads", help="CPU threads to pin while timing (default: torch's setting).")


def _device(device: str) -> str:
    from costsim.calibration.fit import check_device

    return check_device(device)


def _shipped_for(device: str, name: str | None = None) -> str:
    """The shipped profile of the device kind measured: ``cpu``, or the GPU whose name matches
    (``name``: the device name recorded with a measurement; default: ask the device)."""
    if device == "cpu":
        return "cpu"
    from costsim.calibration.fit import device_name
    from costsim.registry import hardware_names

    name = name or device_name(device)
    flat = name.lower().replace(" ", "")
    for n in sorted(hardware_names(), key=len, reverse=True):
        if n.replace("-", "") in flat:
            return n
    raise CostsimError(f"no shipped profile matches {name!r}; give --base PROFILE")


def _measure(points, device, threads, what: str, passes: int = 3) -> list[dict]:
    """Time ``points`` in ``passes`` passes (``fit.measure_points``), with a progress bar."""
    from rich.progress import Progress

    from costsim.calibration.fit import check_threads, measure_points

    check_threads(threads)
    with Progress(transient=True, console=None) as bar:
        task = bar.add_task(f"{what} {len(points)} kernels on {device} ({passes} passes)", total=passes * len(points))
        return measure_points(points, device, threads, progress=lambda p: bar.advance(task), passes=passes)


def _write_csv(records: list[dict], path: Path) -> None:
    import pandas as pd

    from costsim.files import atomic_write

    atomic_write(path, lambda tmp: pd.DataFrame(records).to_csv(tmp, index=False), "measurements CSV")


@app.command("calibrate")
def calibrate_cmd(device: str = Device,
                  output: Path = typer.Option(..., "--out", "-o", help="Profile YAML to write."),
                  quick: bool = typer.Option(False, "--quick", help="A smaller train split, timed once (about 30 s on 2 cores)."),
                  force: O.Force = False,
                  base: Optional[str] = typer.Option(None, "--base", help="Profile to start from (default: the "
                                                                         "shipped one of this device kind)."),
                  name: Optional[str] = typer.Option(None, "--name", help="Name of the written profile."),
                  threads: Optional[int] = Threads,
                  measurements: Optional[Path] = typer.Option(None, "--measurements",
                                                              help="Also write the train measurements (CSV)."),
                  from_csv: Optional[Path] = typer.Option(None, "--from-csv", help="Fit these measurements (a "
                                                                                  "CSV --measurements wrote) "
                                                                                  "instead of timing."),
                  silicon: Optional[str] = Silicon, backend: Optional[str] = Backend, seed: Optional[int] = Seed,
                  comm: bool = typer.Option(False, "--comm", help="Time all-reduce, all-gather, reduce-scatter and "
                                                                  "all-to-all on torch.distributed (gloo on cpu, "
                                                                  "NCCL on cuda) and fit the profile's collectives."),
                  ranks: Optional[int] = typer.Option(None, "--ranks", help="With --comm: processes (GPUs with "
                                                                              "cuda; default 2).")):
    """Measure this machine's kernels, fit the profile's time-model parameters, write a profile.
    With --silicon SYSTEM: fit to NVIDIA's measured kernel tables instead (no GPU needed).
    With --comm: measure and fit the collectives instead of the kernels."""

    if comm:
        def comm_go():
            refuse_unused("--comm", **{"--silicon": silicon is not None, "--from-csv": from_csv is not None,
                                       "--seed": seed is not None, "--backend": backend is not None})
            _calibrate_comm(device or "cpu", 2 if ranks is None else ranks, quick, output, force, base, name,
                            measurements)

        O.run(comm_go)
        return
    if silicon is not None:
        def silicon_go():
            refuse_unused("--silicon", **{"--from-csv": from_csv is not None, "--quick": quick,
                                                 "--measurements": measurements is not None,
                                                 "--threads": threads is not None, "--device": device is not None,
                                                 "--ranks": ranks is not None})
            check_seed(0 if seed is None else seed)
            calibrate_silicon(silicon, backend or "trtllm", output, force, base, name, 0 if seed is None else seed)

        O.run(silicon_go)
        return

    def go():
        import yaml

        from costsim.calibration.fit import fit_profile
        from costsim.calibration.suite import suite
        from costsim.files import atomic_write_text
        from costsim.registry import load_hardware

        refuse_unused("used only with --silicon (--seed, --backend) or --comm (--ranks)", **{"--seed": seed is not None,
                                                                 "--backend": backend is not None,
                                                                 "--ranks": ranks is not None})
        O.check_new(output, force, "profile YAML")
        if measurements is not None:
            O.check_new(measurements, force, "measurements CSV")
        if from_csv is not None:
            recs = [r for r in _read_records(from_csv) if r["split"] == "train"]
            if not recs:
                raise CostsimError(f"{from_csv}: no train-split rows to fit")
            dev = recs[0]["device"]
        else:
            dev = _device(device or "cpu")
            train = [p for p in suite(dev, quick) if p.split == "train"]
            recs = _measure(train, dev, threads, "calibrate: timing", passes=1 if quick else 3)
        base_hw = load_hardware(base or _shipped_for(dev, recs[0].get("device_name")))
        hw, report = fit_profile(base_hw, recs, set_peaks=dev == "cpu", name=name or output.stem,
                                 note="quick" if quick else "")
        atomic_write_text(output, "# written by costsim calibrate\n" + yaml.safe_dump(
            hw.model_dump(mode="json", exclude_none=True), sort_keys=False), "profile YAML")
        if measurements is not None:
            _write_csv(recs, measurements)
        fams = ", ".join(f"{f} {r['train_mape']:.0%}" for f, r in report.items())
        print(f"wrote {output} ({hw.name}; {len(recs)} kernels; train-split MAPE: {fams})", file=sys.stderr)
        poor = [f for f, r in report.items() if r["train_mape"] > 0.5]
        if poor:  # the formulas fit this machine's kernels to ~5-20% (README); far worse is a busy machine
            print(f"warning: train-split MAPE above 50% for {', '.join(poor)}: the machine was probably busy "
                  "while timing (other processes on its cores); check with `costsim validate` or rerun",
                  file=sys.stderr)

    O.run(go)


def _calibrate_comm(device, ranks, quick, output, force, base, name, measurements):
    from costsim.calibration.comm import calibrate

    O.check_new(output, force, "profile YAML")
    if measurements is not None:
        O.check_new(measurements, force, "measurements CSV")
    dev = _device(device)
    for line in calibrate(dev, ranks, quick, output, base or _shipped_for(dev), name or output.stem, measurements):
        print(line, file=sys.stderr)


@app.command("validate")
def validate_cmd(hardware: Optional[str] = typer.Option(None, "--hardware", "-H", help="Hardware name or profile "
                                                                                      ".yaml (with --silicon: "
                                                                                      "default the system's "
                                                                                      "calibrated profile)."),
                 device: str = Device, threads: Optional[int] = Threads,
                 silicon: Optional[str] = Silicon, backend: str = Backend,
                 from_csv: Optional[Path] = typer.Option(None, "--from-csv", help="Re-predict these measurements "
                                                                                 "instead of timing."),
                 csv: Optional[Path] = typer.Option(None, "--csv", help="Write every measurement and prediction."),
                 plot: Optional[Path] = typer.Option(None, "--plot", help="Predicted vs measured scatter (PNG)."),
                 hw_sets: O.HwSets = None, fmt: O.Format = O.Fmt.table, force: O.Force = False):
    """Score a profile on the held-out kernel suite: MAPE, median |error|, geometric-mean ratio,
    share within 25%, overall and per family, beside the shipped profile of the device kind.
    With --silicon SYSTEM: score it on every row of NVIDIA's measured kernel tables instead."""

    if silicon is not None:
        def silicon_go():
            refuse_unused("--silicon", **{"--from-csv": from_csv is not None, "--threads": threads is not None,
                                                 "--device": device is not None})
            same_file(csv, plot)
            for p, what in ((csv, "CSV"), (plot, "plot")):
                if p is not None:
                    O.check_new(p, force, what)
            if plot is not None:
                O.check_plot_output(plot, force)
            validate_silicon(silicon, backend or "trtllm", hardware, hw_sets, csv, plot, fmt)

        O.run(silicon_go)
        return
    if hardware is None:
        def need():
            raise CostsimError("validate: give --hardware PROFILE (or --silicon SYSTEM)")

        O.run(need)
        return

    def go():
        from costsim.calibration.fit import ordering_checks, score
        from costsim.calibration.suite import orderings, suite
        from costsim.registry import load_hardware
        from costsim.reports import views

        refuse_unused("used only with --silicon", **{"--backend": backend is not None})
        same_file(csv, plot)
        for p, what in ((csv, "CSV"), (plot, "plot")):
            if p is not None:
                O.check_new(p, force, what)
        if plot is not None:
            O.check_plot_output(plot, force)
        hw = O.hardware(hardware, hw_sets)
        if from_csv is not None:
            recs = _read_records(from_csv)
            dev = recs[0]["device"]
        else:
            dev = _device(device or "cpu")
            recs = _measure([p for p in suite(dev) if p.split == "held-out"], dev, threads, "validate: timing")
        shipped = load_hardware(_shipped_for(dev, recs[0].get("device_name")))
        ours, theirs = score(recs, hw), score(recs, shipped)
        order = ordering_checks(recs, ours["predicted_s"], orderings(dev))
        rows = [dict(r, predicted_s=p, predicted_shipped_s=q)
                for r, p, q in zip(recs, ours.pop("predicted_s"), theirs.pop("predicted_s"))]
        if csv is not None:
            _write_csv(rows, csv)
        if plot is not None:
            from costsim.reports.plots import predicted_vs_measured

            predicted_vs_measured(rows, plot, f"{hw.name} on {rows[0]['device_name']}: held-out MAPE "
                                              f"{ours['mape']:.1%} (shipped {shipped.name}: {theirs['mape']:.1%})")
        views.validation(ours, theirs, hw.name, shipped.name, len(recs), order, fmt.value)

    O.run(go)


def _read_records(path: Path) -> list[dict]:
    import pandas as pd

    from costsim.calibration.fit import point_of
    from costsim.files import check_input

    check_input(path)
    try:
        df = pd.read_csv(path, keep_default_na=False)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise CostsimError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None
    need = ["family", "kernel", "split", "min_s", "device"]
    missing = [c for c in need if c not in df.columns]
    if missing or df.empty:
        raise CostsimError(f"{path}: {'no rows' if not missing else 'missing column(s) ' + ', '.join(missing)}")
    recs = df.to_dict("records")
    from costsim.calibration.suite import FAMILIES, KERNELS, predict
    from costsim.errors import FieldError
    from costsim.registry import load_hardware

    probe = load_hardware("cpu")
    for i, r in enumerate(recs):
        where = f"{path}: row {i + 2}"
        try:
            p = point_of(r)
            t = float(r["min_s"])
        except (KeyError, TypeError, ValueError) as e:
            raise CostsimError(f"{where}: does not describe a suite kernel ({e})") from None
        if not (0 < t < float("inf")):
            raise CostsimError(f"{where}, column min_s: expected a finite time > 0 s, got {r['min_s']!r}")
        if p.family not in FAMILIES or p.kernel not in KERNELS:
            raise CostsimError(f"{where}: unknown family {p.family!r} or kernel {p.kernel!r} "
                               f"(expected one of {', '.join(FAMILIES)} / {', '.join(KERNELS)})")
        try:
            predict(p, probe)
        except FieldError as e:
            raise CostsimError(f"{where}, column {e.field}: {e.reason} (got {e.value})") from None
        except CostsimError as e:
            raise CostsimError(f"{where}: {e}") from None
    return recs
