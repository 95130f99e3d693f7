"""hetmm_fast.metrics against scikit-learn and against slow, obviously-correct loops over thresholds."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from hetmm_fast import metrics as M
from hetmm_fast.testing import reduction_tol

# testing.py rule 1 for the float64 sums behind these metrics (counts, rates and areas over at most 10^4 samples).
TOL64 = reduction_tol(10_000, torch.float64)


# ---------------------------------------------------------------------------------------------------------------
# Slow references
# ---------------------------------------------------------------------------------------------------------------
def ref_regions(mask: np.ndarray, diagonal: bool = True) -> list[list[tuple[int, int]]]:
    """Connected regions of a 2-D bool mask by flood fill (8-connected, or 4-connected with diagonal=False)."""
    h, w = mask.shape
    steps = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    if not diagonal:
        steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    seen = np.zeros_like(mask, dtype=bool)
    regions = []
    for y in range(h):
        for x in range(w):
            if not mask[y, x] or seen[y, x]:
                continue
            stack, region = [(y, x)], []
            seen[y, x] = True
            while stack:
                cy, cx = stack.pop()
                region.append((cy, cx))
                for dy, dx in steps:
                    ny, nx = cy + dy, cx + dx
                    if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
            regions.append(region)
    return regions


def ref_fpr_pro(masks, maps, pred_fn, diagonal=True):
    """(FPR, PRO) for one binarisation pred = pred_fn(maps), computed region by region."""
    pred = pred_fn(maps)
    fpr = pred[~masks].sum() / (~masks).sum()
    overlaps = []
    for b in range(masks.shape[0]):
        for region in ref_regions(masks[b], diagonal):
            overlaps.append(np.mean([pred[b, y, x] for y, x in region]))
    return float(fpr), float(np.mean(overlaps))


def ref_aupro(masks, maps, fpr_limit=0.3, diagonal=True):
    """Every distinct score as threshold (score >= t), curve from (0, 0), trapezoid, interpolated at fpr_limit."""
    pts = [(0.0, 0.0)]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        pts.append(ref_fpr_pro(masks, maps, lambda a: a >= t, diagonal))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        if x1 <= fpr_limit:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            y_cut = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            area += (fpr_limit - x0) * (y0 + y_cut) / 2
            break
    return area / fpr_limit


def ref_paper_pro(masks, maps, num_thresholds=300, fpr_limit=0.3, float64_thresholds=False):
    """Loop transcription of SPEC section 5 "paper PRO" (thresholds in the maps' dtype, as numpy gives them)."""
    lo, hi = maps.min(), maps.max()
    if float64_thresholds:
        lo, hi = float(lo), float(hi)
    fprs, pros = [], []
    for th in np.linspace(lo, hi, num_thresholds):
        fpr, pro = ref_fpr_pro(masks, maps, lambda a: a > th)
        fprs.append(fpr)
        pros.append(pro)
    fprs, pros = np.array(fprs), np.array(pros)
    keep = fprs <= fpr_limit
    fprs, pros = fprs[keep], pros[keep]
    fprs = (fprs - fprs.min()) / (fprs.max() - fprs.min() + 1e-5)
    pros = (pros - pros.min()) / (pros.max() - pros.min() + 1e-5)
    return skm.auc(fprs, pros) * 100


def ref_f1_max(y, s):
    precision, recall, _ = skm.precision_recall_curve(y.ravel(), s.ravel())
    best = 0.0
    for p, r in zip(precision, recall):
        if p + r > 0:
            best = max(best, 2 * p * r / (p + r))
    return best


# ---------------------------------------------------------------------------------------------------------------
# Input builders
# ---------------------------------------------------------------------------------------------------------------
def blob_masks(rng, b, h, w, n_blobs=3):
    """Random rectangles, some images empty: several regions per image, some touching."""
    masks = np.zeros((b, h, w), dtype=bool)
    for i in range(b):
        if i % 3 == 2:
            continue
        for _ in range(n_blobs):
            y, x = rng.integers(0, h - 1), rng.integers(0, w - 1)
            masks[i, y:y + rng.integers(1, 4), x:x + rng.integers(1, 4)] = True
    return masks


def tied_maps(rng, masks, levels):
    """Integer-valued float32 maps (many ties), defects shifted upwards so the metric is informative."""
    maps = rng.integers(0, levels, masks.shape).astype(np.float32)
    return maps + masks * np.float32(levels // 3)


# ---------------------------------------------------------------------------------------------------------------
# AUROC, ROC, F1
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [3, 10, 1000])
@pytest.mark.parametrize("n", [2, 7, 500])
def test_image_auroc_matches_sklearn_with_ties(levels, n):
    rng = np.random.default_rng(levels * 1000 + n)
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    scores = rng.integers(0, levels, n).astype(np.float64) + 0.5 * labels
    assert M.image_auroc(labels, scores) == pytest.approx(skm.roc_auc_score(labels, scores), abs=TOL64)


@pytest.mark.parametrize("pos_share", [0.05, 0.5, 0.95])  # exercises both "sort the smaller class" branches
def test_pixel_auroc_matches_sklearn_with_ties(pos_share, monkeypatch):
    rng = np.random.default_rng(1)
    masks = rng.random((3, 17, 11)) < pos_share
    maps = rng.integers(0, 20, masks.shape).astype(np.float32) + 3 * masks
    expected = skm.roc_auc_score(masks.ravel(), maps.ravel())
    assert M.pixel_auroc(masks, maps) == pytest.approx(expected, abs=TOL64)
    monkeypatch.setattr(M, "_CHUNK", 5)
    assert M.pixel_auroc(masks, maps) == pytest.approx(expected, abs=TOL64)


def test_auroc_accepts_torch_and_uses_float16_values():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 64)
    scores = rng.normal(size=64) + labels
    s16 = torch.tensor(scores, dtype=torch.float16)
    expected = skm.roc_auc_score(labels, s16.float().numpy())
    assert M.image_auroc(torch.tensor(labels), s16) == pytest.approx(expected, abs=TOL64)
    assert M.image_auroc(torch.tensor(labels, dtype=torch.bool), torch.tensor(scores)) == pytest.approx(
        skm.roc_auc_score(labels, scores), abs=TOL64
    )


def test_roc_curve_matches_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    s = rng.integers(0, 25, 300).astype(np.float32) + 2 * y
    fpr, tpr = M.roc_curve(y, s)
    fpr_ref, tpr_ref, _ = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_array_equal(fpr, fpr_ref)
    np.testing.assert_array_equal(tpr, tpr_ref)


def test_curves_thinned_for_plots_stay_on_the_exact_curve():
    rng = np.random.default_rng(11)
    masks = blob_masks(rng, 6, 20, 20)
    maps = (rng.random(masks.shape) + 0.4 * masks).astype(np.float32)
    full = set(zip(*M.roc_curve(masks, maps)))
    fpr, tpr = M.roc_curve(masks, maps, max_points=40)
    assert len(fpr) <= 45 and (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert set(zip(fpr, tpr)) <= full
    full = set(zip(*M.pro_curve(masks, maps)))
    fpr, pro = M.pro_curve(masks, maps, 0.3, max_points=40)
    assert len(fpr) <= 45 and fpr[-1] == pytest.approx(0.3, abs=1e-15)
    assert set(zip(fpr[:-1], pro[:-1])) <= full
    with pytest.raises(ValueError, match=r"roc_curve: max_points must be None or an int >= 4, got 2"):
        M.roc_curve(masks, maps, max_points=2)


@pytest.mark.parametrize("levels", [2, 6, 10_000])
def test_f1_max_matches_precision_recall_curve(levels, monkeypatch):
    rng = np.random.default_rng(levels)
    y = rng.random((4, 9, 13)) < 0.2
    s = rng.integers(0, levels, y.shape).astype(np.float32) + (levels // 4) * y
    expected = ref_f1_max(y, s)
    assert M.f1_max(y, s) == pytest.approx(expected, abs=TOL64)
    assert M.f1_max(y.astype(np.float32).ravel(), s.ravel()) == pytest.approx(expected, abs=TOL64)
    monkeypatch.setattr(M, "_CHUNK", 7)
    assert M.f1_max(y, s) == pytest.approx(expected, abs=TOL64)


def test_f1_max_image_level_small():
    # labels 0 0 1 1, scores .1 .4 .35 .8: best threshold .35 -> TP 2, FP 1 -> F1 = 4 / 5
    assert M.f1_max([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.8)


def test_perfect_and_inverted_scores():
    rng = np.random.default_rng(4)
    masks = blob_masks(rng, 4, 16, 16)
    maps = masks + rng.random(masks.shape).astype(np.float32) * 0.5
    assert M.pixel_auroc(masks, maps) == 1.0
    assert M.aupro(masks, maps) == pytest.approx(1.0, abs=TOL64)
    assert M.f1_max(masks, maps) == 1.0
    assert M.pixel_auroc(masks, -maps) == 0.0
    assert M.aupro(masks, -maps) == 0.0
    labels = np.array([0, 0, 1, 1, 1])
    assert M.image_auroc(labels, [0.1, 0.2, 0.3, 0.9, 0.5]) == 1.0


# ---------------------------------------------------------------------------------------------------------------
# AUPRO and paper PRO
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fpr_limit", [0.3, 0.05, 1.0])
@pytest.mark.parametrize("levels", [4, 50, None])
def test_aupro_matches_slow_reference(levels, fpr_limit):
    rng = np.random.default_rng(5 + (levels or 0))
    masks = blob_masks(rng, 5, 10, 12)
    if levels is None:
        maps = (rng.random(masks.shape) + 0.6 * masks).astype(np.float32)
    else:
        maps = tied_maps(rng, masks, levels)
    expected = ref_aupro(masks, maps, fpr_limit)
    assert M.aupro(masks, maps, fpr_limit) == pytest.approx(expected, abs=TOL64)
    fpr, pro = M.pro_curve(masks, maps, fpr_limit)
    assert fpr[0] == 0.0 and pro[0] == 0.0 and fpr[-1] == pytest.approx(fpr_limit, abs=1e-15)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= -1e-15)
    assert np.trapezoid(pro, fpr) / fpr_limit == pytest.approx(expected, abs=TOL64)


@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_aupro_chunk_walk_never_splits_ties(chunk, monkeypatch):
    rng = np.random.default_rng(6)
    masks = blob_masks(rng, 6, 9, 9)
    maps = tied_maps(rng, masks, 5)  # large tie groups cross every chunk boundary
    expected = ref_aupro(masks, maps)
    monkeypatch.setattr(M, "_CHUNK", chunk)
    assert M.aupro(masks, maps) == pytest.approx(expected, abs=TOL64)


def test_aupro_tie_group_across_the_fpr_limit():
    # Ten normal pixels all at 0.5 except one at 0.9: the FPR limit 0.3 falls inside the tie group of 0.5, whose
    # whole count (9) makes one segment that is cut at 0.3 by interpolation.
    masks = np.zeros((1, 3, 4), dtype=bool)
    masks[0, 0, :2] = True
    maps = np.full(masks.shape, 0.5, dtype=np.float32)
    maps[0, 0, 0], maps[0, 0, 1], maps[0, 2, 3] = 0.7, 0.3, 0.9
    expected = ref_aupro(masks, maps)
    assert M.aupro(masks, maps) == pytest.approx(expected, abs=TOL64)
    # Hand value: curve (0,0) -> (0.1, 0) -> (0.1, 0.5) -> (1.0, 0.5) -> (1.0, 1.0); area to 0.3 = 0.2 * 0.5.
    assert M.aupro(masks, maps) == pytest.approx(0.1 / 0.3)


def test_aupro_merges_diagonal_neighbours():
    # Two defect pixels touching only at a corner form ONE region (8-connectivity); a third is separate.
    masks = np.zeros((1, 6, 6), dtype=bool)
    masks[0, 1, 1] = masks[0, 2, 2] = True
    masks[0, 4, 5] = True
    maps = np.zeros(masks.shape, dtype=np.float32)
    maps[0, 1, 1] = 3.0  # only one pixel of the diagonal pair is found first
    maps[0, 4, 5] = 2.0
    maps[0, 0, 0] = 2.5  # a false positive between them
    maps[0, 2, 2] = 1.0
    eight = ref_aupro(masks, maps, diagonal=True)
    four = ref_aupro(masks, maps, diagonal=False)
    assert abs(eight - four) > 1e-3
    assert M.aupro(masks, maps) == pytest.approx(eight, abs=TOL64)
    assert M.paper_pro(masks, maps) == pytest.approx(ref_paper_pro(masks, maps), abs=TOL64)


def test_aupro_random_regions_with_diagonal_contacts():
    rng = np.random.default_rng(7)
    masks = rng.random((4, 8, 8)) < 0.25  # speckle: many regions touching only at corners
    assert sum(len(ref_regions(m)) for m in masks) < sum(len(ref_regions(m, False)) for m in masks)
    maps = rng.random(masks.shape).astype(np.float32) + 0.4 * masks
    assert M.aupro(masks, maps) == pytest.approx(ref_aupro(masks, maps), abs=TOL64)


@pytest.mark.parametrize("num_thresholds", [300, 17])
@pytest.mark.parametrize("levels", [6, None])
def test_paper_pro_matches_loop_transcription(levels, num_thresholds):
    rng = np.random.default_rng(8 + (levels or 0))
    masks = blob_masks(rng, 4, 10, 10)
    if levels is None:
        maps = (rng.random(masks.shape) + 0.5 * masks).astype(np.float32)
    else:
        maps = tied_maps(rng, masks, levels)
    expected = ref_paper_pro(masks, maps, num_thresholds)
    got = M.paper_pro(masks, maps, num_thresholds)
    assert got == pytest.approx(expected, abs=TOL64)
    assert 0.0 <= got <= 100.0


def test_paper_pro_thresholds_in_the_maps_dtype():
    # np.linspace(float32 min, float32 max, 4) holds float32(1/3), so the defect pixel holding float32(1/3) is not
    # above it; float64 thresholds (1/3 < float32(1/3)) would predict it and give another value.
    masks = np.zeros((1, 2, 5), dtype=bool)
    masks[0, 0, 0] = True
    maps = np.array([[[1 / 3, 0, 0, 0, 0], [0, 0, 1, 0.1, 0]]], dtype=np.float32)
    expected = ref_paper_pro(masks, maps, 4)
    wider = ref_paper_pro(masks, maps, 4, float64_thresholds=True)
    assert abs(expected - wider) > 1.0
    assert M.paper_pro(masks, maps, 4) == pytest.approx(expected, abs=TOL64)


def test_paper_pro_differs_from_standard_aupro():
    rng = np.random.default_rng(9)
    masks = blob_masks(rng, 3, 12, 12)
    maps = (rng.random(masks.shape) + 0.3 * masks).astype(np.float32)
    assert abs(M.paper_pro(masks, maps) / 100 - M.aupro(masks, maps)) > 0.01


def test_pixel_metrics_accept_torch_masks_and_maps():
    rng = np.random.default_rng(10)
    masks = blob_masks(rng, 3, 9, 10)
    maps = tied_maps(rng, masks, 7)
    tm, ta = torch.from_numpy(masks.astype(np.float32)), torch.from_numpy(maps)
    assert M.aupro(tm, ta) == pytest.approx(M.aupro(masks, maps), abs=1e-15)
    assert M.paper_pro(tm, ta) == pytest.approx(M.paper_pro(masks, maps), abs=TOL64)
    assert M.pixel_auroc(tm, ta) == pytest.approx(M.pixel_auroc(masks, maps), abs=1e-15)
    assert M.pixel_auroc(masks[:, ::-1], maps[:, ::-1]) == pytest.approx(M.pixel_auroc(masks, maps))  # strided


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------
def test_single_class_raises_naming_the_missing_class():
    with pytest.raises(ValueError, match=r"image_auroc: class 1 \(defective images\) is missing"):
        M.image_auroc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"image_auroc: class 0 \(normal images\) is missing"):
        M.image_auroc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"f1_max: class 1"):
        M.f1_max(np.zeros(4), np.arange(4.0))
    with pytest.raises(ValueError, match=r"pixel_auroc: class 0 \(normal pixels\)"):
        M.pixel_auroc(np.ones((1, 2, 2)), np.ones((1, 2, 2)))
    with pytest.raises(ValueError, match=r"roc_curve: class 1"):
        M.roc_curve([0, 0], [1.0, 2.0])


@pytest.mark.parametrize("fn", [M.aupro, M.paper_pro, M.pro_curve])
def test_pro_without_regions_raises(fn):
    with pytest.raises(ValueError, match=rf"{fn.__name__}: class 1 .*no ground-truth region"):
        fn(np.zeros((2, 4, 4), dtype=bool), np.random.default_rng(0).random((2, 4, 4)))


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (lambda: M.image_auroc([0, 1, 1], [0.1, 0.2]), ValueError, r"image_auroc: labels shape \(3,\) does not match"),
        (lambda: M.image_auroc(np.zeros((2, 2)), np.zeros((2, 2))), ValueError, r"must be 1-D \[B\]"),
        (lambda: M.image_auroc([], []), ValueError, r"labels is empty"),
        (lambda: M.image_auroc([0, 2], [0.1, 0.2]), ValueError, r"binary.*value 2"),
        (lambda: M.pixel_auroc(np.full((1, 2, 2), 0.5), np.zeros((1, 2, 2))), ValueError, r"binary.*0\.5"),
        (lambda: M.image_auroc([0, 1], [0.1, np.nan]), ValueError, r"scores contains NaN"),
        (lambda: M.image_auroc([0, 1], [0.1, np.inf]), ValueError, r"scores contains NaN or infinite"),
        (lambda: M.image_auroc([0, 1], ["a", "b"]), TypeError, r"scores must hold real numbers"),
        (lambda: M.image_auroc({0: 1}, [0.1]), TypeError, r"labels must be a numpy array"),
        (lambda: M.pixel_auroc(np.zeros((4, 4)), np.zeros((4, 4))), ValueError, r"must be 3-D \[B, H, W\]"),
        (lambda: M.aupro(np.eye(3)[None], np.eye(3)[None], fpr_limit=0), ValueError, r"fpr_limit .* got 0"),
        (lambda: M.aupro(np.eye(3)[None], np.eye(3)[None], fpr_limit=1.5), ValueError, r"fpr_limit"),
        (lambda: M.paper_pro(np.eye(3)[None], np.eye(3)[None], num_thresholds=1), ValueError, r"num_thresholds"),
        (lambda: M.aupro(np.ones((1, 2, 2)), np.zeros((1, 2, 2))), ValueError, r"aupro: class 0 \(normal pixels\)"),
    ],
)
def test_bad_inputs_raise(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
