"""Triton engine of the hetmm ops (backend ``"triton"``): ``window_match`` and ``pts_select``.

Imported lazily by ``hetmm_fast._backends``; importing it without Triton installed raises ``ModuleNotFoundError``,
which the backend table reports as the reason ``triton`` is unavailable. The kernels need CUDA tensors; with the
environment variable ``TRITON_INTERPRET=1`` set **before this package is imported** they are built for Triton's
CPU interpreter instead and accept CPU tensors (slow: for tests on machines without a GPU).

Modules: :mod:`.window_match` (``window_match.window_match(...)``, the ``hetmm::window_match_triton`` op) and
:mod:`.pts_select` (``pixel_gram``, ``pixel_distances``, ``gram_and_distances``, ``pts_select.pts_select``).

Registered engine callables (inputs already validated by the public ops):

* ``window_match(query[B,C,H,W], templates[N,C,H,W], fwd_window, bwd_window, precision) -> (fwd[B,H,W],
  bwd[B,H,W])``, fp32 dot products exact (``input_precision="ieee"``) for precision "exact", TF32 for "tf32";
* ``pts_select(templates[N,C,H,W], size) -> indices[size,H,W]``: Gram/distance matrices by Triton, clustering by the
  best OPTICS engine, selection by the reference (see :mod:`hetmm_fast.triton.pts_select`).
"""
from __future__ import annotations

import triton  # noqa: F401  (ModuleNotFoundError here is the "triton not installed" reason)

from .. import _backends
from . import pts_select, window_match  # submodules; their functions keep the module names
from .pts_select import gram_and_distances, pixel_distances, pixel_gram
from .window_match import INTERPRET, window_match_triton

__all__ = [
    "INTERPRET", "gram_and_distances", "pixel_distances", "pixel_gram", "pts_select", "window_match",
    "window_match_triton",
]


_backends.register("window_match", "triton", window_match.engine, window_match.can_run)
_backends.register("pts_select", "triton", pts_select.pts_select, pts_select.can_run)
