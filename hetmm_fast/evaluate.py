"""Per-category evaluation on MVTec-layout data (SPEC §5): fit on train/good, optional PTS, predict the test set,
score with every metric, time every stage, and draw pictures."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from .progress import progress_bar

METRIC_KEYS = ("image_auroc", "pixel_auroc", "aupro", "paper_pro", "f1_max")


def evaluate_category(root, category: str, *, tsize: int | None = 60, backbone: str | None = "efficientnet_lite0",
                      preset: str = "default", image_size: int = 256, device: str = "cpu",
                      weights=None, backend: str | None = None, out_dir=None, n_overlays: int = 8,
                      progress: bool = True, detector_kwargs: dict | None = None) -> dict:
    """Evaluate one category; returns ``{metric: value, ..., "timings": {stage: seconds}, "n_train", "n_test",
    "tsize"}``. With ``out_dir`` writes ``<out_dir>/<category>/evaluation.png`` and heatmap overlays."""
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

    t0 = time.perf_counter()
    labels = torch.tensor([it.label for it in items])
    masks = torch.stack([data.load_mask(it, image_size) for it in items])
    timings["load_masks"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    res = {
        "image_auroc": metrics.image_auroc(labels, pred.scores),
        "pixel_auroc": metrics.pixel_auroc(masks, pred.maps),
        "aupro": metrics.aupro(masks, pred.pro_maps),
        "paper_pro": metrics.paper_pro(masks, pred.pro_maps),
        "f1_max": metrics.f1_max(masks.flatten(), pred.maps.flatten()),
    }
    timings["metrics"] = time.perf_counter() - t0

    if out_dir is not None:
        t0 = time.perf_counter()
        _draw(Path(out_dir) / category, category, items, labels, masks, pred, n_overlays, image_size, progress)
        timings["pictures"] = time.perf_counter() - t0

    res.update(timings={k: round(v, 4) for k, v in timings.items()}, n_train=det.n_templates,
               n_test=len(items), tsize=det.tsize, backbone=det.backbone.name, preset=det.preset.name)
    return res


def _draw(folder: Path, category, items, labels, masks, pred, n_overlays, image_size, progress) -> None:
    from .data.images import to_tensor_batch
    from .viz import plot_evaluation, save_overlay

    folder.mkdir(parents=True, exist_ok=True)
    plot_evaluation(folder / "evaluation.png", labels=labels, scores=pred.scores, masks=masks, maps=pred.maps,
                    pro_maps=pred.pro_maps, title=f"{category}: HETMM ({len(items)} test images)")
    vmin, vmax = float(pred.maps.min()), float(pred.maps.max())
    defects = [i for i, it in enumerate(items) if it.label == 1]
    goods = [i for i, it in enumerate(items) if it.label == 0]
    # Spread the picks over the test set: every defect type gets shown before any repeats.
    chosen = defects[:: max(1, len(defects) // max(1, n_overlays - 2))][: n_overlays - 2] + goods[:2]
    with progress_bar(total=len(chosen), desc=f"{category} overlays", unit="img", enable=progress) as bar:
        for i in chosen:
            img = to_tensor_batch(str(items[i].path), image_size)[0][0]
            save_overlay(folder / f"{items[i].defect}_{items[i].path.stem}.png", img, pred.maps[i],
                         mask=masks[i] if items[i].label else None, score=float(pred.scores[i]),
                         title=f"{items[i].defect}/{items[i].path.name}", vmin=vmin, vmax=vmax)
            bar.update(1)


def format_table(results: dict[str, dict]) -> str:
    """A Markdown table of per-category metrics and stage times."""
    head = ("| category | tsize | image AUROC | pixel AUROC | AUPRO | paper PRO | F1-max | templates s | PTS s | "
            "predict s/img |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in results.items():
        t = r["timings"]
        tsize = "ALL" if r["tsize"] is None else str(r["tsize"])
        lines.append(
            f"| {name} | {tsize} | {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} | {r['aupro']:.3f} | "
            f"{r['paper_pro']:.1f} | {r['f1_max']:.3f} | {t['templates']:.1f} | {t.get('pts', 0.0):.1f} | "
            f"{t['predict_per_image']:.3f} |"
        )
    return "\n".join(lines)
