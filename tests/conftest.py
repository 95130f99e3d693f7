"""Shared pytest hooks.

``HETMM_TEST_DEADLINE`` (Unix time, seconds): tests that would start after it are skipped with that reason instead
of run. benchmarks/gpu_check.sh sets it a little before each pytest step's time limit, so a slow step ends on its own
and still writes its report (a run killed by the limit writes none) and names the tests it did not reach.
"""
from __future__ import annotations

import os
import time

import pytest


def _deadline() -> float | None:
    raw = os.environ.get("HETMM_TEST_DEADLINE", "").strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        raise pytest.UsageError(f"HETMM_TEST_DEADLINE must be a Unix time in seconds, got {raw!r}") from None


def pytest_report_header(config):
    """Which hetmm_fast, which build of its extension and which CPU code paths this run tests."""
    import torch

    import hetmm_fast

    try:
        from hetmm_fast import _engine_cpu

        ext = f"{hetmm_fast._C.__file__} ({' '.join(sorted(_engine_cpu.build_features())) or 'baseline ISA'})"
    except ImportError as exc:
        ext = f"not loaded ({exc})"
    switches = {k: os.environ[k] for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if k in os.environ}
    return [f"hetmm_fast: {os.path.dirname(hetmm_fast.__file__)}; extension: {ext}",
            f"ATen CPU capability: {torch.backends.cpu.get_cpu_capability()}; switches: {switches or 'none'}"]


def pytest_configure(config):
    config._hetmm_deadline = _deadline()


def pytest_runtest_setup(item):
    deadline = item.config._hetmm_deadline
    if deadline is not None and time.time() > deadline:
        pytest.skip(f"HETMM_TEST_DEADLINE passed: not started ({time.time() - deadline:.0f} s after the deadline)")
