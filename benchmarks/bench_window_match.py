"""CPU benchmark of window_match: the compiled ``cpu`` engine against the torch reference and against the GFLOP/s of
``torch.matmul`` on a GEMM with the same FLOPs, plus the peak memory of both at N = 400 templates.

    .venv/bin/python -m pytest benchmarks/bench_window_match.py          # a few minutes on 2 cores
    HETMM_BENCH_FULL_REFERENCE=1 .venv/bin/python -m pytest ...         # time the reference at the full N (slow)

Writes ``benchmarks/results/cpu_window_match.json`` and ``cpu_window_match.md``.

Definitions (all float32, inputs from ``hetmm_fast.testing.unit_features``):
* nominal FLOPs = ``2*B*N*H*W*k^2*C``, k the larger window (border clipping not subtracted); GFLOP/s = that / time.
* engine: ``hf.window_match(..., backend="cpu")`` with torch's thread count (``torch.get_num_threads()``), median of
  pytest-benchmark rounds after one warm-up round.
* GEMM: ``torch.matmul(A, Bm, out=O)`` with A [H*W, C], Bm [C, N*k^2] (the FLOPs of one image, B = 1); a batch of B
  images is B such GEMMs, so the same GFLOP/s applies to every B. Same threads, median of 3 after a warm-up.
* reference: ``hetmm_fast.reference.window_match`` single-threaded (its many small ``bmm`` calls run slower with two
  threads on a shared 2-core machine), timed by its process CPU time, which is what its wall time would be on an
  idle core (wall time on the shared machine is recorded too). Its time at N templates is too long for a routine run
  at the larger shapes, so by default it is timed once at two small template counts N1 < N2 and extrapolated
  linearly (intercept + slope, slope >= 0) to N; on this machine the real curve bends upwards (64x64x256, B = 1:
  174 s CPU measured at N = 60 against about 120 s extrapolated from N = 4 and 8), so the extrapolation understates
  the reference. ``HETMM_BENCH_FULL_REFERENCE=1`` times it at N instead.
* speed-up = reference CPU seconds (single thread, at N) / engine median wall seconds (all threads, on the shared
  machine): the load stretches the engine's wall time, not the reference's CPU time, so the figure is conservative.
* peak memory: in a subprocess, the inputs are built in place (``normal_`` + per-chunk normalisation; values do not
  matter here), free heap memory is returned to the OS (glibc ``malloc_trim``; otherwise an op could reuse pages
  freed while building the inputs and look free of cost), the RSS high-water mark (VmHWM) is reset (Linux
  ``/proc/self/clear_refs``) and read after the op. The reference, which needs tens of minutes at N = 400, is watched
  for ``REFERENCE_WATCH_S`` seconds: its allocations repeat for every chunk of templates and peak in the first.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import machine_info, write_results

import hetmm_fast as hf
from hetmm_fast.reference.window_match import window_match as reference_window_match
from hetmm_fast.testing import unit_features

try:
    from hetmm_fast import _engine_cpu  # noqa: F401
except ModuleNotFoundError:
    pytest.skip("hetmm_fast._C is not built", allow_module_level=True)

FULL_REFERENCE = os.environ.get("HETMM_BENCH_FULL_REFERENCE", "0") == "1"
REFERENCE_WATCH_S = 20.0
MEMORY_SHAPE = dict(B=1, N=400, C=256, H=64, W=64, kf=13, kb=7)

# name, B, N, C, H, W, kf, kb, template counts the reference is timed at (None: not timed by default)
CASES = [
    ("64x64xC256 13x7 B1", 1, 60, 256, 64, 64, 13, 7, (2, 4)),
    ("64x64xC256 13x7 B8", 8, 60, 256, 64, 64, 13, 7, (1, 2)),
    ("32x32xC512 9x5 B1", 1, 60, 512, 32, 32, 9, 5, (4, 8)),
    ("32x32xC512 9x5 B8", 8, 60, 512, 32, 32, 9, 5, None),
    ("16x16xC1024 7x3 B1", 1, 60, 1024, 16, 16, 7, 3, (60,)),
    ("16x16xC1024 7x3 B8", 8, 60, 1024, 16, 16, 7, 3, None),
]

_RESULTS: dict = {}


def _median_seconds(fn, rounds: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def _gemm(N, C, H, W, k) -> dict:
    a = unit_features((1, C, H, W), seed=3).reshape(C, H * W).T.contiguous()
    b = torch.randn(C, N * k * k, generator=torch.Generator().manual_seed(4))
    out = torch.empty(H * W, N * k * k)
    torch.matmul(a, b, out=out)
    median, _ = _median_seconds(lambda: torch.matmul(a, b, out=out), 3)
    return {"shape": f"[{H * W}, {C}] x [{C}, {N * k * k}]", "median_s": median,
            "gflops": 2 * H * W * C * N * k * k / median / 1e9}


def _reference(q, t, kf, kb, counts) -> dict:
    """Single-threaded reference CPU time at the template counts ``counts``, extrapolated to t.shape[0]."""
    N = t.shape[0]
    if FULL_REFERENCE:
        counts = (N,)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cpu, wall = [], []
        for n in counts:
            c0, w0 = time.process_time(), time.perf_counter()
            ref = reference_window_match(q, t[:n], kf, kb)
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
    finally:
        torch.set_num_threads(before)
    got = hf.window_match(q, t[: counts[-1]], kf, kb, backend="cpu")
    err = max((g - r).abs().max().item() for g, r in zip(got, ref))
    if counts[-1] == N:
        at_n, method = cpu[-1], "measured at N"
    else:
        (n1, n2), (s1, s2) = counts, cpu
        slope = max(0.0, (s2 - s1) / (n2 - n1))
        at_n, method = s2 + slope * (N - n2), f"linear extrapolation from N={n1} and N={n2}"
    return {"threads": 1, "timed_template_counts": list(counts), "cpu_seconds": cpu, "wall_seconds": wall,
            "cpu_seconds_at_N": at_n, "method": method, "max_abs_diff_engine_vs_reference": err}


@pytest.fixture(scope="module", autouse=True)
def _write_results_at_end():
    _RESULTS.clear()
    yield
    if _RESULTS:
        _write(_RESULTS)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_window_match_cpu(benchmark, case):
    name, B, N, C, H, W, kf, kb, ref_counts = case
    k = max(kf, kb)
    flops = 2 * B * N * H * W * k * k * C
    q = unit_features((B, C, H, W), seed=1)
    t = unit_features((N, C, H, W), seed=2)
    rounds = 5 if B == 1 else 3
    cpu_times = []

    def run():
        c0 = time.process_time()
        hf.window_match(q, t, kf, kb, backend="cpu")
        cpu_times.append(time.process_time() - c0)

    benchmark.extra_info.update(B=B, N=N, C=C, H=H, W=W, fwd_window=kf, bwd_window=kb, flops=flops)
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=1, iterations=1)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        median, times = stats.stats.median, list(stats.stats.data)
    else:  # --benchmark-disable
        median, times = _median_seconds(run, rounds)
    entry = {
        "name": name, "B": B, "N": N, "C": C, "H": H, "W": W, "fwd_window": kf, "bwd_window": kb,
        "dtype": "float32", "flops_nominal": flops,
        "engine": {"backend": "cpu", "threads": torch.get_num_threads(), "median_s": median, "rounds_s": times,
                   "cpu_seconds_per_round": cpu_times[-len(times):], "gflops": flops / median / 1e9,
                   "gflops_per_cpu_second": flops / statistics.median(cpu_times[-len(times):]) / 1e9},
    }
    gemm = _gemm(N, C, H, W, k)
    entry["gemm"] = gemm
    entry["engine_gflops_over_gemm_gflops"] = entry["engine"]["gflops"] / gemm["gflops"]
    if ref_counts is not None or FULL_REFERENCE:
        ref = _reference(q, t, kf, kb, ref_counts or (N,))
        entry["reference"] = ref
        entry["speedup_vs_reference"] = ref["cpu_seconds_at_N"] / median
        assert ref["max_abs_diff_engine_vs_reference"] <= 1e-5
    _RESULTS.setdefault("cases", []).append(entry)


def _child_peak(which: str) -> None:
    """Subprocess body: build inputs chunk by chunk, reset the RSS high-water mark, run, print JSON."""
    s = MEMORY_SHAPE
    g = torch.Generator().manual_seed(0)
    q = torch.empty(s["B"], s["C"], s["H"], s["W"]).normal_(generator=g)
    t = torch.empty(s["N"], s["C"], s["H"], s["W"]).normal_(generator=g)
    for x in (q, t):
        for n0 in range(0, x.shape[0], 20):
            x[n0 : n0 + 20].div_(x[n0 : n0 + 20].norm(dim=1, keepdim=True))
    ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    inputs = _vm("VmRSS")
    reset = _reset_hwm()
    print(json.dumps({"event": "ready", "inputs_rss_bytes": inputs, "hwm_reset": reset}), flush=True)
    t0 = time.perf_counter()
    if which == "engine":
        _engine_cpu.window_match(q, t, s["kf"], s["kb"])
    else:
        torch.set_num_threads(1)
        reference_window_match(q, t, s["kf"], s["kb"])
    print(json.dumps({"event": "done", "seconds": time.perf_counter() - t0, "peak_rss_bytes": _vm("VmHWM")}),
          flush=True)


def _vm(field: str, pid: str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _measure_peak(which: str, watch_s: float | None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--peak-child", which]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=str(Path(__file__).resolve().parents[1]))
    try:
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "ready", ready
        start, peak, done = time.perf_counter(), 0, None
        if watch_s is None:
            done = json.loads(proc.stdout.readline())
            proc.wait()
            peak = done["peak_rss_bytes"]
        else:
            while proc.poll() is None and time.perf_counter() - start < watch_s:
                peak = max(peak, _vm("VmHWM", str(proc.pid)))
                time.sleep(0.25)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    out = {"inputs_rss_bytes": ready["inputs_rss_bytes"], "peak_rss_bytes": peak,
           "peak_above_inputs_bytes": peak - ready["inputs_rss_bytes"], "hwm_reset_after_inputs": ready["hwm_reset"]}
    if done is not None:
        out["seconds"] = done["seconds"]
    else:
        out["watched_seconds"] = watch_s
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_peak_memory_400_templates():
    engine = _measure_peak("engine", None)
    reference = _measure_peak("reference", REFERENCE_WATCH_S)
    _RESULTS["peak_memory"] = {"shape": MEMORY_SHAPE, "dtype": "float32", "engine": engine, "reference": reference}
    # window_match.h: O(B*C*H*W + threads*(B*H*W + 16*C*W)) floats beyond the inputs, a few MiB here.
    assert engine["peak_above_inputs_bytes"] < 64 << 20


def _gb(x: float) -> str:
    return f"{x / 2**30:.2f} GiB"


def _write(results: dict) -> None:
    payload = {
        "benchmark": "window_match: compiled cpu engine vs torch reference and torch.matmul GFLOP/s",
        "machine": machine_info(),
        "definitions": __doc__.split("Definitions", 1)[1].strip(),
        **results,
    }
    lines = [
        "# window_match, CPU engine",
        "",
        f"{payload['machine']['cpu']}, {payload['machine']['logical_cpus']} logical CPUs, torch "
        f"{payload['machine']['torch']} ({payload['machine']['torch_threads']} threads), "
        f"{payload['machine']['compiler']}, {payload['machine']['date']}; load average "
        f"{payload['machine'].get('load_average_1_5_15min')} (the machine is shared: absolute times are noisy).",
        "",
        "float32, N = 60 templates. GFLOP/s = 2*B*N*H*W*k^2*C / time (k the larger window). GEMM = torch.matmul of "
        "[H*W, C] x [C, N*k^2] (one image's FLOPs), same threads. Reference: single-threaded CPU seconds (measured or "
        "extrapolated from two small N, see the JSON); speed-up = reference CPU s / engine wall s.",
        "",
        "| case | engine median | engine GFLOP/s | GEMM GFLOP/s | engine / GEMM | reference CPU s (at N) | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in results.get("cases", []):
        ref = c.get("reference")
        ref_txt = f"{ref['cpu_seconds_at_N']:.1f} s ({'measured' if ref['method'] == 'measured at N' else 'extrap.'})" \
            if ref else "-"
        speed = f"{c['speedup_vs_reference']:.0f}x" if ref else "-"
        lines.append(
            f"| {c['name']} | {c['engine']['median_s']:.3f} s | {c['engine']['gflops']:.1f} | "
            f"{c['gemm']['gflops']:.1f} | {100 * c['engine_gflops_over_gemm_gflops']:.0f}% | {ref_txt} | {speed} |"
        )
    mem = results.get("peak_memory")
    if mem:
        e, r = mem["engine"], mem["reference"]
        lines += [
            "",
            f"Peak RSS, B=1, N=400, 64x64x256 (inputs {_gb(e['inputs_rss_bytes'])}): engine {_gb(e['peak_rss_bytes'])} "
            f"(+{_gb(e['peak_above_inputs_bytes'])} over the inputs, {e.get('seconds', float('nan')):.1f} s); "
            f"reference {_gb(r['peak_rss_bytes'])} (+{_gb(r['peak_above_inputs_bytes'])}, watched "
            f"{r.get('watched_seconds', r.get('seconds', 0)):.0f} s).",
        ]
    write_results("cpu_window_match", payload, "\n".join(lines) + "\n")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--peak-child":
        _child_peak(sys.argv[2])
    else:
        raise SystemExit(f"run with: {sys.executable} -m pytest {__file__}")
