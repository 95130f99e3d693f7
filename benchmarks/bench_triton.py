"""GPU benchmark of the Triton engine: window_match (vs the CUDA engine when built, and the PyTorch reference) and
the per-pixel Gram/distance kernel of PTS (vs a float64 ``bmm``). Writes one JSON file.

    python benchmarks/bench_triton.py --json benchmarks/results/triton.json            # full run on a GPU (~3 min)
    python benchmarks/bench_triton.py --quick --json OUT.json                          # B=1, fp32/fp16 only
    TRITON_INTERPRET=1 python benchmarks/bench_triton.py --smoke --json /tmp/t.json    # tiny shapes, CPU interpreter

Timing: ``triton.testing.do_bench`` (CUDA events, median over ~100 ms of runs after warm-up; the first call, which
autotunes and compiles, is not timed). ``useful_tflops`` counts only the in-window pairs, ``2 * C`` FLOPs each,
summed over both windows' union (the larger window) with border clipping. Errors are max |x - oracle| against the
float64 reference on the same inputs, at B=1.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hetmm_fast as hf  # noqa: E402
from hetmm_fast import _backends  # noqa: E402
from hetmm_fast.reference.window_match import window_match as reference_window_match  # noqa: E402
from hetmm_fast.testing import unit_features  # noqa: E402

from bench_cuda import useful_pairs  # noqa: E402  (same definition of useful work as the CUDA benchmark)

VARIANTS = {  # name -> (input dtype, fp32 dot precision, torch matmul precision for the reference/CUDA engine)
    "fp32": (torch.float32, "ieee", "highest"),
    "tf32": (torch.float32, "tf32", "high"),
    "fp16": (torch.float16, "ieee", "highest"),
    "bf16": (torch.bfloat16, "ieee", "highest"),
}


def timer(fn) -> float:
    """Median milliseconds of ``fn()``."""
    if torch.cuda.is_available():
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def machine() -> dict:
    import triton

    info = {
        "python": platform.python_version(), "torch": torch.__version__, "triton": triton.__version__,
        "hetmm_fast": hf.__version__, "platform": platform.platform(),
        "interpreter": os.environ.get("TRITON_INTERPRET", "0") == "1",
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                    memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda)
    return info


def bench_window_match(wm, shapes, variants, device, log) -> list[dict]:
    rows = []
    for (B, N, C, H, W, kf, kb) in shapes:
        q64 = unit_features((B, C, H, W), torch.float64, seed=1, device=device)
        t64 = unit_features((N, C, H, W), torch.float64, seed=2, device=device)
        exact = reference_window_match(q64[:1], t64, kf, kb)
        flops = 2.0 * B * N * C * useful_pairs(H, W, max(kf, kb))
        for name in variants:
            dtype, precision, torch_precision = VARIANTS[name]
            q, t = q64.to(dtype), t64.to(dtype)
            base = dict(op="window_match", B=B, N=N, C=C, H=H, W=W, kf=kf, kb=kb, variant=name, dtype=str(dtype))
            torch.set_float32_matmul_precision(torch_precision)
            try:
                ref_ms = timer(lambda: reference_window_match(q, t, kf, kb))
                rows.append(dict(base, backend="torch", median_ms=ref_ms, ratio_to_reference=1.0,
                                 useful_tflops=flops / ref_ms / 1e9))
                out = wm.window_match(q, t, kf, kb, precision=precision)  # autotune + compile, untimed
                ms = timer(lambda: wm.window_match(q, t, kf, kb, precision=precision))
                err = max((a.double() - e.double()).abs().max().item()
                          for a, e in zip(wm.window_match(q[:1], t, kf, kb, precision=precision), exact))
                ref_err = max((a.double() - e.double()).abs().max().item()
                              for a, e in zip(reference_window_match(q[:1], t, kf, kb), exact))
                cfg = getattr(wm._tuned_kernel, "best_config", None)
                rows.append(dict(base, backend="triton", precision=precision, median_ms=ms,
                                 ratio_to_reference=ref_ms / ms, useful_tflops=flops / ms / 1e9, max_err=err,
                                 reference_max_err=ref_err, config=str(cfg) if cfg is not None else None))
                del out
                if not _backends.reasons("window_match", "cuda", (q, t)):
                    hf.window_match(q, t, kf, kb, backend="cuda")
                    cms = timer(lambda: hf.window_match(q, t, kf, kb, backend="cuda"))
                    rows.append(dict(base, backend="cuda", median_ms=cms, ratio_to_reference=ref_ms / cms,
                                     useful_tflops=flops / cms / 1e9, triton_speedup_vs_cuda=cms / ms))
            except Exception as exc:  # record and go on: one failing variant must not lose the others
                rows.append(dict(base, backend="triton", error=f"{type(exc).__name__}: {exc}"[:2000]))
            finally:
                torch.set_float32_matmul_precision("highest")
            log(rows[-1])
    return rows


def bench_gram(ht, shapes, device, log) -> list[dict]:
    rows = []
    for (N, C, H, W) in shapes:
        t = unit_features((N, C, H, W), torch.float32, seed=3, device=device)
        P = H * W
        flops = 2.0 * P * N * N * C
        x = t.double().permute(2, 3, 0, 1).reshape(P, N, C)
        want = torch.bmm(x, x.transpose(1, 2))
        ref_ms = timer(lambda: torch.bmm(x, x.transpose(1, 2)))
        base = dict(op="pixel_gram", N=N, C=C, H=H, W=W, input_dtype="float32")
        rows.append(dict(base, backend="torch_bmm_fp64", median_ms=ref_ms, tflops=flops / ref_ms / 1e9))
        log(rows[-1])
        for label, kwargs in (("fp64_sequential", dict()), ("fp64_dot", dict(fp64_dot=True)),
                              ("fp32_ieee", dict(dtype=torch.float32)),
                              ("fp32_tf32", dict(dtype=torch.float32, precision="tf32")),
                              ("distances_fp64", dict(distances=True))):
            try:
                if kwargs.pop("distances", False):
                    fn = lambda: ht.pixel_distances(t, **kwargs)  # noqa: E731
                    check = (fn() - torch.clamp(1 - want, min=0)).abs().max().item()
                else:
                    fn = lambda: ht.pixel_gram(t, **kwargs)  # noqa: E731
                    check = (fn().double() - want).abs().max().item()
                ms = timer(fn)
                rows.append(dict(base, backend=f"triton_{label}", median_ms=ms, tflops=flops / ms / 1e9,
                                 max_err=check, ratio_to_reference=ref_ms / ms))
            except Exception as exc:
                rows.append(dict(base, backend=f"triton_{label}", error=f"{type(exc).__name__}: {exc}"[:2000]))
            log(rows[-1])
        del x, want
    return rows


def optics_engine(device: str) -> str:
    """The engine hetmm_fast.triton.pts_select uses for OPTICS (same rule as its _optics_labels)."""
    d = torch.zeros(1, 2, 2, dtype=torch.float64, device=device)
    if d.is_cuda and not _backends.reasons("optics_labels", "cuda", (d,)):
        return "cuda"
    return "cpu" if not _backends.reasons("optics_labels", "cpu", (d.cpu(),)) else "torch"


def bench_pts(shape, size, device, log) -> list[dict]:
    N, C, H, W = shape
    t = unit_features(shape, torch.float32, seed=4, device=device)
    base = dict(op="pts_select", N=N, C=C, H=H, W=W, size=size)
    try:
        t0 = time.perf_counter()
        hf.pts_select(t, size, backend="triton")
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        row = dict(base, backend="triton", seconds=time.perf_counter() - t0, optics_engine=optics_engine(device))
    except Exception as exc:
        row = dict(base, backend="triton", error=f"{type(exc).__name__}: {exc}"[:2000])
    log(row)
    return [row]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True, help="output JSON path")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="B=1 and fp32/fp16 only")
    mode.add_argument("--smoke", action="store_true", help="tiny shapes (for the CPU interpreter)")
    ap.add_argument("--no-pts", action="store_true", help="skip the end-to-end pts_select timing")
    args = ap.parse_args(argv)

    interp = os.environ.get("TRITON_INTERPRET", "0") == "1"
    if not torch.cuda.is_available() and not interp:
        print("bench_triton: needs a CUDA device (or TRITON_INTERPRET=1 with --smoke)", file=sys.stderr)
        return 2
    import hetmm_fast.triton as ht

    device = "cpu" if interp else "cuda"
    torch.manual_seed(0)
    if args.smoke:
        wm_shapes = [(2, 3, 8, 4, 6, 5, 3)]
        variants = ["fp32", "bf16"]
        gram_shapes = [(12, 8, 2, 2)]
        pts = ((10, 4, 2, 2), 3)
    else:
        batches = [1] if args.quick else [1, 8, 32]
        wm_shapes = [(b, 60, 256, 64, 64, 13, 7) for b in batches]  # paper-scale layer: 13x7 windows, K = 60
        variants = ["fp32", "fp16"] if args.quick else list(VARIANTS)
        gram_shapes = [(200, 256, 16, 16), (200, 256, 64, 64)] if not args.quick else [(200, 256, 16, 16)]
        pts = ((200, 256, 8, 8), 60)

    def log(row):
        print(json.dumps(row), flush=True)

    results = dict(machine=machine(), window_match=bench_window_match(ht.window_match, wm_shapes, variants, device,
                                                                      log),
                   gram=bench_gram(ht, gram_shapes, device, log))
    if not args.no_pts:
        results["pts_select"] = bench_pts(*pts, device, log)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    errors = [r for k in ("window_match", "gram", "pts_select") for r in results.get(k, []) if "error" in r]
    print(f"bench_triton: wrote {out} ({len(errors)} failed entries)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
