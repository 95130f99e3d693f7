"""Compile the Triton kernels for a GPU architecture without a GPU (ahead of time), and read their resources.

The interpreter (``TRITON_INTERPRET=1``) runs the kernels' Python on NumPy: it checks their arithmetic but never
lowers them, so a kernel can pass every interpreter test and still fail to compile for a real GPU (a ``tl.dot``
shape or dtype the backend rejects, a layout conversion, more shared memory than the chip has). This module lowers
each launch configuration the way a GPU launch would, through Triton's own argument specialisation (a placeholder
driver answers "which GPU" with the requested architecture), down to a cubin with the bundled ``ptxas``, and reads
registers, stack and shared memory from the cubin with the bundled ``cuobjdump``.

It needs no GPU and no CUDA driver, only Triton with its NVIDIA backend. Not for the interpreter: import it in a
process where ``TRITON_INTERPRET`` is unset. Command line (JSON report, table on stdout)::

    python -m hetmm_fast.triton.aot --arch 80 90 --json report.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.runtime import driver

from . import pts_select as _pts
from . import window_match as _wm

# Largest dynamic shared memory one block may opt in to (CUDA C Programming Guide, compute capability table).
MAX_SHARED_BYTES = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
WARP_SIZE = 32


class _PlaceholderDriver:
    """The three questions ``JITFunction.run(..., warmup=True)`` asks the active driver before compiling. The device
    number is the architecture, so every architecture gets its own binder and kernel cache."""

    def __init__(self, arch: int):
        self.arch = arch

    def get_current_device(self):
        return self.arch

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return GPUTarget("cuda", self.arch, WARP_SIZE)


@contextlib.contextmanager
def _target(arch: int):
    if _wm.INTERPRET:
        raise RuntimeError("hetmm_fast.triton.aot: TRITON_INTERPRET=1 is set; ahead-of-time compilation lowers the "
                           "real kernels, run it in a process without TRITON_INTERPRET")
    saved = driver._active  # may be None (no driver created yet); reset_active() would create one, needing a GPU
    driver.set_active(_PlaceholderDriver(arch))
    try:
        yield
    finally:
        driver._active = saved


@dataclass
class Variant:
    """One launch configuration of one kernel: what a GPU launch with these arguments would compile."""
    kernel: str  # "window_match" or "gram"
    dtype: str  # input dtype name, e.g. "float16"
    precision: str  # dot precision of fp32 operands ("ieee", "tf32", "tf32x3"); "-" where it does not apply
    shape: dict  # the problem the launch arguments are taken from
    config: dict  # tile constexprs and num_warps / num_stages
    label: str = ""


def _dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def _mock(args):
    """Tensors -> their dtypes (Triton's warmup turns a dtype into a placeholder pointer argument)."""
    return [a.dtype if isinstance(a, torch.Tensor) else a for a in args]


def _launch_window_match(v: Variant):
    s = v.shape
    q = torch.empty((s["B"], s["C"], s["H"], s["W"]), dtype=_dtype(v.dtype), device="meta")
    t = torch.empty((s["N"], s["C"], s["H"], s["W"]), dtype=_dtype(v.dtype), device="meta")
    args, meta, _, _, _ = _wm._kernel_args(q, t, s["fwd"], s["bwd"], v.precision if v.precision != "-" else "tf32")
    return _wm._heuristic_kernel, _mock(args), {**meta, **v.config}


def _launch_gram(v: Variant):
    s = v.shape
    t = torch.empty((s["N"], s["C"], s["H"], s["W"]), dtype=_dtype(v.dtype), device="meta")
    args, meta = _pts._gram_kernel_args(t, _dtype(s["out"]), 0, s["want_g"], s["want_d"],
                                        s["fp64_dot"], v.precision if v.precision != "-" else "ieee")
    return _pts._gram_kernel, _mock(args), {**meta, **v.config}


_LAUNCHERS = {"window_match": _launch_window_match, "gram": _launch_gram}


def _cuobjdump() -> str:
    from triton import knobs

    return knobs.nvidia.cuobjdump.path


def cubin_resources(cubin: bytes) -> dict:
    """Registers, stack and local/shared memory per thread/block of the (single-kernel) cubin, from cuobjdump."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([_cuobjdump(), "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", out)
    if m is None:
        raise RuntimeError(f"hetmm_fast.triton.aot: cannot read resources from cuobjdump output:\n{out}")
    regs, stack, static_shared, local = map(int, m.groups())
    return dict(registers=regs, stack_bytes=stack, static_shared_bytes=static_shared, local_bytes=local)


def _error_text(e: Exception) -> str:
    """A compile failure for the report. Triton's CompilationError text is the kernel source up to the failing
    statement and a caret, then the reason when it has one (a bare assertion inside Triton has none: its type,
    the chained cause, is added), so the end is what matters."""
    text = f"{type(e).__name__}: ...{str(e)[-1500:]}"
    return text + (f"\ncaused by {e.__cause__!r}" if e.__cause__ is not None else "")


def compile_variant(v: Variant, arch: int) -> dict:
    """Compile ``v`` for ``sm_<arch>`` and return its resources (``ok`` False with the error when it fails)."""
    fn, args, kwargs = _LAUNCHERS[v.kernel](v)
    t0 = time.perf_counter()
    try:
        with _target(arch):
            kernel = fn.warmup(*args, grid=(1,), **kwargs)
    except Exception as e:  # noqa: BLE001 - the report records every failure with its message
        return dict(ok=False, arch=arch, error=_error_text(e), seconds=round(time.perf_counter() - t0, 2))
    res = cubin_resources(kernel.asm["cubin"])
    dyn = int(kernel.metadata.shared)
    shared = dyn + res["static_shared_bytes"]
    limit = MAX_SHARED_BYTES.get(arch)
    ptx = kernel.asm["ptx"]
    return dict(
        ok=True, arch=arch, seconds=round(time.perf_counter() - t0, 2), num_warps=kernel.metadata.num_warps,
        num_stages=kernel.metadata.num_stages, shared_bytes=shared, shared_limit_bytes=limit,
        fits_shared=limit is None or shared <= limit,
        # Tensor-core instructions in the PTX: mma.sync (sm_80 style) and wgmma (sm_90 warp-group MMA).
        mma_sync=len(re.findall(r"\bmma\.sync\b", ptx)), wgmma=len(re.findall(r"\bwgmma\.mma_async\b", ptx)),
        **res,
    )


HEADLINE = dict(B=32, N=60, C=256, H=64, W=64, fwd=13, bwd=7)  # issue 4's window_match benchmark case
_WM_DTYPES = (("float16", "-"), ("bfloat16", "-"), ("float32", "ieee"), ("float32", "tf32"), ("float32", "tf32x3"),
              ("float64", "-"))


def window_match_variants(full: bool = True) -> list[Variant]:
    """Launches of the window_match kernel: every GPU tile config on the headline case in fp16, then every
    dtype/precision with a single-chunk (C <= BC) and a multi-chunk config, then the window extremes (1 and 31,
    which needs several column tiles). ``full=False`` keeps one config per dtype (for tests)."""
    configs = [dict(c) for c in _wm.GPU_CONFIGS]
    multi = configs[1]  # BC=32 < C: channel loop
    one = next(c for c in configs if c["BC"] >= HEADLINE["C"])  # C fits one chunk

    def name(c):
        return f"config {configs.index(c)}"

    out = [Variant("window_match", "float16", "-", HEADLINE, c, f"float16 {name(c)}")
           for c in (configs if full else [one, multi])]
    for dt, prec in _WM_DTYPES[1:]:
        for c in ((one, multi) if full else (multi,)):
            out.append(Variant("window_match", dt, prec, HEADLINE, c, f"{dt}/{prec} {name(c)}"))
    for k in (1, 31):
        shape = dict(HEADLINE, fwd=k, bwd=k)
        for dt, prec in ((("float16", "-"), ("float32", "ieee")) if full else (("float16", "-"),)):
            out.append(Variant("window_match", dt, prec, shape, multi, f"{dt}/{prec} {name(multi)} window {k}"))
    return out


def gram_variants(full: bool = True) -> list[Variant]:
    """Launches of the PTS Gram kernel: the float64 default (sequential sums, and fp64 ``tl.dot``) on fp32 and
    fp16 templates, and float32 outputs with exact and TF32 products, at N=200 (above one block) and N=16."""
    out = []
    for n in ((200, 16) if full else (200,)):
        base = dict(N=n, C=256, H=64, W=64, want_g=True, want_d=True)
        for tdt, odt, fp64_dot, prec in (("float32", "float64", False, "-"), ("float16", "float64", False, "-"),
                                         ("float32", "float64", True, "-"), ("float32", "float32", False, "ieee"),
                                         ("float32", "float32", False, "tf32"), ("bfloat16", "float32", False, "-")):
            shape = dict(base, out=odt, fp64_dot=fp64_dot)
            out.append(Variant("gram", tdt, prec, shape, {}, f"N={n} {tdt}->{odt}{' dot' if fp64_dot else ''} {prec}"))
    return out


def compile_all(archs=(80, 90), full: bool = True, progress=None) -> list[dict]:
    """Compile every variant for every architecture; one record per (variant, arch)."""
    variants = window_match_variants(full) + gram_variants(full)
    rows = []
    for arch in archs:
        for v in variants:
            r = compile_variant(v, arch)
            rows.append(dict(asdict(v), result=r))
            if progress is not None:
                progress(rows[-1])
    return rows


def _row_text(row: dict) -> str:
    r = row["result"]
    head = f"sm_{r['arch']} {row['kernel']:<12} {row['label']:<34}"
    if not r["ok"]:
        lines = [ln.strip() for ln in r["error"].splitlines() if ln.strip() and set(ln.strip()) != {"^"}]
        return f"{head} FAILED {' | '.join(lines[-2:])[:160]}"  # the failing statement and the reason
    return (f"{head} regs {r['registers']:>3} stack {r['stack_bytes']:>4} B shared {r['shared_bytes'] / 1024:6.1f} KiB"
            f"{'' if r['fits_shared'] else ' (OVER LIMIT)'} mma {r['mma_sync']:>4} wgmma {r['wgmma']:>3}"
            f" {r['seconds']:5.1f} s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hetmm_fast.triton.aot", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=int, nargs="+", default=[80, 90], help="compute capabilities, e.g. 80 90")
    p.add_argument("--quick", action="store_true", help="one config per dtype instead of every config")
    p.add_argument("--json", help="write the records here")
    a = p.parse_args(argv)
    rows = compile_all(a.arch, full=not a.quick, progress=lambda r: print(_row_text(r), flush=True))
    if a.json:
        info = dict(triton=triton.__version__, torch=torch.__version__, python=sys.version.split()[0],
                    date=time.strftime("%Y-%m-%d"), ptxas=_ptxas_version(),
                    machine=f"{platform.platform()}, {os.cpu_count()} CPUs: compiled only, nothing ran on a GPU")
        tmp = a.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(dict(versions=info, rows=rows), f, indent=1)
        os.replace(tmp, a.json)
    bad = [r for r in rows if not r["result"]["ok"] or not r["result"]["fits_shared"]]
    print(f"{len(rows) - len(bad)}/{len(rows)} compiled within the shared-memory limit")
    return 1 if bad else 0


def _ptxas_version() -> str:
    from triton import knobs

    out = subprocess.run([knobs.nvidia.ptxas.path, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release ([\d.]+)", out)
    return m.group(1) if m else out.strip()[-40:]


if __name__ == "__main__":
    sys.exit(main())
