"""Public ``optics_labels``: batched OPTICS xi clustering of precomputed distance matrices (SPEC §4 step 1)."""
from __future__ import annotations

import torch

from .. import _backends
from .._validate import check_optics, check_values
from ..reference.optics_labels import optics_labels as _reference

_backends.register("optics_labels", "torch", _reference, lambda tensors: [])


def optics_labels(dist: torch.Tensor, min_samples: int, xi: float = 0.05, backend: str | None = None) -> torch.Tensor:
    """Cluster P independent problems with OPTICS.

    Args:
        dist: Tensor[P, N, N] float64, one symmetric distance matrix per problem.
        min_samples: int in [2, N]; the core distance of a point counts the point itself.
        xi: steepness threshold of the xi cluster extraction, in (0, 1).
        backend: see :func:`hetmm_fast.window_match`.

    Returns:
        Tensor[P, N] int64 labels, -1 for noise: the partition that scikit-learn's
        ``OPTICS(metric="precomputed", min_samples=min_samples, xi=xi)`` (max_eps=inf, min_cluster_size=min_samples,
        predecessor correction) gives for each problem. Label numbering follows scikit-learn's.
    """
    check_optics(dist, min_samples, xi)
    name, fn = _backends.select("optics_labels", backend, (dist,))
    if name == "torch":  # the compiled engines check the distances in their kernels
        check_values("optics_labels", "dist", dist, nonnegative=True)
    return fn(dist, min_samples, float(xi))
