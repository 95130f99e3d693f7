"""Evaluation metrics of SPEC section 5 (MVTec AD conventions).

    image_auroc(labels, scores)            labels [B] {0, 1}, scores [B]
    pixel_auroc(masks, maps)               masks [B, H, W] {0, 1}, maps [B, H, W]
    aupro(masks, maps, fpr_limit=0.3)      standard AUPRO in [0, 1]
    paper_pro(masks, maps, 300, 0.3)       the published "paper PRO" in [0, 100] (report it separately)
    f1_max(y_true, y_score)                best F1 over all thresholds (any matching shapes, flattened)
    roc_curve(y_true, y_score)             (fpr, tpr) for plots
    pro_curve(masks, maps, fpr_limit=None) (fpr, pro) for plots

Inputs may be numpy arrays or torch Tensors (any device; they are copied to host memory). Labels and masks are
bool or exactly 0/1. Scores keep their floating precision (float16/bfloat16 become float32, integers float64), so a
float32 map costs 4 bytes per pixel and is never widened as a whole.

Every metric is exact: a prediction is ``score >= t`` and each distinct score is one threshold, so tied scores move
together, exactly as in scikit-learn (the paper PRO is the one exception: it uses its own 300 thresholds and
``score > t``, as published). No Python loop visits pixels or thresholds: each class is copied and sorted in place
(numpy's vectorised sort), then counts at any threshold are binary searches (``searchsorted``) and weighted counts
are cumulative sums; AUPRO walks the distinct normal scores in chunks instead of materialising its curve. Peak extra
memory is about one copy of the scores plus a few bytes per pixel (28 bytes per defect pixel for PRO weights).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

__all__ = ["aupro", "f1_max", "image_auroc", "paper_pro", "pixel_auroc", "pro_curve", "roc_curve"]

# Elements handled per vectorised step when streaming: bounds each int64/float64 temporary to 8 MiB.
_CHUNK = 1 << 20
# 8-connectivity for ground-truth regions (SPEC section 5).
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


# ---------------------------------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------------------------------
def _to_numpy(fn: str, name: str, x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        return x.cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple)):
        return np.asarray(x)
    raise TypeError(f"{fn}: {name} must be a numpy array or a torch.Tensor, got {type(x).__name__}")


def _as_scores(fn: str, name: str, x) -> np.ndarray:
    a = _to_numpy(fn, name, x)
    if a.dtype == np.float16:
        a = a.astype(np.float32)
    elif a.dtype.kind in "biu":
        a = a.astype(np.float64)
    elif a.dtype.kind != "f":
        raise TypeError(f"{fn}: {name} must hold real numbers, got dtype {a.dtype}")
    if a.size == 0:
        raise ValueError(f"{fn}: {name} is empty, shape {a.shape}")
    # min/max propagate NaN and expose +-inf without a full-size boolean temporary.
    if not (np.isfinite(a.min()) and np.isfinite(a.max())):
        raise ValueError(f"{fn}: {name} contains NaN or infinite values")
    return a


def _as_labels(fn: str, name: str, x) -> np.ndarray:
    a = _to_numpy(fn, name, x)
    if a.size == 0:
        raise ValueError(f"{fn}: {name} is empty, shape {a.shape}")
    if a.dtype == np.bool_:
        return a
    if a.dtype.kind in "iu":
        lo, hi = a.min(), a.max()
        if lo < 0 or hi > 1:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{fn}: {name} must be binary (bool or 0/1), found the value {bad}")
        return a.astype(bool)
    if a.dtype.kind == "f":
        if np.count_nonzero(a == 0) + np.count_nonzero(a == 1) != a.size:
            bad = a[(a != 0) & (a != 1)].flat[0]
            raise ValueError(
                f"{fn}: {name} must be binary (bool or 0/1), found the value {bad}; threshold soft masks first "
                f"(SPEC: resized masks are thresholded at 0.5)"
            )
        return a != 0
    raise TypeError(f"{fn}: {name} must be bool or 0/1 numbers, got dtype {a.dtype}")


def _check_shapes(fn: str, yname: str, y: np.ndarray, sname: str, s: np.ndarray, ndim: int | None, layout: str):
    if y.shape != s.shape:
        raise ValueError(f"{fn}: {yname} shape {tuple(y.shape)} does not match {sname} shape {tuple(s.shape)}")
    if ndim is not None and y.ndim != ndim:
        raise ValueError(f"{fn}: {yname} and {sname} must be {ndim}-D {layout}, got shape {tuple(y.shape)}")


def _check_fpr_limit(fn: str, fpr_limit) -> float:
    if isinstance(fpr_limit, bool) or not isinstance(fpr_limit, (int, float)) or not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"{fn}: fpr_limit must be a number in (0, 1], got {fpr_limit!r}")
    return float(fpr_limit)


def _split(fn: str, y: np.ndarray, s: np.ndarray, pos_name: str, neg_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the positives and of the negatives (flat copies, in row-major order)."""
    y = y.reshape(-1)
    s = s.reshape(-1)
    pos = s[y]
    if pos.size == 0:
        raise ValueError(f"{fn}: class 1 ({pos_name}) is missing, every label is 0; the metric is undefined")
    if pos.size == s.size:
        raise ValueError(f"{fn}: class 0 ({neg_name}) is missing, every label is 1; the metric is undefined")
    return pos, s[~y]


# ---------------------------------------------------------------------------------------------------------------
# Counting kernels
# ---------------------------------------------------------------------------------------------------------------
def _distinct_sorted(a: np.ndarray) -> np.ndarray:
    """Distinct values of an ascending array, ascending."""
    if a.size == 0:
        return a
    keep = np.empty(a.size, dtype=bool)
    keep[-1] = True
    np.not_equal(a[1:], a[:-1], out=keep[:-1])
    return a[keep]


def _check_max_points(fn: str, max_points) -> int | None:
    if max_points is None:
        return None
    if isinstance(max_points, bool) or not isinstance(max_points, (int, np.integer)) or max_points < 4:
        raise ValueError(f"{fn}: max_points must be None or an int >= 4, got {max_points!r}")
    return int(max_points)


def _curve_thresholds(pos: np.ndarray, neg: np.ndarray, max_points: int | None) -> np.ndarray:
    """Distinct values of two ascending arrays, descending; with max_points, of every k-th value of each only
    (the lowest and highest of each kept), so that at most about max_points remain."""
    if max_points is not None:
        parts = []
        for a in (pos, neg):
            k = -(-a.size // (max_points // 2))
            parts.append(a if k <= 1 else np.append(a[::k], a[-1]))
        pos, neg = parts
    return _distinct_sorted(np.sort(np.concatenate([pos, neg]), kind="stable"))[::-1]


def _auroc_from_split(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann-Whitney U (ties count 1/2) = area under the exact ROC curve. Sorts both (owned) arrays in place."""
    pos.sort()
    neg.sort()
    small_is_pos = pos.size <= neg.size
    small, large = (pos, neg) if small_is_pos else (neg, pos)
    # Sorted queries make searchsorted sequential. total = sum over small x of (#large < x) + (#large <= x)
    # = 2 * #(large < small) + #(large == small).
    total = 0
    for i in range(0, small.size, _CHUNK):
        q = small[i:i + _CHUNK]
        total += int(np.searchsorted(large, q, side="left").sum()) + int(np.searchsorted(large, q, side="right").sum())
    denom = 2 * pos.size * neg.size
    return total / denom if small_is_pos else (denom - total) / denom


# ---------------------------------------------------------------------------------------------------------------
# AUROC, F1, ROC curve
# ---------------------------------------------------------------------------------------------------------------
def image_auroc(labels, scores) -> float:
    """Image-level AUROC.

    Args:
        labels: ``[B]`` bool or 0/1, 1 = defective image.
        scores: ``[B]`` real anomaly scores (higher = more anomalous).

    Returns:
        The area under the ROC curve in [0, 1], equal to ``sklearn.metrics.roc_auc_score`` (ties count 1/2).

    Raises:
        ValueError: shapes differ or are not 1-D, empty input, non-binary labels, NaN/inf scores, or only one class.
    """
    fn = "image_auroc"
    y = _as_labels(fn, "labels", labels)
    s = _as_scores(fn, "scores", scores)
    _check_shapes(fn, "labels", y, "scores", s, 1, "[B]")
    return _auroc_from_split(*_split(fn, y, s, "defective images", "normal images"))


def pixel_auroc(masks, maps) -> float:
    """Pixel-level AUROC over all pixels of all images.

    Args:
        masks: ``[B, H, W]`` bool or 0/1 ground truth (1 = defect pixel).
        maps: ``[B, H, W]`` real anomaly maps.

    Returns:
        The area under the ROC curve of the flattened pixels, equal to ``sklearn.metrics.roc_auc_score``.
        Cost: sorts the smaller class only; memory about one copy of ``maps``.
    """
    fn = "pixel_auroc"
    y = _as_labels(fn, "masks", masks)
    s = _as_scores(fn, "maps", maps)
    _check_shapes(fn, "masks", y, "maps", s, 3, "[B, H, W]")
    return _auroc_from_split(*_split(fn, y, s, "defect pixels", "normal pixels"))


def f1_max(y_true, y_score) -> float:
    """Maximum F1 over all thresholds (prediction ``score >= t``, t over every distinct score).

    Args:
        y_true: bool or 0/1 labels of any shape (``[B]`` for images, ``[B, H, W]`` for pixels; flattened).
        y_score: real scores of the same shape.

    Returns:
        ``max_t 2 TP / (2 TP + FP + FN)``, the best F1 along ``sklearn.metrics.precision_recall_curve``.
        Only thresholds at distinct positive scores can be optimal (moving t down to the next positive score only
        adds false positives), so only those are evaluated.
    """
    fn = "f1_max"
    y = _as_labels(fn, "y_true", y_true)
    s = _as_scores(fn, "y_score", y_score)
    _check_shapes(fn, "y_true", y, "y_score", s, None, "")
    pos, neg = _split(fn, y, s, "positives", "negatives")
    pos.sort()
    neg.sort()
    t = _distinct_sorted(pos)
    tp = pos.size - np.searchsorted(pos, t, side="left")
    fp = neg.size - np.searchsorted(neg, t, side="left")
    return float(np.max(2.0 * tp / (tp + fp + pos.size)))


def roc_curve(y_true, y_score, max_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact ROC curve with one point per distinct score, like ``sklearn.metrics.roc_curve(drop_intermediate=False)``.

    Args:
        y_true: bool or 0/1 labels of any shape (flattened).
        y_score: real scores of the same shape.
        max_points: for plots of millions of pixels: evaluate only about this many thresholds (every k-th sorted
            score of each class). The returned points still lie exactly on the curve; only points between are
            skipped.

    Returns:
        ``(fpr, tpr)``, float64 ``[D + 1]`` for D (used) distinct scores, from (0, 0) to (1, 1).
    """
    fn = "roc_curve"
    max_points = _check_max_points(fn, max_points)
    y = _as_labels(fn, "y_true", y_true)
    s = _as_scores(fn, "y_score", y_score)
    _check_shapes(fn, "y_true", y, "y_score", s, None, "")
    pos, neg = _split(fn, y, s, "positives", "negatives")
    pos.sort()
    neg.sort()
    t = _curve_thresholds(pos, neg, max_points)
    tp = pos.size - np.searchsorted(pos, t, side="left")
    fp = neg.size - np.searchsorted(neg, t, side="left")
    return np.concatenate([[0.0], fp / neg.size]), np.concatenate([[0.0], tp / pos.size])


# ---------------------------------------------------------------------------------------------------------------
# Per-region overlap (PRO)
# ---------------------------------------------------------------------------------------------------------------
class _Regions:
    """Pixels of a [B, H, W] evaluation split for PRO.

    pos: scores of the ground-truth pixels; weight: 1 / (R * |region|) for each, R = number of regions of all
    images (connected with 8-connectivity within one image), so the weights of one threshold's detected pixels sum
    to the mean per-region overlap; neg: scores of the normal pixels (unsorted).
    """

    def __init__(self, fn: str, masks, maps):
        y = _as_labels(fn, "masks", masks)
        s = _as_scores(fn, "maps", maps)
        _check_shapes(fn, "masks", y, "maps", s, 3, "[B, H, W]")
        self.pos, self.neg = _split(fn, y, s, "defect pixels, no ground-truth region", "normal pixels")
        inv_size = []
        n_regions = 0
        for b in np.flatnonzero(y.reshape(y.shape[0], -1).any(axis=1)):
            lab, n = ndimage.label(y[b], structure=_EIGHT_CONNECTED)
            sizes = np.bincount(lab.reshape(-1))
            inv_size.append(1.0 / sizes[lab[y[b]]])  # row-major order, as in self.pos
            n_regions += n
        self.weight = np.concatenate(inv_size) / n_regions

    def sorted_pos(self) -> tuple[np.ndarray, np.ndarray]:
        """Positives ascending and cum with cum[k] = summed weight of positives [k:] (cum[-1] = 0)."""
        order = np.argsort(self.pos, kind="stable")
        pos = self.pos[order]
        cum = np.zeros(pos.size + 1)
        cum[:-1] = np.cumsum(self.weight[order][::-1])[::-1]
        return pos, cum


def _tail_start(neg: np.ndarray, fpr_limit: float) -> int:
    """Start of the shortest tail of the sorted normal scores that holds more than fpr_limit * n of them and whole
    tie groups: the thresholds down to its smallest value reach FPR > fpr_limit, and no lower one is needed."""
    m = min(neg.size, math.floor(fpr_limit * neg.size) + 1)
    return int(np.searchsorted(neg, neg[neg.size - m], side="left"))


def _pro_area(tail: np.ndarray, n_neg: int, pos: np.ndarray, cum: np.ndarray, fpr_limit: float) -> float:
    """Area under the exact PRO curve over FPR in [0, fpr_limit], linear interpolation at fpr_limit.

    tail: the largest normal scores, ascending, holding every copy of each value it holds. Only distinct normal
    scores need a segment: between two of them the curve is vertical. The segment of value v runs from
    (F, PRO(> v)) to (F + count(v) / n_neg, PRO(>= v)). Walked from the top in chunks that never split a tie group,
    stopping at the segment that crosses fpr_limit.
    """
    budget = fpr_limit * n_neg  # in normal pixels
    done = 0
    area = 0.0  # in normal pixels x PRO
    hi = tail.size
    while hi > 0:
        lo = int(np.searchsorted(tail[:hi], tail[max(0, hi - _CHUNK)], side="left"))
        chunk = tail[lo:hi][::-1]
        starts = np.concatenate([[0], np.flatnonzero(chunk[1:] != chunk[:-1]) + 1])
        values = chunk[starts]
        counts = np.diff(np.append(starts, chunk.size))
        y_above = cum[np.searchsorted(pos, values, side="right")]
        y_at = cum[np.searchsorted(pos, values, side="left")]
        f_end = done + np.cumsum(counts)
        j = int(np.searchsorted(f_end, budget, side="left"))
        if j < counts.size:
            area += float(np.dot(counts[:j], y_above[:j] + y_at[:j])) / 2
            width = budget - (f_end[j] - counts[j])
            y_cut = y_above[j] + (y_at[j] - y_above[j]) * (width / counts[j])
            area += width * (y_above[j] + y_cut) / 2
            return area / n_neg
        area += float(np.dot(counts, y_above + y_at)) / 2
        done = int(f_end[-1])
        hi = lo
    raise AssertionError("unreachable: the tail always holds more than fpr_limit * n_neg normal pixels")


def aupro(masks, maps, fpr_limit: float = 0.3) -> float:
    """Standard AUPRO (SPEC section 5): normalised area under the per-region-overlap curve up to ``fpr_limit``.

    For a threshold t (prediction ``score >= t``), PRO(t) = mean over all connected ground-truth regions (8-
    connectivity, per image, all images pooled) of the fraction of the region's pixels predicted; FPR(t) = share of
    normal pixels (of all images, defect-free ones included) predicted. The curve has one point per distinct score
    (ties are one threshold), starts at (0, 0), is linear between points and is cut at exactly ``fpr_limit`` by
    linear interpolation; the result is its area divided by ``fpr_limit``.

    Args:
        masks: ``[B, H, W]`` bool or 0/1 ground truth.
        maps: ``[B, H, W]`` real anomaly maps.
        fpr_limit: upper end of the FPR range, in (0, 1].

    Returns:
        AUPRO in [0, 1] (1 for a map that ranks every defect pixel above every normal pixel).

    Raises:
        ValueError: bad shapes or values, no ground-truth region, or no normal pixel.

    Cost: one in-place sort of a copy of the normal scores, one argsort of the defect scores, a chunked walk over
    the top ``fpr_limit`` share; extra memory about one copy of the maps plus 28 bytes per defect pixel.
    """
    fn = "aupro"
    fpr_limit = _check_fpr_limit(fn, fpr_limit)
    reg = _Regions(fn, masks, maps)
    pos, cum = reg.sorted_pos()
    neg = reg.neg
    n_neg = neg.size
    neg.sort()
    tail = neg[_tail_start(neg, fpr_limit):]
    return _pro_area(tail, n_neg, pos, cum, fpr_limit) / fpr_limit


def pro_curve(
    masks, maps, fpr_limit: float | None = None, max_points: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The exact PRO curve behind :func:`aupro`, for plots.

    Args:
        masks: ``[B, H, W]`` bool or 0/1 ground truth.
        maps: ``[B, H, W]`` real anomaly maps.
        fpr_limit: if given, the curve stops at exactly this FPR (linearly interpolated last point).
        max_points: for plots of millions of pixels: evaluate only about this many thresholds (every k-th sorted
            score of each class); the points (but the interpolated last one) still lie exactly on the curve.

    Returns:
        ``(fpr, pro)``, float64 ``[P]``, from (0, 0), one point per (used) distinct score. Without max_points,
        ``aupro(m, a, L)`` equals ``np.trapezoid(pro, fpr) / L`` of ``pro_curve(m, a, L)``.
    """
    fn = "pro_curve"
    max_points = _check_max_points(fn, max_points)
    if fpr_limit is not None:
        fpr_limit = _check_fpr_limit(fn, fpr_limit)
    reg = _Regions(fn, masks, maps)
    pos, cum = reg.sorted_pos()
    neg = reg.neg
    neg.sort()
    n_neg = neg.size
    if fpr_limit is not None:
        start = _tail_start(neg, fpr_limit)
        neg_part = neg[start:]
        pos_part = pos[np.searchsorted(pos, neg[start], side="left"):]
    else:
        neg_part, pos_part = neg, pos
    t = _curve_thresholds(pos_part, neg_part, max_points)
    fpr = np.concatenate([[0.0], (n_neg - np.searchsorted(neg, t, side="left")) / n_neg])
    pro = np.concatenate([[0.0], cum[np.searchsorted(pos, t, side="left")]])
    if fpr_limit is None:
        return fpr, pro
    i = int(np.searchsorted(fpr, fpr_limit, side="left"))
    if fpr[i] == fpr_limit:
        return fpr[:i + 1], pro[:i + 1]
    y = pro[i - 1] + (pro[i] - pro[i - 1]) * (fpr_limit - fpr[i - 1]) / (fpr[i] - fpr[i - 1])
    return np.append(fpr[:i], fpr_limit), np.append(pro[:i], y)


def paper_pro(masks, maps, num_thresholds: int = 300, fpr_limit: float = 0.3) -> float:
    """The published "paper PRO" variant (SPEC section 5), in [0, 100]. Not comparable to :func:`aupro`.

    Thresholds: ``np.linspace(maps.min(), maps.max(), num_thresholds)`` over all pixels, in the maps' dtype (numpy
    computes a float32 linspace in float32); prediction ``score > t``. At each threshold: FPR over all normal
    pixels and PRO = mean per-region overlap (8-connected ground-truth regions per image). Keep the points with
    FPR <= fpr_limit, rescale both FPR and PRO over the kept points as ``(v - min) / (max - min + 1e-5)``, and
    return the trapezoid area (over FPR ascending) times 100. The rescaling is the published convention; it is
    why this number is not the standard AUPRO.

    Args:
        masks: ``[B, H, W]`` bool or 0/1 ground truth.
        maps: ``[B, H, W]`` real anomaly maps.
        num_thresholds: number of thresholds, >= 2.
        fpr_limit: FPR cut, in (0, 1].

    Cost: the sorts of :func:`aupro`, then a binary search per threshold.
    """
    fn = "paper_pro"
    if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, (int, np.integer)) or num_thresholds < 2:
        raise ValueError(f"{fn}: num_thresholds must be an int >= 2, got {num_thresholds!r}")
    fpr_limit = _check_fpr_limit(fn, fpr_limit)
    reg = _Regions(fn, masks, maps)
    n = int(num_thresholds)
    # In the maps' own dtype, exactly what np.linspace(maps.min(), maps.max(), n) gives for those maps.
    dtype = reg.neg.dtype.type
    t = np.linspace(dtype(min(reg.pos.min(), reg.neg.min())), dtype(max(reg.pos.max(), reg.neg.max())), n)
    pos, cum = reg.sorted_pos()
    neg = reg.neg
    neg.sort()
    fpr = (neg.size - np.searchsorted(neg, t, side="right")) / neg.size
    pro = cum[np.searchsorted(pos, t, side="right")]
    keep = fpr <= fpr_limit
    fpr = fpr[keep][::-1]  # thresholds ascend, so FPR descends: reverse to integrate over ascending FPR
    pro = pro[keep][::-1]
    fpr = (fpr - fpr.min()) / (fpr.max() - fpr.min() + 1e-5)
    pro = (pro - pro.min()) / (pro.max() - pro.min() + 1e-5)
    return float(np.trapezoid(pro, fpr) * 100.0)
