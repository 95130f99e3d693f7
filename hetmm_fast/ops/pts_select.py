"""Public ``pts_select``: pixel-level template selection (SPEC §4), dispatched to the best backend."""
from __future__ import annotations

from typing import Callable

import torch

from .. import _backends
from .._validate import check_pts, check_values
from ..reference.pts_select import gather_sheets as _reference_gather
from ..reference.pts_select import pts_indices as _reference
from ..reference.pts_select import pts_labels as _reference_labels

_backends.register("pts_select", "torch", lambda templates, size: _reference(templates, size), lambda tensors: [])
_backends.register("pts_labels", "torch", lambda templates, size: _reference_labels(templates, size),
                   lambda tensors: [])
_backends.register("gather_sheets", "torch", _reference_gather, lambda tensors: [])


def _gather(templates: torch.Tensor, idx: torch.Tensor, backend: str) -> torch.Tensor:
    """``out[k, :, y, x] = templates[idx[k, y, x], :, y, x]`` with the compiled gather of ``backend`` when it has one
    for these tensors (cpu: hetmm.gather_sheets, parallel over (channel, pixel block) tasks, about 4x faster than
    torch.gather with an index expanded over C at the category shape), otherwise the reference's torch.gather. Both
    copy the values exactly."""
    if not _backends.reasons("gather_sheets", backend, (templates, idx)):
        return _backends.select("gather_sheets", backend, (templates, idx))[1](templates, idx)
    return _reference_gather(templates, idx)


def pts_select(
    templates: torch.Tensor,
    size: int = 60,
    backend: str | None = None,
    *,
    return_indices: bool = False,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Select ``size`` template vectors per pixel: easy-normal cluster medoids, then hard normals (SPEC §4).

    Args:
        templates: Tensor[N, C, H, W] (the ALL set of one layer), L2-normalised over C.
        size: K, the number of sheets to keep; when K >= N the ALL set is returned unchanged.
        backend: see :func:`hetmm_fast.window_match`.
        return_indices: also return the chosen indices.
        progress: called with the number of pixels finished, as work completes (for progress bars).

    Returns:
        Tensor[K, C, H, W] with ``out[k, :, y, x] = templates[idx[k, y, x], :, y, x]``, K = min(size, N), same
        dtype as the input; with ``return_indices`` also ``idx`` Tensor[K, H, W] int64. Sheet k holds the k-th
        choice at every pixel (easy normals first, in cluster order, then hard normals in greedy order).
    """
    check_pts(templates, size)
    N, C, H, W = templates.shape
    if size >= N:
        idx = torch.arange(N, device=templates.device).view(N, 1, 1).expand(N, H, W).clone()
        if progress is not None:
            progress(H * W)
        out = templates.clone()
    else:
        name, fn = _backends.select("pts_select", backend, (templates,))
        if name == "torch":  # the compiled engines check the values in their kernels
            check_values("pts_select", "templates", templates)
        # Bands of rows keep progress reports flowing; pixels are independent so the result is unchanged.
        band = max(1, -(-H // 16)) if progress is not None else H
        parts = []
        for y0 in range(0, H, band):
            parts.append(fn(templates[:, :, y0 : y0 + band], size))
            if progress is not None:
                progress(parts[-1].shape[1] * W)
        idx = torch.cat(parts, dim=1)
        out = _gather(templates, idx, name)
    return (out, idx) if return_indices else out


def pts_labels(templates: torch.Tensor, size: int = 60, backend: str | None = None) -> torch.Tensor:
    """The OPTICS labels PTS starts from at every pixel (SPEC §4 step 1), without the selection.

    Args:
        templates: Tensor[N, C, H, W] (the ALL set of one layer), L2-normalised over C.
        size: K; the clustering uses ``min_samples = max(2, N // K)`` and xi = 0.05, as :func:`pts_select` does.
        backend: see :func:`hetmm_fast.window_match` (a compiled CPU kernel, else the reference's scikit-learn).

    Returns:
        Tensor[N, H, W] int64: ``labels[i, y, x]`` the cluster of template i at pixel (y, x), -1 for noise; clusters
        are numbered in the order OPTICS extracts them (compare partitions, not numbers, across implementations).
    """
    check_pts(templates, size)
    size = min(size, templates.shape[0])
    name, fn = _backends.select("pts_labels", backend, (templates,))
    if name == "torch":  # the compiled engines check the values in their kernels
        check_values("pts_labels", "templates", templates)
    return fn(templates, size)
