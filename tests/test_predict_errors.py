"""Bad files in a batch job: the reader's per-item errors, HETMM.predict_iter, and ``hetmm-fast predict``."""
import csv
import inspect
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hetmm_fast as hf
from hetmm_fast.cli import main
from hetmm_fast.data import images as images_mod
from hetmm_fast.data.images import iter_image_batches, list_images, read_image

S = 64
GOOD = ("good_0.png", "good_1.png", "good_2.png")
DEEP, CMYK, PALETTE = "deep16.png", "cmyk.jpg", "palette.png"
# Names sort so that corrupt.png is the first unreadable file of the folder.
BAD = {  # file -> a phrase of its reason
    "corrupt.png": "not a readable image",
    "empty.png": "empty file (0 bytes)",
    "huge.png": "too large",
    "truncated.jpg": "cannot be decoded",
    "truncated.png": "cannot be decoded",
}


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels, with no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from hetmm_fast.data.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("data"), seed=2, categories=("wood",), n_train=4, n_test_good=2,
                        n_test_defect=4, size=S, progress=False)


@pytest.fixture(scope="module")
def bank(dataset, tmp_path_factory):
    path = tmp_path_factory.mktemp("bank") / "wood.hetmm"
    assert main(["fit", str(dataset / "wood/train/good"), "--out", str(path), "--image-size", str(S), "--quiet"]) == 0
    return path


@pytest.fixture(scope="module")
def folders(dataset, tmp_path_factory):
    """``(mixed, converted)``: a folder of good, unusual-but-valid and bad files; and the good and valid ones
    converted to 8-bit RGB PNGs first, under the same stems."""
    mixed, conv = tmp_path_factory.mktemp("mixed"), tmp_path_factory.mktemp("converted")
    tests = [p for p in sorted((dataset / "wood/test").rglob("*.png")) if "ground_truth" not in p.parts]
    sources = [read_image(p) for p in tests]
    for name, rgb in zip(GOOD, sources):
        Image.fromarray(rgb).save(mixed / name)
        Image.fromarray(rgb).save(conv / name)
    gray = sources[3].astype(np.uint32).sum(axis=2) * 257 // 3  # 16-bit gray using the whole range
    Image.fromarray(gray.astype(np.uint16)).save(mixed / DEEP)
    assert Image.open(mixed / DEEP).mode.startswith("I")
    eight = np.rint(gray / 257.0).astype(np.uint8)
    Image.fromarray(np.repeat(eight[:, :, None], 3, axis=2)).save(conv / DEEP)
    Image.fromarray(sources[4]).convert("CMYK").save(mixed / CMYK, quality=95)
    Image.open(mixed / CMYK).convert("RGB").save(conv / "cmyk.png")
    Image.fromarray(sources[5]).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(mixed / PALETTE)
    Image.open(mixed / PALETTE).convert("RGB").save(conv / PALETTE)
    assert Image.open(mixed / PALETTE).mode == "P" and Image.open(mixed / CMYK).mode == "CMYK"

    (mixed / "corrupt.png").write_bytes(b"\x00\x01 not an image at all " * 20)
    (mixed / "empty.png").write_bytes(b"")
    (mixed / "huge.png").write_bytes(png_header(100_000, 100_000))
    (mixed / "truncated.png").write_bytes((mixed / GOOD[0]).read_bytes()[:200])
    Image.fromarray(sources[0]).save(mixed / "whole.jpg", quality=90)
    data = (mixed / "whole.jpg").read_bytes()
    (mixed / "whole.jpg").unlink()
    (mixed / "truncated.jpg").write_bytes(data[: len(data) // 2])
    return mixed, conv


def valid_names(mixed: Path) -> list[str]:
    return [p.name for p in list_images(mixed) if p.name not in BAD]


def converted_paths(mixed: Path, conv: Path) -> list[Path]:
    return [conv / ("cmyk.png" if n == CMYK else n) for n in valid_names(mixed)]


# --------------------------------------------------------------------------------------------- reader


def test_read_image_refuses_sizes_before_decoding(tmp_path, monkeypatch):
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_header(100_000, 100_000))
    with pytest.raises(ValueError, match=r"huge\.png' is too large to decode.*10000000000 pixels"):
        read_image(huge)
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(small)

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # Pillow's own limit off: ours refuses
    with pytest.raises(ValueError, match=r"huge\.png' is 100000x100000 = 10000000000 pixels, over the limit"):
        read_image(huge)
    monkeypatch.setenv("HETMM_MAX_IMAGE_PIXELS", "1999")
    with pytest.raises(ValueError, match=r"small\.png' is 50x40 = 2000 pixels, over the limit of 1999"):
        read_image(small)
    with pytest.raises(ValueError, match="over the limit of 1999"):
        next(iter_image_batches([small], 8, 1))
    monkeypatch.setenv("HETMM_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="HETMM_MAX_IMAGE_PIXELS must be an int"):
        iter_image_batches([small], 8, 1)  # checked when called, not per file


def test_read_image_bomb_warning_as_error_and_zero_size(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(png_header(10_000, 10_000))  # above Pillow's warning threshold, below its error threshold
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ValueError, match=r"big\.png' is too large to decode.*100000000 pixels"):
            read_image(big)
    flat = tmp_path / "flat.png"
    flat.write_bytes(png_header(0, 5))
    with pytest.raises(ValueError, match=r"flat\.png' is not a readable image"):
        read_image(flat)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.jpg' is an empty file"):
        read_image(empty)


@pytest.mark.parametrize("threads", ["1", "3"])
def test_iter_image_batches_collects_errors_in_order(folders, monkeypatch, threads):
    monkeypatch.setenv("HETMM_READ_THREADS", threads)
    mixed, _ = folders
    paths = list_images(mixed)
    got = list(iter_image_batches(mixed, 16, 4, on_error="collect"))
    assert [len(names) for _, names, _ in got] == [4, 4, 3]
    assert sum((names for _, names, _ in got), []) == [p.stem for p in paths]
    batch = torch.cat([b for b, _, _ in got])
    errors = sum((e for _, _, e in got), [])
    for path, row, error in zip(paths, batch, errors):
        if path.name in BAD:
            assert isinstance(error, ValueError) and path.name in str(error) and BAD[path.name] in str(error)
            assert torch.isnan(row).all()
        else:
            assert error is None
            assert torch.equal(row, iter_image_batches([path], 16, 1).__next__()[0][0])
    with pytest.raises(ValueError, match="corrupt.png"):  # the default still raises, at the file's batch
        list(iter_image_batches(mixed, 16, 4))
    with pytest.raises(ValueError, match="on_error"):
        iter_image_batches(mixed, 16, 4, on_error="skip")


# --------------------------------------------------------------------------------------------- library


def test_predict_iter_equals_predict_and_handles_bad_files(bank, folders, caplog):
    mixed, conv = folders
    det = hf.HETMM.load(bank, batch_size=1, progress=False)
    good = [mixed / n for n in valid_names(mixed)]
    want = det.predict(good)
    # The same batches give the same bits: 3 per batch on both sides here.
    it = det.predict_iter(good, batch_size=3)
    assert inspect.isgenerator(it)
    det.batch_size = 3
    want3 = det.predict(good)
    det.batch_size = 1
    results = list(it)
    assert [r.index for r in results] == list(range(len(good))) and [r.path for r in results] == good
    assert [r.name for r in results] == want3.names
    assert torch.equal(torch.tensor([r.score for r in results]), want3.scores)
    for key, attr in (("maps", "map"), ("pro_maps", "pro_map"), ("raw", "raw")):
        assert torch.equal(torch.stack([getattr(r, attr) for r in results]), getattr(want3, key))

    # Bad files: collected in place, skipped, or raised after the results before them; neighbours are kept.
    collected = list(det.predict_iter(mixed, on_error="collect"))
    assert [r.path.name for r in collected] == [p.name for p in list_images(mixed)]
    ok = [r for r in collected if r.error is None]
    assert [r.path for r in ok] == good
    for r in collected:
        if r.error is not None:
            assert r.score is None and r.map is None and BAD[r.path.name] in str(r.error)
    assert torch.equal(torch.tensor([r.score for r in ok]), want.scores)
    assert torch.equal(torch.stack([r.map for r in ok]), want.maps)
    assert torch.equal(torch.stack([r.raw for r in ok]), want.raw)
    with caplog.at_level("WARNING", logger="hetmm_fast"):
        skipped = list(det.predict_iter(mixed, batch_size=4, on_error="skip"))
    assert [r.path for r in skipped] == good
    assert all(name in caplog.text for name in BAD)
    assert torch.allclose(torch.tensor([r.score for r in skipped]), want.scores, rtol=1e-5, atol=1e-6)
    raising = det.predict_iter(mixed, batch_size=4)
    assert next(raising).path.name == CMYK  # corrupt.png is second in its batch: cmyk.jpg still comes out
    with pytest.raises(ValueError, match=r"corrupt\.png' is not a readable image"):
        next(raising)
    with pytest.raises(ValueError, match=r"corrupt\.png"):
        det.predict(mixed)

    # Unusual but valid files score as the same image converted to 8-bit RGB first.
    ref = det.predict(converted_paths(mixed, conv))
    assert torch.equal(ref.scores, want.scores) and torch.equal(ref.maps, want.maps)

    memory = det.predict(want3.maps.new_zeros(2, 3, S, S) + 0.5)
    streamed = list(det.predict_iter(want3.maps.new_zeros(2, 3, S, S) + 0.5))
    assert [r.name for r in streamed] == memory.names and all(r.path is None for r in streamed)
    assert torch.equal(torch.stack([r.map for r in streamed]), memory.maps)
    with pytest.raises(ValueError, match="on_error"):
        det.predict_iter(good, on_error="ignore")
    with pytest.raises(ValueError, match="batch_size"):
        det.predict_iter(good, batch_size=0)


def test_predict_iter_streams_with_bounded_reads(bank, folders, monkeypatch):
    mixed, conv = folders
    det = hf.HETMM.load(bank, progress=False)
    reads = []
    real = images_mod.read_image

    def counting(path, **kwargs):
        reads.append(Path(path).name)  # list.append is atomic: the reader's threads may call this concurrently
        return real(path, **kwargs)

    monkeypatch.setattr(images_mod, "read_image", counting)
    paths = sorted(conv.glob("*.png")) * 2  # 12 images, batches of 2
    it = det.predict_iter(paths, batch_size=2)
    assert inspect.isgenerator(it) and reads == []
    first = next(it)
    assert first.index == 0 and first.path == paths[0]
    assert len(reads) <= 4  # its batch and at most one batch read ahead
    second = next(it)
    assert second.index == 1 and len(reads) <= 4  # the second image of the same batch comes without reading
    rest = list(it)
    assert [r.index for r in rest] == list(range(2, 12)) and len(reads) == 12


# --------------------------------------------------------------------------------------------- command line


def test_cli_predict_skips_and_lists_bad_files(bank, folders, tmp_path, capsys):
    mixed, conv = folders
    out = tmp_path / "pred"
    code = main(["predict", str(bank), str(mixed), "--out", str(out), "--threshold", "0.1", "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert [Path(r["image"]).name for r in rows] == [p.name for p in list_images(mixed)]
    assert set(rows[0]) == {"image", "score", "verdict", "error"}
    for r in rows:
        name = Path(r["image"]).name
        if name in BAD:
            assert r["score"] == "" and r["verdict"] == "" and name in r["error"] and BAD[name] in r["error"]
            assert f"  read_image: '{r['image']}'" in captured.err
        else:
            assert r["error"] == "" and r["verdict"] in ("normal", "anomalous") and float(r["score"]) >= 0
    n_good = len(valid_names(mixed))
    assert f"scored {n_good} images, skipped {len(BAD)} in" in captured.out
    assert f"skipped {len(BAD)} of {n_good + len(BAD)} images" in captured.err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["scores.csv"] + [Path(n).stem + "_overlay.png" for n in valid_names(mixed)])  # no temporary files left

    # 16-bit, CMYK and palette files score as the same images converted to 8-bit RGB first.
    det = hf.HETMM.load(bank, progress=False)
    ref = det.predict(converted_paths(mixed, conv))
    csv_scores = [float(r["score"]) for r in rows if r["score"]]
    assert np.allclose(csv_scores, ref.scores.numpy(), rtol=0, atol=1.5e-6)


def test_cli_predict_on_error_fail_stops_at_first_bad_file(bank, folders, tmp_path, capsys):
    mixed, _ = folders
    out = tmp_path / "pred"
    code = main(["predict", str(bank), str(mixed), "--out", str(out), "--on-error", "fail", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "hetmm-fast predict: error: read_image:" in err and "corrupt.png' is not a readable image" in err
    assert not (out / "scores.csv").exists() and not list(out.glob("*_overlay.png"))

    good = tmp_path / "good"
    good.mkdir()
    shutil.copy(mixed / GOOD[0], good / GOOD[0])
    assert main(["predict", str(bank), str(good), "--out", str(tmp_path / "p2"), "--quiet"]) == 0
    assert list(csv.DictReader(open(tmp_path / "p2/scores.csv")))[0]["error"] == ""
    assert main(["predict", str(bank), str(tmp_path / "missing.png"), "--out", str(out), "--quiet"]) == 2


def test_tiny_files_claiming_huge_images_are_refused_before_decoding(tmp_path):
    """Fuzzing found files of a few hundred bytes whose headers claim 67-171 M pixels (decoding took up to 46 s
    and 5 GB): refused by the pixels-per-byte bound under the default pixel limit; a flat image over the bound's
    16.8 M pixel floor that really compresses that well (hundreds of pixels per byte) still reads."""
    corpus = Path(__file__).parent / "fuzz" / "corpus" / "image"
    bombs = sorted(corpus.glob("finding[2-6]-*"))
    assert bombs, "fuzz corpus findings missing"
    for path in bombs:
        with pytest.raises(ValueError, match="pixels per byte"):
            read_image(path)
    flat = tmp_path / "flat.png"
    Image.new("L", (4096, 4100), 7).save(flat)
    assert 4096 * 4100 > 2**24 and 4096 * 4100 > 200 * flat.stat().st_size
    assert read_image(flat).shape == (4100, 4096, 3)
