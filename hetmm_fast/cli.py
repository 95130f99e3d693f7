"""``hetmm-fast``: build template banks, select templates, predict, evaluate, run the demo, show the setup."""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

EPILOG = """examples:
  hetmm-fast demo                                      # synthetic data, no download: metrics + pictures
  hetmm-fast fit data/bottle/train/good --out bottle.hetmm
  hetmm-fast select bottle.hetmm --tsize 60
  hetmm-fast predict bottle.hetmm data/bottle/test/broken_large --out preds/
  hetmm-fast eval --data ../shared/data --category kolektorsdd --tsize 60 --json results.json
  hetmm-fast info
"""


def _tsize(text: str) -> int | None:
    if text.lower() == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tsize must be a positive int or 'all', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--tsize must be a positive int or 'all', got {text!r}")
    return value


DTYPES = ("float32", "float16", "bfloat16")


def _dtype_kwargs(args) -> dict:
    from .detector import _dtype_from_name

    return {"dtype": _dtype_from_name(args.dtype), "backbone_dtype": _dtype_from_name(args.backbone_dtype)}


def _model_args(p: argparse.ArgumentParser, with_category: bool = True) -> None:
    from .backbones import BACKBONES

    p.add_argument("--backbone", default="efficientnet_lite0", choices=BACKBONES, help="feature extractor (default: %(default)s)")
    p.add_argument("--preset", default="default", choices=("default", "paper"),
                   help="'default' for any data; 'paper' = published MVTec AD table, needs the MVTec category")
    if with_category:
        p.add_argument("--category", default=None, help="MVTec AD category for --preset paper")
    p.add_argument("--image-size", type=int, default=256, help="input side S (multiple of 16; default 256)")
    p.add_argument("--weights", default=None, help="local backbone weights file (needed for ResNets unless cached)")
    p.add_argument("--dtype", default="float32", choices=DTYPES,
                   help="dtype of the features and templates (default: %(default)s; 16-bit halves the bank)")
    p.add_argument("--backbone-dtype", default="float32", choices=DTYPES,
                   help="dtype the backbone runs in (default: %(default)s; 16-bit uses a GPU's tensor cores)")
    _runtime_args(p)


def _runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument("--backend", default=None, choices=("cuda", "triton", "cpu", "torch"),
                   help="force an op backend (default: best available)")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hetmm-fast", description="HETMM anomaly detection (training-free template "
                                 "mutual matching), fast.", epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("fit", help="build a template bank (ALL set) from normal images")
    p.add_argument("images", help="folder of normal images (or one image file)")
    p.add_argument("--out", required=True, help="bank file to write (.hetmm)")
    p.add_argument("--tsize", type=_tsize, default=None, help="also run PTS with this K (default: keep ALL)")
    _model_args(p)

    p = sub.add_parser("select", help="PTS: keep K templates per pixel in a bank")
    p.add_argument("bank", help="bank file")
    p.add_argument("--tsize", type=_tsize, required=True, help="K (e.g. 60), or 'all' to drop a selection")
    p.add_argument("--out", default=None, help="write here instead of overwriting the bank")
    p.add_argument("--weights", default=None, help="backbone weights file the bank was built with (ResNets)")
    _runtime_args(p)

    p = sub.add_parser("predict", help="score images: heatmap overlay PNGs + scores.csv")
    p.add_argument("bank", help="bank file")
    p.add_argument("images", help="folder of images or one image file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--threshold", type=float, default=None, help="flag images whose score exceeds this")
    p.add_argument("--vmax", type=float, default=None, help="top of the heatmap colour scale (default: max of the run)")
    p.add_argument("--weights", default=None, help="backbone weights file the bank was built with (ResNets)")
    _runtime_args(p)

    p = sub.add_parser("eval", help="evaluate on MVTec-layout data: per-category metric table")
    p.add_argument("--data", required=True, help="dataset root (MVTec AD layout)")
    p.add_argument("--category", action="append", default=None,
                   help="category to evaluate (repeatable; default: every category under --data)")
    p.add_argument("--tsize", type=_tsize, default=60, help="PTS size K, or 'all' for the ALL set (default 60)")
    p.add_argument("--json", default=None, help="write results as JSON to this file")
    p.add_argument("--out", default=None, help="folder for evaluation plots and heatmap overlays")
    _model_args(p, with_category=False)

    p = sub.add_parser("demo", help="generate the embedded synthetic dataset and evaluate it (no download)")
    p.add_argument("--out", default="runs/demo", help="output folder (data, pictures, results.json)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    p.add_argument("--tsize", type=_tsize, default=20, help="PTS size K (default 20; 'all' to skip PTS)")
    p.add_argument("--categories", nargs="+", default=None, help="subset of the synthetic categories")
    p.add_argument("--n-train", type=int, default=40, help="normal training images per category (default 40)")
    p.add_argument("--n-test", type=int, default=25, help="test images per category, 40%% good (default 25)")
    p.add_argument("--image-size", type=int, default=256, help="side of the generated images and of S")
    _runtime_args(p)

    sub.add_parser("info", help="versions, backends and why unavailable, backbone weights")
    return ap


def _detector_from_bank(args):
    from .detector import HETMM

    return HETMM.load(args.bank, device=args.device, weights=args.weights, backend=args.backend,
                      batch_size=args.batch_size, progress=not args.quiet)


def cmd_fit(args) -> int:
    from .detector import HETMM

    det = HETMM(backbone=args.backbone, preset=args.preset, image_size=args.image_size, device=args.device,
                category=args.category, weights=args.weights, batch_size=args.batch_size, backend=args.backend,
                progress=not args.quiet, **_dtype_kwargs(args))
    det.fit(args.images)
    if args.tsize is not None:
        det.select(args.tsize)
    det.save(args.out)
    print(f"wrote {args.out}: {det.n_templates} templates, tsize={det.tsize or 'ALL'}, backbone={det.backbone.name}, "
          f"fit {det.timings['fit']:.1f} s" + (f", PTS {det.timings['select']:.1f} s" if "select" in det.timings else ""))
    return 0


def cmd_select(args) -> int:
    det = _detector_from_bank(args)
    det.select(args.tsize)
    out = args.out or args.bank
    det.save(out)
    print(f"wrote {out}: tsize={det.tsize or 'ALL'} of {det.n_templates} templates"
          + (f", PTS {det.timings['select']:.1f} s" if "select" in det.timings else ""))
    return 0


def cmd_predict(args) -> int:
    from .data.images import iter_image_batches, list_images
    from .viz import save_overlay

    det = _detector_from_bank(args)
    src = Path(args.images)
    paths = list_images(src) if src.is_dir() else [src]
    pred = det.predict(paths)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    vmax = args.vmax if args.vmax is not None else float(pred.maps.max())
    vmin = float(pred.maps.min())
    rows = []
    i = 0
    for batch, names in iter_image_batches(paths, det.image_size, det.batch_size):
        for img, name in zip(batch, names):
            score = float(pred.scores[i])
            flag = "" if args.threshold is None else ("anomalous" if score > args.threshold else "normal")
            save_overlay(out / f"{name}_overlay.png", img, pred.maps[i], score=score, title=name, vmin=vmin, vmax=vmax)
            rows.append((str(paths[i]), f"{score:.6f}", flag))
            i += 1
    tmp = out / ".scores.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "score"] + (["verdict"] if args.threshold is not None else []))
        for path, score, flag in rows:
            w.writerow([path, score] + ([flag] if args.threshold is not None else []))
    os.replace(tmp, out / "scores.csv")
    print(f"scored {len(rows)} images in {det.timings['predict']:.2f} s; wrote {out}/scores.csv and overlays")
    return 0


def _run_eval(root, categories, tsize, kwargs, out_dir, json_path, quiet) -> dict:
    from .evaluate import evaluate_category, format_table
    from .progress import progress_bar

    results = {}
    with progress_bar(total=len(categories), desc="categories", unit="cat", enable=not quiet) as bar:
        for cat in categories:
            results[cat] = evaluate_category(root, cat, tsize=tsize, out_dir=out_dir, progress=not quiet, **kwargs)
            r = results[cat]
            print(f"{cat}: image AUROC {r['image_auroc']:.3f}  pixel AUROC {r['pixel_auroc']:.3f}  "
                  f"AUPRO {r['aupro']:.3f}", flush=True)
            bar.update(1)
    print(format_table(results))
    if json_path:
        from .bank import atomic_write_text

        atomic_write_text(json_path, json.dumps({"categories": results}, indent=2))
        print(f"wrote {json_path}")
    return results


def cmd_eval(args) -> int:
    from .data.mvtec import list_categories

    cats = args.category or list_categories(args.data)
    kwargs = dict(backbone=args.backbone, preset=args.preset, image_size=args.image_size, device=args.device,
                  weights=args.weights, backend=args.backend,
                  detector_kwargs={"batch_size": args.batch_size, **_dtype_kwargs(args)})
    _run_eval(args.data, cats, args.tsize, kwargs, args.out, args.json, args.quiet)
    return 0


def cmd_demo(args) -> int:
    from .data.synthetic import SYNTHETIC_CATEGORIES, make_dataset

    out = Path(args.out)
    cats = tuple(args.categories or SYNTHETIC_CATEGORIES)
    n_good = max(1, round(0.4 * args.n_test))
    data = make_dataset(out / f"data_seed{args.seed}_{args.image_size}px_{args.n_train}_{args.n_test}", seed=args.seed,
                        categories=cats, n_train=args.n_train, n_test_good=n_good,
                        n_test_defect=max(1, args.n_test - n_good), size=args.image_size, progress=not args.quiet)
    print(f"synthetic dataset (seed {args.seed}) in {data}")
    kwargs = dict(backbone="efficientnet_lite0", preset="default", image_size=args.image_size, device=args.device,
                  backend=args.backend, detector_kwargs={"batch_size": args.batch_size})
    _run_eval(data, list(cats), args.tsize, kwargs, out / "pictures", out / "results.json", args.quiet)
    print(f"pictures (heatmap overlays, ROC/PRO plots) in {out / 'pictures'}")
    return 0


def cmd_info(args) -> int:
    import platform

    import numpy
    import torch

    from . import __version__, available_backends
    from .backbones import BACKBONES

    print(f"hetmm_fast {__version__}")
    print(f"python {platform.python_version()} ({platform.machine()}), torch {torch.__version__}, numpy {numpy.__version__}")
    for mod in ("torchvision", "sklearn", "triton", "safetensors"):
        try:
            print(f"{mod} {__import__(mod).__version__}")
        except Exception as exc:  # informational only
            print(f"{mod}: not available ({type(exc).__name__})")
    cuda = torch.cuda.is_available()
    print(f"CUDA device: {torch.cuda.get_device_name(0) if cuda else 'none'} (torch built with CUDA "
          f"{torch.version.cuda})")
    print(f"CPU threads: {torch.get_num_threads()}")
    print("backends (ladder order):")
    for name, why in available_backends().items():
        print(f"  {name:7s} {'available' if not why else 'unavailable: ' + '; '.join(why)}")
    print(f"backbones: {', '.join(BACKBONES)}")
    return 0


COMMANDS = {"fit": cmd_fit, "select": cmd_select, "predict": cmd_predict, "eval": cmd_eval, "demo": cmd_demo,
            "info": cmd_info}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError, RuntimeError) as exc:
        print(f"hetmm-fast {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
