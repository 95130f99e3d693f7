"""``hetmm-fast``: build template banks, select templates, predict, evaluate, run the demo, show the setup."""
from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

EPILOG = """examples:
  hetmm-fast demo                                      # synthetic data, no download: metrics + pictures
  hetmm-fast fit data/bottle/train/good --out bottle.hetmm
  hetmm-fast select bottle.hetmm --tsize 60
  hetmm-fast predict bottle.hetmm data/bottle/test/broken_large --out preds/
  hetmm-fast eval --data ../shared/data --category kolektorsdd --tsize 60 --json results.json
  hetmm-fast benchmark --suite visa --data VisA/ --json visa.json --resume   # every category, resumable
  hetmm-fast info
  hetmm-fast official-clusters template/MVTec_AD/bottle/wide_resnet101_2_ALL.pkl --tsize 60   # published code's file
  hetmm-fast import-official wide_resnet101_2_ALL.pkl --pts wide_resnet101_2_PTSx60.pkl --category bottle --out b.hetmm
  hetmm-fast export-official b.hetmm template/MVTec_AD/bottle/      # ALL (and PTS) files the published code reads
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
    p.add_argument("--quiet", action="store_true", help="no progress bars (they are shown only on a terminal anyway)")


def _progress(args) -> bool:
    """Progress bars go to stderr only when it is a terminal: in a log file their cursor escapes are noise."""
    return not args.quiet and sys.stderr.isatty()


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
    p.add_argument("--on-error", choices=("skip", "fail"), default="skip",
                   help="an unreadable or invalid image: 'skip' scores the others, lists it in scores.csv and at the "
                        "end, exits 1 (default); 'fail' stops at the first one, exits 2")
    _runtime_args(p)

    p = sub.add_parser("eval", help="evaluate on MVTec-layout data: per-category metric table")
    p.add_argument("--data", required=True, help="dataset root (MVTec AD layout)")
    p.add_argument("--category", action="append", default=None,
                   help="category to evaluate (repeatable; default: every category under --data)")
    p.add_argument("--tsize", type=_tsize, default=60, help="PTS size K, or 'all' for the ALL set (default 60)")
    p.add_argument("--json", default=None,
                   help="write results as JSON to this file (rewritten after every category)")
    p.add_argument("--resume", action="store_true",
                   help="skip the categories that --json FILE records as finished with the same settings")
    p.add_argument("--out", default=None, help="folder for evaluation plots and heatmap overlays")
    _model_args(p, with_category=False)

    p = sub.add_parser("benchmark", help="evaluate every category of a public benchmark suite: paper-style table")
    p.add_argument("--suite", required=True, choices=("mvtec_ad", "visa", "mpdd", "btad", "mvtec_loco",
                                                      "sd_saliency_900"), help="dataset and its layout")
    p.add_argument("--data", required=True, help="the suite's root folder")
    p.add_argument("--category", action="append", default=None,
                   help="category to evaluate (repeatable; default: every category the suite finds under --data)")
    p.add_argument("--tsize", type=_tsize, default=60, help="PTS size K, or 'all' for the ALL set (default 60)")
    p.add_argument("--json", default=None, help="results file, rewritten after every category (the table goes "
                   "next to it as .md)")
    p.add_argument("--resume", action="store_true",
                   help="skip the categories that --json FILE records as finished with the same settings")
    p.add_argument("--compare", default=None, metavar="FILE",
                   help="print per-category and mean differences to another run's results JSON")
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

    p = sub.add_parser("official-clusters", help="published HETMM code: write its <backbone>_PC_OPTICSx{K}.pkl "
                       "(pixel-level OPTICS clusters) from its <backbone>_ALL.pkl, in seconds")
    p.add_argument("all_file", metavar="ALL_FILE", help="the published code's <backbone>_ALL.pkl")
    p.add_argument("--tsize", type=int, required=True, help="K of the PTS the clusters are for (min_samples = N // K)")
    p.add_argument("--out", default=None, help="file to write (default: <backbone>_PC_OPTICSx{K}.pkl beside ALL_FILE)")

    p = sub.add_parser("import-official", help="build a bank from the published code's template files "
                       "(wide_resnet101_2, 256 px, paper preset), no features recomputed")
    p.add_argument("all_file", metavar="ALL_FILE", help="wide_resnet101_2_ALL.pkl")
    p.add_argument("--pts", default=None, metavar="PTS_FILE", help="wide_resnet101_2_PTSx{K}.pkl of the same ALL set")
    p.add_argument("--category", required=True, help="MVTec AD category (its paper preset goes into the bank)")
    p.add_argument("--out", required=True, help="bank file to write (.hetmm)")
    p.add_argument("--weights", default=None, help="the Wide-ResNet-101-2 weights file the templates were computed "
                   "with; predict then needs the same --weights (default: torchvision's cache if it has the file)")

    p = sub.add_parser("export-official", help="write a bank as the published code's <backbone>_ALL.pkl "
                       "(and _PTSx{K}.pkl) template files")
    p.add_argument("bank", help="bank file (a ResNet backbone with the paper normalisation)")
    p.add_argument("out_dir", metavar="DIR", help="folder to write into (the published code's template/<dataset>/"
                   "<category>/)")
    return ap


def _detector_from_bank(args):
    from .detector import HETMM

    return HETMM.load(args.bank, device=args.device, weights=args.weights, backend=args.backend,
                      batch_size=args.batch_size, progress=_progress(args))


def cmd_fit(args) -> int:
    from .detector import HETMM

    det = HETMM(backbone=args.backbone, preset=args.preset, image_size=args.image_size, device=args.device,
                category=args.category, weights=args.weights, batch_size=args.batch_size, backend=args.backend,
                progress=_progress(args), **_dtype_kwargs(args))
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
    """Score a folder (or one file): ``scores.csv`` (image, score, [verdict,] error) and an overlay per scored image.

    Each image is decoded once. Its resized pixels and map wait in temporary files under ``--out`` until the run's
    colour scale (the min and max of every map) is known, so memory stays bounded for any number of images. With
    ``--on-error skip`` an unreadable image gets a row with an empty score and the reason, is listed at the end,
    and makes the exit status 1.
    """
    import tempfile
    import time

    import numpy as np
    import torch

    from .data.images import list_images
    from .viz import save_overlay

    det = _detector_from_bank(args)
    src = Path(args.images)
    if not src.exists():
        raise FileNotFoundError(f"'{src}' is neither an existing folder nor an existing image file")
    paths = list_images(src) if src.is_dir() else [src]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    verdicts = args.threshold is not None
    rows, skipped, scored = [], [], []  # scored: (row of the spill files, name, score)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".predict-", dir=out) as tmp:
        S = det.image_size
        # Sparse files: only the rows of scored images take disk space.
        pixels = np.lib.format.open_memmap(Path(tmp) / "pixels.npy", "w+", np.uint8, (len(paths), S, S, 3))
        maps = np.lib.format.open_memmap(Path(tmp) / "maps.npy", "w+", np.float32, (len(paths), S, S))
        lo, hi = float("inf"), float("-inf")
        for r in det.predict_iter(paths, on_error="raise" if args.on_error == "fail" else "collect"):
            if r.error is not None:
                skipped.append(str(r.error))
                rows.append([str(r.path), ""] + ([""] if verdicts else []) + [str(r.error)])
                continue
            k = len(scored)
            pixels[k] = (r.image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            maps[k] = r.map.numpy()
            lo, hi = min(lo, float(r.map.min())), max(hi, float(r.map.max()))
            scored.append((k, r.name, r.score))
            verdict = ["anomalous" if r.score > args.threshold else "normal"] if verdicts else []
            rows.append([str(r.path), f"{r.score:.6f}"] + verdict + [""])
        seconds = time.perf_counter() - t0
        vmax = args.vmax if args.vmax is not None else hi
        for k, name, score in scored:
            save_overlay(out / f"{name}_overlay.png", pixels[k], maps[k], score=score, title=name, vmin=lo, vmax=vmax)
        del pixels, maps  # close the memory maps before their folder is removed
    tmp_csv = out / ".scores.csv.tmp"
    with open(tmp_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "score"] + (["verdict"] if verdicts else []) + ["error"])
        w.writerows(rows)
    os.replace(tmp_csv, out / "scores.csv")
    print(f"scored {len(scored)} images, skipped {len(skipped)} in {seconds:.2f} s; wrote {out}/scores.csv"
          + (" and overlays" if scored else ""))
    if skipped:
        print(f"hetmm-fast predict: skipped {len(skipped)} of {len(paths)} images (unreadable or invalid; "
              "rows with an error in scores.csv):", file=sys.stderr)
        for reason in skipped:
            print(f"  {reason}", file=sys.stderr)
        return 1
    return 0


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def _report_failures(doc: dict, categories, json_path) -> bool:
    """Print a stderr line naming the categories of ``doc`` that failed; True when there were any."""
    failed = [c for c in categories if c in doc["failed"]]
    if failed:
        names = ", ".join(f"{c} ({doc['failed'][c]['type']})" for c in failed)
        where = f"; errors recorded in {json_path}, rerun with --resume to evaluate only these" if json_path else ""
        print(f"failed: {len(failed)} of {len(categories)} categories: {names}{where}", file=sys.stderr)
    return bool(failed)


def _run_eval(root, categories, tsize, kwargs, out_dir, json_path, quiet, resume: bool = False) -> dict:
    """Evaluate ``categories``, printing a line per category, the table and a summary naming failed categories.
    Returns the results record of :func:`hetmm_fast.evaluate.evaluate_dataset`."""
    from .evaluate import evaluate_dataset, format_table

    def report(cat: str, status: str, r: dict) -> None:
        if status == "failed":
            print(f"{cat}: FAILED ({r['type']}: {r['message']})", flush=True)
            return
        line = (f"{cat}: image AUROC {_fmt(r['image_auroc'])}  pixel AUROC {_fmt(r['pixel_auroc'])}  "
                f"AUPRO {_fmt(r['aupro'])}")
        if r.get("skipped"):
            reasons = {}
            for metric, why in r["skipped"].items():
                reasons.setdefault(why, []).append(metric)
            line += "".join(f"; {', '.join(m)} not computed: {why}" for why, m in reasons.items())
        if r.get("n_defect_without_mask") and r.get("n_pixel_images"):
            line += f"; {r['n_defect_without_mask']} defect images without a mask left out of the pixel metrics"
        if status == "resumed":
            line += f" (finished earlier, kept from {json_path})"
        print(line, flush=True)

    doc = evaluate_dataset(root, categories, tsize=tsize, json_path=json_path, resume=resume, out_dir=out_dir,
                           progress=not quiet, on_category=report, **kwargs)
    print(format_table({c: doc["categories"][c] for c in categories if c in doc["categories"]}))
    if json_path:
        print(f"wrote {json_path}")
    _report_failures(doc, categories, json_path)
    return doc


def cmd_eval(args) -> int:
    from .data.mvtec import list_categories

    if args.resume and not args.json:
        raise ValueError("--resume needs --json FILE (the results file to continue)")
    cats = args.category or list_categories(args.data)
    if not cats:
        raise FileNotFoundError(f"no categories (folders with train/good) under '{args.data}'")
    kwargs = dict(backbone=args.backbone, preset=args.preset, image_size=args.image_size, device=args.device,
                  weights=args.weights, backend=args.backend,
                  detector_kwargs={"batch_size": args.batch_size, **_dtype_kwargs(args)})
    doc = _run_eval(args.data, cats, args.tsize, kwargs, args.out, args.json, not _progress(args),
                    resume=args.resume)
    return 1 if any(c in doc["failed"] for c in cats) else 0


def cmd_benchmark(args) -> int:
    """Evaluate a suite's categories one after the other with a progress line each, print the paper-style table
    (and the differences to ``--compare FILE``), write ``--json`` after every category and the table beside it.
    ``--preset paper`` applies to the 15 MVTec AD categories only; other categories and suites run the default
    preset (said on stderr for other suites; each result records the preset it ran)."""
    import json

    from .bank import atomic_write_text
    from .data.suites import get_suite
    from .evaluate import evaluate_dataset, format_benchmark_table, format_comparison
    from .presets import PAPER_MVTEC

    suite = get_suite(args.suite)
    if args.resume and not args.json:
        raise ValueError("--resume needs --json FILE (the results file to continue)")
    other = None
    if args.compare:
        try:
            other = json.loads(Path(args.compare).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"--compare: cannot read results file '{args.compare}' ({exc})") from exc
    cats = args.category or suite.categories(args.data)
    if not cats:
        raise FileNotFoundError(f"no {suite.title} categories under '{args.data}'")
    preset = args.preset
    if preset == "paper" and not suite.paper_preset:
        print(f"hetmm-fast benchmark: the paper preset is the published MVTec AD table; {suite.title} runs the "
              "default preset", file=sys.stderr)
        preset = "default"
    kwargs = dict(backbone=args.backbone, preset=preset, image_size=args.image_size, device=args.device,
                  weights=args.weights, backend=args.backend,
                  detector_kwargs={"batch_size": args.batch_size, **_dtype_kwargs(args)})
    done = [0]

    def report(cat: str, status: str, r: dict) -> None:
        done[0] += 1
        head = f"[{done[0]}/{len(cats)}] {cat}:"
        if status == "failed":
            print(f"{head} FAILED ({r['type']}: {r['message']})", flush=True)
            return
        t = r["timings"]
        print(f"{head} image AUROC {_fmt(r['image_auroc'])}  pixel AUROC {_fmt(r['pixel_auroc'])}  AUPRO "
              f"{_fmt(r['aupro'])}  ({t['templates']:.1f} s templates, {t.get('pts', 0.0):.1f} s PTS, "
              f"{t['predict']:.1f} s predict)" + (f" (finished earlier, kept from {args.json})"
                                                   if status == "resumed" else ""), flush=True)

    # The suite name is recorded among the settings so that --resume refuses another suite's file.
    doc = evaluate_dataset(args.data, cats, tsize=args.tsize, json_path=args.json, resume=args.resume,
                           out_dir=args.out, progress=_progress(args), on_category=report,
                           load_category=lambda name: suite.category(args.data, name),
                           preset_for=lambda name: "paper" if preset == "paper" and name in PAPER_MVTEC
                           else "default", extra_settings={"suite": suite.name}, **kwargs)
    results = {c: doc["categories"][c] for c in cats if c in doc["categories"]}
    table = f"{suite.title}, {kwargs['backbone']}, preset {preset}, {args.image_size} px\n\n" + \
        format_benchmark_table(results)
    print(table)
    if other is not None:
        print(f"\ndifferences to {args.compare} (this run minus that one):\n")
        print(format_comparison(results, other, other_name=args.compare))
    if args.json:
        md = Path(args.json).with_suffix(".md")
        atomic_write_text(md, table + "\n")
        print(f"wrote {args.json} and {md}")
    return 1 if _report_failures(doc, cats, args.json) else 0


def cmd_demo(args) -> int:
    from .data.synthetic import SYNTHETIC_CATEGORIES, make_dataset

    out = Path(args.out)
    cats = tuple(args.categories or SYNTHETIC_CATEGORIES)
    n_good = max(1, round(0.4 * args.n_test))
    data = make_dataset(out / f"data_seed{args.seed}_{args.image_size}px_{args.n_train}_{args.n_test}", seed=args.seed,
                        categories=cats, n_train=args.n_train, n_test_good=n_good,
                        n_test_defect=max(1, args.n_test - n_good), size=args.image_size, progress=_progress(args))
    print(f"synthetic dataset (seed {args.seed}) in {data}")
    kwargs = dict(backbone="efficientnet_lite0", preset="default", image_size=args.image_size, device=args.device,
                  backend=args.backend, detector_kwargs={"batch_size": args.batch_size})
    doc = _run_eval(data, list(cats), args.tsize, kwargs, out / "pictures", out / "results.json",
                    not _progress(args))
    print(f"pictures (heatmap overlays, ROC/PRO plots) in {out / 'pictures'}")
    return 1 if doc["failed"] else 0


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
    try:
        from . import _engine_cpu

        print(f"CPU engine built for: {' '.join(sorted(_engine_cpu.build_features())) or 'baseline ISA (portable)'}")
    except ImportError:
        pass  # not built: the backends list below says so
    from ._backends import broken_extension

    if broken_extension():
        print(f"compiled extension BROKEN: {broken_extension()}")
    print("backends (ladder order):")
    for name, why in available_backends().items():
        print(f"  {name:7s} {'available' if not why else 'unavailable: ' + '; '.join(why)}")
    print(f"backbones: {', '.join(BACKBONES)}")
    return 0


def cmd_official_clusters(args) -> int:
    import time

    from .compat import write_official_clusters

    t0 = time.perf_counter()
    out = write_official_clusters(args.all_file, args.tsize, out=args.out, backend=None)
    print(f"wrote {out} ({time.perf_counter() - t0:.1f} s)")
    return 0


def cmd_import_official(args) -> int:
    from .bank import load_bank
    from .compat import OFFICIAL_WEIGHTS_ID, import_official

    out = import_official(args.all_file, args.category, args.out, pts=args.pts, weights=args.weights)
    _, meta = load_bank(out)
    print(f"wrote {out}: {meta['n_templates']} templates, tsize={meta['tsize'] or 'ALL'}, paper preset "
          f"{args.category}, weights {meta['weights_id']}")
    if meta["weights_id"] == OFFICIAL_WEIGHTS_ID:
        print("hetmm-fast import-official: no weights file given and none in torchvision's cache, so the bank "
              "cannot be loaded for predict; import again with --weights <wide_resnet101_2-32ee1156.pth>",
              file=sys.stderr)
    return 0


def cmd_export_official(args) -> int:
    from .compat import export_official

    for path in export_official(args.bank, args.out_dir):
        print(f"wrote {path}")
    return 0


COMMANDS = {"fit": cmd_fit, "select": cmd_select, "predict": cmd_predict, "eval": cmd_eval,
            "benchmark": cmd_benchmark, "demo": cmd_demo, "info": cmd_info,
            "official-clusters": cmd_official_clusters, "import-official": cmd_import_official,
            "export-official": cmd_export_official}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError, RuntimeError) as exc:
        print(f"hetmm-fast {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
