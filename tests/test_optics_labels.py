import numpy as np
import pytest
import torch

import hetmm_fast as hf
from hetmm_fast.testing import clustered_points, cosine_distances, same_partition

BACKENDS = [b for b, why in hf.available_backends().items() if not why and b != "cuda"]


def sklearn_labels(d: np.ndarray, min_samples: int, xi: float = 0.05) -> np.ndarray:
    from sklearn.cluster import OPTICS

    return OPTICS(metric="precomputed", min_samples=min_samples, xi=xi).fit(d).labels_


def problems(count: int, seed: int):
    """Random clustered problems of varied size, spread and duplicate count (cosine distances, float64)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = int(rng.integers(5, 60))
        x = clustered_points(n, int(rng.integers(2, 12)), int(rng.integers(0, 5)), float(rng.uniform(0.02, 0.6)),
                             rng, n_duplicates=int(rng.integers(0, 4)))
        out.append((cosine_distances(x), int(rng.integers(2, max(3, n // 3)))))
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_equals_sklearn_on_clustered_problems(backend):
    import warnings

    count = 60 if backend == "torch" else 600
    mismatches = 0
    for d, ms in problems(count, seed=123):
        got = hf.optics_labels(torch.from_numpy(d)[None], ms, backend=backend)[0].numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = sklearn_labels(d, ms)
        mismatches += not same_partition(got, want)
    assert mismatches == 0


def test_batched_equals_per_problem():
    rng = np.random.default_rng(5)
    ds = [cosine_distances(clustered_points(30, 4, 3, 0.1, rng)) for _ in range(4)]
    batch = hf.optics_labels(torch.from_numpy(np.stack(ds)), 4)
    assert batch.shape == (4, 30) and batch.dtype == torch.int64
    for i, d in enumerate(ds):
        assert np.array_equal(batch[i].numpy(), sklearn_labels(d, 4))


def test_finds_obvious_clusters():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 3)) * 0.05 + np.array([1, 0, 0])
    b = rng.normal(size=(20, 3)) * 0.05 + np.array([0, 1, 0])
    x = np.concatenate([a, b])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = hf.optics_labels(torch.from_numpy(cosine_distances(x))[None], 5)[0].numpy()
    left, right = set(labels[:20].tolist()) - {-1}, set(labels[20:].tolist()) - {-1}
    assert left and right and not left & right  # clusters in both groups, none straddling them


D = torch.zeros(2, 5, 5, dtype=torch.float64)


@pytest.mark.parametrize(
    "args, exc, text",
    [
        ((D.float(), 2), TypeError, "dist must be float64"),
        ((D[0], 2), ValueError, r"dist must be \[P, N, N\]"),
        ((torch.zeros(2, 5, 4, dtype=torch.float64), 2), ValueError, r"dist must be \[P, N, N\]"),
        ((D[:0], 2), ValueError, "dist is empty"),
        ((D, 1), ValueError, r"min_samples must be in \[2, N=5\]"),
        ((D, 6), ValueError, r"min_samples must be in \[2, N=5\]"),
        ((D, 2.5), TypeError, "min_samples must be an int"),
        ((D, 2, 0.0), ValueError, r"xi must be a float in \(0, 1\)"),
        ((D, 2, 1.5), ValueError, r"xi must be a float in \(0, 1\)"),
        ((D.numpy(), 2), TypeError, "dist must be a torch.Tensor"),
    ],
)
def test_errors(args, exc, text):
    with pytest.raises(exc, match=text):
        hf.optics_labels(*args)
