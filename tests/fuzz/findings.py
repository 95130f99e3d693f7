"""Recording what a fuzz harness finds without stopping the run.

A harness calls :func:`record` for an exception outside the reader's contract or an input that took too long; each
distinct signature (exception type and the innermost frame of our code or the library) is written once to the
findings folder: the input as ``<kind>-<sha1>`` and the traceback beside it as ``<kind>-<sha1>.txt``.
"""
from __future__ import annotations

import hashlib
import os
import traceback
from pathlib import Path

_seen: set[str] = set()


def findings_dir() -> Path:
    folder = Path(os.environ.get("HETMM_FUZZ_FINDINGS", "/tmp/hetmm_fuzz_findings"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def signature(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    last = frames[-1] if frames else None
    where = f"{Path(last.filename).name}:{last.lineno}" if last else "?"
    return f"{type(exc).__name__}@{where}"


def record(kind: str, data: bytes, detail: str, sig: str) -> None:
    if sig in _seen:
        return
    _seen.add(sig)
    name = f"{kind}-{hashlib.sha1(data).hexdigest()[:16]}"
    folder = findings_dir()
    (folder / name).write_bytes(data)
    (folder / f"{name}.txt").write_text(f"{sig}\n\n{detail}")
    print(f"FINDING {kind} {sig} -> {folder / name}", flush=True)
