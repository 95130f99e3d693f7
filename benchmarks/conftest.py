"""Shared helpers of the pytest-benchmark files in ``benchmarks/`` (``python -m pytest benchmarks/bench_<op>.py``).

Opt-in only (no autouse fixtures, no hooks): ``machine_info()`` describes where numbers were taken and
``write_results(stem, payload, markdown)`` stores them under ``benchmarks/results/`` (STYLE.md rule 8).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(RESULTS.parents[1]))  # benchmark the working tree, also without an installed package


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compiler() -> str:
    for cmd in ("c++", "g++", "clang++"):
        try:
            out = subprocess.run([cmd, "--version"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout:
            return out.stdout.splitlines()[0]
    return "unknown"


def machine_info() -> dict:
    """CPU model, core count, load, versions (Python, torch, numpy, compiler) and the date, as a JSON-able dict."""
    import numpy

    info = {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "compiler": _compiler(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1_5_15min"] = [round(v, 2) for v in os.getloadavg()]
    return info


def write_results(stem: str, payload: dict, markdown: str) -> tuple[Path, Path]:
    """Write ``results/<stem>.json`` and ``results/<stem>.md``; returns both paths."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    js, md = RESULTS / f"{stem}.json", RESULTS / f"{stem}.md"
    js.write_text(json.dumps(payload, indent=2) + "\n")
    md.write_text(markdown)
    return js, md


@pytest.fixture(scope="session")
def machine() -> dict:
    return machine_info()
