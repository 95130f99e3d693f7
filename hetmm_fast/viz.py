"""Pictures of anomaly maps and of an evaluation.

    heatmap_overlay(image, amap, vmin=, vmax=, alpha=, mask=)   -> uint8 [H, W, 3] (jet map blended over the image)
    write_png(path, array)                                      -> Path (plain PNG through PIL)
    save_overlay(path, image, amap, mask=, score=, title=)       -> Path (image | overlay | ground truth figure)
    plot_evaluation(path, labels=, scores=, masks=, maps=)       -> Path (ROC, histograms, pixel ROC, PRO curve)

Figures are drawn on a private Agg canvas (``matplotlib.figure.Figure``, never ``pyplot``): the backend a user chose
and pyplot's global figure list are untouched, and nothing needs a display. Every file is written atomically (a
temporary file in the target folder, then ``os.replace``), so a reader never sees a half-written PNG. For one fixed
colour scale across a category, pass the category's score range as ``vmin``/``vmax``.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from . import metrics

__all__ = ["heatmap_overlay", "plot_evaluation", "save_overlay", "write_png"]

_CONTOUR_RGB = (255, 255, 255)  # white stays visible over every colour of the jet map
_PLOT_POINTS = 20_000  # thresholds per pixel-level curve in plot_evaluation (the curve points stay exact)


# ---------------------------------------------------------------------------------------------------------------
# Input conversion
# ---------------------------------------------------------------------------------------------------------------
def _image_uint8(fn: str, image) -> np.ndarray:
    """uint8 [H, W, 3] from a [H, W, 3]/[H, W] array (uint8, or float in [0, 1]), a Tensor[3|1, H, W] or a PIL image."""
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"{fn}: a Tensor image must be [3, H, W] (or [1, H, W]), got {tuple(image.shape)}")
        t = image.detach().cpu()
        image = (t.float() if t.is_floating_point() else t).permute(1, 2, 0).numpy()
    elif not isinstance(image, np.ndarray):
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover - pillow is a dependency
            Image = None
        if Image is None or not isinstance(image, Image.Image):
            raise TypeError(f"{fn}: image must be a numpy array, a torch.Tensor or a PIL image, got "
                            f"{type(image).__name__}")
        image = np.asarray(image.convert("RGB"))
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"{fn}: image must be [H, W, 3] or [H, W] (Tensor: [3, H, W]), got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{fn}: image is empty, shape {image.shape}")
    if image.dtype == np.uint8:
        out = image
    elif image.dtype.kind == "f":
        lo, hi = float(image.min()), float(image.max())
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(
                f"{fn}: a float image must hold values in [0, 1], got range [{lo:.4g}, {hi:.4g}] "
                f"(undo the mean/std normalisation first)"
            )
        out = np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        raise TypeError(f"{fn}: image dtype must be uint8 or float in [0, 1], got {image.dtype}")
    return np.repeat(out, 3, axis=2) if out.shape[2] == 1 else out


def _plane(fn: str, name: str, x, dtype) -> np.ndarray:
    """A [H, W] numpy array from an array/Tensor of shape [..., H, W] whose leading dims are all 1."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = (x.float() if x.is_floating_point() else x).numpy()
    elif not isinstance(x, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy array or a torch.Tensor, got {type(x).__name__}")
    shape = x.shape
    while x.ndim > 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"{fn}: {name} must be [H, W] (leading singleton dims allowed), got shape {shape}")
    if dtype is bool:
        if x.dtype != np.bool_:
            if x.dtype.kind not in "biuf" or np.count_nonzero((x != 0) & (x != 1)):
                raise ValueError(f"{fn}: {name} must be bool or 0/1, got dtype {x.dtype} with other values")
            x = x != 0
        return x
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{fn}: {name} must hold real numbers, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError(f"{fn}: {name} contains NaN or infinite values")
    return x


def _resize(x: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    if x.shape == size:
        return x
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]
    if mode == "bilinear":
        t = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)
    else:
        t = torch.nn.functional.interpolate(t, size=size, mode="nearest")
    return t[0, 0].numpy()


def _value_range(fn: str, amap: np.ndarray, vmin, vmax) -> tuple[float, float]:
    lo = float(amap.min()) if vmin is None else float(vmin)
    hi = float(amap.max()) if vmax is None else float(vmax)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"{fn}: vmin/vmax must be finite, got vmin={vmin!r}, vmax={vmax!r}")
    if lo > hi:
        raise ValueError(f"{fn}: vmin ({lo:.6g}) must be <= vmax ({hi:.6g})")
    return lo, hi


# ---------------------------------------------------------------------------------------------------------------
# Overlay
# ---------------------------------------------------------------------------------------------------------------
def heatmap_overlay(image, amap, *, vmin=None, vmax=None, alpha: float = 0.5, mask=None) -> np.ndarray:
    """Blend a jet-coloured anomaly map over an image.

    Args:
        image: uint8 ``[H, W, 3]`` (or ``[H, W]``), float ``[H, W, 3]`` in [0, 1], ``Tensor[3, H, W]`` in [0, 1]
            (or uint8), or a PIL image.
        amap: ``[h, w]`` anomaly map (array or Tensor; leading singleton dims allowed), bilinearly resized to
            ``H x W`` if its size differs.
        vmin, vmax: the scores shown as the coldest / warmest colour (default: the map's min / max). Pass a
            category's score range to compare images on one scale; values outside are clipped.
        alpha: weight of the colour map, in [0, 1] (0 = the image, 1 = the colour map only).
        mask: optional ``[h', w']`` bool/0-1 ground truth (nearest-resized to ``H x W``); its outline is drawn in
            white, 2 pixels wide (one inside, one outside the region).

    Returns:
        uint8 ``[H, W, 3]``.
    """
    fn = "heatmap_overlay"
    img = _image_uint8(fn, image)
    size = img.shape[:2]
    a = _plane(fn, "amap", amap, float)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"{fn}: alpha must be a number in [0, 1], got {alpha!r}")
    lo, hi = _value_range(fn, a, vmin, vmax)
    a = _resize(a, size, "bilinear")
    norm = np.zeros_like(a) if hi == lo else np.clip((a - lo) / (hi - lo), 0.0, 1.0)

    import matplotlib  # the colormap registry only: no backend is selected by this import

    colour = matplotlib.colormaps["jet"](norm, bytes=True)[..., :3]
    out = np.rint((1.0 - alpha) * img + alpha * colour.astype(np.float32)).astype(np.uint8)
    if mask is not None:
        m = _resize(_plane(fn, "mask", mask, bool).astype(np.float32), size, "nearest") > 0.5
        square = np.ones((3, 3), dtype=bool)
        edge = ndimage.binary_dilation(m, square) & ~ndimage.binary_erosion(m, square)
        out[edge] = _CONTOUR_RGB
    return out


# ---------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------
def _atomic_png(fn: str, path, write) -> Path:
    """Call write(binary_file) on a temporary file next to `path`, then rename it onto `path`."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{fn}: path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{fn}: path must end in .png, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; a picture is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_png(path, array) -> Path:
    """Write a uint8 ``[H, W, 3]`` / ``[H, W]`` array as a PNG (atomically, through PIL); returns the path."""
    fn = "write_png"
    a = _image_uint8(fn, array)
    from PIL import Image

    return _atomic_png(fn, path, lambda f: Image.fromarray(np.ascontiguousarray(a)).save(f, format="PNG"))


def _figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fn: str, path, fig) -> Path:
    return _atomic_png(fn, path, lambda f: fig.savefig(f, format="png"))


def save_overlay(path, image, amap, *, mask=None, score=None, title=None, vmin=None, vmax=None) -> Path:
    """Save a PNG: original | anomaly map over it (with a colour bar) | ground-truth mask (if given).

    Args:
        path: target ``.png`` (parent folders are created); written atomically.
        image, amap, mask, vmin, vmax: as in :func:`heatmap_overlay`.
        score: the image's anomaly score, shown in the title.
        title: free text (e.g. category and file name).

    Returns:
        ``Path(path)``.
    """
    fn = "save_overlay"
    img = _image_uint8(fn, image)
    a = _plane(fn, "amap", amap, float)
    lo, hi = _value_range(fn, a, vmin, vmax)
    overlay = heatmap_overlay(img, a, vmin=lo, vmax=hi, mask=mask)
    if score is not None:
        try:
            score = float(score)
        except (TypeError, ValueError):
            raise TypeError(f"{fn}: score must be a number, got {type(score).__name__} {score!r}") from None
        if not np.isfinite(score):
            raise ValueError(f"{fn}: score must be finite, got {score!r}")
    heading = " | ".join(
        x for x in ((str(title) if title else ""), ("" if score is None else f"score {score:.4g}")) if x
    )

    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    panels = 3 if mask is not None else 2
    fig = _figure((3.2 * panels + 0.6, 3.6))
    axes = fig.subplots(1, panels)
    axes[0].imshow(img)
    axes[0].set_title("image")
    axes[1].imshow(overlay)
    axes[1].set_title("anomaly map")
    fig.colorbar(ScalarMappable(Normalize(lo, hi if hi > lo else lo + 1e-12), "jet"), ax=axes[1], shrink=0.8)
    if mask is not None:
        m = _resize(_plane(fn, "mask", mask, bool).astype(np.float32), img.shape[:2], "nearest")
        axes[2].imshow(m, cmap="gray", vmin=0, vmax=1)
        axes[2].set_title("ground truth")
    for ax in axes:
        ax.set_axis_off()
    if heading:
        fig.suptitle(heading)
    return _save_figure(fn, path, fig)


def plot_evaluation(path, *, labels, scores, masks=None, maps=None, pro_maps=None, title: str = "") -> Path:
    """Save one PNG summarising a category's evaluation.

    Panels: image ROC (AUROC in the legend), histograms of the image scores of normal vs defective images, and
    when ``masks``/``maps`` are given, the pixel ROC (pixel AUROC) and the PRO curve up to FPR 0.3 (AUPRO). The
    legend numbers come from :mod:`hetmm_fast.metrics` on all pixels; the drawn pixel curves are evaluated at about
    20000 thresholds (every point exactly on the curve).

    Args:
        path: target ``.png``; written atomically.
        labels: ``[B]`` 0/1 image labels; scores: ``[B]`` image scores.
        masks: ``[B, H, W]`` bool/0-1 ground truth; maps: ``[B, H, W]`` anomaly maps (both or neither).
        pro_maps: ``[B, H, W]`` maps for the PRO panel when a preset post-processes them differently (default
            ``maps``), so that its AUPRO is the one reported.
        title: figure title (e.g. the category).

    Returns:
        ``Path(path)``.
    """
    fn = "plot_evaluation"
    if (masks is None) != (maps is None):
        raise ValueError(f"{fn}: give both masks and maps or neither (got masks={masks is not None}, "
                         f"maps={maps is not None})")
    if pro_maps is not None and maps is None:
        raise ValueError(f"{fn}: pro_maps needs masks and maps")
    auroc = metrics.image_auroc(labels, scores)
    fpr, tpr = metrics.roc_curve(labels, scores)
    y = metrics._as_labels(fn, "labels", labels).reshape(-1)
    s = metrics._as_scores(fn, "scores", scores).reshape(-1)

    rows = 1 if masks is None else 2
    fig = _figure((10.0, 4.2 * rows))
    axes = np.asarray(fig.subplots(rows, 2)).reshape(rows, 2)
    _roc_axes(axes[0, 0], fpr, tpr, f"image AUROC {auroc:.4f}", "image ROC")
    edges = np.histogram_bin_edges(s, bins=min(40, max(10, s.size // 5)))
    ax = axes[0, 1]
    ax.hist(s[~y], bins=edges, alpha=0.6, color="tab:blue", label=f"normal ({int((~y).sum())})")
    ax.hist(s[y], bins=edges, alpha=0.6, color="tab:red", label=f"defect ({int(y.sum())})")
    ax.set_xlabel("image score")
    ax.set_ylabel("images")
    ax.set_title("image scores")
    ax.legend()
    if masks is not None:
        p_auroc = metrics.pixel_auroc(masks, maps)
        pro_maps = maps if pro_maps is None else pro_maps
        pro = metrics.aupro(masks, pro_maps, 0.3)
        fpr, tpr = metrics.roc_curve(masks, maps, max_points=_PLOT_POINTS)
        _roc_axes(axes[1, 0], fpr, tpr, f"pixel AUROC {p_auroc:.4f}", "pixel ROC")
        fpr, pro_y = metrics.pro_curve(masks, pro_maps, 0.3, max_points=_PLOT_POINTS)
        ax = axes[1, 1]
        ax.plot(fpr, pro_y, color="tab:green", label=f"AUPRO@0.3 {pro:.4f}")
        ax.set_xlim(0.0, 0.3)
        ax.set_ylim(0.0, 1.02)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("per-region overlap")
        ax.set_title("PRO curve")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    if title:
        fig.suptitle(str(title))
    return _save_figure(fn, path, fig)


def _roc_axes(ax, fpr, tpr, label: str, heading: str) -> None:
    ax.plot(fpr, tpr, color="tab:red", label=label)
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=0.8)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(heading)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
