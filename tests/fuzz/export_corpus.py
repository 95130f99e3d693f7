"""Pick a small regression corpus out of a fuzz run: for each distinct outcome of the reader (a BankError or
ValueError message with its numbers and paths blanked, or a success) the smallest file that gives it, plus every
finding and libFuzzer artifact, each at most ``--max-bytes``.

    python tests/fuzz/export_corpus.py bank /tmp/fuzz_bank tests/fuzz/corpus/bank
    python tests/fuzz/export_corpus.py image /tmp/fuzz_image tests/fuzz/corpus/image

Files are written as the reader reads them (a bank input of fuzz_bank.py is first turned into its file), named
``<outcome>-<sha1 prefix>`` with a format extension where one is known (banks: ``.bank``). Prints one JSON line per outcome kept.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))


def _outcome(kind: str, path: Path) -> str:
    if kind == "bank":
        from hetmm_fast.bank import BankError, load_bank

        try:
            load_bank(path)
            return "ok"
        except BankError as exc:
            msg = str(exc).replace(str(path), "")
    else:
        from hetmm_fast.data.images import read_image

        try:
            read_image(path)
            return "ok"
        except ValueError as exc:
            msg = str(exc).replace(str(path), "")
    if kind == "bank":
        msg = msg.replace("(corrupt, truncated or not safetensors)", "")
    else:
        msg = re.sub(r"\(.*", "", msg)  # the decoder's own wording varies with the bytes
    msg = re.sub(r"'[^']*'|\"[^\"]*\"|\[[^\]]*\]|-?\d+(\.\d+)?", "#", msg)
    return re.sub(r"[^a-z#]+", "-", msg.lower()).strip("-")[:60]


def _classify(args):
    kind, data = args
    prefix = "" if kind == "bank" else _extension(data)[1:] + "-"  # the same message from another decoder counts
    with tempfile.NamedTemporaryFile(dir="/dev/shm") as f:
        f.write(data)
        f.flush()
        try:
            return prefix + _outcome(kind, Path(f.name))
        except Exception as exc:  # noqa: BLE001 - outside the contract: keep it, it is a finding
            return f"finding-{type(exc).__name__}"


def _extension(data: bytes) -> str:
    from PIL import Image
    import io

    try:
        with Image.open(io.BytesIO(data)) as im:
            return "." + (im.format or "bin").lower()
    except Exception:  # noqa: BLE001 - any unreadable input simply has no known format
        return ".bin"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["bank", "image"])
    ap.add_argument("work", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--max-bytes", type=int, default=16384)
    ap.add_argument("--seeds", type=Path, help="also keep every file of this folder (the valid seeds), as seed-<name>")
    args = ap.parse_args()
    def files(d):
        return [p.read_bytes() for p in sorted((args.work / d).iterdir()) if p.suffix != ".txt"]

    # corpus/ and artifacts/ hold fuzzer inputs, findings/ the files the reader was given
    inputs, artifacts, forced = files("corpus"), files("artifacts"), files("findings")
    if args.kind == "bank":
        from fuzz_bank import make_file

        inputs, artifacts = [make_file(b) for b in inputs], [make_file(b) for b in artifacts]
    forced += artifacts
    inputs = [b for b in inputs if len(b) <= args.max_bytes]
    with mp.get_context("spawn").Pool(1, maxtasksperchild=500) as pool:  # a bad input cannot take the exporter down
        outcomes = pool.map(_classify, [(args.kind, b) for b in inputs], chunksize=20)
    best: dict[str, bytes] = {}
    for data, outcome in zip(inputs, outcomes):
        if outcome not in best or len(data) < len(best[outcome]):
            best[outcome] = data
    for i, data in enumerate(forced):
        best[f"finding{i}"] = data
    args.out.mkdir(parents=True, exist_ok=True)
    for p in sorted(args.seeds.iterdir()) if args.seeds else []:
        data = p.read_bytes()
        if args.kind == "bank" and data[:1] != b"\x00":
            continue  # an input of fuzz_bank.py's structured mode, not a file
        name = f"seed-{p.stem}.bank" if args.kind == "bank" else f"seed-{p.name}"  # *.hetmm is git-ignored
        (args.out / name).write_bytes(data[1:] if args.kind == "bank" else data)
    for outcome, data in sorted(best.items()):
        ext = ".bank" if args.kind == "bank" else _extension(data)
        name = f"{outcome}-{hashlib.sha1(data).hexdigest()[:10]}{ext}"
        (args.out / name).write_bytes(data)
        print(json.dumps({"outcome": outcome, "file": name, "bytes": len(data)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
