"""GPU benchmark of the CUDA engine: fused window_match (vs the naive published-structure kernel, an fp16 GEMM and the
PyTorch reference), PTS and the detector (throughput, batch-1 latency eager and as one CUDA graph); writes one JSON
file. The Triton engine has its own benchmark (bench_triton.py, which also times the CUDA engine).

    python benchmarks/bench_cuda.py --json benchmarks/results/cuda.json     # on a GPU, ~2 min
    python benchmarks/bench_cuda.py --quick --json OUT.json                 # headline numbers only
    python benchmarks/bench_cuda.py --dry-run --json /tmp/x.json            # no GPU: imports, environment, no timing

Timing: CUDA events around each call after a warm-up call, median of several runs (adaptive count, ~0.3 s per
case). ``useful_tflops`` counts only the in-window pairs (2*C FLOPs per pair and per (b, t); border clipping
included; the union of both windows = the larger one). Targets (issue 4): fused fp16 >= 30x the naive kernel and
>= 35 % of the fp16 GEMM's throughput at C=256, 64x64, N=60, 13x7, B=32; detector >= 1000 img/s at batch 32;
PTS of a category (N = 200..400, three layers) < 2 s. ``max_err`` is max |x - oracle| against the float64 reference
on the same (rounded) inputs at B=1.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hetmm_fast as hf  # noqa: E402
from hetmm_fast import _backends  # noqa: E402
from hetmm_fast.reference.window_match import window_match as reference_window_match  # noqa: E402
from hetmm_fast.testing import (  # noqa: E402
    clustered_points,
    cosine_distances,
    max_err,
    tf32_round,
    unit_features,
)

TARGETS = {"naive_speedup": 30.0, "gemm_fraction": 0.35, "detector_img_per_s": 1000.0, "pts_category_s": 2.0}


def machine() -> dict:
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "torch_cuda": torch.version.cuda, "hetmm_fast": hf.__version__,
        "backends": hf.available_backends(),
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                    memory_gib=round(p.total_memory / 2**30, 1))
    return info


def cuda_ms(fn, budget_s: float = 0.3, max_reps: int = 50) -> float:
    """Median milliseconds of ``fn()`` on the current stream (one untimed warm-up call)."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    while True:
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
        if len(times) >= max_reps or (len(times) >= 2 and sum(times) > budget_s * 1e3):
            return statistics.median(times)


def useful_pairs(H: int, W: int, k: int) -> int:
    d = k // 2
    rows = sum(min(H, y + d + 1) - max(0, y - d) for y in range(H))
    cols = sum(min(W, x + d + 1) - max(0, x - d) for x in range(W))
    return rows * cols


def timed_vs(call, reference, flops: float) -> dict:
    """Median ms and useful TFLOP/s of ``call()``, and whether its outputs equal ``reference`` bit for bit (tuning
    variants that must not change the order of any sum: tile caps, tile splits, pixel-major inputs)."""
    ms = cuda_ms(call)
    return dict(median_ms=ms, useful_tflops=flops / ms / 1e9,
                equal_to_auto=all(torch.equal(x, y) for x, y in zip(call(), reference)))


def run(rows: list, log, base: dict, fn) -> dict:
    """Append ``dict(base, **fn())`` (or the error) to rows; one failing case must not lose the others."""
    try:
        row = dict(base, **fn())
    except Exception as exc:  # noqa: BLE001 - recorded in the JSON
        row = dict(base, error=f"{type(exc).__name__}: {exc}"[:2000])
    rows.append(row)
    log(row)
    return row


def bench_window_match(quick: bool, log) -> tuple[list, dict]:
    from hetmm_fast import _engine_cuda as engine

    rows: list = []
    headline: dict = {}
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "tf32": torch.float32, "exact32": torch.float32}
    cases = [("layer1", 32, 60, 256, 64, 64, 13, 7)]
    if not quick:
        cases += [("layer2", 32, 60, 512, 32, 32, 9, 5), ("layer3", 32, 60, 1024, 16, 16, 7, 3),
                  ("layer1_b1", 1, 60, 256, 64, 64, 13, 7), ("layer3_b1", 1, 60, 1024, 16, 16, 7, 3)]
    for name, B, N, C, H, W, kf, kb in cases:
        q64 = unit_features((B, C, H, W), torch.float64, seed=1, device="cuda")
        t64 = unit_features((N, C, H, W), torch.float64, seed=2, device="cuda")
        flops = 2.0 * B * N * C * useful_pairs(H, W, max(kf, kb))
        variants = list(dtypes) if name == "layer1" and not quick else ["fp16"]
        for variant in variants:
            q, t = q64.to(dtypes[variant]), t64.to(dtypes[variant])
            base = dict(case=name, B=B, N=N, C=C, H=H, W=W, kf=kf, kb=kb, variant=variant, backend="cuda")

            def fused(q=q, t=t, variant=variant):
                mode = "tf32" if variant == "tf32" else "exact"
                ms = cuda_ms(lambda: engine.window_match(q, t, kf, kb, mode))
                qr, tr = q[:1], t
                if variant == "tf32":  # the oracle sees what the tensor cores see
                    qr, tr = tf32_round(qr), tf32_round(tr)
                err = max_err(engine.window_match(q[:1], t, kf, kb, mode),
                              reference_window_match(qr.double(), tr.double(), kf, kb))
                return dict(median_ms=ms, useful_tflops=flops / ms / 1e9, max_err=err)

            row = run(rows, log, base, fused)
            if name == "layer1" and variant == "fp16":
                headline["fused_fp16_ms"] = row.get("median_ms")
                headline["fused_fp16_useful_tflops"] = row.get("useful_tflops")
            if B == 1 and variant == "fp16":
                headline.setdefault("b1_fp16_ms_by_splits", {})[name] = {"auto": row.get("median_ms")}
        if B == 1:
            # Batch 1 leaves most multiprocessors idle with one block per tile, so the automatic choice shares each
            # tile among several blocks; the same call with one block per tile, for comparison (identical bits).
            q, t = q64.half(), t64.half()
            auto_out = engine.window_match(q, t, kf, kb)

            def unsplit(q=q, t=t, auto_out=auto_out, flops=flops):
                return timed_vs(lambda: engine.window_match_tuned(q, t, kf, kb, splits=1), auto_out, flops)

            row = run(rows, log, dict(case=name, B=B, N=N, C=C, H=H, W=W, kf=kf, kb=kb, variant="fp16 splits=1",
                                      backend="cuda"), unsplit)
            headline.setdefault("b1_fp16_ms_by_splits", {}).setdefault(name, {})["1"] = row.get("median_ms")
            del auto_out
        if name == "layer1":
            q, t = q64.half(), t64.half()
            # Smaller tiles (the automatic choice is the largest that fits): data for tuning, no result changes.
            headline["fp16_ms_by_max_warps"] = {"auto": headline.get("fused_fp16_ms")}
            # Neither variant below changes the order of any sum (each column sums its stages in the same order
            # whatever the tile; pixel-major inputs are what packing would produce): identical bits expected.
            auto_out = engine.window_match(q, t, kf, kb)

            for warps in (2, 1):
                def capped(warps=warps):
                    return timed_vs(lambda: engine.window_match_tuned(q, t, kf, kb, max_warps=warps), auto_out, flops)

                row = run(rows, log, dict(case=name, B=B, N=N, C=C, H=H, W=W, kf=kf, kb=kb,
                                          variant=f"fp16 max_warps={warps}", backend="cuda"), capped)
                headline["fp16_ms_by_max_warps"][str(warps)] = row.get("median_ms")
            # Templates already pixel-major (what the detector passes): the per-call template pack disappears.
            tp = hf.pixel_major(t)

            def in_place(tp=tp):
                return timed_vs(lambda: engine.window_match(q, tp, kf, kb), auto_out, flops)

            row = run(rows, log, dict(case=name, B=B, N=N, C=C, H=H, W=W, kf=kf, kb=kb,
                                      variant="fp16 pixel-major templates", backend="cuda"), in_place)
            headline["fused_fp16_pixel_major_templates_ms"] = row.get("median_ms")
            headline["fused_fp16_pixel_major_templates_useful_tflops"] = row.get("useful_tflops")
            del auto_out, tp
            naive = run(rows, log, dict(case=name, B=B, N=N, C=C, H=H, W=W, kf=kf, kb=kb, variant="fp16",
                                        backend="naive"),
                        lambda: dict(median_ms=cuda_ms(lambda: engine.window_match_naive(q, t, kf, kb), budget_s=1.0,
                                                       max_reps=3)))
            ref = run(rows, log, dict(case=name, B=B, N=N, C=C, H=H, W=W, kf=kf, kb=kb, variant="fp16",
                                      backend="torch"),
                      lambda: dict(median_ms=cuda_ms(lambda: reference_window_match(q, t, kf, kb), max_reps=3)))
            k = max(64, int(round(flops / (2 * 8192 * 8192) / 64)) * 64)
            a, b = torch.randn(8192, k, device="cuda").half(), torch.randn(k, 8192, device="cuda").half()

            def matmul():
                ms = cuda_ms(lambda: torch.matmul(a, b))
                return dict(median_ms=ms, tflops=2.0 * 8192 * 8192 * k / ms / 1e9)

            gemm = run(rows, log, dict(case="gemm_fp16", M=8192, N=8192, K=k, backend="torch.matmul"), matmul)
            del a, b
            fused_ms = headline.get("fused_fp16_ms")
            if fused_ms:
                if "median_ms" in naive:
                    headline["naive_fp16_ms"] = naive["median_ms"]
                    headline["speedup_vs_naive"] = naive["median_ms"] / fused_ms
                if "median_ms" in ref:
                    headline["speedup_vs_reference"] = ref["median_ms"] / fused_ms
                if "tflops" in gemm:
                    headline["gemm_fp16_tflops"] = gemm["tflops"]
                    headline["fraction_of_gemm"] = headline["fused_fp16_useful_tflops"] / gemm["tflops"]
                    if headline.get("fused_fp16_pixel_major_templates_useful_tflops"):
                        headline["fraction_of_gemm_pixel_major_templates"] = (
                            headline["fused_fp16_pixel_major_templates_useful_tflops"] / gemm["tflops"])
        del q64, t64
    return rows, headline


@contextlib.contextmanager
def matmul_precision(value: str):
    """``torch.set_float32_matmul_precision(value)`` for the block, then the previous value."""
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(value)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


def graph_latency(det, x: torch.Tensor) -> dict:
    """Batch-1 latency of ``det.anomaly_map(x)`` replayed as one CUDA graph (``det.cuda_graph``, input copy
    included), with the largest difference from an eager call; a capture failure is reported, not raised."""
    try:
        graphed = det.cuda_graph(batch_size=x.shape[0])
        ms = cuda_ms(lambda: graphed(x))
        diff = (graphed(x).float() - det.anomaly_map(x).float()).abs().max().item()
        return dict(anomaly_map_latency_ms_b1_cuda_graph=ms, cuda_graph_max_abs_diff=diff)
    except Exception as e:  # noqa: BLE001 (reported in the results)
        return dict(cuda_graph_error=f"{type(e).__name__}: {e}"[:300])


def bench_detector(quick: bool, log) -> list:
    rows: list = []
    batch = 32
    # The fast configuration (16-bit backbone and templates) first; full float32 (TF32 matching) when not quick.
    variants = ((torch.float16, torch.float16, "exact"),) + (() if quick else ((torch.float32, torch.float32, "tf32"),))
    for dtype, backbone_dtype, mode in variants:
        base = dict(backbone="wide_resnet101_2", preset="paper/capsule (13x7, 9x5, 7x3)", image_size=256,
                    templates=60, dtype=str(dtype).removeprefix("torch."),
                    backbone_dtype=str(backbone_dtype).removeprefix("torch."), fp32_precision=mode)

        def measure(dtype=dtype, backbone_dtype=backbone_dtype, mode=mode):
            det = hf.HETMM(backbone="wide_resnet101_2", preset="paper", category="capsule", image_size=256,
                           device="cuda", pretrained=False, dtype=dtype, backbone_dtype=backbone_dtype,
                           batch_size=batch, progress=False)
            g = torch.Generator().manual_seed(0)
            det.fit(torch.rand(60, 3, 256, 256, generator=g))  # N = 60: the PTS-60 set has the same matching cost
            imgs = torch.rand(batch, 3, 256, 256, generator=g)
            dev_imgs = imgs.cuda()
            # The detector passes no precision: hf.window_match maps torch's float32 matmul precision.
            with matmul_precision("highest" if mode == "exact" else "high"):
                q = det.features(dev_imgs[:1])
                used = [_backends.select("window_match", None, (f, t))[0] for f, t in zip(q, det.active_templates)]
                finite = bool(torch.isfinite(det.anomaly_map(dev_imgs)).all())  # random weights, 16-bit: no overflow
                map_ms = cuda_ms(lambda: det.anomaly_map(dev_imgs))
                lat_ms = cuda_ms(lambda: det.anomaly_map(dev_imgs[:1]))
                det.predict(imgs)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                reps = 3
                for _ in range(reps):
                    det.predict(imgs)
                predict_s = (time.perf_counter() - t0) / reps
                t0 = time.perf_counter()
                for _ in range(reps):
                    det.predict(imgs[:1])
                predict1_s = (time.perf_counter() - t0) / reps
                graph = graph_latency(det, dev_imgs[:1])  # last: a failed capture cannot disturb the rest
            return dict(window_match_backends=used, maps_finite=finite, anomaly_map_ms_b32=map_ms,
                        anomaly_map_img_per_s=batch / map_ms * 1e3, anomaly_map_latency_ms_b1=lat_ms,
                        predict_img_per_s=batch / predict_s, predict_latency_ms_b1=predict1_s * 1e3, **graph)

        run(rows, log, base, measure)
    return rows


def clustered_features(N: int, C: int, H: int, W: int, seed: int) -> torch.Tensor:
    """Unit features with a few modes per pixel (so OPTICS finds clusters), Tensor[N, C, H, W] float32 on CUDA."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    centres = torch.randn(4, C, H, W, generator=g, device="cuda")
    which = torch.randint(0, 4, (N,), generator=g, device="cuda")
    x = centres[which] + 0.7 * torch.randn(N, C, H, W, generator=g, device="cuda")
    return torch.nn.functional.normalize(x, dim=1)


def bench_pts(quick: bool, log) -> tuple[list, dict]:
    rows: list = []
    agreement: dict = {}
    layers = [(256, 64, 64), (512, 32, 32), (1024, 16, 16)]
    hf.pts_select(clustered_features(20, 8, 2, 2, 0), 5, backend="cuda")  # context and kernels loaded
    for N in ((200,) if quick else (200, 400)):
        base = dict(N=N, size=60, layers=[list(x) for x in layers], backend="cuda")

        def measure(N=N):
            per_layer = []
            for j, (C, H, W) in enumerate(layers):
                t = clustered_features(N, C, H, W, seed=j)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                hf.pts_select(t, 60, backend="cuda", return_indices=True)
                torch.cuda.synchronize()
                per_layer.append(time.perf_counter() - t0)
                del t
            return dict(seconds_per_layer=per_layer, seconds_total=sum(per_layer))

        run(rows, log, base, measure)

    def agree():
        # The CPU engine when it has the op, else the reference (scikit-learn, ~1 s per pixel: fewer problems).
        out = {}
        t = clustered_features(200, 256, 4, 64, seed=7)  # 256 pixels of a layer-1-sized problem
        pts_cpu = not _backends.reasons("pts_select", "cpu", (t.cpu(),))
        if not pts_cpu:
            t = t[:, :, :1, :8]
        idx = hf.pts_select(t, 60, backend="cuda", return_indices=True)[1].cpu()
        ref = hf.pts_select(t.cpu(), 60, backend="cpu" if pts_cpu else "torch", return_indices=True)[1]
        out["pts_reference"] = "cpu" if pts_cpu else "torch"
        out["pts_pixels"] = idx.shape[1] * idx.shape[2]
        out["pts_identical_pixel_fraction"] = (idx == ref).all(dim=0).float().mean().item()
        out["pts_identical_choice_fraction"] = (idx == ref).float().mean().item()
        rng = np.random.default_rng(0)
        dist = torch.from_numpy(cosine_distances(clustered_points(150, 16, 4, 0.2, rng, n_duplicates=3)))[None]
        optics_cpu = not _backends.reasons("optics_labels", "cpu", (dist,))
        problems = [torch.from_numpy(cosine_distances(clustered_points(150, 16, 4, 0.2, rng, n_duplicates=3)))
                    for _ in range(200 if optics_cpu else 40)]
        dist = torch.stack(problems)
        got = hf.optics_labels(dist.cuda(), 3, backend="cuda").cpu()
        want = hf.optics_labels(dist, 3, backend="cpu" if optics_cpu else "torch")
        out["optics_reference"] = "cpu" if optics_cpu else "torch"
        out["optics_problems"] = len(problems)
        out["optics_identical_fraction"] = (got == want).all(dim=1).float().mean().item()
        return out

    agreement = run([], log, dict(what="agreement with the CPU engine on the same inputs"), agree)
    return rows, agreement


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True, help="output JSON path")
    ap.add_argument("--quick", action="store_true", help="headline numbers only (layer-1 fp16, one detector dtype)")
    ap.add_argument("--dry-run", action="store_true", help="no GPU needed: check imports and the environment only")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip: window_match,pts,detector")
    ap.add_argument("--budget-s", type=float, default=80.0,
                    help="start no new section after this many seconds (the check script has a hard limit)")
    args = ap.parse_args(argv)

    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": machine(), "targets": TARGETS}

    def log(row):
        # Rows of the running section are kept on disk as they come, so a killed run loses none of them.
        print(json.dumps(row), flush=True)
        results.setdefault("rows_of_unfinished_section", []).append(row)
        out.write_text(json.dumps(results, indent=1))
    engine_ok = not hf.available_backends()["cuda"]
    if args.dry_run or not engine_ok:
        results["skipped"] = ("dry run" if args.dry_run else
                              f"cuda backend unusable: {'; '.join(hf.available_backends()['cuda'])}")
        out.write_text(json.dumps(results, indent=1))
        print(f"bench_cuda: {results['skipped']}; wrote {out}")
        return 0 if args.dry_run else 2

    skip = {s for s in args.skip.split(",") if s}
    torch.manual_seed(0)
    t0 = time.perf_counter()
    sections = [("window_match", lambda: bench_window_match(args.quick, log), ("window_match", "headline")),
                ("pts", lambda: bench_pts(args.quick, log), ("pts", "agreement")),
                ("detector", lambda: (bench_detector(args.quick, log),), ("detector",))]
    for name, fn, keys in sections:
        if name in skip:
            continue
        if time.perf_counter() - t0 > args.budget_s:
            results.setdefault("skipped_sections", []).append(f"{name} (time budget {args.budget_s:.0f} s spent)")
            continue
        for key, value in zip(keys, fn()):
            results[key] = value
        results.pop("rows_of_unfinished_section", None)
        out.write_text(json.dumps(results, indent=1))  # keep partial results if a later section dies
    results["seconds"] = time.perf_counter() - t0
    out.write_text(json.dumps(results, indent=1))
    errors = [r for k in ("window_match", "detector", "pts") for r in results.get(k, []) if "error" in r]
    errors += [results["agreement"]] if "error" in results.get("agreement", {}) else []
    # Tile caps, splits and pixel-major inputs must not change a bit: a mismatch fails the run like an error.
    errors += [r for r in results.get("window_match", []) if r.get("equal_to_auto") is False]
    print(f"bench_cuda: wrote {out} ({len(errors)} failed entries, {results['seconds']:.0f} s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
