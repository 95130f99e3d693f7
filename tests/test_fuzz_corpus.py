"""Replay of the fuzzers' regression corpus (tests/fuzz/corpus/{bank,image}/, see tests/fuzz/) and hand-made lying
safetensors headers.

Every bank file must load (and then make a detector that predicts finite scores) or raise BankError; every image
file must read as an HxWx3 uint8 array or raise ValueError. Each corpus is replayed in a child process with a time
limit for the whole replay, so a crash or a hang fails the test instead of taking pytest down or stalling it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parent / "fuzz" / "corpus"
REPLAY_LIMIT_S = 300


def _replay_bank(path: Path) -> str:
    import torch

    import hetmm_fast as hf
    from hetmm_fast.bank import BankError, load_bank

    try:
        load_bank(path)
        det = hf.HETMM.load(path, progress=False)
    except BankError:
        return "refused"
    scores = det.predict(torch.rand(1, 3, det.image_size, det.image_size)).scores
    assert torch.isfinite(scores).all(), f"non-finite scores {scores}"
    return "loaded"


def _replay_image(path: Path) -> str:
    import numpy as np

    from hetmm_fast.data.images import read_image

    try:
        arr = read_image(path)
    except ValueError:
        return "refused"
    assert isinstance(arr, np.ndarray) and arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3 \
        and min(arr.shape[:2]) >= 1, f"read_image returned {type(arr).__name__} {getattr(arr, 'shape', None)}"
    return "read"


def _child(kind: str) -> None:
    replay = _replay_bank if kind == "bank" else _replay_image
    for path in sorted((CORPUS / kind).iterdir()):
        print(json.dumps({"file": path.name, "start": True}), flush=True)
        try:
            result = {"file": path.name, "outcome": replay(path)}
        except Exception:  # noqa: BLE001 - reported to the parent
            result = {"file": path.name, "error": traceback.format_exc()}
        print(json.dumps(result), flush=True)


@pytest.mark.parametrize("kind", ["bank", "image"])
def test_corpus_replay(kind):
    files = sorted((CORPUS / kind).iterdir())
    assert len(files) >= 5, f"corpus {CORPUS / kind} is missing or nearly empty"
    try:
        # The corpus holds decompression bombs of 100 to 300 bytes that the default pixel limit (2**28) lets decode
        # into 67-171 M pixels (4-5 GB, up to 46 s each here): replayed under a 4 M-pixel limit they check the refusal.
        env = dict(os.environ, OMP_NUM_THREADS="1", HETMM_MAX_IMAGE_PIXELS=str(2**22))
        proc = subprocess.run([sys.executable, __file__, kind], capture_output=True, text=True,
                              timeout=REPLAY_LIMIT_S, env=env)
        out, err, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out, err, rc = (exc.stdout or b"").decode(), (exc.stderr or b"").decode(), "timeout"
    done, running, failures = {}, None, []
    for line in out.splitlines():
        rec = json.loads(line)
        if rec.get("start"):
            running = rec["file"]
            continue
        running = None
        done[rec["file"]] = rec.get("outcome")
        if "error" in rec:
            failures.append(f"{rec['file']}:\n{rec['error']}")
    if running is not None:
        failures.append(f"{running}: child {'hung' if rc == 'timeout' else f'died (exit {rc})'} on it\n{err[-2000:]}")
    assert not failures, f"{len(failures)} {kind} corpus files broke the contract:\n" + "\n".join(failures)
    assert rc == 0 and len(done) == len(files), f"replay ended early (exit {rc}): {err[-2000:]}"


# ------------------------------------------------------------------ lying safetensors headers
def _file(header: dict | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    if isinstance(header, dict):
        header = {"__metadata__": {"format": "hetmm_fast.bank", "format_version": "1"}, **header}
        header = json.dumps(header).encode()
    return (len(header) if length is None else length).to_bytes(8, "little") + header + data


def _entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


LYING = {
    "length_2_63": _file({"t": _entry()}, bytes(8), length=2**63),
    "length_2_64_minus_1": _file({"t": _entry()}, bytes(8), length=2**64 - 1),
    "length_past_end": _file(b"{}", b"", length=3),
    "short_file": b"\x02\x00\x00",
    "1e12_elements_in_1kb": _file({"t": _entry(shape=(10**6, 10**6), offsets=(0, 4 * 10**12))}, bytes(1000)),
    "1e12_elements_small_range": _file({"t": _entry(shape=(10**6, 10**6), offsets=(0, 1000))}, bytes(1000)),
    "empty_dim_huge_others": _file({"t": _entry(shape=(0, 2**62, 2**62), offsets=(0, 0))}),
    "numel_past_int64": _file({"t": _entry(shape=(2**40, 2**40), offsets=(0, 8))}, bytes(8)),
    "negative_dim": _file({"t": _entry(shape=(-2, -1), offsets=(0, 8))}, bytes(8)),
    "bool_dim": _file({"t": _entry(shape=(True, 2), offsets=(0, 8))}, bytes(8)),
    "float_dim": _file({"t": _entry(shape=(2.0,), offsets=(0, 8))}, bytes(8)),
    "rank_9": _file({"t": _entry(shape=(1,) * 9, offsets=(0, 4))}, bytes(4)),
    "unknown_dtype": _file({"t": _entry(dtype="C64")}, bytes(8)),
    "dtype_not_str": _file({"t": _entry(dtype=7)}, bytes(8)),
    "offsets_reversed": _file({"t": _entry(offsets=(8, 0))}, bytes(8)),
    "offsets_negative": _file({"t": _entry(offsets=(-8, 0))}, bytes(8)),
    "offsets_past_end": _file({"t": _entry(offsets=(0, 2**63))}, bytes(8)),
    "overlap": _file({"a": _entry(), "b": _entry()}, bytes(8)),
    "gap": _file({"a": _entry(offsets=(8, 16))}, bytes(16)),
    "trailing_bytes": _file({"a": _entry()}, bytes(9)),
    "duplicate_key": _file(b'{"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "t": {}}', bytes(8)),
    "deep_nesting": _file(b'{"t": ' + b"[" * 100000 + b"]" * 100000 + b"}"),
    "huge_int": _file(b'{"t": {"dtype": "F32", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 8]}}', bytes(8)),
    "nan_literal": _file(b'{"t": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 8]}}', bytes(8)),
    "not_utf8": _file(b'{"\xff": 1}'),
    "header_is_list": _file(b"[1, 2]"),
    "metadata_not_str": _file({"__metadata__": {"format": 1}, "t": _entry()}, bytes(8)),
}


@pytest.mark.parametrize("name", list(LYING))
def test_lying_header_refused_before_safetensors_reads(tmp_path, monkeypatch, name):
    import safetensors

    from hetmm_fast.bank import BankError, load_bank

    opened = []
    real = safetensors.safe_open
    monkeypatch.setattr(safetensors, "safe_open", lambda *a, **k: opened.append(a) or real(*a, **k))
    path = tmp_path / f"{name}.hetmm"
    path.write_bytes(LYING[name])
    with pytest.raises(BankError, match="not a readable bank file|not a hetmm_fast bank"):
        load_bank(path)
    assert not opened, "the header was handed to safetensors before it was checked"


def test_header_length_past_the_limit_in_a_large_sparse_file(tmp_path):
    from hetmm_fast.bank import MAX_HEADER_BYTES, BankError, load_bank

    path = tmp_path / "sparse.hetmm"
    with open(path, "wb") as f:
        f.write((MAX_HEADER_BYTES + 1).to_bytes(8, "little"))
        f.truncate(MAX_HEADER_BYTES + 64)  # holes: nothing is written, and nothing must be read
    with pytest.raises(BankError, match=f"header length {MAX_HEADER_BYTES + 1} exceeds"):
        load_bank(path)


def test_special_files(tmp_path):
    from hetmm_fast.bank import BankError, load_bank

    with pytest.raises(BankError, match="not a regular file"):
        load_bank(tmp_path)
    fifo = tmp_path / "fifo.hetmm"
    os.mkfifo(fifo)
    with pytest.raises(BankError, match="not a regular file"):  # refused without blocking on the open
        load_bank(fifo)
    with pytest.raises(FileNotFoundError, match="bank file not found"):
        load_bank(tmp_path / "missing.hetmm")


if __name__ == "__main__":
    _child(sys.argv[1])
