"""Shared by tests: the vectorised serving grid equals ``serving.serve`` point by point."""

from __future__ import annotations

import numpy as np
import pytest

from costsim.simulator.serving import serve
from costsim.simulator.sweep import serve_grid


def assert_grid_equals_serve(spec, hw, dep, b, i, o, fields=("ttft_s", "tpot_s", "e2e_s"), rel=1e-9):
    """``serve_grid`` over the batch x input x output grid (1-D arrays) equals ``serve`` at
    every point in each of ``fields`` (seconds), to ``rel``."""
    g = serve_grid(spec, hw, dep, b[:, None, None], i[None, :, None], o[None, None, :])
    shape = (len(b), len(i), len(o))
    for x, bv in enumerate(b):
        for y, iv in enumerate(i):
            for z, ov in enumerate(o):
                r = serve(spec, hw, dep, int(bv), int(iv), int(ov))
                for k in fields:
                    assert np.broadcast_to(getattr(g, k), shape)[x, y, z] == pytest.approx(getattr(r, k), rel=rel), \
                        (k, bv, iv, ov)
