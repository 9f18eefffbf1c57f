"""Calibrated profiles for GPUs without measured tables, derived from a calibrated sibling
(issue 7, item 4: "H800 and H20 have no tables: derive them from H100 and say so").

``derive(target, fitted)``: the target's own datasheet part (peaks, memory, links, latencies,
devices per node, price) with the fitted sibling's time-model parameters — per-family
efficiencies, overheads, tile/wave parameters, the collectives' protocol models and the
residual bands — each re-labelled provenance ``derived`` with a source naming the sibling,
its fit and why it transfers. The profile-wide compute/memory/link efficiencies stay the
target's (measured on it where it has them). Nothing here was fitted on the target.

- H800: the same GH100 die, clocks and HBM3 as the H100 SXM5; NVLink cut to 400 GB/s
  bidirectional (ISCA 2025 §4.3). Kernel efficiencies transfer; collectives keep H100's
  per-protocol efficiency and latency, applied to H800's own link bandwidth.
- H20: a cut-down Hopper (78 SMs, 148 TFLOPS BF16 dense, 4.0 TB/s): the fractions of peak
  transfer less well (a small-SM part reaches its peak at smaller M); the bands are the H100's.
"""

from __future__ import annotations

import copy

WHY = {
    "h800": "H800 is the H100 SXM5's GH100 silicon (same SMs, clocks, HBM3) with NVLink cut to 400 GB/s; "
            "kernel efficiencies transfer, collectives' protocol efficiency and latency applied to H800's links",
    "h20": "H20 is a cut-down Hopper (78 SMs, 148 TFLOPS BF16, 4.0 TB/s); fractions of peak taken from the H100 "
           "fit are an approximation (a small-SM part saturates at smaller shapes)",
}


def _relabel(node, source: str):
    """Every fitted value node (a dict with 'value' and provenance 'calibrated') in ``node`` ->
    provenance 'derived', its source prefixed with ``source``; other values are kept as they are."""
    if isinstance(node, dict):
        if "value" in node and node.get("provenance") == "calibrated":
            out = dict(node, provenance="derived", source=f"{source}; fitted value: {node.get('source', '')}".strip())
            return out
        return {k: _relabel(v, source) for k, v in node.items()}
    if isinstance(node, list):
        return [_relabel(v, source) for v in node]
    return node


def derive(target: dict, fitted: dict, name: str) -> dict:
    """A profile dict (as the YAML holds it): ``target``'s datasheet part and ``fitted``'s
    time-model parameters, re-labelled (module docstring). ``name``: the new profile's name."""
    out = copy.deepcopy(target)
    base = target["name"]
    why = WHY.get(base, f"{base} shares {fitted['name']}'s architecture")
    src = f"derived from {fitted['name']} ({why}); not fitted on {base} measurements"
    out["name"] = name
    out["full_name"] = f"{target['full_name']} (time model derived from {fitted['name']})"
    out["source"] = (f"{target['source'].strip()} | time-model parameters: {src}. {fitted['name']}: "
                     f"{fitted['source'].strip()}")
    eff = out["efficiency"]
    for key in ("families", "collectives", "comm_overhead"):
        node = fitted["efficiency"].get(key)
        if node is not None and (key != "comm_overhead" or node.get("provenance") == "calibrated"):
            eff[key] = _relabel(copy.deepcopy(node), src)
    if "residuals" in fitted:
        out["residuals"] = copy.deepcopy(fitted["residuals"])
        for band in out["residuals"].values():
            if isinstance(band, dict):
                band["source"] = f"{fitted['name']}'s held-out residuals ({src}): {band.get('source', '')}".strip()
    return out
