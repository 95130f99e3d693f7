import numpy as np
import pytest
import torch

import hetmm_fast as hf
from hetmm_fast.reference.optics_labels import optics_labels as sk_optics
from hetmm_fast.reference.pts_select import gram_chunks, min_samples_for
from hetmm_fast.testing import clustered_templates, noncontiguous, pts_transcription, unit_features

BACKENDS = [b for b, why in hf.available_backends().items() if not why and b != "cuda"]


def expected_indices(t: torch.Tensor, size: int) -> torch.Tensor:
    """Plain-Python SPEC §4 per pixel on the same float64 Gram matrices and OPTICS labels."""
    N, C, H, W = t.shape
    out = torch.empty(size, H * W, dtype=torch.int64)
    ms = min_samples_for(N, size)
    for p0, p1, g in gram_chunks(t):
        labels = sk_optics(torch.clamp(1 - g, min=0), ms, 0.05)
        for j in range(p1 - p0):
            out[:, p0 + j] = torch.tensor(pts_transcription(g[j].numpy(), labels[j].tolist(), size))
    return out.view(size, H, W)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n, size, seed", [(24, 4, 0), (17, 5, 1), (30, 2, 2), (12, 11, 3), (40, 1, 4)])
def test_equals_transcription(backend, n, size, seed):
    t = clustered_templates(n, 6, 3, 4, seed)
    sel, idx = hf.pts_select(t, size, backend=backend, return_indices=True)
    assert sel.shape == (size, 6, 3, 4) and idx.shape == (size, 3, 4) and sel.dtype == t.dtype
    assert torch.equal(idx, expected_indices(t, size))
    assert torch.equal(sel, torch.gather(t, 0, idx[:, None].expand(size, 6, 3, 4)))
    for p in range(12):  # K distinct choices per pixel
        assert len(set(idx.view(size, -1)[:, p].tolist())) == size


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_duplicates_and_noncontiguous(backend):
    """Every template identical at a pixel: all distances 0, ties everywhere -> smallest indices first."""
    base = unit_features((1, 5, 2, 3), seed=1).expand(10, 5, 2, 3).contiguous()
    idx = hf.pts_select(base, 3, backend=backend, return_indices=True)[1]
    assert torch.equal(idx, expected_indices(base, 3))
    t = clustered_templates(16, 5, 2, 3, 9)
    a = hf.pts_select(t, 4, backend=backend, return_indices=True)[1]
    b = hf.pts_select(noncontiguous(t), 4, backend=backend, return_indices=True)[1]
    assert torch.equal(a, b)


def test_size_at_least_n_returns_all():
    t = unit_features((5, 3, 2, 2))
    out, idx = hf.pts_select(t, 5, return_indices=True)
    assert torch.equal(out, t) and torch.equal(idx[:, 0, 0], torch.arange(5))
    assert torch.equal(hf.pts_select(t, 50), t)


def test_progress_reports_every_pixel():
    t = clustered_templates(12, 4, 5, 3, 7)
    seen = []
    hf.pts_select(t, 3, progress=seen.append)
    assert sum(seen) == 15 and len(seen) > 1


def test_min_samples_rule():
    assert min_samples_for(200, 60) == 3 and min_samples_for(100, 60) == 2 and min_samples_for(800, 60) == 13


@pytest.mark.parametrize(
    "args, exc, text",
    [
        ((unit_features((4, 3, 2, 2)), 0), ValueError, "size must be >= 1"),
        ((unit_features((4, 3, 2, 2)), 2.0), TypeError, "size must be an int"),
        ((unit_features((4, 3, 2, 2))[0], 2), ValueError, "templates must be 4-D"),
        ((unit_features((4, 3, 2, 2))[:0], 2), ValueError, "templates is empty"),
        ((unit_features((4, 3, 2, 2)).long(), 2), TypeError, "templates dtype"),
    ],
)
def test_errors(args, exc, text):
    with pytest.raises(exc, match=text):
        hf.pts_select(*args)


# ---------------------------------------------------------------------------------------------------------------------
# Compiled engines: realistic sizes, half-precision inputs, non-finite inputs, threads.

COMPILED = [b for b in BACKENDS if b != "torch"]


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("n, c, size, seed", [(60, 16, 10, 11), (200, 32, 60, 12), (90, 7, 45, 13)])
def test_equals_transcription_at_realistic_sizes(backend, n, c, size, seed):
    """The PTS configuration of the paper (N = 200, K = 60, min_samples 3) and others, against scikit-learn."""
    t = clustered_templates(n, c, 3, 2, seed, n_dup=6)
    idx = hf.pts_select(t, size, backend=backend, return_indices=True)[1]
    assert torch.equal(idx, expected_indices(t, size))


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes(backend, dtype):
    t = clustered_templates(30, 8, 4, 3, 21).to(dtype)
    idx = hf.pts_select(t, 7, backend=backend, return_indices=True)[1]
    assert torch.equal(idx, expected_indices(t, 7))  # the reference computes the Gram matrix in float64 too


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_templates_raise(backend):
    t = clustered_templates(12, 4, 3, 3, 5)
    t[3, 1, 2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"\(y, x\) = \(2, 1\)" if backend == "cpu" else None):
        hf.pts_select(t, 3, backend=backend)


_THREADS_SCRIPT = """
import hashlib, sys, torch
sys.path.insert(0, sys.argv[2])
import hetmm_fast as hf
from test_pts_select import clustered_templates
t = clustered_templates(48, 12, 9, 7, 31)
idx = hf.pts_select(t, 9, backend=sys.argv[1], return_indices=True)[1]
print(torch.get_num_threads(), hashlib.sha256(idx.numpy().tobytes()).hexdigest())
"""


@pytest.mark.parametrize("backend", COMPILED)
def test_bit_identical_with_one_and_two_threads(backend):
    import os
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    out = {}
    for threads in ("1", "2"):
        env = dict(os.environ, OMP_NUM_THREADS=threads)
        res = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT, backend, here], env=env, capture_output=True,
                             text=True, timeout=300, check=True)
        n, digest = res.stdout.split()
        assert n == threads
        out[threads] = digest
    assert out["1"] == out["2"]


# pts_labels: the clustering step alone.


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n, c, size, seed", [(24, 6, 4, 0), (60, 16, 10, 11), (17, 5, 5, 1), (12, 3, 20, 3)])
def test_pts_labels_partitions_equal_scikit_learn(backend, n, c, size, seed):
    from hetmm_fast.testing import same_partition

    t = clustered_templates(n, c, 3, 4, seed)
    got = hf.pts_labels(t, size, backend=backend)
    assert got.shape == (n, 3, 4) and got.dtype == torch.int64
    ms = min_samples_for(n, min(size, n))
    for p0, p1, g in gram_chunks(t):
        want = sk_optics(torch.clamp(1 - g, min=0), ms, 0.05)
        for j in range(p1 - p0):
            p = p0 + j
            assert same_partition(got.view(n, -1)[:, p].numpy(), want[j].numpy()), (p, got.view(n, -1)[:, p], want[j])


@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_pts_labels_are_what_pts_select_starts_from(backend, dtype):
    """Selecting from the op's own labels with the plain-Python rules gives pts_select's indices."""
    t = clustered_templates(30, 8, 2, 3, seed=7).to(dtype)
    labels = hf.pts_labels(t, 6, backend=backend).view(30, -1)
    _, idx = hf.pts_select(t, 6, backend=backend, return_indices=True)
    for p0, p1, g in gram_chunks(t):
        for j in range(p1 - p0):
            want = pts_transcription(g[j].numpy(), labels[:, p0 + j].tolist(), 6)
            assert idx.view(6, -1)[:, p0 + j].tolist() == want
    torch.library.opcheck(torch.ops.hetmm.pts_labels.default, (t.float(), 6))
    with pytest.raises(ValueError, match=r"hetmm.pts_labels \(cpu\): size must be in \[1, N=30\], got 31"):
        torch.ops.hetmm.pts_labels(t, 31)
