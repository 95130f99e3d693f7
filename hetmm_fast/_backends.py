"""Backend selection for the hetmm ops (STYLE.md rule 3).

Every op has up to four implementations: ``cuda`` (compiled CUDA kernels in ``hetmm_fast._C``), ``triton``
(Triton kernels), ``cpu`` (compiled C++/OpenMP kernels in ``hetmm_fast._C``) and ``torch`` (the pure-PyTorch
reference, always available). ``backend=None`` walks the ladder cuda > triton > cpu > torch and takes the first
backend whose ``can_run`` returns no reasons; ``backend="name"`` (or the ``HETMM_BACKEND`` environment variable)
forces one and raises ``RuntimeError`` with the reasons when it cannot run. Refusals are logged at DEBUG level on the
``hetmm_fast`` logger.

Engines register themselves with :func:`register`; ``import hetmm_fast`` never compiles anything.

No silent slow path: when the compiled extension is present but fails to load (an ABI mismatch after a torch
upgrade, a build for another CPU, a damaged file), the first op warns once with the reason and the fix and the ops
run on the remaining engines; with ``HETMM_STRICT=1`` every op raises instead.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import threading
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

LADDER: tuple[str, ...] = ("cuda", "triton", "cpu", "torch")
log = logging.getLogger("hetmm_fast")


@dataclass(frozen=True)
class Impl:
    fn: Callable
    # Reasons this implementation cannot run on these tensors ([] = it can).
    can_run: Callable[[Sequence[torch.Tensor]], list[str]]


_IMPLS: dict[str, dict[str, Impl]] = {}
_ENGINE_MODULES = {"cpu": "hetmm_fast._engine_cpu", "cuda": "hetmm_fast._engine_cuda", "triton": "hetmm_fast.triton"}
_ENGINE_ERRORS: dict[str, str] = {}
_BROKEN_EXTENSION: str | None = None  # why the compiled extension, present on disk, failed to load
_loaded = False  # every engine module imported (or its failure recorded): the lock-free fast path
_started = False  # an import pass began (in this thread, when re-entered from an engine's import)
_LOAD_LOCK = threading.RLock()


class EngineUnavailable(ImportError):
    """Raised by an engine module that loaded correctly but has nothing to offer here (e.g. a CPU-only build of the
    extension has no CUDA kernels): a reason, not a fault."""


def register(op: str, backend: str, fn: Callable, can_run: Callable[[Sequence[torch.Tensor]], list[str]]) -> None:
    if backend not in LADDER:
        raise ValueError(f"unknown backend {backend!r}; expected one of {LADDER}")
    _IMPLS.setdefault(op, {})[backend] = Impl(fn, can_run)


def _load_engines() -> None:
    """Import the optional engine modules once; each registers what it can and records why it cannot.

    Threads that arrive while another imports wait for it, so no caller sees a half-filled registry (and falls back
    to a lower engine, or is told a backend has no implementation)."""
    global _loaded, _started
    if _loaded:
        return
    with _LOAD_LOCK:
        if _started:
            return
        _started = True
        try:
            _import_engines()
        finally:
            _loaded = True
        if _BROKEN_EXTENSION is not None and not strict():
            warnings.warn(f"hetmm_fast: {_BROKEN_EXTENSION}; the ops run on the other engines (the pure-PyTorch "
                          "reference on a CPU, many times slower). Set HETMM_STRICT=1 to make this an error.",
                          RuntimeWarning, stacklevel=4)


def strict() -> bool:
    """``HETMM_STRICT=1``: a compiled extension that is present but fails to load is an error, not a warning."""
    return os.environ.get("HETMM_STRICT", "0") == "1"


def broken_extension() -> str | None:
    """Why the compiled extension failed to load although it is installed (None when it loaded or is absent)."""
    _load_engines()
    return _BROKEN_EXTENSION


def _extension_file() -> str | None:
    try:
        spec = importlib.util.find_spec("hetmm_fast._C")
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None else None


def _import_engines() -> None:
    global _BROKEN_EXTENSION
    for name, module in _ENGINE_MODULES.items():
        if name == "triton" and not (torch.cuda.is_available() or _triton_interpret()):
            # Importing Triton costs seconds and its kernels need a GPU (or the interpreter): skip it.
            _ENGINE_ERRORS[name] = "not loaded (Triton kernels need a CUDA device or TRITON_INTERPRET=1)"
            continue
        try:
            importlib.import_module(module)
        except EngineUnavailable as exc:  # the engine module explains itself, e.g. "extension built without CUDA"
            _ENGINE_ERRORS[name] = str(exc)
            continue  # a reason, not a broken extension
        except ModuleNotFoundError as exc:
            if name == "triton":
                _ENGINE_ERRORS[name] = f"not available ({exc})"
            elif exc.name == "hetmm_fast._C" and _extension_file() is None:
                _ENGINE_ERRORS[name] = "extension not built"
            else:
                _ENGINE_ERRORS[name] = f"failed to load: {exc}"
        except Exception as exc:  # a broken build must not break `import hetmm_fast`
            _ENGINE_ERRORS[name] = f"failed to load: {type(exc).__name__}: {exc}"
        else:
            continue
        if name in ("cpu", "cuda") and _BROKEN_EXTENSION is None and _extension_file() is not None:
            _BROKEN_EXTENSION = (f"the compiled extension {_extension_file()} is installed but failed to load "
                                 f"({_ENGINE_ERRORS[name]}); rebuild it against the torch in use (`make install`, "
                                 "or `pip install --no-build-isolation -e .`)")


def engine_error(backend: str) -> str | None:
    _load_engines()
    return _ENGINE_ERRORS.get(backend)


def reasons(op: str, backend: str, tensors: Sequence[torch.Tensor]) -> list[str]:
    """Why ``backend`` cannot run ``op`` on ``tensors`` ([] when it can)."""
    _load_engines()
    if backend not in LADDER:
        return [f"unknown backend {backend!r}; expected one of {LADDER}"]
    impl = _IMPLS.get(op, {}).get(backend)
    if impl is None:
        err = _ENGINE_ERRORS.get(backend)
        return [err] if err else [f"no {backend} implementation of {op}"]
    return impl.can_run(tensors)


def select(op: str, backend: str | None, tensors: Sequence[torch.Tensor]) -> tuple[str, Callable]:
    """Pick the implementation of ``op`` for these inputs; see the module docstring for the rules."""
    _load_engines()
    if _BROKEN_EXTENSION is not None and strict():
        raise RuntimeError(f"hetmm.{op}: {_BROKEN_EXTENSION} (HETMM_STRICT=1)")
    forced = backend if backend is not None else os.environ.get("HETMM_BACKEND") or None
    if forced is not None:
        why = reasons(op, forced, tensors)
        if why:
            raise RuntimeError(f"hetmm.{op}: backend {forced!r} cannot run: {'; '.join(why)}")
        return forced, _IMPLS[op][forced].fn
    for name in LADDER:
        why = reasons(op, name, tensors)
        if not why:
            return name, _IMPLS[op][name].fn
        log.debug("hetmm.%s: backend %s refused: %s", op, name, "; ".join(why))
    raise RuntimeError(f"hetmm.{op}: no backend can run these inputs")  # unreachable: torch always can


def available_backends() -> dict[str, list[str]]:
    """``{backend: reasons it cannot run on this machine}`` in ladder order; ``[]`` means usable.

    The reasons are machine-level (extension not built, no GPU, ...); a usable backend may still refuse particular
    inputs (for example CPU tensors for ``cuda``).
    """
    _load_engines()
    cuda_ok = torch.cuda.is_available()
    out: dict[str, list[str]] = {}
    for name in LADDER:
        why: list[str] = []
        err = _ENGINE_ERRORS.get(name)
        if err:
            why.append(err)
        elif not any(name in impls for impls in _IMPLS.values()):
            why.append("no ops registered")
        if name in ("cuda", "triton") and not cuda_ok and not (name == "triton" and _triton_interpret()):
            why.append("no CUDA device")
        out[name] = why
    return out


def _triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"
