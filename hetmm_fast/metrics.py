"""Evaluation metrics of SPEC section 5 (MVTec AD conventions).

    image_auroc(labels, scores)            labels [B] {0, 1}, scores [B]
    pixel_auroc(masks, maps)               masks [B, H, W] {0, 1}, maps [B, H, W]
    aupro(masks, maps, fpr_limit=0.3)      standard AUPRO in [0, 1]
    paper_pro(masks, maps, 300, 0.3)       the published "paper PRO" in [0, 100] (report it separately)
    f1_max(y_true, y_score)                best F1 over all thresholds (any matching shapes, flattened)
    roc_curve(y_true, y_score)             (fpr, tpr) for plots
    pro_curve(masks, maps, fpr_limit=None) (fpr, pro) for plots
    aupimo(masks, maps, fpr_bounds=(1e-5, 1e-4))  per-image AUPIMO of the anomalous images, and their mean

Inputs may be numpy arrays or torch Tensors (any device; they are copied to host memory). Labels and masks are
bool or exactly 0/1. Scores keep their floating precision (float16/bfloat16 become float32, integers float64), so a
float32 map costs 4 bytes per pixel and is never widened as a whole.

Every metric is exact: a prediction is ``score >= t`` and each distinct score is one threshold, so tied scores move
together, exactly as in scikit-learn (the paper PRO is the one exception: it uses its own 300 thresholds and
``score > t``, as published; :func:`aupimo` also takes a threshold grid, on request). No Python loop visits pixels
or thresholds: each class is copied and sorted in place (numpy's vectorised sort), then counts at any threshold
are binary searches (``searchsorted``) and weighted counts are cumulative sums; AUPRO walks the distinct normal
scores in chunks instead of materialising its curve. Peak extra memory is about one copy of the scores plus a few
bytes per pixel (28 bytes per defect pixel for PRO weights).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy import ndimage

__all__ = ["aupimo", "aupro", "f1_max", "image_auroc", "paper_pro", "pixel_auroc", "pro_curve", "roc_curve"]

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


def _optional_int(fn: str, name: str, value, minimum: int, none: str = "None") -> int | None:
    """``value`` as an int >= ``minimum``, or None; ValueError naming ``fn`` and ``name`` otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{fn}: {name} must be {none} or an int >= {minimum}, got {value!r}")
    return int(value)


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
    max_points = _optional_int(fn, "max_points", max_points, 4)
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
    max_points = _optional_int(fn, "max_points", max_points, 4)
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


# ---------------------------------------------------------------------------------------------------------------
# Per-image overlap (PIMO) and its area (AUPIMO)
# ---------------------------------------------------------------------------------------------------------------
def _check_fpr_bounds(fn: str, fpr_bounds) -> tuple[float, float]:
    ok = isinstance(fpr_bounds, (tuple, list)) and len(fpr_bounds) == 2 and all(
        not isinstance(v, bool) and isinstance(v, (int, float, np.floating)) for v in fpr_bounds)
    if not ok or not 0.0 < fpr_bounds[0] < fpr_bounds[1] <= 1.0:
        raise ValueError(f"{fn}: fpr_bounds must be two numbers (lower, upper) with 0 < lower < upper <= 1, "
                         f"got {fpr_bounds!r}")
    return float(fpr_bounds[0]), float(fpr_bounds[1])


def _pimo_vertices(neg: np.ndarray, upper: float, num_thresholds: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds (descending) and the count of normal pixels predicted at each, from the highest normal score down
    to the first threshold whose shared FPR reaches ``upper`` (exact) or over the whole grid. neg: ascending."""
    if num_thresholds is None:
        # Between two distinct normal scores the shared FPR is constant, so only they can be vertices.
        tail = neg[_tail_start(neg, upper):][::-1]
        starts = np.concatenate([[0], np.flatnonzero(tail[1:] != tail[:-1]) + 1])
        return tail[starts], np.cumsum(np.diff(np.append(starts, tail.size)))
    t = np.linspace(float(neg[0]), float(neg[-1]), num_thresholds)[::-1]
    return t, neg.size - np.searchsorted(neg, t, side="left")


def aupimo(masks, maps, *, fpr_bounds: tuple[float, float] = (1e-5, 1e-4), num_thresholds: int | None = None) -> dict:
    """AUPIMO (Bertoldo, Ameln, Vaidya, Akcay, BMVC 2024, arXiv 2401.01984): per-image recall of each anomalous image
    at the thresholds where the normal images have a shared FPR between ``fpr_bounds``, averaged in log FPR.

    An image is normal iff its mask is empty. For a threshold t (prediction ``score >= t``):

    - shared FPR(t) = mean over the normal images of their per-image FPR (share of their pixels predicted). All
      images have H x W pixels, so this is also the share of all normal-image pixels predicted. Pixels outside the
      masks of anomalous images play no part.
    - TPR_i(t) = share of the mask pixels of anomalous image i predicted (its "overlap").

    PIMO curve of image i: the points (log10 shared FPR(t), TPR_i(t)) for every distinct score t (tied scores move
    together), joined by straight lines in that log-linear plane. AUPIMO_i = its area over [log10 lower, log10 upper]
    divided by ``log10(upper / lower)``, in [0, 1]: the curve is cut at exactly the two bounds by linear
    interpolation in log10 FPR. An image whose mask pixels all score at least ``t_lower`` (below: ``thresholds``; a
    perfect detector's do) gets 1, one whose mask pixels all score below ``t_upper`` gets 0.

    Differences from anomalib's ``aupimo_scores`` (which this otherwise follows: shared FPR = mean per-image FPR on
    normal images, ``score >= t``, trapezoids in log FPR normalised by the bounds' log width, NaN for normal images):
    anomalib evaluates 300 000 thresholds evenly spaced between the normal images' min and max score and integrates
    between the two grid points whose shared FPR is nearest each bound (warning when it misses by over 1%), so its
    value carries a grid and a snapping error; here the curve is exact and cut at the bounds. anomalib raises when
    the bounds are not resolved; here the result is NaN with a warning and a ``reason`` (see Returns).

    Args:
        masks: ``[N, H, W]`` bool or 0/1 ground truth; at least one image must be normal (all false).
        maps: ``[N, H, W]`` real anomaly maps.
        fpr_bounds: ``(lower, upper)`` shared-FPR integration range, ``0 < lower < upper <= 1``.
        num_thresholds: None (default): the exact curve, one vertex per distinct normal-image score. An int K >= 2:
            only the K thresholds ``np.linspace(min, max, K)`` (float64) of the normal-image scores are vertices, as
            in anomalib (which uses K = 300 000); between grid points the curve is replaced by a chord.

    Returns:
        A dict:

        - ``"mean"``: mean AUPIMO of the anomalous images (float), None when there is none; NaN when undefined.
        - ``"per_image"``: one entry per input image, in order: None for a normal image, a float for an anomalous
          one.
        - ``"fpr_bounds"``: ``(lower, upper)``.
        - ``"thresholds"``: ``(t_upper, t_lower)``: t_upper = the highest threshold with shared FPR >= upper,
          t_lower = the lowest vertex (normal-image score, or grid point) with shared FPR <= lower (``score >=
          t_lower`` keeps the normal images within ``lower``); the curve between them is what is integrated. None
          when undefined.
        - ``"shared_fpr"``: the shared FPR at those two thresholds, or None.
        - ``"num_points"``: distinct shared-FPR values strictly inside the bounds (the curve's resolution there: few
          points mean few normal pixels in the range, a coarse but exact curve).
        - ``"reason"``: None, or why the values are NaN / None.

        Undefined (NaN for every anomalous image, with a ``RuntimeWarning``): when even the highest normal-image
        score is shared by more than ``lower`` x (normal pixels) pixels, e.g. fewer than ``1 / lower`` normal pixels
        (100 000 for the default bounds) or a constant normal map: no threshold gives a shared FPR in
        ``(0, lower]``, so the curve does not reach the lower bound (it jumps there from FPR 0, log10 = -inf).

    Raises:
        ValueError: bad shapes or values (NaN/inf maps, non-binary masks), bad ``fpr_bounds`` or ``num_thresholds``,
            or no normal image (the shared FPR is measured on normal images).

    Cost: one in-place sort of a copy of the normal-image scores; the vertices from the top down to ``upper`` (at
    most ``upper`` x (normal pixels) + 1 of them when exact) are walked in chunks, each turned into two cumulative
    sums of segment weights that every mask pixel reads with two binary searches, so no per-image curve is ever
    built. Extra memory: about one copy of the normal-image scores and of the mask scores, plus about 100 bytes per
    vertex of one chunk (at most 2^20 vertices).
    """
    fn = "aupimo"
    lower, upper = _check_fpr_bounds(fn, fpr_bounds)
    num_thresholds = _optional_int(fn, "num_thresholds", num_thresholds, 2, "None (exact curve)")
    y = _as_labels(fn, "masks", masks)
    s = _as_scores(fn, "maps", maps)
    _check_shapes(fn, "masks", y, "maps", s, 3, "[N, H, W]")
    n_img = y.shape[0]
    y = y.reshape(n_img, -1)
    s = s.reshape(n_img, -1)
    anomalous = np.flatnonzero(y.any(axis=1))
    normal = np.flatnonzero(~y.any(axis=1))
    if normal.size == 0:
        raise ValueError(f"{fn}: no normal image (all {n_img} masks have defect pixels); the shared FPR is measured on "
                         f"normal images, at least one is needed")
    out = {"mean": None, "per_image": [None] * n_img, "fpr_bounds": (lower, upper), "thresholds": None,
           "shared_fpr": None, "num_points": 0, "reason": None}
    if anomalous.size == 0:
        out["reason"] = "no anomalous image (every mask is empty)"
        return out

    neg = s[normal].reshape(-1)  # fancy indexing copies
    neg.sort()
    n_neg = neg.size
    t, n_fp = _pimo_vertices(neg, upper, num_thresholds)
    x = np.log10(n_fp / n_neg)  # non-decreasing; n_fp >= 1 since every vertex is <= the highest normal score
    x_lo, x_hi = math.log10(lower), math.log10(upper)
    if x[0] > x_lo:
        out["reason"] = (f"the shared FPR never lies in (0, {lower:g}]: the highest normal-image score "
                         f"{float(t[0]):g} is held by {int(n_fp[0])} of the {n_neg} normal-image pixels "
                         f"(shared FPR {n_fp[0] / n_neg:.3g}), so the curve does not reach the lower bound")
        warnings.warn(f"{fn}: AUPIMO is undefined (NaN): {out['reason']}", RuntimeWarning, stacklevel=2)
        for i in anomalous:
            out["per_image"][i] = math.nan
        out["mean"] = math.nan
        return out

    # Vertex k >= 1 closes the segment from vertex k - 1; the segments k_first..k_last are those meeting the range.
    k_first = int(np.searchsorted(x, x_lo, side="right"))
    k_last = min(int(np.searchsorted(x, x_hi, side="left")), x.size - 1)
    pos = [s[i][y[i]] for i in anomalous]
    area = np.zeros(anomalous.size)  # in log10 FPR x TPR
    n_segments = 0
    for c in range(k_first, k_last + 1, _CHUNK):
        k = np.arange(c, min(c + _CHUNK, k_last + 1))
        x0, x1 = x[k - 1], x[k]
        keep = x1 > x0  # a grid can repeat an FPR; such segments are vertical, of no width
        k, x0, x1 = k[keep], x0[keep], x1[keep]
        n_segments += k.size
        p, q = np.maximum(x0, x_lo), np.minimum(x1, x_hi)
        # The trapezoid over [p, q] of the line from (x0, y0) to (x1, y1) is w0 * y0 + w1 * y1.
        half = (q - p) / 2
        w1 = half * ((p - x0) + (q - x0)) / (x1 - x0)
        w0 = 2 * half - w1
        # y1 = TPR(>= t[k]). y0: exact, the TPR just above t[k] (between two normal scores the TPR rises at constant
        # FPR, a vertical piece); on a grid, the TPR at the previous vertex. So a mask pixel of score v adds w1 of
        # every segment with t[k] <= v, and w0 of those with t[k] < v (exact) or t[k - 1] <= v (grid): suffixes of
        # the descending thresholds, read from cumulative sums taken from the low end.
        t1 = t[k][::-1]
        t0, side0 = (t1, "left") if num_thresholds is None else (t[k - 1][::-1], "right")
        cum0 = np.concatenate([[0.0], np.cumsum(w0[::-1])])
        cum1 = np.concatenate([[0.0], np.cumsum(w1[::-1])])
        for j, v in enumerate(pos):
            area[j] += (cum0[np.searchsorted(t0, v, side=side0)].sum()
                        + cum1[np.searchsorted(t1, v, side="right")].sum()) / v.size
    # Rounding can only push the result out of [0, 1] by a few ulps.
    values = np.clip(area / (x_hi - x_lo), 0.0, 1.0)
    for i, v in zip(anomalous, values):
        out["per_image"][i] = float(v)
    out["mean"] = float(np.mean(values))
    out["thresholds"] = (float(t[k_last]), float(t[k_first - 1]))
    out["shared_fpr"] = (float(n_fp[k_last] / n_neg), float(n_fp[k_first - 1] / n_neg))
    out["num_points"] = max(n_segments - 1, 0)
    return out
