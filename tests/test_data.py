"""Image reading, batching and the MVTec layout (hetmm_fast.data.images, hetmm_fast.data.mvtec)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hetmm_fast.data.images import (
    IMAGE_EXTENSIONS,
    iter_image_batches,
    list_images,
    read_image,
    to_tensor_batch,
)
from hetmm_fast.data.mvtec import MVTecCategory, TestItem, list_categories
from hetmm_fast.testing import reduction_tol, unit_roundoff

# testing.py rule 1 for a bilinear sample: a convex blend of 4 values in [0, 1] in float32, plus the rounding of its
# 4 weights and of the value / 255 conversion.
BILINEAR_TOL = reduction_tol(4) + 5 * unit_roundoff(torch.float32)

REAL_DATA = Path(os.environ.get("HETMM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _block_mean(x: np.ndarray, f: int) -> np.ndarray:
    """Mean over f x f blocks of ``[H, W, C]``: what bilinear (align_corners=False) gives for a 2x downscale."""
    h, w = x.shape[0] // f, x.shape[1] // f
    return x[: h * f, : w * f].reshape(h, f, w, f, -1).mean(axis=(1, 3))


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "imgs"
    d.mkdir()
    for i, name in enumerate(["b.png", "a.PNG", "c.jpg"]):
        Image.fromarray(_rgb(12, 16, i)).save(d / name)
    (d / "notes.txt").write_text("not an image")
    (d / ".hidden.png").write_bytes(b"")
    (d / "sub").mkdir()
    Image.fromarray(_rgb(8, 8)).save(d / "sub" / "deep.png")
    return d


# --------------------------------------------------------------------------------------------- list_images


def test_list_images_sorted_flat_and_filtered(folder: Path) -> None:
    assert [p.name for p in list_images(folder)] == ["a.PNG", "b.png", "c.jpg"]


def test_list_images_errors(tmp_path: Path, folder: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(tmp_path / "nope")
    with pytest.raises(NotADirectoryError):
        list_images(folder / "b.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.txt").write_text("")
    with pytest.raises(FileNotFoundError, match="no image file"):
        list_images(empty)


def test_extensions_cover_common_formats() -> None:
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"} <= set(IMAGE_EXTENSIONS)


# --------------------------------------------------------------------------------------------- read_image


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "1", "LA", "RGB"])
def test_read_image_modes_become_rgb_uint8(tmp_path: Path, mode: str) -> None:
    rgb = _rgb(9, 7)
    image = Image.fromarray(rgb).convert(mode)
    path = tmp_path / f"x_{mode}.png"
    image.save(path)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (9, 7, 3)
    assert np.array_equal(out, np.asarray(image.convert("RGB")))
    if mode in ("L", "LA", "1"):
        assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    if mode == "RGBA":
        assert np.array_equal(out, rgb)


def test_read_image_16bit_is_scaled(tmp_path: Path) -> None:
    values = np.array([[0, 257 * 100], [65535, 257 * 7]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    out = read_image(path)
    assert out.shape == (2, 2, 3)
    assert out[..., 0].tolist() == [[0, 100], [255, 7]]


def test_read_image_float_tiff(tmp_path: Path) -> None:
    values = np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32)
    path = tmp_path / "f.tif"
    Image.fromarray(values).save(path)
    assert read_image(path)[..., 1].tolist() == [[0, 128], [255, 64]]


def test_read_image_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.png"
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(missing)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not a png at all" * 10)
    with pytest.raises(ValueError, match="garbage.png"):
        read_image(garbage)
    good = tmp_path / "good.png"
    Image.fromarray(_rgb(64, 64)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ValueError, match="truncated.png"):
        read_image(truncated)
    with pytest.raises(ValueError, match="folder"):
        read_image(tmp_path)


# --------------------------------------------------------------------------------------------- to_tensor_batch


def test_folder_input_names_and_values(folder: Path) -> None:
    batch, names = to_tensor_batch(folder, 16)
    assert names == ["a", "b", "c"]
    assert batch.shape == (3, 3, 16, 16) and batch.dtype == torch.float32
    assert float(batch.min()) >= 0.0 and float(batch.max()) <= 1.0
    # a.PNG was written from seed 1 and b.png from seed 0, at 12 x 16: height is stretched, width is kept.
    single, single_names = to_tensor_batch(folder / "b.png", 16)
    assert single_names == ["b"]
    assert torch.equal(single[0], batch[1])


def test_all_input_kinds_agree(folder: Path) -> None:
    path = folder / "b.png"
    arr = read_image(path)
    expected, _ = to_tensor_batch(path, 10)
    variants = [
        [path],
        [str(path)],
        Image.open(path),
        [Image.open(path)],
        arr,
        [arr],
        torch.from_numpy(arr).permute(2, 0, 1),
        torch.from_numpy(arr).permute(2, 0, 1)[None],
        torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0,
        [torch.from_numpy(arr).permute(2, 0, 1)],
        arr.astype(np.float32) / 255.0,
    ]
    for v in variants:
        got, names = to_tensor_batch(v, 10)
        assert got.shape == (1, 3, 10, 10)
        torch.testing.assert_close(got, expected, atol=BILINEAR_TOL, rtol=0)
        assert len(names) == 1


def test_same_size_is_exact_and_synthetic_names() -> None:
    arr = _rgb(5, 5)
    batch, names = to_tensor_batch([arr, arr[::-1].copy()], 5)
    assert names == ["image_000", "image_001"]
    assert torch.equal(batch[0], torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0)


def test_resize_is_plain_bilinear_without_antialias() -> None:
    # A 2x bilinear downscale with align_corners=False samples between pixel pairs: the 2x2 block mean.
    arr = _rgb(8, 8)
    batch, _ = to_tensor_batch(arr, 4)
    expected = _block_mean(arr.astype(np.float64) / 255.0, 2)
    np.testing.assert_allclose(batch[0].permute(1, 2, 0).numpy(), expected, atol=BILINEAR_TOL)
    # A 4x downscale without antialias still reads only 2 of every 4 rows: not the 4x4 block mean.
    big = _rgb(16, 16, 3)
    quarter, _ = to_tensor_batch(big, 4)
    rows = (big.astype(np.float64) / 255.0)[1::4][:, 1::4] * 0.25
    rows += (big.astype(np.float64) / 255.0)[2::4][:, 1::4] * 0.25
    rows += (big.astype(np.float64) / 255.0)[1::4][:, 2::4] * 0.25
    rows += (big.astype(np.float64) / 255.0)[2::4][:, 2::4] * 0.25
    np.testing.assert_allclose(quarter[0].permute(1, 2, 0).numpy(), rows, atol=BILINEAR_TOL)


def test_non_square_is_squashed_not_cropped() -> None:
    arr = _rgb(4, 8)
    batch, _ = to_tensor_batch(arr, 4)
    expected = arr.astype(np.float64).reshape(4, 4, 2, 3).mean(axis=2) / 255.0
    np.testing.assert_allclose(batch[0].permute(1, 2, 0).numpy(), expected, atol=BILINEAR_TOL)


def test_gray_inputs_are_repeated() -> None:
    gray = np.random.default_rng(0).integers(0, 256, (6, 6), dtype=np.uint8)
    for v in (gray, gray[..., None], torch.from_numpy(gray)[None, None]):
        batch, _ = to_tensor_batch(v, 6)
        assert batch.shape == (1, 3, 6, 6)
        assert torch.equal(batch[0, 0], torch.from_numpy(gray).float() / 255.0)
        assert torch.equal(batch[0, 0], batch[0, 2])


def test_float_slack_is_clamped() -> None:
    t = torch.full((1, 3, 4, 4), 1.0005)
    t[..., 0, 0] = -0.0005
    batch, _ = to_tensor_batch(t, 4)
    assert float(batch.max()) == 1.0 and float(batch.min()) == 0.0


@pytest.mark.parametrize(
    "bad, exc, pattern",
    [
        (np.full((4, 4, 3), 200.0), ValueError, "range"),  # float64 0..255
        (np.zeros((4, 4, 5), dtype=np.uint8), ValueError, "shape"),
        (np.zeros((4, 4, 4), dtype=np.uint8), ValueError, "RGBA"),
        (np.zeros((4, 4, 3), dtype=np.uint16), TypeError, "uint16"),
        (np.zeros((4, 4, 3), dtype=bool), TypeError, "bool"),
        (np.zeros((0, 4, 3), dtype=np.uint8), ValueError, "empty"),
        (np.zeros((2, 4, 4, 3), dtype=np.uint8), ValueError, "shape"),
        (torch.full((1, 3, 4, 4), 1.01), ValueError, "range"),
        (torch.full((1, 3, 4, 4), -0.5), ValueError, "normalised"),
        (torch.full((1, 3, 4, 4), float("nan")), ValueError, "NaN"),
        (torch.zeros((1, 4, 4, 4)), ValueError, "shape"),
        (torch.zeros((4, 4, 3)), ValueError, "channels first"),
        (torch.zeros((1, 3, 4, 4), dtype=torch.int32), TypeError, "int32"),
        (torch.zeros((0, 3, 4, 4)), ValueError, "empty"),
        ([], ValueError, "empty list"),
        ([np.zeros((4, 4, 3), np.uint8), torch.zeros(3, 4, 4)], TypeError, "mix"),
        ([np.zeros((4, 4, 3), np.uint8), 5], TypeError, "mix"),
        ([1, 2], TypeError, "unsupported"),
        (12, TypeError, "int"),
        ({"a": 1}, TypeError, "dict"),
        ([torch.zeros(1, 3, 4, 4)], ValueError, r"\[3, H, W\]"),
    ],
)
def test_bad_inputs_raise_named_errors(bad, exc, pattern) -> None:
    with pytest.raises(exc, match=pattern) as info:
        to_tensor_batch(bad, 8)
    assert "to_tensor_batch" in str(info.value)


def test_bad_size_and_missing_path(tmp_path: Path) -> None:
    for size in (0, -3, 2.5, True, "256"):
        with pytest.raises(ValueError, match="size"):
            to_tensor_batch(_rgb(4, 4), size)
    with pytest.raises(FileNotFoundError, match="nope"):
        to_tensor_batch(tmp_path / "nope", 8)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        to_tensor_batch([tmp_path / "nope.png"], 8)


# --------------------------------------------------------------------------------------------- iter_image_batches


def test_iter_image_batches_streams_the_same_values(tmp_path: Path) -> None:
    d = tmp_path / "many"
    d.mkdir()
    for i in range(5):
        Image.fromarray(_rgb(10, 10, i)).save(d / f"{i:02d}.png")
    whole, names = to_tensor_batch(d, 8)
    parts = list(iter_image_batches(d, 8, 2))
    assert [t.shape[0] for t, _ in parts] == [2, 2, 1]
    assert sum((n for _, n in parts), []) == names
    assert torch.equal(torch.cat([t for t, _ in parts]), whole)
    listed = list(iter_image_batches(list_images(d)[:3], 8, 10))
    assert len(listed) == 1 and listed[0][1] == ["00", "01", "02"]


def test_iter_image_batches_threads_prefetch_and_errors(tmp_path: Path, monkeypatch) -> None:
    d = tmp_path / "many"
    d.mkdir()
    for i in range(7):
        Image.fromarray(_rgb(9 + i, 11, i)).save(d / f"{i:02d}.png")
    (d / "07.png").write_bytes(b"not a png")  # in the third batch
    monkeypatch.setenv("HETMM_READ_THREADS", "1")
    it = iter_image_batches(d, 8, 3)
    sequential = [next(it), next(it)]
    for threads in ("4", ""):  # explicit and automatic thread counts
        monkeypatch.setenv("HETMM_READ_THREADS", threads)
        it = iter_image_batches(d, 8, 3)
        for want in sequential:  # batches 1 and 2 come out whole even though batch 3 holds a broken file
            got = next(it)
            assert got[1] == want[1] and torch.equal(got[0], want[0])
        with pytest.raises(ValueError, match="07.png"):
            next(it)
    early = iter_image_batches(d, 8, 3)
    next(early)
    early.close()  # stopping early drops the prefetched batch without error
    for bad in ("0", "x"):
        monkeypatch.setenv("HETMM_READ_THREADS", bad)
        with pytest.raises(ValueError, match="HETMM_READ_THREADS"):
            next(iter_image_batches(d, 8, 3))


def test_iter_image_batches_checks_arguments_eagerly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        iter_image_batches([tmp_path / "a.png"], 8, 0)
    with pytest.raises(ValueError, match="empty"):
        iter_image_batches([], 8, 2)
    with pytest.raises(FileNotFoundError):
        iter_image_batches(tmp_path / "nope", 8, 2)
    with pytest.raises(TypeError, match="str or os.PathLike"):
        iter_image_batches([np.zeros((2, 2, 3))], 8, 2)


# --------------------------------------------------------------------------------------------- MVTec layout


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture()
def mvtec_root(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    cat = root / "widget"
    for i in range(3):
        _write(cat / "train" / "good" / f"{i:03d}.png", _rgb(8, 8, i))
    for i in range(2):
        _write(cat / "test" / "good" / f"{i:03d}.png", _rgb(8, 8, 10 + i))
        _write(cat / "test" / "scratch" / f"{i:03d}.png", _rgb(8, 8, 20 + i))
    _write(cat / "test" / "bent" / "000.png", _rgb(8, 8, 30))
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[2:6, 4:8] = 255
    _write(cat / "ground_truth" / "scratch" / "000_mask.png", mask)
    _write(cat / "ground_truth" / "bent" / "000_mask.png", mask.T.copy())
    (root / "not_a_category").mkdir()
    (root / "other" / "train" / "good").mkdir(parents=True)
    return root


def test_list_categories(mvtec_root: Path, tmp_path: Path) -> None:
    assert list_categories(mvtec_root) == ["other", "widget"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_categories(tmp_path / "nope")


def test_category_contents(mvtec_root: Path) -> None:
    cat = MVTecCategory(mvtec_root, "widget")
    assert cat.name == "widget" and cat.root == mvtec_root / "widget"
    assert [p.name for p in cat.train_paths] == ["000.png", "001.png", "002.png"]
    assert cat.defect_types == ["bent", "scratch"]
    assert [(it.defect, it.path.name, it.label) for it in cat.test_items] == [
        ("bent", "000.png", 1),
        ("good", "000.png", 0),
        ("good", "001.png", 0),
        ("scratch", "000.png", 1),
        ("scratch", "001.png", 1),
    ]
    assert cat.labels == [1, 0, 0, 1, 1]
    by_name = {(it.defect, it.path.stem): it for it in cat.test_items}
    assert by_name[("scratch", "000")].mask_path == mvtec_root / "widget/ground_truth/scratch/000_mask.png"
    assert by_name[("scratch", "001")].mask_path is None
    assert by_name[("good", "000")].mask_path is None
    assert "widget" in repr(cat)


def test_load_mask(mvtec_root: Path) -> None:
    cat = MVTecCategory(mvtec_root, "widget")
    by_name = {(it.defect, it.path.stem): it for it in cat.test_items}
    full = cat.load_mask(by_name[("scratch", "000")], 8)
    assert full.dtype == torch.bool and full.shape == (8, 8)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:6, 4:8] = True
    assert torch.equal(full, expected)
    # Half size: bilinear = 2x2 block means, then > 0.5. Block rows 1..2 (pixels 2..5), cols 2..3 (pixels 4..7).
    half = cat.load_mask(by_name[("scratch", "000")], 4)
    assert torch.equal(half, torch.from_numpy(_block_mean(expected.numpy()[..., None].astype(float), 2)[..., 0] > 0.5))
    assert int(half.sum()) == 4
    assert torch.equal(cat.load_mask(by_name[("bent", "000")], 8), expected.T)
    assert not cat.load_mask(by_name[("good", "000")], 8).any()
    with pytest.warns(UserWarning, match="no mask file"):
        empty = cat.load_mask(by_name[("scratch", "001")], 8)
    assert not empty.any()
    masks = cat.load_masks(4, [by_name[("scratch", "000")], by_name[("good", "001")]])
    assert masks.shape == (2, 4, 4) and torch.equal(masks[0], half) and not masks[1].any()
    with pytest.raises(ValueError, match="size"):
        cat.load_mask(by_name[("scratch", "000")], 0)


def test_corrupt_mask_is_named(mvtec_root: Path) -> None:
    (mvtec_root / "widget/ground_truth/scratch/000_mask.png").write_bytes(b"broken")
    cat = MVTecCategory(mvtec_root, "widget")
    item = next(it for it in cat.test_items if it.defect == "scratch")
    with pytest.raises(ValueError, match="000_mask.png"):
        cat.load_mask(item, 8)


def test_layout_errors_list_what_is_missing(mvtec_root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"'nope' not found.*\['other', 'widget'\]"):
        MVTecCategory(mvtec_root, "nope")
    with pytest.raises(FileNotFoundError, match="dataset root"):
        MVTecCategory(tmp_path / "missing_root", "widget")
    # "other" has an empty train/good and no test folder: both are reported at once.
    with pytest.raises(FileNotFoundError) as info:
        MVTecCategory(mvtec_root, "other")
    message = str(info.value)
    assert "images in" in message and "train" in message and "test" in message
    with pytest.raises(ValueError, match="folder name"):
        MVTecCategory(mvtec_root, "widget/train")


def test_test_item_is_frozen() -> None:
    item = TestItem(Path("a.png"), 0, "good", None)
    with pytest.raises(AttributeError):
        item.label = 1  # type: ignore[misc]


# --------------------------------------------------------------------------------------------- real data

# Counts from ../shared/data/README.md: (train good, test good, defect folders and their test totals).
_REAL = {
    "magnetic_tile": (800, 152, {"blowhole", "break", "crack", "fray", "uneven"}, 392),
    "kolektorsdd": (300, 47, {"defect"}, 52),
    "deeppcb": (1000, 500, {"defect"}, 500),
    "battery_weld": (37, 35, {"defective"}, 93),
}


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"real data not found at {REAL_DATA}")
@pytest.mark.parametrize("name", sorted(_REAL))
def test_real_categories_load(name: str) -> None:
    if not (REAL_DATA / name).is_dir():
        pytest.skip(f"{name} absent")
    n_train, n_good, defects, n_defect = _REAL[name]
    cat = MVTecCategory(REAL_DATA, name)
    assert name in list_categories(REAL_DATA)
    assert len(cat.train_paths) == n_train
    assert set(cat.defect_types) == defects
    assert sum(1 for it in cat.test_items if it.label == 0) == n_good
    defect_items = [it for it in cat.test_items if it.label == 1]
    assert len(defect_items) == n_defect
    assert all(it.mask_path is not None for it in defect_items)
    # Masks of a spread of defect images: bool 256 x 256 and (apart from the known empty "uneven" ones) not empty.
    for it in defect_items[:: max(1, len(defect_items) // 12)]:
        mask = cat.load_mask(it, 256)
        assert mask.shape == (256, 256) and mask.dtype == torch.bool
        if it.defect != "uneven":
            assert mask.any(), it.mask_path
    batch, names = to_tensor_batch(cat.train_paths[:2], 64)
    assert batch.shape == (2, 3, 64, 64) and names == [p.stem for p in cat.train_paths[:2]]


@pytest.mark.skipif(not (REAL_DATA / "magnetic_tile").is_dir(), reason="magnetic_tile not found")
def test_real_magnetic_tile_has_empty_uneven_masks() -> None:
    cat = MVTecCategory(REAL_DATA, "magnetic_tile")
    uneven = [it for it in cat.test_items if it.defect == "uneven"]
    # Find the empty mask files cheaply, then check load_mask on them and on a few others.
    blank = []
    for it in uneven:
        with Image.open(it.mask_path) as im:
            if im.getbbox() is None:
                blank.append(it)
    assert len(blank) == 4
    assert not any(cat.load_mask(it, 256).any() for it in blank)
    others = [it for it in uneven if it not in blank][:3]
    assert all(cat.load_mask(it, 256).any() for it in others)
