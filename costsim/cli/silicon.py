"""The ``--silicon`` halves of ``costsim calibrate`` and ``costsim validate`` (NVIDIA's measured
kernel tables, ``costsim.calibration.silicon``), and the checks of the flags they share."""

from __future__ import annotations

import sys
from pathlib import Path

from costsim.cli import options as O
from costsim.errors import CostsimError, FieldError


def refuse_unused(what: str, **given) -> None:
    """CostsimError naming the first flag in ``given`` (flag -> given?) that ``what`` (a flag such
    as --silicon, or a sentence for the plain command) does not use: such a flag would otherwise
    be silently ignored."""
    for flag, on in given.items():
        if on:
            if what.startswith("--"):
                raise CostsimError(f"{what} and {flag} cannot be combined: {what} does not use {flag}")
            raise CostsimError(f"{flag}: {what}")


def same_file(csv, plot) -> None:
    if csv is not None and plot is not None and Path(csv).resolve() == Path(plot).resolve():
        raise CostsimError(f"--csv {csv} and --plot {plot}: the same file; give two paths")


def check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise CostsimError(f"--seed {seed}: expected an integer >= 0")


def calibrate_silicon(system, backend, output, force, base, name, seed):
    backend = str(backend).strip().lower()
    from costsim.calibration import silicon as S
    from costsim.calibration import silicon_fit as F
    from costsim.files import atomic_write_text
    from costsim.registry import load_hardware

    O.check_new(output, force, "profile YAML")
    sysname = S.system_name(system)
    base_hw = load_hardware(base or S.SYSTEMS[sysname])
    res = F.calibrate(sysname, backend, base_hw, seed, name or output.stem)
    hw = F.with_provenance(res["random"]["profile"], res, sysname, backend, seed)
    atomic_write_text(output, F.profile_yaml(hw, f"written by costsim calibrate --silicon {sysname} --backend "
                                                 f"{backend} --seed {seed}"), "profile YAML")
    print(f"wrote {output} ({hw.name}; {res['tables'].source_text()})", file=sys.stderr)
    tr = {r["label"]: r for r in res["random"]["train"]}
    grp = {r["label"]: r for r in res["group"]["held_out"]}
    for r in res["random"]["held_out"]:
        g = grp.get(r["label"])
        t = tr.get(r["label"])  # a label can have rows in one half only (a small table)
        print(f"  {r['label']:22s} train {t['mape'] if t else float('nan'):6.1%}  held-out {r['mape']:6.1%}  "
              f"groups held out {g['mape'] if g else float('nan'):6.1%}  ({r['points']} held-out rows)", file=sys.stderr)


def validate_silicon(system, backend, hardware, hw_sets, csv, plot, fmt):
    backend = str(backend).strip().lower()
    from costsim.calibration import silicon as S
    from costsim.calibration import silicon_fit as F
    from costsim.registry import load_hardware
    from costsim.reports import views

    sysname = S.system_name(system)
    hw = O.hardware(hardware or F.default_profile(sysname), hw_sets)
    ref = load_hardware(S.SYSTEMS[sysname])
    try:
        res = F.validate(sysname, hw, backend, reference=ref if ref.name != hw.name else None)
    except FieldError as e:  # a profile that cannot time the tables' kernels (no peak for a format)
        raise CostsimError(f"-H {hw.name}: cannot predict the {sysname} tables: {e.reason} "
                           f"(their {e.field} {e.value} rows)") from None
    frame = res["frame"]
    if csv is not None:
        from costsim.files import atomic_write

        atomic_write(csv, lambda tmp: frame.to_csv(tmp, index=False), "predictions CSV")
    if plot is not None:
        from costsim.reports.plots import predicted_vs_measured

        predicted_vs_measured(F.scatter_rows(frame), plot, f"{hw.name} on {sysname} ({backend}) tables: MAPE "
                                          f"{res['overall']['mape']:.1%} over all rows")
    views.silicon_validation(res, hw.name, ref.name if ref.name != hw.name else None, sysname, backend, fmt.value)
