"""Small calls of every CUDA kernel of hetmm_fast._C, each checked against an oracle, meant to run under NVIDIA
compute-sanitizer (gpu_check.sh runs all cases under memcheck, and the --quick set under racecheck and synccheck):

    compute-sanitizer --tool memcheck --error-exitcode 86 python benchmarks/sanitize_cuda.py
    python benchmarks/sanitize_cuda.py --list            # the cases and the kernels they reach
    python benchmarks/sanitize_cuda.py --device cpu      # the same cases on the cpu backend (checks this script)

The parity tests (tests/test_engine_cuda.py) compare values; they cannot see a read past the end of a buffer that
happens to return harmless bytes, a shared-memory race that the scheduling of the day hides, or a barrier in
divergent code. The sanitizer can, so the shapes here are chosen to sit on the kernels' edges: widths just over one
query tile, channel counts with a partial 128-byte chunk, windows larger than the map, 1x1 maps, N = 1 and N = 2,
size = N, inputs read in place (pixel-major, with a storage offset), every window_match precision path, query
tiles split among blocks (forced, besides the automatic splits of small problems), the naive baseline, batched
OPTICS with noise and exact ties, min_samples = 2 and near N.

PYTORCH_NO_CUDA_MEMORY_CACHING=1 is set before torch is imported, so every tensor is its own cudaMalloc: with torch's
caching allocator a read past a tensor's end lands inside the cached block around it, where memcheck cannot see it.
Inputs are built on the CPU and copied, so no torch random-number kernel runs under the sanitizer.

Exit status: 0 when every case ran and matched its oracle; 1 when one raised or mismatched (named on stderr).
"""
from __future__ import annotations

import os

os.environ.setdefault("PYTORCH_NO_CUDA_MEMORY_CACHING", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hetmm_fast as hf  # noqa: E402
from hetmm_fast.reference.optics_labels import optics_labels as reference_optics  # noqa: E402
from hetmm_fast.reference.pts_select import pts_indices as reference_pts  # noqa: E402
from hetmm_fast.reference.window_match import window_match as reference_window_match  # noqa: E402
from hetmm_fast.testing import (  # noqa: E402
    clustered_points,
    clustered_templates,
    cosine_distances,
    max_err,
    same_partition,
    tf32_round,
    unit_features,
)

# Every CUDA kernel family the cases must reach (tests/test_gpu_check.py checks the coverage).
KERNELS = ("window_match:fp16", "window_match:bf16", "window_match:exact32", "window_match:tf32",
           "window_match:fp64", "window_match:in_place", "window_match_naive", "optics_labels", "pts_select")

# max |got - oracle| allowed per window_match path (unit vectors, C <= 136; the oracle sees the rounded inputs).
TOLERANCE = {"fp16": 1e-4, "bf16": 1e-4, "exact32": 1e-5, "tf32": 1e-4, "fp64": 1e-12}
DTYPE = {"fp16": torch.float16, "bf16": torch.bfloat16, "exact32": torch.float32, "tf32": torch.float32,
         "fp64": torch.float64}
# Channels per 128-byte chunk of the fused kernel, by element size.
CHUNK = {2: 64, 4: 32, 8: 16}


@dataclass
class Case:
    name: str
    kernel: str
    quick: bool  # in the --quick set (racecheck, synccheck: slower tools)
    cuda_only: bool
    run: Callable[[str], None]  # run(device): raises AssertionError on a mismatch


def _engine():
    from hetmm_fast import _engine_cuda

    return _engine_cuda


def _check(name: str, got, want, tol: float) -> None:
    err = max_err(got, want)
    if not err <= tol:
        raise AssertionError(f"{name}: max |got - oracle| = {err:.3g} > {tol:g}")


def _window_case(path: str, B: int, N: int, C: int, H: int, W: int, kf: int, kb: int, *, layout: str = "nchw",
                 warps: int = 0, splits: int = 0, seed: int = 0) -> Callable[[str], None]:
    def run(device: str) -> None:
        dtype = DTYPE[path]
        q = unit_features((B, C, H, W), dtype, seed=seed)
        t = unit_features((N, C, H, W), dtype, seed=seed + 1)
        oq, ot = (tf32_round(q), tf32_round(t)) if path == "tf32" else (q, t)
        want = reference_window_match(oq.double(), ot.double(), kf, kb)
        qd, td = q.to(device), t.to(device)
        if layout == "pixel_major":
            qd, td = hf.pixel_major(qd), hf.pixel_major(td)
        elif layout == "pixel_major_offset":  # a view whose memory starts one image row into a pixel-major buffer
            pad = hf.pixel_major(torch.cat([t[:, :, :1], t], dim=2).to(device))
            td = pad[:, :, 1:]
            assert td.permute(2, 3, 0, 1).is_contiguous() and td.storage_offset() > 0
        precision = "tf32" if path == "tf32" else "exact"
        if device == "cpu":
            got = hf.window_match(qd, td, kf, kb, backend="cpu", precision=precision)
        else:
            if warps or splits:  # the launch knobs are arguments of the private tuned op
                got = _engine().window_match_tuned(qd, td, kf, kb, precision, max_warps=warps, splits=splits)
            else:
                got = hf.window_match(qd, td, kf, kb, backend="cuda", precision=precision)
            torch.cuda.synchronize()
        _check(f"window_match {path}", got, want, TOLERANCE[path])
        assert all(g.dtype == torch.float32 and g.shape == (B, H, W) for g in got)

    return run


def _naive_case(dtype: torch.dtype) -> Callable[[str], None]:
    def run(device: str) -> None:
        q, t = unit_features((2, 20, 5, 37), dtype, seed=3), unit_features((3, 20, 5, 37), dtype, seed=4)
        got = _engine().window_match_naive(q.to(device), t.to(device), 5, 3)
        torch.cuda.synchronize()
        _check("window_match_naive", got, reference_window_match(q.double(), t.double(), 5, 3), 1e-5)

    return run


def _optics_problems(sizes, seed: int):
    rng = np.random.default_rng(seed)
    return [cosine_distances(clustered_points(n, 6, 3, 0.2, rng, n_duplicates=2)) for n in sizes]


def _optics_case(kind: str) -> Callable[[str], None]:
    def run(device: str) -> None:
        if kind == "batched":  # several problems of one size in one launch, with ties (duplicates)
            dist, ms = np.stack(_optics_problems([65] * 3, seed=5)), 4
        elif kind == "tiny":  # N = 2: the smallest problem min_samples allows
            dist, ms = np.stack(_optics_problems([2, 2], seed=6)), 2
        elif kind == "all_equal":  # every distance 0: one cluster of exact ties
            dist, ms = np.zeros((2, 9, 9)), 3
        else:  # "large_min_samples": min_samples near N, every distance shifted up by 5
            dist, ms = np.stack(_optics_problems([40], seed=7)) + 5.0 * (1 - np.eye(40)), 30
        d = torch.from_numpy(dist)
        got = hf.optics_labels(d.to(device), ms, backend="cuda" if device != "cpu" else "cpu").cpu()
        if device != "cpu" and not torch.equal(got, hf.optics_labels(d, ms, backend="cpu")):
            raise AssertionError(f"optics_labels {kind}: labels differ from the cpu engine's")
        want = reference_optics(d, ms)
        for i in range(d.shape[0]):
            if not same_partition(got[i].numpy(), want[i].numpy()):
                raise AssertionError(f"optics_labels {kind}: problem {i} differs from the reference partition")

    return run


def _pts_case(N: int, C: int, H: int, W: int, size: int, dtype: torch.dtype) -> Callable[[str], None]:
    def run(device: str) -> None:
        t = clustered_templates(N, C, H, W, seed=N + C, n_dup=min(3, N // 2)).to(dtype)
        got = torch.ops.hetmm.pts_select(t.to(device), size).cpu()  # the op itself: size = N reaches the kernel
        what = f"pts_select N={N} C={C} size={size} {dtype}"
        if device != "cpu" and not torch.equal(got, torch.ops.hetmm.pts_select(t, size)):
            raise AssertionError(f"{what}: indices differ from the cpu engine's")
        # The reference answers size >= N with 0..N-1 (the public op's shortcut); below N it is the oracle.
        if size < N and not torch.equal(got, reference_pts(t, size)):
            raise AssertionError(f"{what}: indices differ from the reference")
        if sorted(set(got.view(size, -1)[:, 0].tolist())) != sorted(got.view(size, -1)[:, 0].tolist()):
            raise AssertionError(f"{what}: an index is chosen twice at pixel 0")

    return run


def cases() -> list[Case]:
    out = []
    for path in ("fp16", "bf16", "exact32", "tf32", "fp64"):
        esz = torch.tensor([], dtype=DTYPE[path]).element_size()
        chunk = CHUNK[esz]
        kern = f"window_match:{path}"
        cuda_only = path == "tf32"
        out += [
            # W = 140: the last query tile is partial for every tile width (32, 64, 128 columns); a partial last
            # channel chunk; B and N > 1
            Case(f"wm_{path}_edges", kern, True, cuda_only,
                 _window_case(path, 2, 3, 2 * chunk + 8, 5, 140, 3, 5, seed=10)),
            # 1x1 map, N = 1, window 1, C below one chunk
            Case(f"wm_{path}_1x1", kern, False, cuda_only, _window_case(path, 1, 1, 3, 1, 1, 1, 1, seed=11)),
            # windows larger than the map (15 > H), backward window 1, C exactly one chunk
            Case(f"wm_{path}_big_window", kern, False, cuda_only,
                 _window_case(path, 3, 2, chunk, 9, 33, 15, 1, seed=12)),
        ]
    out += [
        Case("wm_fp16_in_place", "window_match:in_place", True, False,
             _window_case("fp16", 2, 3, 64, 6, 40, 5, 3, layout="pixel_major", seed=13)),
        Case("wm_exact32_in_place_offset", "window_match:in_place", True, False,
             _window_case("exact32", 1, 4, 32, 6, 40, 3, 7, layout="pixel_major_offset", seed=14)),
        Case("wm_bf16_in_place_offset", "window_match:in_place", False, False,
             _window_case("bf16", 2, 2, 128, 4, 70, 7, 5, layout="pixel_major_offset", seed=15)),
        Case("wm_tf32_pixel_major", "window_match:tf32", False, True,
             _window_case("tf32", 1, 2, 32, 4, 20, 3, 3, layout="pixel_major", seed=16)),
        Case("wm_fp16_one_warp", "window_match:fp16", False, True,
             _window_case("fp16", 1, 2, 72, 3, 70, 3, 5, warps=1, seed=17)),
        Case("wm_exact32_two_warps", "window_match:exact32", False, True,
             _window_case("exact32", 1, 2, 40, 3, 70, 5, 3, warps=2, seed=18)),
        # Small problems split each tile among blocks automatically (most cases above do on a large GPU); here
        # forced: 5 blocks per tile (forward maxima by atomics, uneven shares), and 1 (no split) for contrast.
        Case("wm_fp16_split_tiles", "window_match:fp16", True, False,
             _window_case("fp16", 1, 70, 72, 6, 9, 5, 3, splits=5, seed=19)),
        Case("wm_exact32_unsplit", "window_match:exact32", False, False,
             _window_case("exact32", 1, 3, 40, 6, 9, 5, 3, splits=1, seed=20)),
        Case("naive_fp32", "window_match_naive", True, True, _naive_case(torch.float32)),
        Case("naive_fp16", "window_match_naive", False, True, _naive_case(torch.float16)),
        Case("optics_batched", "optics_labels", True, False, _optics_case("batched")),
        Case("optics_tiny", "optics_labels", False, False, _optics_case("tiny")),
        Case("optics_all_equal", "optics_labels", False, False, _optics_case("all_equal")),
        Case("optics_large_min_samples", "optics_labels", False, False, _optics_case("large_min_samples")),
        Case("pts_clustered", "pts_select", True, False, _pts_case(24, 6, 3, 4, 4, torch.float32)),
        Case("pts_size_equals_n", "pts_select", False, False, _pts_case(17, 5, 2, 3, 17, torch.float32)),
        Case("pts_one_point", "pts_select", False, False, _pts_case(1, 3, 2, 2, 1, torch.float32)),
        Case("pts_two_points", "pts_select", False, False, _pts_case(2, 3, 1, 1, 1, torch.float32)),
        Case("pts_wide_fp16", "pts_select", False, False, _pts_case(40, 70, 3, 3, 1, torch.float16)),
        Case("pts_fp64", "pts_select", False, False, _pts_case(70, 9, 2, 2, 6, torch.float64)),
        Case("pts_bf16", "pts_select", False, False, _pts_case(33, 12, 2, 3, 5, torch.bfloat16)),
    ]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                    help="cuda (default), or cpu: the same cases on the cpu backend, CUDA-only ones skipped")
    ap.add_argument("--quick", action="store_true", help="one or two cases per kernel (for racecheck/synccheck)")
    ap.add_argument("--list", action="store_true", help="print the cases and exit")
    args = ap.parse_args(argv)

    selected = [c for c in cases() if c.quick or not args.quick]
    if args.list:
        for c in selected:
            print(f"{c.name}\t{c.kernel}\t{'quick' if c.quick else ''}\t{'cuda only' if c.cuda_only else ''}")
        return 0
    if args.device == "cuda":
        why = hf.available_backends()["cuda"]
        if why:
            print(f"sanitize_cuda: the cuda backend cannot run: {why}", file=sys.stderr)
            return 1
    failed, skipped = [], 0
    t0 = time.perf_counter()
    for c in selected:
        if args.device == "cpu" and c.cuda_only:
            print(f"skip {c.name} (cuda only)")
            skipped += 1
            continue
        t = time.perf_counter()
        try:
            c.run(args.device)
        except Exception as exc:  # noqa: BLE001  (every case runs; each failure is named)
            failed.append(c.name)
            print(f"FAIL {c.name} [{c.kernel}]: {type(exc).__name__}: {exc}", file=sys.stderr)
            traceback.print_exc(limit=3)
        else:
            print(f"ok   {c.name} [{c.kernel}] {time.perf_counter() - t:.2f}s", flush=True)
    ran = len(selected) - skipped
    print(f"{ran - len(failed)} of {ran} cases passed ({skipped} skipped) in {time.perf_counter() - t0:.1f}s"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
