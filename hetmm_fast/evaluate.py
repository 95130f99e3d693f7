"""Evaluation on MVTec-layout data (SPEC §5): fit on train/good, optional PTS, predict the test set, score with
every metric, time every stage, and draw pictures; per category (:func:`evaluate_category`) or for a list of
categories with a results file written after each one and resumable (:func:`evaluate_dataset`).

Pixel metrics need pixel ground truth. Good test images are all-normal by definition; a defect image without a
mask file is left out of the pixel metrics (counted in ``n_defect_without_mask``), since scoring it as all-normal
would count its defect pixels as normal ones. A category whose defect images have no masks at all (image-level
labels only) gets its image metrics, and ``None`` for each pixel metric with the reason in ``skipped``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import torch

from .progress import progress_bar

IMAGE_METRICS = ("image_auroc",)
PIXEL_METRICS = ("pixel_auroc", "aupro", "paper_pro", "f1_max")
METRIC_KEYS = IMAGE_METRICS + PIXEL_METRICS

#: The settings that change a category's results; a results file records them and ``resume`` requires them equal.
SETTING_KEYS = ("tsize", "backbone", "preset", "image_size", "dtype", "backbone_dtype")

RESULTS_FORMAT = "hetmm_fast.eval"


def evaluate_category(root, category: str, *, tsize: int | None = 60, backbone: str | None = "efficientnet_lite0",
                      preset: str = "default", image_size: int = 256, device: str = "cpu",
                      weights=None, backend: str | None = None, out_dir=None, n_overlays: int = 8,
                      progress: bool = True, detector_kwargs: dict | None = None) -> dict:
    """Evaluate one category.

    Returns:
        ``{metric: value or None, ..., "skipped": {metric: reason}, "n_defect_without_mask", "n_pixel_images",
        "timings": {stage: seconds}, "n_train", "n_test", "tsize", "backbone", "preset"}``. A metric is None
        exactly when ``skipped`` names it, with the reason (no ground-truth masks, no defect test images, ...).
        ``n_pixel_images`` is the number of test images the pixel metrics were computed on (0 when skipped).
        With ``out_dir`` writes ``<out_dir>/<category>/evaluation.png`` (pixel curves only where masks exist) and
        heatmap overlays.
    """
    from . import metrics
    from .data.mvtec import MVTecCategory
    from .detector import HETMM

    data = MVTecCategory(root, category)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    det = HETMM(backbone=backbone, preset=preset, image_size=image_size, device=device, category=category,
                weights=weights, backend=backend, progress=progress, **(detector_kwargs or {}))
    timings["load_backbone"] = time.perf_counter() - t0

    det.fit(data.train_paths)
    timings["templates"] = det.timings["fit"]
    if tsize is not None and tsize < det.n_templates:
        det.select(tsize)
        timings["pts"] = det.timings["select"]

    items = data.test_items
    pred = det.predict([it.path for it in items])
    timings["predict"] = det.timings["predict"]
    timings["predict_per_image"] = timings["predict"] / max(1, len(items))

    labels = torch.tensor([it.label for it in items])
    pixel_index = [i for i, it in enumerate(items) if it.label == 0 or it.mask_path is not None]
    n_without_mask = len(data.defects_without_mask)
    skipped: dict[str, str] = {}
    image_reason = _image_skip_reason(labels)
    pixel_reason = _pixel_skip_reason(data, labels)
    masks = None
    if pixel_reason is None:
        t0 = time.perf_counter()
        masks = data.load_masks(image_size, [items[i] for i in pixel_index])
        timings["load_masks"] = time.perf_counter() - t0
        pixel_reason = _mask_skip_reason(masks)
        if pixel_reason is not None:
            masks = None

    t0 = time.perf_counter()
    res: dict = {}
    if image_reason is None:
        res["image_auroc"] = metrics.image_auroc(labels, pred.scores)
    else:
        res["image_auroc"] = None
        skipped["image_auroc"] = image_reason
    if masks is not None:
        maps, pro_maps = pred.maps[pixel_index], pred.pro_maps[pixel_index]
        res.update(pixel_auroc=metrics.pixel_auroc(masks, maps), aupro=metrics.aupro(masks, pro_maps),
                   paper_pro=metrics.paper_pro(masks, pro_maps), f1_max=metrics.f1_max(masks.flatten(),
                                                                                      maps.flatten()))
    else:
        res.update(dict.fromkeys(PIXEL_METRICS))
        skipped.update(dict.fromkeys(PIXEL_METRICS, pixel_reason))
    timings["metrics"] = time.perf_counter() - t0

    if out_dir is not None:
        t0 = time.perf_counter()
        _draw(Path(out_dir) / category, category, items, labels, pred, pixel_index if masks is not None else [],
              masks, image_reason is None, n_overlays, image_size, progress)
        timings["pictures"] = time.perf_counter() - t0

    res.update(skipped=skipped, n_defect_without_mask=n_without_mask,
               n_pixel_images=len(pixel_index) if masks is not None else 0,
               timings={k: round(v, 4) for k, v in timings.items()}, n_train=det.n_templates,
               n_test=len(items), tsize=det.tsize, backbone=det.backbone.name, preset=det.preset.name)
    return res


def _image_skip_reason(labels: torch.Tensor) -> str | None:
    if not bool((labels == 1).any()):
        return "no defect test images"
    if not bool((labels == 0).any()):
        return "no good test images"
    return None


def _pixel_skip_reason(data, labels: torch.Tensor) -> str | None:
    n_defect = int((labels == 1).sum())
    if n_defect == 0:
        return "no defect test images"
    if len(data.defects_without_mask) == n_defect:
        where = ("no ground_truth/ folder" if not data.has_ground_truth
                 else f"none of the {n_defect} defect images has a mask file in ground_truth/")
        return f"no ground-truth masks ({where})"
    return None


def _mask_skip_reason(masks: torch.Tensor) -> str | None:
    if not bool(masks.any()):
        return "the ground-truth masks mark no defect pixel"
    if bool(masks.all()):
        return "the ground-truth masks mark every pixel as defect (no normal pixel)"
    return None


def _draw(folder: Path, category, items, labels, pred, pixel_index, masks, image_curves, n_overlays, image_size,
          progress) -> None:
    """Evaluation plot (image ROC and score histograms; pixel ROC and PRO curve on the images in ``pixel_index``
    when ``masks`` is given) and heatmap overlays, the defect ones with their mask where it exists."""
    from .data.images import to_tensor_batch
    from .viz import plot_evaluation, save_overlay

    folder.mkdir(parents=True, exist_ok=True)
    title = f"{category}: HETMM ({len(items)} test images"
    if masks is not None and len(pixel_index) < len(items):
        title += f"; pixel curves on the {len(pixel_index)} with ground truth"
    title += ")"
    if image_curves:
        pixel = {} if masks is None else {"masks": masks, "maps": pred.maps[pixel_index],
                                          "pro_maps": pred.pro_maps[pixel_index]}
        plot_evaluation(folder / "evaluation.png", labels=labels, scores=pred.scores, title=title, **pixel)
    mask_of = {i: masks[k] for k, i in enumerate(pixel_index) if items[i].label == 1}
    vmin, vmax = float(pred.maps.min()), float(pred.maps.max())
    defects = [i for i, it in enumerate(items) if it.label == 1]
    goods = [i for i, it in enumerate(items) if it.label == 0]
    # Spread the picks over the test set: every defect type gets shown before any repeats.
    chosen = defects[:: max(1, len(defects) // max(1, n_overlays - 2))][: n_overlays - 2] + goods[:2]
    with progress_bar(total=len(chosen), desc=f"{category} overlays", unit="img", enable=progress) as bar:
        for i in chosen:
            img = to_tensor_batch(str(items[i].path), image_size)[0][0]
            save_overlay(folder / f"{items[i].defect}_{items[i].path.stem}.png", img, pred.maps[i],
                         mask=mask_of.get(i), score=float(pred.scores[i]),
                         title=f"{items[i].defect}/{items[i].path.name}", vmin=vmin, vmax=vmax)
            bar.update(1)


def eval_settings(*, tsize: int | None = 60, backbone: str | None = "efficientnet_lite0", preset: str = "default",
                  image_size: int = 256, detector_kwargs: dict | None = None, **_ignored) -> dict:
    """The settings of :data:`SETTING_KEYS` that :func:`evaluate_category` would use with these arguments, as
    JSON values (``tsize`` "all" for the ALL set, dtypes by name)."""
    from .detector import _dtype_name

    dk = detector_kwargs or {}
    return {"tsize": "all" if tsize is None else int(tsize), "backbone": backbone, "preset": preset,
            "image_size": int(image_size), "dtype": _dtype_name(dk.get("dtype", torch.float32)),
            "backbone_dtype": _dtype_name(dk.get("backbone_dtype", torch.float32))}


def _read_results(path: Path, settings: dict) -> dict:
    """The results file at ``path`` for resuming with ``settings``; an empty record when the file does not exist.

    Raises:
        ValueError: the file is not a results file, or it was written with other settings (the message names
            every differing one).
    """
    empty = {"format": RESULTS_FORMAT, "settings": settings, "categories": {}, "failed": {}}
    if not path.exists():
        return empty
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"resume: cannot read results file '{path}' ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("categories"), dict):
        raise ValueError(f"resume: '{path}' is not a results file of 'hetmm-fast eval' (no 'categories' object)")
    recorded = doc.get("settings")
    if not isinstance(recorded, dict):
        raise ValueError(f"resume: '{path}' records no settings, so its results cannot be matched to this run; "
                         "write to another file or run without resume")
    differ = [f"{k} {recorded.get(k)!r} there, {settings[k]!r} now" for k in SETTING_KEYS
              if recorded.get(k) != settings[k]]
    if differ:
        raise ValueError(f"resume: '{path}' was written with other settings ({'; '.join(differ)}); "
                         "run with the same settings, or write to another file")
    failed = doc.get("failed") if isinstance(doc.get("failed"), dict) else {}
    return {**empty, "categories": dict(doc["categories"]), "failed": dict(failed)}


def _error_record(exc: BaseException) -> dict:
    return {"type": type(exc).__name__, "message": str(exc)}


def evaluate_dataset(root, categories, *, tsize: int | None = 60, json_path=None, resume: bool = False,
                     out_dir=None, progress: bool = True,
                     on_category: Callable[[str, str, dict], None] | None = None, **kwargs) -> dict:
    """Evaluate ``categories`` one after the other; a category that raises is recorded and the others still run.

    Args:
        root: dataset root (MVTec layout); categories: folder names under it.
        tsize, out_dir, progress, kwargs: as in :func:`evaluate_category`.
        json_path: results file, rewritten atomically after every category, so an interrupted run loses at most
            the category it was on.
        resume: read ``json_path`` first and skip the categories it records as finished (failed ones run again);
            the file must have been written with the same :data:`SETTING_KEYS`. A missing file starts afresh.
            Without ``resume`` an existing file is replaced.
        on_category: called as ``on_category(name, status, record)`` after each category, ``status`` one of
            ``"done"`` (record = the result), ``"failed"`` (record = ``{"type", "message"}``) or ``"resumed"``
            (record = the result read from the file).

    Returns:
        The results record, as written to ``json_path``: ``{"format", "settings", "categories": {name: result},
        "failed": {name: {"type", "message"}}}``. It keeps the categories of a resumed file that this run did not
        ask for.

    Raises:
        ValueError: ``resume`` without ``json_path``, or a results file that cannot be resumed (see above).
    """
    from .bank import atomic_write_text

    settings = eval_settings(tsize=tsize, **kwargs)
    if resume and json_path is None:
        raise ValueError("evaluate_dataset: resume needs a results file (json_path)")
    path = None if json_path is None else Path(json_path)
    if resume:
        doc = _read_results(path, settings)
    else:
        doc = {"format": RESULTS_FORMAT, "settings": settings, "categories": {}, "failed": {}}
    notify = on_category or (lambda name, status, record: None)
    with progress_bar(total=len(categories), desc="categories", unit="cat", enable=progress) as bar:
        for cat in categories:
            if resume and cat in doc["categories"]:
                notify(cat, "resumed", doc["categories"][cat])
                bar.update(1)
                continue
            try:
                result = evaluate_category(root, cat, tsize=tsize, out_dir=out_dir, progress=progress, **kwargs)
            except Exception as exc:  # recorded with its type and message; the remaining categories still run
                doc["categories"].pop(cat, None)
                doc["failed"][cat] = _error_record(exc)
                status, record = "failed", doc["failed"][cat]
            else:
                doc["failed"].pop(cat, None)
                doc["categories"][cat] = result
                status, record = "done", result
            if path is not None:
                atomic_write_text(path, json.dumps(doc, indent=2))
            notify(cat, status, record)
            bar.update(1)
    return doc


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def format_table(results: dict[str, dict]) -> str:
    """A Markdown table of per-category metrics and stage times; "–" for a metric that was not computed."""
    head = ("| category | tsize | image AUROC | pixel AUROC | AUPRO | paper PRO | F1-max | templates s | PTS s | "
            "predict s/img |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in results.items():
        t = r["timings"]
        tsize = "ALL" if r["tsize"] is None else str(r["tsize"])
        lines.append(
            f"| {name} | {tsize} | {_fmt(r['image_auroc'], '.3f')} | {_fmt(r['pixel_auroc'], '.3f')} | "
            f"{_fmt(r['aupro'], '.3f')} | {_fmt(r['paper_pro'], '.1f')} | {_fmt(r['f1_max'], '.3f')} | "
            f"{t['templates']:.1f} | {_fmt(t.get('pts'), '.1f')} | {t['predict_per_image']:.3f} |"
        )
    return "\n".join(lines)
