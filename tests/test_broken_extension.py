"""No silent slow path: an installed extension that fails to load warns once (HETMM_STRICT=1: every op raises),
while a pure-Python install (no extension file at all) runs the reference quietly."""
from __future__ import annotations

import importlib.machinery
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hetmm_fast

SCRIPT = """
import warnings
import torch
import hetmm_fast as hf
from hetmm_fast import _backends

q = torch.nn.functional.normalize(torch.randn(1, 4, 5, 5), dim=1)
t = torch.nn.functional.normalize(torch.randn(2, 4, 5, 5), dim=1)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
        for _ in range(3):
            name, _fn = _backends.select("window_match", None, (q, t))
            hf.window_match(q, t, 3, 3)
        print("BACKEND", name)
    except RuntimeError as exc:
        print("RAISED", exc)
for w in caught:
    if issubclass(w.category, RuntimeWarning):
        print("WARNING", w.message)
"""


def run_copy(tmp_path: Path, so_bytes: bytes | None, strict: bool) -> str:
    """Run SCRIPT against a copy of the package whose extension file holds ``so_bytes`` (None: no file)."""
    pkg = tmp_path / "hetmm_fast"
    shutil.copytree(Path(hetmm_fast.__file__).parent, pkg,
                    ignore=shutil.ignore_patterns("_C*.so", "_C*.pyd", "__pycache__"))
    if so_bytes is not None:
        (pkg / f"_C{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_bytes(so_bytes)
    # -S: no site processing, so the development install's .pth finder (which would find the real extension beside
    # the real package) is not loaded; the copy in the working directory is the package, site-packages gives torch.
    env = {"PATH": "/usr/bin:/bin", "HETMM_STRICT": "1" if strict else "0", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(torch.__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-S", "-c", SCRIPT], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_damaged_extension_warns_once_and_falls_back(tmp_path):
    out = run_copy(tmp_path, b"\x7fELF but not really a shared library" * 10, strict=False)
    warnings = [line for line in out.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, out
    assert "failed to load" in warnings[0] and "rebuild" in warnings[0] and "HETMM_STRICT=1" in warnings[0]
    assert "BACKEND torch" in out


def test_damaged_extension_with_strict_raises_on_every_op(tmp_path):
    out = run_copy(tmp_path, b"garbage" * 20, strict=True)
    assert "RAISED hetmm.window_match:" in out and "HETMM_STRICT=1" in out and "failed to load" in out, out
    assert "WARNING" not in out


@pytest.mark.parametrize("strict", [False, True])
def test_pure_python_install_is_quiet(tmp_path, strict):
    out = run_copy(tmp_path, None, strict=strict)
    assert "BACKEND torch" in out and "WARNING" not in out and "RAISED" not in out, out


def test_engine_with_nothing_to_offer_is_a_reason_not_a_broken_extension(tmp_path):
    """A CPU-only build's CUDA engine raises EngineUnavailable: recorded as the reason, no warning, not strict."""
    (tmp_path / "fake_engine.py").write_text(
        "from hetmm_fast._backends import EngineUnavailable\nraise EngineUnavailable('no kernels for this device')\n")
    script = """
import warnings
import hetmm_fast._backends as b
b._ENGINE_MODULES = {"cuda": "fake_engine"}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    b._load_engines()
print("ERR", b._ENGINE_ERRORS.get("cuda"))
print("BROKEN", b._BROKEN_EXTENSION)
print("WARNINGS", sum(issubclass(w.category, RuntimeWarning) for w in caught))
"""
    env = {"PATH": "/usr/bin:/bin", "HETMM_STRICT": "1", "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ERR no kernels for this device" in proc.stdout
    assert "BROKEN None" in proc.stdout and "WARNINGS 0" in proc.stdout, proc.stdout
