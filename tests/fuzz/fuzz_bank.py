"""Coverage-guided fuzzing of the bank loader (``hetmm_fast.bank.load_bank``, then ``HETMM.load`` and one
``predict`` when the loader accepts the file) with atheris (libFuzzer).

Contract under test: a bank file either loads (and the detector it makes predicts finite scores) or raises BankError.
Anything else (another exception type, non-finite scores, a crash, a hang, an input slower than
``HETMM_FUZZ_SLOW_S`` seconds, RSS beyond libFuzzer's limit) is a finding; see ``findings.py``.

Each input is read one of two ways, chosen by its first byte:
* raw: the rest of the input is the file;
* structured: the rest drives a FuzzedDataProvider that picks one of the seed banks (``seeds.py``), decodes its
  safetensors header and applies 1-4 edits: the length prefix, an entry's dtype/shape/data_offsets, entries added
  or dropped, any field of ``__metadata__``, of the ``meta`` JSON or of the ``sha256`` JSON (values of every JSON
  type, huge and negative ints, deep nesting), truncation, appended bytes, data bytes changed with or without
  recomputed digests. Byte mutation alone rarely gets past the JSON, this reaches the checks behind it.

    python tests/fuzz/fuzz_bank.py CORPUS_DIR SEED_DIR -timeout=60 -rss_limit_mb=4096 -max_total_time=1800
"""
from __future__ import annotations

import hashlib
import json
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

with atheris.instrument_imports(include=["hetmm_fast.bank", "hetmm_fast.detector", "hetmm_fast.presets"]):
    import torch

    import hetmm_fast as hf
    import hetmm_fast.backbones as backbones
    from hetmm_fast.bank import BankError, load_bank

from seeds import bank_seeds  # noqa: E402

SLOW_S = float(os.environ.get("HETMM_FUZZ_SLOW_S", "5"))
SEEDS = list(bank_seeds().values())
_path = Path(tempfile.mkdtemp(prefix="hetmm_fuzz_bank_", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)) / "b"
_query = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
torch.set_num_threads(1)

# Building the backbone (reading its weights) dominates HETMM.load; a fuzzed bank changes nothing in it.
_build = backbones.build_backbone
_cache = {}


def _cached_build(name, weights=None, pretrained=True):
    key = (name, str(weights), pretrained)
    if key not in _cache:
        _cache[key] = _build(name, weights=weights, pretrained=pretrained)
    return _cache[key]


backbones.build_backbone = _cached_build

INTS = [0, 1, -1, 2, 3, 16, 255, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63), 10**12,
        10**30]


def fuzz_value(fdp: atheris.FuzzedDataProvider, depth: int = 0):
    kind = fdp.ConsumeIntInRange(0, 11)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return INTS[fdp.ConsumeIntInRange(0, len(INTS) - 1)]
    if kind == 3:
        return fdp.ConsumeIntInRange(-4, 300)
    if kind == 4:
        return fdp.ConsumeRegularFloat()
    if kind == 5:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 24))
    if kind == 6 and depth < 3:
        return [fuzz_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    if kind == 7 and depth < 3:
        return {fdp.ConsumeUnicodeNoSurrogates(6): fuzz_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))}
    if kind == 8:
        return f"\x00DEEP{fdp.ConsumeIntInRange(1, 200000)}\x00"  # replaced by that many nested [ ] in the text
    if kind == 9:
        return [INTS[fdp.ConsumeIntInRange(0, len(INTS) - 1)] for _ in range(fdp.ConsumeIntInRange(0, 9))]
    if kind == 10:
        return ["F32", "F16", "BF16", "F64", "I64", "U8", "BOOL", "F8_E4M3", "F4", "F8_E8M0", "C64", "I4",
                ""][fdp.ConsumeIntInRange(0, 12)]
    return [fdp.ConsumeIntInRange(0, 4), fdp.ConsumeIntInRange(0, 4)]


def dumps(obj) -> str:
    text = json.dumps(obj)
    while "\\u0000DEEP" in text:
        i = text.index('"\\u0000DEEP')
        j = text.index('\\u0000"', i + 10)
        n = int(text[i + 11: j])
        text = text[:i] + "[" * n + "]" * n + text[j + 7:]
    return text


def _edit_json_text(fdp, text: str) -> str:
    """One edit of a JSON object given as text: set or drop a key, or replace the whole value."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return text
    choice = fdp.ConsumeIntInRange(0, 3)
    if isinstance(obj, dict) and obj and choice <= 1:
        key = sorted(obj)[fdp.ConsumeIntInRange(0, len(obj) - 1)]
        if choice == 0:
            del obj[key]
        else:
            obj[key] = fuzz_value(fdp)
    elif choice == 2 and isinstance(obj, dict):
        obj[fdp.ConsumeUnicodeNoSurrogates(8)] = fuzz_value(fdp)
    else:
        obj = fuzz_value(fdp)
    return dumps(obj)


def structured(fdp: atheris.FuzzedDataProvider) -> bytes:
    blob = SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)]
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8: 8 + n])
    data = bytearray(blob[8 + n:])
    prefix, tail, cut, digests_fixed = None, b"", None, False
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        op = fdp.ConsumeIntInRange(0, 11)
        names = sorted(k for k in header if k != "__metadata__")
        meta = header.setdefault("__metadata__", {}) if isinstance(header.get("__metadata__", {}), dict) else {}
        if op == 0:
            prefix = INTS[fdp.ConsumeIntInRange(0, len(INTS) - 1)] if fdp.ConsumeBool() else fdp.ConsumeInt(8)
        elif op in (1, 2) and names:
            entry = header[names[fdp.ConsumeIntInRange(0, len(names) - 1)]]
            field = ["dtype", "shape", "data_offsets"][fdp.ConsumeIntInRange(0, 2)]
            if isinstance(entry, dict):
                if op == 1 or field == "dtype":
                    entry[field] = fuzz_value(fdp)
                elif isinstance(entry.get(field), list) and entry[field]:
                    entry[field][fdp.ConsumeIntInRange(0, len(entry[field]) - 1)] = INTS[
                        fdp.ConsumeIntInRange(0, len(INTS) - 1)]
        elif op == 3 and names:
            del header[names[fdp.ConsumeIntInRange(0, len(names) - 1)]]
        elif op == 4:
            header[fdp.ConsumeUnicodeNoSurrogates(8)] = fuzz_value(fdp) if fdp.ConsumeBool() else {
                "dtype": fuzz_value(fdp), "shape": fuzz_value(fdp), "data_offsets": fuzz_value(fdp)}
        elif op == 5:
            key = ["format", "format_version", "meta", "sha256", fdp.ConsumeUnicodeNoSurrogates(5)][
                fdp.ConsumeIntInRange(0, 4)]
            if fdp.ConsumeBool():
                meta.pop(key, None)
            else:
                meta[key] = fuzz_value(fdp)
        elif op in (6, 7) and isinstance(meta.get("meta"), str):
            meta["meta"] = _edit_json_text(fdp, meta["meta"])
        elif op == 8 and isinstance(meta.get("sha256"), str):
            meta["sha256"] = _edit_json_text(fdp, meta["sha256"])
        elif op == 9:
            cut = fdp.ConsumeIntInRange(0, len(blob) + 64)
        elif op == 10:
            tail = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
        elif op == 11 and data:
            i = fdp.ConsumeIntInRange(0, len(data) - 1)
            data[i] = fdp.ConsumeIntInRange(0, 255)
            digests_fixed = fdp.ConsumeBool()
        if fdp.ConsumeProbability() < 0.03:
            header["__metadata__"] = fuzz_value(fdp)
    if digests_fixed and isinstance(header.get("__metadata__"), dict):
        _fix_digests(header, data)
    text = dumps(header).encode()
    text += b" " * (-len(text) % 8)
    out = (prefix if prefix is not None else len(text)).to_bytes(8, "little", signed=prefix is not None and prefix < 0
                                                                  ) if prefix is None or -(2**63) <= prefix < 2**64 \
        else b"\xff" * 8
    out = out + text + bytes(data) + tail
    return out[:cut] if cut is not None else out


def _fix_digests(header, data: bytearray) -> None:
    digests = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        try:
            b, e_ = e["data_offsets"]
            digests[name] = hashlib.sha256(bytes(data[b:e_])).hexdigest()
        except (TypeError, ValueError, KeyError):
            return
    header["__metadata__"]["sha256"] = json.dumps(digests, sort_keys=True)


def make_file(data: bytes) -> bytes:
    if not data:
        return b""
    if data[0] % 2 == 0:
        return data[1:]
    return structured(atheris.FuzzedDataProvider(data[1:]))


def check_bank(data: bytes) -> None:
    blob = make_file(data)
    _path.write_bytes(blob)
    t0 = time.perf_counter()
    stage = "load_bank"
    try:
        load_bank(_path)
        stage = "HETMM.load"
        det = hf.HETMM.load(_path, progress=False)
        stage = "predict"
        scores = det.predict(_query).scores
        if not torch.isfinite(scores).all():
            record("nonfinite", blob, f"predict gave {scores}", "nonfinite")
    except BankError:
        pass
    except Exception as exc:  # noqa: BLE001 - every other type is the finding
        record(f"exception-{stage}", blob, traceback.format_exc(), f"{stage}:{signature(exc)}")
    took = time.perf_counter() - t0
    if took > SLOW_S:
        record("slow", blob, f"{stage} took {took:.2f} s", f"slow@{stage}")


def main() -> None:
    atheris.Setup(sys.argv, check_bank)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
