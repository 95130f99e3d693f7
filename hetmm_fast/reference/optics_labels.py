"""Reference OPTICS labels: scikit-learn's ``OPTICS(metric="precomputed")`` fitted on each problem (the oracle).

SPEC §4 step 1 defines PTS clustering as exactly this estimator's semantics; the compiled engines reimplement it
and are tested against this function.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch


def optics_labels(dist: torch.Tensor, min_samples: int, xi: float = 0.05) -> torch.Tensor:
    """``dist`` Tensor[P, N, N] float64 -> labels Tensor[P, N] int64 (-1 = noise), one OPTICS fit per problem."""
    from sklearn.cluster import OPTICS

    d = dist.detach().cpu().numpy()
    out = np.empty(d.shape[:2], dtype=np.int64)
    est = OPTICS(metric="precomputed", min_samples=min_samples, xi=xi, max_eps=np.inf, cluster_method="xi")
    with warnings.catch_warnings():
        # "All reachability values are inf" is a legitimate outcome here, not a user error.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # sklearn divides by zero reachabilities internally
        for i in range(d.shape[0]):
            out[i] = est.fit(d[i]).labels_
    return torch.from_numpy(out).to(dist.device)
