"""hetmm_fast: a fast, dependable implementation of HETMM (template mutual matching for anomaly detection).

Ops (namespace ``hetmm``; each with a pure-PyTorch reference and compiled/Triton engines when available)::

    fwd, bwd = hetmm_fast.window_match(query, templates, fwd_window=13, bwd_window=7, backend=None)
    labels = hetmm_fast.optics_labels(dist, min_samples, xi=0.05, backend=None)
    sel = hetmm_fast.pts_select(templates, size=60, backend=None)
    hetmm_fast.available_backends()
    templates = hetmm_fast.pixel_major(templates)  # the CUDA kernel's layout: read in place, not repacked per call

Detector::

    det = hetmm_fast.HETMM(backbone="efficientnet_lite0", preset="default", image_size=256, device="cpu")
    det.fit(images).select(60)
    out = det.predict(images)        # out.scores Tensor[B], out.maps Tensor[B, S, S]
"""
from __future__ import annotations

from ._backends import available_backends
from .ops import optics_labels, pixel_major, pts_labels, pts_select, window_match

__version__ = "0.1.0"
__all__ = ["HETMM", "GraphedAnomalyMap", "Prediction", "available_backends", "optics_labels", "pixel_major",
           "pts_labels", "pts_select", "window_match", "__version__"]


def __getattr__(name: str):
    # The detector pulls in torchvision and the backbones; keep `import hetmm_fast` light for op-only users.
    if name in ("HETMM", "GraphedAnomalyMap", "Prediction"):
        from . import detector

        return getattr(detector, name)
    raise AttributeError(f"module 'hetmm_fast' has no attribute {name!r}")
