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


# ---------------------------------------------------------------------------------------------------------------------
# Compiled engines: large randomized agreement with scikit-learn, ties, invalid values, threads.

COMPILED = [b for b in BACKENDS if b != "torch"]


def varied_problems(count: int, seed: int):
    """Problems of every kind the kernels must get right: clustered cosine distances with exact duplicates, the same
    quantized to a coarse grid (ties everywhere), tiny integer matrices, asymmetric ones, distances that differ only
    below the 15th decimal, with varied min_samples and xi. Returns [(dist float64 [n, n], min_samples, xi)]."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        n = int(rng.integers(4, 40))
        kind = k % 5
        if kind == 3:  # tiny integers: ties and equal distances everywhere
            d = rng.integers(0, int(rng.integers(2, 5)), size=(n, n)).astype(np.float64)
            if rng.random() < 0.7:
                d = np.minimum(d, d.T)
            np.fill_diagonal(d, 0.0)
        else:
            x = clustered_points(n, int(rng.integers(2, 16)), int(rng.integers(0, 6)), float(rng.uniform(0.02, 0.7)),
                                 rng, n_duplicates=int(rng.integers(0, 8)))
            d = cosine_distances(x)
            if kind == 1:  # coarse grid
                d = np.round(d * rng.choice([4, 10, 32])) / 16
            elif kind == 2:  # asymmetric
                d = d + rng.uniform(0, 0.02, size=d.shape)
            elif kind == 4:  # differences below 1e-15 on many entries
                d = d + rng.integers(0, 3, size=d.shape) * 1e-16
        ms = int(rng.integers(2, max(3, n // 3) + 1))
        xi = float(rng.choice([0.05, 0.05, 0.01, 0.1, 0.3, 0.7]))
        out.append((d, ms, xi))
    return out


@pytest.mark.parametrize("backend", COMPILED)
def test_large_randomized_agreement_with_sklearn(backend):
    """2000 problems (scikit-learn's fits take nearly all the time): the partition must equal scikit-learn's on every
    one, and so must the numbering (the kernel reproduces scikit-learn's cluster order)."""
    import warnings

    problems_ = varied_problems(2000, seed=2024)
    same_partition_count = same_numbering = 0
    failures = []
    for i, (d, ms, xi) in enumerate(problems_):
        got = hf.optics_labels(torch.from_numpy(d)[None], ms, xi, backend=backend)[0].numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = sklearn_labels(d, ms, xi)
        ok = same_partition(got, want)
        same_partition_count += ok
        same_numbering += bool(np.array_equal(got, want))
        if not ok and len(failures) < 3:
            failures.append((i, d.shape[0], ms, xi, got.tolist(), want.tolist()))
    assert same_partition_count == len(problems_), failures
    assert same_numbering == len(problems_)


@pytest.mark.parametrize("backend", COMPILED)
def test_batch_of_many_problems_equals_one_by_one(backend):
    rng = np.random.default_rng(8)
    d = np.stack([cosine_distances(clustered_points(33, 5, 3, 0.2, rng, n_duplicates=3)) for _ in range(40)])
    batch = hf.optics_labels(torch.from_numpy(d), 4, backend=backend)
    for i in range(len(d)):
        assert torch.equal(batch[i], hf.optics_labels(torch.from_numpy(d[i : i + 1]), 4, backend=backend)[0])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.25])
def test_invalid_distances_raise(backend, bad):
    """scikit-learn rejects NaN, inf and negative distances with ValueError; the compiled engines do too (the cpu one
    names the offending entry)."""
    d = torch.full((2, 6, 6), 0.5, dtype=torch.float64)
    d[1, 2, 4] = bad
    with pytest.raises(ValueError, match=r"dist\[1, 2, 4\]" if backend == "cpu" else None):
        hf.optics_labels(d, 2, backend=backend)


@pytest.mark.parametrize("backend", [b for b in COMPILED if b == "cpu"])
def test_negative_zero_is_read_as_zero(backend):
    """Documented difference from scikit-learn (csrc/optics_labels/optics_labels.h): -0.0 is +0.0."""
    rng = np.random.default_rng(4)
    d = np.round(cosine_distances(clustered_points(25, 3, 2, 0.2, rng, n_duplicates=4)) * 4) / 4
    pos = torch.from_numpy(d)[None]
    neg = torch.where(pos == 0, torch.tensor(-0.0, dtype=torch.float64), pos)
    assert torch.signbit(neg).any()
    assert torch.equal(hf.optics_labels(neg, 2, backend=backend), hf.optics_labels(pos, 2, backend=backend))


_THREADS_SCRIPT = """
import hashlib, sys, numpy as np, torch
import hetmm_fast as hf
from hetmm_fast.testing import clustered_points, cosine_distances
rng = np.random.default_rng(77)
d = np.stack([cosine_distances(clustered_points(45, 6, 3, 0.25, rng, n_duplicates=5)) for _ in range(64)])
labels = hf.optics_labels(torch.from_numpy(d), 3, backend=sys.argv[1])
print(torch.get_num_threads(), hashlib.sha256(labels.numpy().tobytes()).hexdigest())
"""


@pytest.mark.parametrize("backend", COMPILED)
def test_bit_identical_with_one_and_two_threads(backend):
    import os
    import subprocess
    import sys

    out = {}
    for threads in ("1", "2"):
        env = dict(os.environ, OMP_NUM_THREADS=threads)
        res = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT, backend], env=env, capture_output=True,
                             text=True, timeout=300, check=True)
        n, digest = res.stdout.split()
        assert n == threads
        out[threads] = digest
    assert out["1"] == out["2"]
