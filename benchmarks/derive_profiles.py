"""Write h800-calibrated.yaml and h20-calibrated.yaml from h100-calibrated.yaml (not a test;
tests/test_derived_profiles.py checks the shipped files equal this script's output).

    python benchmarks/derive_profiles.py
"""

from __future__ import annotations

from pathlib import Path

import yaml

from costsim.calibration.derive import derive

DIR = Path(__file__).resolve().parents[1] / "costsim" / "hardware_profiles"


def derived_text(target: str, fitted: str = "h100-calibrated") -> str:
    t = yaml.safe_load((DIR / f"{target}.yaml").read_text())
    f = yaml.safe_load((DIR / f"{fitted}.yaml").read_text())
    d = derive(t, f, f"{target}-calibrated")
    return (f"# written by benchmarks/derive_profiles.py: {target}'s datasheet part + {fitted}'s fitted time model\n"
            + yaml.safe_dump(d, sort_keys=False, width=100))


def main() -> None:
    for target in ("h800", "h20"):
        path = DIR / f"{target}-calibrated.yaml"
        path.write_text(derived_text(target))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
