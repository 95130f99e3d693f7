"""Build of the optional compiled engine ``hetmm_fast._C`` (metadata lives in pyproject.toml).

Sources: every ``csrc/**/*.cpp``; with CUDA enabled also every ``csrc/**/*.cu`` (the ``*_cuda_torch.cpp`` wrappers
are left out when CUDA is disabled). CUDA is enabled when torch was built with CUDA and nvcc is found, or when
``HETMM_FAST_FORCE_CUDA=1``; ``HETMM_FAST_NO_CUDA=1`` disables it.

Environment:
    HETMM_FAST_NO_EXT=1       install pure Python (the torch reference backend only); nothing is compiled
    HETMM_FAST_PORTABLE=1     no ``-march=native`` (a binary that runs on any x86-64 / aarch64 of the family)
    HETMM_FAST_NO_CUDA=1      never compile CUDA sources
    HETMM_FAST_FORCE_CUDA=1   compile CUDA sources even if no nvcc/CUDA torch is detected (fails loudly if absent)
    MAX_JOBS=N                parallel compile jobs (torch's ninja builder)

Typical: ``MAX_JOBS=2 pip install -e . --no-build-isolation`` (build isolation would download torch again).
"""
from __future__ import annotations

import glob
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
EXT_NAME = "hetmm_fast._C"


def _flag(name: str) -> bool:
    return os.environ.get(name, "0") == "1"


def _say(msg: str) -> None:
    print(f"hetmm-fast setup: {msg}", file=sys.stderr, flush=True)


def _rel(paths):
    return sorted(os.path.relpath(p, ROOT) for p in paths)


def _prepare_cuda_home() -> None:
    # torch guesses CUDA_HOME from the nvcc on PATH, which is wrong on machines whose nvcc is a wrapper outside the
    # toolkit; the standard location wins when present. Must run before torch.utils.cpp_extension is imported.
    if not os.environ.get("CUDA_HOME") and not os.environ.get("CUDA_PATH") and os.path.isdir("/usr/local/cuda"):
        os.environ["CUDA_HOME"] = "/usr/local/cuda"


def _cuda_decision(torch, cpp_extension) -> tuple[bool, str]:
    if _flag("HETMM_FAST_NO_CUDA"):
        return False, "HETMM_FAST_NO_CUDA=1"
    if _flag("HETMM_FAST_FORCE_CUDA"):
        return True, "HETMM_FAST_FORCE_CUDA=1"
    if torch.version.cuda is None:
        return False, "torch was built without CUDA"
    home = cpp_extension.CUDA_HOME
    if not home or not os.path.exists(os.path.join(home, "bin", "nvcc")):
        return False, f"nvcc not found (CUDA_HOME={home!r})"
    return True, f"torch CUDA {torch.version.cuda}, nvcc in {home}"


def _nvidia_wheel_includes(torch) -> list[str]:
    # CUDA-enabled torch wheels ship the CUDA library headers torch's own headers include (cuBLAS, cuSPARSE, ...)
    # as site-packages/nvidia/cu*/include rather than in the toolkit.
    site = os.path.dirname(os.path.dirname(os.path.abspath(torch.__file__)))
    return sorted(p for p in glob.glob(os.path.join(site, "nvidia", "cu*", "include")) if os.path.isdir(p))


def _cuda_arch_flags() -> list[str]:
    # Named explicitly because torch's builder adds no -gencode flag as soon as any nvcc flag contains "arch"
    # (-Xcompiler -march=native does), and cannot guess one on a machine without a GPU. The kernels use mma.sync and
    # cp.async (sm_80+). Default: sm_80 and sm_90 machine code plus compute_90 PTX for newer GPUs;
    # TORCH_CUDA_ARCH_LIST ("8.0;9.0+PTX", "9.0", ...) narrows or widens it (e.g. a faster build on one machine).
    arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST", "").replace(" ", ";").strip(";")
    entries = [a for a in arch_list.split(";") if a] if arch_list else ["8.0", "9.0+PTX"]
    flags = []
    for entry in entries:
        version = entry.removesuffix("+PTX")
        if not version.removesuffix("a").replace(".", "").isdigit() or "." not in version:
            raise SystemExit(f"hetmm-fast setup: cannot read CUDA arch {entry!r} in TORCH_CUDA_ARCH_LIST={arch_list!r}")
        num = version.replace(".", "")
        flags.append(f"-gencode=arch=compute_{num},code=sm_{num}")
        if entry.endswith("+PTX"):
            flags.append(f"-gencode=arch=compute_{num},code=compute_{num}")
    return flags


def _extensions():
    if _flag("HETMM_FAST_NO_EXT"):
        _say("HETMM_FAST_NO_EXT=1: installing pure Python (no compiled engine; the torch reference backend serves "
             "every op)")
        return [], {}
    _prepare_cuda_home()
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError as exc:
        raise SystemExit(
            "hetmm-fast setup: torch is not importable at build time, so the compiled engine hetmm_fast._C cannot be "
            f"built ({exc}).\n  Install torch first and build with `pip install --no-build-isolation .`, or set "
            "HETMM_FAST_NO_EXT=1 to install pure Python (reference backend only)."
        ) from exc

    cuda, why = _cuda_decision(torch, cpp_extension)
    _say(f"CUDA sources {'enabled' if cuda else 'disabled'} ({why})")
    sources = glob.glob(os.path.join(ROOT, "csrc", "**", "*.cpp"), recursive=True)
    if cuda:
        sources += glob.glob(os.path.join(ROOT, "csrc", "**", "*.cu"), recursive=True)
    else:
        sources = [s for s in sources if not s.endswith("_cuda_torch.cpp")]
    sources = _rel(sources)
    if not sources:
        raise SystemExit("hetmm-fast setup: no sources under csrc/; set HETMM_FAST_NO_EXT=1 for a pure-Python install")

    portable = _flag("HETMM_FAST_PORTABLE")
    # No -std here: torch's builder adds the standard its headers need (C++20 for torch 2.x >= 2.10); the torch-free
    # kernels are C++17 (CMakeLists.txt) and compile unchanged as C++20.
    cxx = ["-O3", "-fopenmp"] + ([] if portable else ["-march=native"])
    include_dirs = [os.path.join(ROOT, "csrc")]
    define_macros = []
    kwargs = {}
    if cuda:
        include_dirs += _nvidia_wheel_includes(torch)
        define_macros.append(("HETMM_WITH_CUDA", "1"))
        nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"] + _cuda_arch_flags()
        if not portable:
            nvcc += ["-Xcompiler", "-march=native"]
        kwargs["extra_compile_args"] = {"cxx": cxx, "nvcc": nvcc}
        make = cpp_extension.CUDAExtension
    else:
        kwargs["extra_compile_args"] = {"cxx": cxx}
        make = cpp_extension.CppExtension
    _say(f"building {EXT_NAME} from {len(sources)} sources ({'portable' if portable else '-march=native'})")
    ext = make(
        EXT_NAME,
        sources,
        include_dirs=include_dirs,
        define_macros=define_macros,
        extra_link_args=["-fopenmp"],
        **kwargs,
    )
    return [ext], {"build_ext": _build_ext_class(cpp_extension)}


def _build_ext_class(cpp_extension):
    class BuildExt(cpp_extension.BuildExtension):
        """torch's builder, with a message that says what failed and how to install without the engine."""

        def run(self):
            try:
                super().run()
            except Exception as exc:
                _say(
                    f"building the compiled engine {EXT_NAME} failed: {type(exc).__name__}: {exc}\n"
                    "  Check the compiler output above (a C++17 compiler with OpenMP is required; CUDA sources also "
                    "need nvcc matching torch's CUDA).\n  HETMM_FAST_NO_CUDA=1 skips the CUDA sources, "
                    "HETMM_FAST_PORTABLE=1 drops -march=native, HETMM_FAST_NO_EXT=1 installs pure Python."
                )
                raise

    return BuildExt.with_options(use_ninja=True)


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
