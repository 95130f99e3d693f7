"""A bank being replaced while it is read: ``save_bank`` writes a temporary file and renames it over the path, and
``load_bank`` reads one open file, so a reader racing a writer always gets one whole bank, never a torn one or an
error. The writer runs in another process (real concurrency, no shared GIL) and alternates between two banks of
about 1 MB; the control case writes in place, as a non-atomic writer would, and must be caught tearing.
"""
from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest
import torch

from hetmm_fast.bank import BankError, load_bank, save_bank

READS = 150

META = {"backbone": "efficientnet_lite0", "weights_id": "x", "taps": ["a"], "strides": [4], "channels": [64],
        "image_size": 64, "mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2], "tsize": None, "n_templates": 16,
        "feature_sizes": [[16, 16]],
        "preset": '{"layers": [{"fwd_window": 3, "bwd_window": 1, "alpha": 0.5, "lam": 1.0}], "image_post": {}, '
                  '"pixel_post": {}, "pro_post": {}}'}


def _bank(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"all.0": torch.randn(16, 64, 16, 16, generator=g)}  # 1 MiB


def _fingerprint(tensors) -> str:
    return hashlib.sha256(b"".join(t.contiguous().view(torch.uint8).numpy().tobytes()
                                   for _, t in sorted(tensors.items()))).hexdigest()


def _writer(path: str, mode: str, stop, saves) -> None:
    banks = [_bank(1), _bank(2)]
    blobs = []
    if mode == "in_place":
        for i, b in enumerate(banks):
            save_bank(f"{path}.{i}", b, dict(META, n_templates=16))
            blobs.append(Path(f"{path}.{i}").read_bytes())
    i = 0
    while not stop.is_set():
        if mode == "atomic":
            save_bank(path, banks[i % 2], META)
        else:  # truncate and rewrite the path itself, in pieces
            data = blobs[i % 2]
            with open(path, "r+b" if os.path.exists(path) else "wb") as f:
                f.truncate(0)
                for k in range(0, len(data), 64 << 10):
                    f.write(data[k: k + (64 << 10)])
                    f.flush()
        i += 1
        saves.value = i


def _race(tmp_path, mode: str) -> tuple[dict[str, int], int]:
    path = tmp_path / "bank.hetmm"
    save_bank(path, _bank(1), META)
    expected = {_fingerprint(_bank(1)): "A", _fingerprint(_bank(2)): "B"}
    ctx = mp.get_context("spawn")
    stop, saves = ctx.Event(), ctx.Value("i", 0)
    proc = ctx.Process(target=_writer, args=(str(path), mode, stop, saves), daemon=True)
    proc.start()
    seen = {"A": 0, "B": 0, "torn": 0, "error": 0}
    try:
        while saves.value < 2 and proc.is_alive():  # the writer is running before reads start counting
            time.sleep(0.01)
        for _ in range(READS):
            try:
                tensors, _ = load_bank(path)
            except BankError:
                seen["error"] += 1
                continue
            seen[expected.get(_fingerprint(tensors), "torn")] += 1
    finally:
        stop.set()
        proc.join(60)
    assert proc.exitcode == 0, f"writer process failed (exit {proc.exitcode})"
    return seen, saves.value


def test_load_racing_atomic_saves_sees_whole_banks(tmp_path):
    seen, saves = _race(tmp_path, "atomic")
    assert saves > 10, f"the writer saved only {saves} times during {READS} reads: no race happened"
    assert seen["torn"] == seen["error"] == 0, seen
    assert seen["A"] + seen["B"] == READS and seen["A"] and seen["B"], seen
    assert [p.name for p in tmp_path.iterdir()] == ["bank.hetmm"]  # no temporary file left behind


def test_in_place_writer_is_caught_tearing(tmp_path):
    """Control: the same race with a writer that rewrites the file in place does produce refused or torn reads, so
    the test above would see them if save_bank were not atomic."""
    seen, _ = _race(tmp_path, "in_place")
    assert seen["error"] + seen["torn"] > 0, seen
