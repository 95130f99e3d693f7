"""Evaluation on MVTec-layout data (SPEC §5): fit on train/good, optional PTS, predict the test set, score with
every metric, time every stage, and draw pictures; per category (:func:`evaluate_category`) or for a list of
categories with a results file written after each one and resumable (:func:`evaluate_dataset`).

Pixel metrics need pixel ground truth. Good test images are all-normal by definition; a defect image without a
mask file is left out of the pixel metrics (counted in ``n_defect_without_mask``), since scoring it as all-normal
would count its defect pixels as normal ones. A category whose defect images have no masks at all (image-level
labels only) gets its image metrics, and ``None`` for each pixel metric with the reason in ``skipped``.

Categories come from an MVTec-layout root by name, or from any reader with the
:class:`~hetmm_fast.data.mvtec.MVTecCategory` interface (the benchmark suites of :mod:`hetmm_fast.data.suites`).
Each result also breaks the metrics down by defect type (``by_defect``). :func:`format_benchmark_table` and
:func:`format_comparison` print a suite's results like a paper's table and against another run.
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
                      progress: bool = False, detector_kwargs: dict | None = None, data=None) -> dict:
    """Evaluate one category.

    Args:
        root, category: the MVTec-layout dataset root and category folder name; with ``data`` given, ``root`` is
            not read and ``category`` only names the results (and the paper preset's table entry).
        data: a category object with the :class:`~hetmm_fast.data.mvtec.MVTecCategory` interface (a benchmark
            suite's reader), used instead of reading ``root``.

    Returns:
        ``{metric: value or None, ..., "skipped": {metric: reason}, "n_defect_without_mask", "n_pixel_images",
        "timings": {stage: seconds}, "n_train", "n_test", "tsize", "backbone", "preset"}``. A metric is None
        exactly when ``skipped`` names it, with the reason (no ground-truth masks, no defect test images, ...).
        ``n_pixel_images`` is the number of test images the pixel metrics were computed on (0 when skipped).
        With ``out_dir`` writes ``<out_dir>/<category>/evaluation.png`` (pixel curves only where masks exist) and
        heatmap overlays. ``by_defect`` maps each defect type to its own metrics (:func:`_by_defect`).
        ``aupimo`` is the mean AUPIMO of the defect images with masks (``aupimo_per_image``: one value per image
        of the pixel metrics, None for good ones), None with the reason in ``aupimo_reason`` where it cannot be
        computed (``aupimo_reason`` is None otherwise).
    """
    from . import metrics
    from .data.mvtec import MVTecCategory
    from .detector import HETMM

    if data is None:
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
        aupimo, per_image, why = _aupimo(masks, maps)
        res.update(aupimo=aupimo, aupimo_per_image=per_image, aupimo_reason=why)
    else:
        res.update(dict.fromkeys(PIXEL_METRICS), aupimo=None, aupimo_per_image=None, aupimo_reason=pixel_reason)
        skipped.update(dict.fromkeys(PIXEL_METRICS, pixel_reason))
    res["by_defect"] = _by_defect(items, labels, pred, pixel_index if masks is not None else [], masks)
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


def _aupimo(masks: torch.Tensor, maps: torch.Tensor) -> tuple[float | None, list | None, str | None]:
    """AUPIMO of the pixel-metric images, shared-FPR bounds (1e-5, 1e-4): ``(mean, per_image, reason)``, the one
    place it is computed. ``per_image`` holds None for normal images (empty masks); an undefined value (too few
    normal pixels to resolve FPR 1e-5, e.g. small images) is None with the reason of ``metrics.aupimo``."""
    import math
    import warnings

    from . import metrics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # its reason is recorded instead
        out = metrics.aupimo(masks, maps, fpr_bounds=(1e-5, 1e-4))

    def clean(v):
        return None if v is None or math.isnan(v) else float(v)

    mean = clean(out["mean"])
    per_image = [clean(v) for v in out["per_image"]]
    reason = None if mean is not None else f"AUPIMO undefined: {out.get('reason') or 'no anomalous image'}"
    return mean, per_image, reason


def _by_defect(items, labels: torch.Tensor, pred, pixel_index: list[int], masks: torch.Tensor | None) -> dict:
    """Per defect type: image AUROC of that type's images against every good test image, and pixel AUROC and
    AUPRO over that type's images with masks plus the good images. A metric that cannot be computed is None,
    with the reason under ``skipped``."""
    from . import metrics

    goods = [i for i, it in enumerate(items) if it.label == 0]
    where = {i: k for k, i in enumerate(pixel_index)}
    out: dict[str, dict] = {}
    for defect in sorted({it.defect for it in items if it.label == 1}):
        mine = [i for i, it in enumerate(items) if it.label == 1 and it.defect == defect]
        masked = [i for i in mine if i in where]
        rec: dict = {"n_images": len(mine), "n_with_mask": len(masked), "skipped": {}}
        if goods:
            idx = torch.tensor(goods + mine)
            rec["image_auroc"] = metrics.image_auroc(labels[idx], pred.scores[idx])
        else:
            rec["image_auroc"] = None
            rec["skipped"]["image_auroc"] = "no good test images"
        reason = None
        if masks is None:
            reason = "no pixel ground truth for this category"
        elif not masked:
            reason = f"no '{defect}' image has a mask"
        else:
            orig = [i for i in goods if i in where] + masked
            sub = masks[[where[i] for i in orig]]
            reason = _mask_skip_reason(sub)
            if reason is None:
                rec["pixel_auroc"] = metrics.pixel_auroc(sub, pred.maps[orig])
                rec["aupro"] = metrics.aupro(sub, pred.pro_maps[orig])
        if reason is not None:
            rec.update(pixel_auroc=None, aupro=None)
            rec["skipped"].update(pixel_auroc=reason, aupro=reason)
        out[defect] = rec
    return out


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


def _new_results(settings: dict) -> dict:
    return {"format": RESULTS_FORMAT, "settings": settings, "categories": {}, "failed": {}}


def _read_results(path: Path, settings: dict) -> dict:
    """The results file at ``path`` for resuming with ``settings``; an empty record when the file does not exist.

    Raises:
        ValueError: the file is not a results file, or it was written with other settings (the message names
            every differing one).
    """
    empty = _new_results(settings)
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
    differ = [f"{k} {recorded.get(k)!r} there, {settings[k]!r} now" for k in settings
              if recorded.get(k) != settings[k]]
    if differ:
        raise ValueError(f"resume: '{path}' was written with other settings ({'; '.join(differ)}); "
                         "run with the same settings, or write to another file")
    failed = doc.get("failed") if isinstance(doc.get("failed"), dict) else {}
    return {**empty, "categories": dict(doc["categories"]), "failed": dict(failed)}


def _error_record(exc: BaseException) -> dict:
    return {"type": type(exc).__name__, "message": str(exc)}


def evaluate_dataset(root, categories, *, tsize: int | None = 60, json_path=None, resume: bool = False,
                     out_dir=None, progress: bool = False,
                     on_category: Callable[[str, str, dict], None] | None = None,
                     load_category: Callable[[str], object] | None = None,
                     preset_for: Callable[[str], str] | None = None, extra_settings: dict | None = None,
                     **kwargs) -> dict:
    """Evaluate ``categories`` one after the other; a category that raises is recorded and the others still run.

    Args:
        root: dataset root (MVTec layout); categories: folder names under it.
        load_category: ``load_category(name)`` -> a category object with the MVTecCategory interface (a benchmark
            suite's reader); default: the MVTec-layout folder ``root/name``. Called inside the per-category
            error handling, so a category that cannot be read is recorded as failed.
        preset_for: ``preset_for(name)`` -> the preset to use for that category (default: ``kwargs["preset"]``).
        extra_settings: more settings to record and require equal on resume (e.g. the suite name).
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

    settings = {**eval_settings(tsize=tsize, **kwargs), **(extra_settings or {})}
    if resume and json_path is None:
        raise ValueError("evaluate_dataset: resume needs a results file (json_path)")
    path = None if json_path is None else Path(json_path)
    if resume:
        doc = _read_results(path, settings)
    else:
        doc = _new_results(settings)
    notify = on_category or (lambda name, status, record: None)
    with progress_bar(total=len(categories), desc="categories", unit="cat", enable=progress) as bar:
        for cat in categories:
            if resume and cat in doc["categories"]:
                notify(cat, "resumed", doc["categories"][cat])
                bar.update(1)
                continue
            try:
                data = None if load_category is None else load_category(cat)
                args = kwargs if preset_for is None else {**kwargs, "preset": preset_for(cat)}
                t0 = time.perf_counter()
                result = evaluate_category(root, cat, tsize=tsize, out_dir=out_dir, progress=progress, data=data,
                                           **args)
                result["wall_s"] = round(time.perf_counter() - t0, 4)
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


#: The metrics of the benchmark table and of :func:`format_comparison`, with their column titles.
BENCHMARK_METRICS = (("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("aupro", "AUPRO"),
                     ("aupimo", "AUPIMO"))


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def format_benchmark_table(results: dict[str, dict]) -> str:
    """A paper-style Markdown table: per category image AUROC, pixel AUROC, AUPRO and AUPIMO, the wall seconds
    of each stage (templates = the backbone pass over the training images, PTS, predict = reading, backbone and
    matching of every test image) and test images per second of predict; then a mean row.

    The mean row averages each metric over the categories that have it (``n/N`` says how many when some lack
    it), totals the stage times and divides all test images by the total predict time. "–" marks a value that
    was not computed."""
    head = ("| category | templates | " + " | ".join(t for _, t in BENCHMARK_METRICS)
            + " | templates s | PTS s | predict s | img/s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in results.items():
        t = r["timings"]
        bank = f"ALL ({r['n_train']})" if r["tsize"] is None else f"PTS-{r['tsize']} of {r['n_train']}"
        rate = r["n_test"] / t["predict"] if t.get("predict") else None
        lines.append(f"| {name} | {bank} | " + " | ".join(_fmt(r.get(k), ".3f") for k, _ in BENCHMARK_METRICS)
                     + f" | {t['templates']:.1f} | {_fmt(t.get('pts'), '.1f')} | {t['predict']:.1f} | "
                       f"{_fmt(rate, '.2f')} |")
    if results:
        cells = []
        for key, _ in BENCHMARK_METRICS:
            have = [r.get(key) for r in results.values() if r.get(key) is not None]
            cell = _fmt(_mean(have), ".3f")
            if have and len(have) < len(results):
                cell += f" ({len(have)}/{len(results)})"
            cells.append(cell)
        total = {k: sum(r["timings"].get(k, 0.0) for r in results.values()) for k in ("templates", "pts", "predict")}
        n_test = sum(r["n_test"] for r in results.values())
        noun = "category" if len(results) == 1 else "categories"
        lines.append(f"| **mean** ({len(results)} {noun}) | | " + " | ".join(cells)
                     + f" | {total['templates']:.1f} | {total['pts']:.1f} | {total['predict']:.1f} | "
                       f"{_fmt(n_test / total['predict'] if total['predict'] else None, '.2f')} |")
    return "\n".join(lines)


def format_comparison(results: dict[str, dict], other: dict, other_name: str = "other") -> str:
    """Per-category and mean differences (this run minus ``other``) of the :data:`BENCHMARK_METRICS`, as a
    Markdown table. ``other`` is another run's results record (its ``"categories"``). A category in only one of
    the two gets a row saying which; a metric missing on either side gives "–". The mean row averages each
    metric's differences over the categories where both runs have it."""
    theirs = other.get("categories", {}) if isinstance(other, dict) else {}
    head = "| category | " + " | ".join(f"Δ {t}" for _, t in BENCHMARK_METRICS) + " | note |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]

    def delta(a, b):
        return None if a is None or b is None else a - b

    for name in list(results) + [n for n in theirs if n not in results]:
        if name not in theirs:
            lines.append(f"| {name} | " + " | ".join("–" for _ in BENCHMARK_METRICS) + " | only in this run |")
            continue
        if name not in results:
            lines.append(f"| {name} | " + " | ".join("–" for _ in BENCHMARK_METRICS) + f" | only in {other_name} |")
            continue
        lines.append(f"| {name} | " + " | ".join(_fmt(delta(results[name].get(k), theirs[name].get(k)), "+.3f")
                                                  for k, _ in BENCHMARK_METRICS) + " | |")
    both = [n for n in results if n in theirs]
    if both:
        cells = [_fmt(_mean([delta(results[n].get(k), theirs[n].get(k)) for n in both]), "+.3f")
                 for k, _ in BENCHMARK_METRICS]
        lines.append(f"| **mean** ({len(both)} in both) | " + " | ".join(cells) + " | |")
    return "\n".join(lines)
