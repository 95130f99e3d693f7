"""Coverage-guided fuzzing of ``hetmm_fast.data.images.read_image`` with atheris (libFuzzer).

Contract under test: for any file, read_image returns an ``HxWx3`` uint8 array with H, W >= 1 or raises ValueError
(FileNotFoundError cannot happen here: the file exists). Anything else (another exception type, a wrong array, a
crash, a hang, an input slower than ``HETMM_FUZZ_SLOW_S`` seconds) is a finding; see ``findings.py``.

    python tests/fuzz/fuzz_image.py CORPUS_DIR SEED_DIR -timeout=60 -rss_limit_mb=4096 -max_total_time=1800

Pillow and hetmm_fast.data are instrumented for coverage (Pillow's C decoders are not: libFuzzer sees only the
Python side of them). ``run.py`` restarts the fuzzer after a crash/timeout/OOM so that one finding does not end it.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from findings import record, signature  # noqa: E402

with atheris.instrument_imports(include=["PIL", "hetmm_fast.data"]):
    from PIL import Image

    Image.init()  # imports every format plugin now, inside the instrumentation
    from hetmm_fast.data.images import read_image

SLOW_S = float(os.environ.get("HETMM_FUZZ_SLOW_S", "5"))
ALLOWED = (ValueError,)
_path = Path(tempfile.mkdtemp(prefix="hetmm_fuzz_image_", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)) / "x"


def check_image(data: bytes) -> None:
    _path.write_bytes(data)
    t0 = time.perf_counter()
    try:
        arr = read_image(_path)
    except ALLOWED:
        arr = None
    except Exception as exc:  # noqa: BLE001 - every other type is the finding
        record("exception", data, traceback.format_exc(), signature(exc))
        arr = None
    took = time.perf_counter() - t0
    if took > SLOW_S:
        record("slow", data, f"read_image took {took:.2f} s", f"slow@{len(data) // 1024}KiB")
    if arr is not None:
        import numpy as np

        if not (isinstance(arr, np.ndarray) and arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
                and arr.shape[0] >= 1 and arr.shape[1] >= 1):
            record("badresult", data, f"returned {type(arr).__name__} {getattr(arr, 'shape', None)} "
                   f"{getattr(arr, 'dtype', None)}", "badresult")


def main() -> None:
    atheris.Setup(sys.argv, check_image)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
