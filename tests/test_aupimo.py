"""metrics.aupimo against a plain transcription of the AUPIMO definition, hand-checked cases and input errors."""
import math

import numpy as np
import pytest
import torch

from hetmm_fast import metrics
from hetmm_fast.testing import reduction_tol, unit_roundoff


def transcription(masks, maps, thresholds, lower, upper):
    """AUPIMO of each anomalous image, straight from the definition: at each threshold (descending), the shared FPR
    is the mean per-image FPR of the normal images and each anomalous image's TPR is the share of its mask predicted
    (``score >= t``); the polyline (log10 FPR, TPR) is cut at the bounds by linear interpolation and integrated with
    numpy's trapezoid. Thresholds past the first one whose FPR reaches ``upper`` add nothing, so the loop stops there.
    NaN when no threshold gives an FPR in (0, lower]."""
    normal = [i for i in range(len(masks)) if not masks[i].any()]
    anomalous = [i for i in range(len(masks)) if masks[i].any()]
    fprs, tprs = [], []
    for t in thresholds:
        fprs.append(np.mean([np.mean(maps[j] >= t) for j in normal]))
        tprs.append([np.mean(maps[i][masks[i]] >= t) for i in anomalous])
        if fprs[-1] >= upper:
            break
    if min(f for f in fprs if f > 0) > lower:
        return [math.nan] * len(anomalous)
    lo, hi = math.log10(lower), math.log10(upper)
    result = []
    for j in range(len(anomalous)):
        xs, ys = [], []
        for k in range(1, len(fprs)):
            if fprs[k - 1] == 0 or fprs[k] == fprs[k - 1]:
                continue
            x0, x1 = math.log10(fprs[k - 1]), math.log10(fprs[k])
            y0, y1 = tprs[k - 1][j], tprs[k][j]
            p, q = max(x0, lo), min(x1, hi)
            if p < q:
                for x in (p, q):
                    xs.append(x)
                    ys.append(y0 + (y1 - y0) * (x - x0) / (x1 - x0))
        result.append(np.trapezoid(ys, xs) / (hi - lo))
    return result


def tolerance(out, n_normal, n_mask):
    """The metric and the transcription differ only in rounding, which this bounds.

    Sums (rule 1 of hetmm_fast.testing, terms of total size ``hi - lo``): the transcription's trapezoid over about
    n points, the metric's cumulative sums over the same segments, then its sum over the ``n_mask`` mask pixels of
    an image (divided by n_mask). Abscissae: the metric's shared FPR is an exact count / pixels, the transcription's
    a mean of ``n_normal`` per-image fractions (relative difference <= (n_normal + 1) u); log10 adds <= 2 u |x|, with
    |x| <= max |log10 bound|. An abscissa error dx moves the area by at most dx times the total variation of the
    monotone TPR (<= 1) on each side of a vertex, and by dx at each interpolated end: 6 dx in all."""
    lower, upper = out["fpr_bounds"]
    width = math.log10(upper / lower)
    n = 2 * (out["num_points"] + 2)
    dx = (n_normal + 1 + 2 * max(-math.log10(lower), -math.log10(upper), 1.0)) * unit_roundoff(torch.float64)
    return 2 * reduction_tol(n, torch.float64) + reduction_tol(n_mask, torch.float64) + 6 * dx / width


def random_case(seed, n, h, w, n_normal, dtype=np.float32, levels=None, shift=0.6):
    """Normal pixels U(0, 1); each anomalous image has a random rectangle (its mask) scored U(0, 1) + shift, so the
    TPR curves rise through the low-FPR range. ``levels`` rounds the maps to that many steps per unit (ties)."""
    rng = np.random.default_rng(seed)
    maps = rng.random((n, h, w)).astype(dtype)
    masks = np.zeros((n, h, w), dtype=bool)
    for i in rng.permutation(n)[n_normal:]:
        r0, c0 = rng.integers(0, h - 1), rng.integers(0, w - 1)
        masks[i, r0:rng.integers(r0 + 1, h + 1), c0:rng.integers(c0 + 1, w + 1)] = True
    maps[masks] += dtype(shift)
    if levels is not None:
        maps = (np.round(maps * levels) / levels).astype(dtype)
    return masks, maps


def check_against_transcription(masks, maps, out, thresholds):
    lower, upper = out["fpr_bounds"]
    want = transcription(masks, maps, thresholds, lower, upper)
    got = [v for v in out["per_image"] if v is not None]
    assert [v is None for v in out["per_image"]] == [not m.any() for m in masks]
    assert not any(math.isnan(v) for v in want), "the case should resolve the bounds"
    tol = tolerance(out, sum(not m.any() for m in masks), max(int(m.sum()) for m in masks))
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)
    assert out["mean"] == pytest.approx(np.mean(want), rel=0, abs=tol)


CASES = [
    # (n, h, w, normal images, fpr_bounds, dtype, levels)
    (8, 24, 20, 4, (1e-3, 1e-1), np.float32, None),
    (8, 24, 20, 4, (1e-2, 0.5), np.float32, 256),  # ties within and across classes
    (5, 13, 31, 2, (2e-3, 0.3), np.float64, None),  # odd sizes, one normal image less
    (5, 13, 31, 2, (5e-3, 1.0), np.float64, 512),  # upper bound 1: the whole curve
    (6, 200, 180, 3, (1e-5, 1e-4), np.float32, None),  # default bounds: > 1e5 normal pixels
]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}-{c[4]}-{np.dtype(c[5]).name}-{c[6]}")
def test_exact_matches_transcription(seed, case):
    n, h, w, n_normal, bounds, dtype, levels = case
    masks, maps = random_case(seed, n, h, w, n_normal, dtype, levels)
    out = metrics.aupimo(masks, maps, fpr_bounds=bounds)
    assert out["reason"] is None and out["num_points"] >= 1
    check_against_transcription(masks, maps, out, np.unique(maps)[::-1])


@pytest.mark.parametrize("num_thresholds", [2, 9, 300])
@pytest.mark.parametrize("seed", [0, 1])
def test_grid_matches_transcription(seed, num_thresholds):
    masks, maps = random_case(seed, 8, 24, 20, 4, levels=128)
    out = metrics.aupimo(masks, maps, fpr_bounds=(1e-2, 0.5), num_thresholds=num_thresholds)
    normal = maps[~masks.reshape(8, -1).any(axis=1)]
    grid = np.linspace(float(normal.min()), float(normal.max()), num_thresholds)[::-1]
    check_against_transcription(masks, maps, out, grid)


@pytest.mark.parametrize("num_thresholds", [None, 300])
def test_chunked_walk_matches_one_chunk(monkeypatch, num_thresholds):
    masks, maps = random_case(6, 8, 24, 20, 4, levels=256)
    whole = metrics.aupimo(masks, maps, fpr_bounds=(1e-2, 1.0), num_thresholds=num_thresholds)
    monkeypatch.setattr(metrics, "_CHUNK", 7)
    chunked = metrics.aupimo(masks, maps, fpr_bounds=(1e-2, 1.0), num_thresholds=num_thresholds)
    assert whole["num_points"] > 50 and chunked["num_points"] == whole["num_points"]
    tol = tolerance(whole, 4, max(int(m.sum()) for m in masks))
    np.testing.assert_allclose([v for v in chunked["per_image"] if v is not None],
                               [v for v in whole["per_image"] if v is not None], rtol=0, atol=tol)


def test_returned_thresholds_bracket_the_bounds():
    masks, maps = random_case(3, 8, 24, 20, 4, levels=256)
    lower, upper = 1e-2, 0.2
    out = metrics.aupimo(masks, maps, fpr_bounds=(lower, upper))
    normal = maps[~masks.reshape(8, -1).any(axis=1)]
    t_upper, t_lower = out["thresholds"]
    # t_lower: the lowest threshold with shared FPR <= lower; t_upper: the highest with shared FPR >= upper.
    assert np.mean(normal >= t_lower) <= lower < np.mean(normal >= normal[normal < t_lower].max())
    assert np.mean(normal >= t_upper) >= upper > np.mean(normal >= normal[normal > t_upper].min())
    assert out["shared_fpr"] == (np.mean(normal >= t_upper), np.mean(normal >= t_lower))


def tiny(defect_scores):
    """One normal image scored 0..9 (shared FPR of threshold v: (10 - v) / 10) and one anomalous image whose two
    mask pixels have the given scores (its other pixels play no part)."""
    maps = np.zeros((2, 2, 5))
    maps[0] = np.arange(10.0).reshape(2, 5)
    masks = np.zeros((2, 2, 5), dtype=bool)
    masks[1, 0, :2] = True
    maps[1, 0, :2] = defect_scores
    maps[1, 1] = 100.0
    return masks, maps


def test_hand_checked_flat_steps():
    # Scores 8.5 and 6.5: TPR 1/2 from FPR 0.1 (t = 9) through 0.3 (t = 7), then 1 at FPR 0.4 (t = 6); the TPR rises
    # at constant FPR between normal scores, so every segment over [0.1, 0.4] is flat:
    # (0.5 log 2 + 0.5 log 1.5 + log(4/3)) / log 4 = 1 - log 3 / log 16.
    masks, maps = tiny([8.5, 6.5])
    out = metrics.aupimo(masks, maps, fpr_bounds=(0.1, 0.4))
    assert out["per_image"][0] is None
    assert out["per_image"][1] == pytest.approx(1 - math.log(3) / math.log(16), rel=1e-14)
    assert out["thresholds"] == (6.0, 9.0) and out["num_points"] == 2
    # Lower bound 0.15 cuts the first flat segment.
    out = metrics.aupimo(masks, maps, fpr_bounds=(0.15, 0.4))
    want = (0.5 * math.log10(0.2 / 0.15) + 0.5 * math.log10(1.5) + math.log10(4 / 3)) / math.log10(0.4 / 0.15)
    assert out["mean"] == pytest.approx(want, rel=1e-14)


def test_hand_checked_tie_slopes():
    # Score 8 ties a normal score: the segment from FPR 0.1 to 0.2 rises from TPR 0 to 1/2 (linear in log10 FPR);
    # score 6.5 makes it 1 from FPR 0.4. Bounds (0.15, 0.3): the sloped part from log 0.15 to log 0.2, then 1/2.
    masks, maps = tiny([8.0, 6.5])
    out = metrics.aupimo(masks, maps, fpr_bounds=(0.15, 0.3))
    y_cut = 0.5 * math.log10(1.5) / math.log10(2)
    want = (math.log10(0.2 / 0.15) * (y_cut + 0.5) / 2 + 0.5 * math.log10(1.5)) / math.log10(2)
    assert out["mean"] == pytest.approx(want, rel=1e-14)


def test_perfect_and_worst_detector():
    rng = np.random.default_rng(5)
    maps = rng.random((6, 40, 30))
    masks = np.zeros(maps.shape, dtype=bool)
    masks[3:, 10:20, 5:25] = True
    perfect = np.where(masks, maps + 1.0, maps)
    out = metrics.aupimo(masks, perfect, fpr_bounds=(1e-3, 1e-1))
    assert all(abs(v - 1.0) <= 1e-12 for v in out["per_image"][3:]) and out["per_image"][:3] == [None] * 3
    worst = np.where(masks, maps - 1.0, maps)
    assert metrics.aupimo(masks, worst, fpr_bounds=(1e-3, 1e-1))["per_image"][3:] == [0.0] * 3


def test_constant_map_is_undefined():
    # Every normal pixel ties at the one score: the shared FPR jumps from 0 straight to 1, so no threshold reaches
    # the range; the definition gives no value (anomalib raises).
    masks = np.zeros((3, 8, 8), dtype=bool)
    masks[2, :2, :2] = True
    with pytest.warns(RuntimeWarning, match="aupimo: AUPIMO is undefined"):
        out = metrics.aupimo(masks, np.full((3, 8, 8), 0.5, dtype=np.float32), fpr_bounds=(1e-2, 0.5))
    assert math.isnan(out["mean"]) and math.isnan(out["per_image"][2]) and out["per_image"][:2] == [None, None]
    assert "held by 128 of the 128" in out["reason"] and out["thresholds"] is None


def test_too_few_normal_pixels_for_the_default_bounds():
    masks, maps = random_case(0, 6, 32, 32, 3)  # 3072 normal pixels: the lowest shared FPR is 1 / 3072 > 1e-5
    with pytest.warns(RuntimeWarning, match="does not reach the lower bound"):
        out = metrics.aupimo(masks, maps)
    assert math.isnan(out["mean"])


def test_no_anomalous_image():
    out = metrics.aupimo(np.zeros((2, 4, 4), dtype=bool), np.random.default_rng(0).random((2, 4, 4)))
    assert out["mean"] is None and out["per_image"] == [None, None] and out["reason"]


def test_torch_inputs_and_default_call():
    masks, maps = random_case(4, 6, 200, 180, 3)
    want = metrics.aupimo(masks, maps)
    got = metrics.aupimo(torch.from_numpy(masks), torch.from_numpy(maps))
    assert got == want
    # float16 maps are read as float32; their 2^-11 steps near 1 tie about 50 normal pixels per score, too many for
    # the default lower bound 1e-5 here, not for 1e-3.
    half = torch.from_numpy(maps).half()
    got = metrics.aupimo(torch.from_numpy(masks).to(torch.uint8), half, fpr_bounds=[1e-3, 1e-1])
    assert got == metrics.aupimo(masks, half.float().numpy(), fpr_bounds=(1e-3, 1e-1)) and got["reason"] is None


def test_errors():
    masks, maps = random_case(0, 4, 8, 8, 2)
    with pytest.raises(ValueError, match="aupimo: no normal image"):
        metrics.aupimo(np.ones((2, 3, 3), dtype=bool), np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="does not match"):
        metrics.aupimo(masks, maps[:, :, :7])
    with pytest.raises(ValueError, match=r"must be 3-D \[N, H, W\]"):
        metrics.aupimo(masks[0], maps[0])
    bad = maps.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        metrics.aupimo(masks, bad)
    with pytest.raises(ValueError, match="binary"):
        metrics.aupimo(masks * 2, maps)
    for bounds in [(1e-4, 1e-5), (0.0, 1e-4), (1e-5, 2.0), (1e-5,), "ab", (True, 0.5)]:
        with pytest.raises(ValueError, match="fpr_bounds must be"):
            metrics.aupimo(masks, maps, fpr_bounds=bounds)
    for k in [1, 2.5, True]:
        with pytest.raises(ValueError, match="num_thresholds must be"):
            metrics.aupimo(masks, maps, num_thresholds=k)
