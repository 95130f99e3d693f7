"""The embedded synthetic dataset (hetmm_fast.data.synthetic): layout, determinism, masks, re-runs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hetmm_fast.data.images import list_images, read_image, to_tensor_batch
from hetmm_fast.data.mvtec import MVTecCategory, list_categories
from hetmm_fast.data.synthetic import (
    DEFECT_TYPES,
    GENERATOR_VERSION,
    INFO_FILE,
    SYNTHETIC_CATEGORIES,
    TEXTURE_CATEGORIES,
    main,
    make_dataset,
    render_sample,
)

# Small but complete: every defect type once per category, at half resolution.
SMALL = dict(n_train=2, n_test_good=1, n_test_defect=3, size=128, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("syn") / "data", seed=0, **SMALL)


def test_categories_cover_textures_and_objects() -> None:
    assert len(SYNTHETIC_CATEGORIES) >= 3
    textures = [c for c in SYNTHETIC_CATEGORIES if c in TEXTURE_CATEGORIES]
    assert len(textures) >= 1 and len(SYNTHETIC_CATEGORIES) - len(textures) >= 2
    for c in SYNTHETIC_CATEGORIES:
        assert 2 <= len(DEFECT_TYPES[c]) <= 3


def test_layout_loads_as_mvtec(small_dataset: Path) -> None:
    assert list_categories(small_dataset) == sorted(SYNTHETIC_CATEGORIES)
    for name in SYNTHETIC_CATEGORIES:
        cat = MVTecCategory(small_dataset, name)
        assert len(cat.train_paths) == 2
        assert cat.defect_types == sorted(DEFECT_TYPES[name])
        goods = [it for it in cat.test_items if it.label == 0]
        defects = [it for it in cat.test_items if it.label == 1]
        assert len(goods) == 1 and len(defects) == 3
        for it in cat.test_items:
            image = read_image(it.path)
            assert image.shape == (128, 128, 3)
            mask = cat.load_mask(it, 128)
            if it.label:
                assert it.mask_path is not None and it.mask_path.name == f"{it.path.stem}_mask.png"
                assert mask.any(), it.path
                raw = np.asarray(Image.open(it.mask_path))
                assert raw.dtype == np.uint8 and set(np.unique(raw)) <= {0, 255}
            else:
                assert not mask.any()
        batch, _ = to_tensor_batch(cat.train_paths, 64)
        assert batch.shape == (2, 3, 64, 64)


def test_info_file(small_dataset: Path) -> None:
    info = json.loads((small_dataset / INFO_FILE).read_text())
    assert info["version"] == GENERATOR_VERSION and info["seed"] == 0 and info["size"] == 128
    assert info["complete"] is True
    assert info["categories"]["pill"] == {
        "train": 2,
        "test_good": 1,
        "test_defect": {d: 1 for d in DEFECT_TYPES["pill"]},
    }


def test_same_seed_is_byte_identical(small_dataset: Path, tmp_path: Path) -> None:
    again = make_dataset(tmp_path / "again", seed=0, **SMALL)
    first, second = _files(small_dataset), _files(again)
    assert first.keys() == second.keys()
    assert all(first[k] == second[k] for k in first)


def test_different_seed_differs(small_dataset: Path, tmp_path: Path) -> None:
    other = make_dataset(tmp_path / "other", seed=1, categories=("wood", "nut"), **SMALL)
    first, second = _files(small_dataset), _files(other)
    pngs = [k for k in second if k.endswith(".png")]
    assert pngs and all(first[k] != second[k] for k in pngs if not k.endswith("_mask.png"))


def test_counts_spread_over_defect_types(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "d", categories=("carpet",), n_train=1, n_test_good=0, n_test_defect=5, size=64,
                        progress=False)
    counts = {d.name: len(list_images(d)) for d in (root / "carpet" / "test").iterdir()}
    assert counts == {"contamination": 2, "hole": 2, "stain": 1}
    assert not (root / "carpet" / "test" / "good").exists()
    MVTecCategory(root, "carpet")  # a category without test/good still loads


def test_image_identity_does_not_depend_on_counts(small_dataset: Path, tmp_path: Path) -> None:
    bigger = make_dataset(tmp_path / "big", categories=("pill",), n_train=3, n_test_good=2, n_test_defect=6,
                          size=128, progress=False)
    for rel in ("pill/train/good/001.png", "pill/test/good/000.png", "pill/test/crack/000.png",
                "pill/ground_truth/crack/000_mask.png"):
        assert (bigger / rel).read_bytes() == (small_dataset / rel).read_bytes()


@pytest.mark.parametrize("category", SYNTHETIC_CATEGORIES)
def test_defects_change_the_image_only_inside_the_mask(category: str) -> None:
    for defect in DEFECT_TYPES[category]:
        for index in range(4):
            s = render_sample(category, defect, seed=3, index=index)
            assert s.image.shape == (256, 256, 3) and s.image.dtype == np.uint8
            assert s.mask.shape == (256, 256) and s.mask.dtype == bool
            assert s.mask.sum() >= 20, (defect, index)
            diff = np.abs(s.image.astype(np.int16) - s.normal.astype(np.int16)).max(axis=2)
            assert diff[~s.mask].max() == 0, (defect, index)
            assert diff[s.mask].mean() > 15, (defect, index, diff[s.mask].mean())
            # The defect is local: it covers a small part of the image.
            assert s.mask.mean() < 0.1


@pytest.mark.parametrize("category", SYNTHETIC_CATEGORIES)
def test_normal_images_vary(category: str) -> None:
    samples = [render_sample(category, seed=0, index=i) for i in range(4)]
    for s in samples:
        assert not s.mask.any() and s.defect == "good" and s.image is s.normal
    stack = np.stack([s.image.astype(np.float32) for s in samples])
    # Pose, lighting and texture change between normal images: no two are alike ...
    for i in range(len(samples)):
        for j in range(i):
            assert np.abs(stack[i] - stack[j]).mean() > 2.0
    # ... but they are one product: the mean colours stay close.
    means = stack.mean(axis=(1, 2))
    assert np.abs(means - means.mean(axis=0)).max() < 20


def test_render_sample_matches_files(small_dataset: Path) -> None:
    s = render_sample("nut", "stain", seed=0, index=0, size=128)
    assert np.array_equal(read_image(small_dataset / "nut/test/stain/000.png"), s.image)
    mask = np.asarray(Image.open(small_dataset / "nut/ground_truth/stain/000_mask.png")) > 0
    assert np.array_equal(mask, s.mask)
    good = render_sample("nut", seed=0, index=1, size=128)
    assert np.array_equal(read_image(small_dataset / "nut/train/good/001.png"), good.image)
    assert not np.array_equal(read_image(small_dataset / "nut/train/good/000.png"), good.image)


def test_rerun_is_a_noop(small_dataset: Path) -> None:
    stamps = {p: p.stat().st_mtime_ns for p in small_dataset.rglob("*") if p.is_file()}
    assert make_dataset(small_dataset, seed=0, **SMALL) == small_dataset
    assert {p: p.stat().st_mtime_ns for p in small_dataset.rglob("*") if p.is_file()} == stamps


def test_other_content_is_refused_without_overwrite(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "d", seed=0, categories=("wood", "pill"), n_train=1, n_test_good=0,
                        n_test_defect=0, size=64, progress=False)
    before = _files(root)
    with pytest.raises(FileExistsError, match="seed=0"):
        make_dataset(root, seed=5, categories=("wood",), n_train=1, n_test_good=0, n_test_defect=0, size=64,
                     progress=False)
    assert _files(root) == before
    make_dataset(root, seed=5, categories=("wood",), n_train=1, n_test_good=0, n_test_defect=0, size=64,
                 overwrite=True, progress=False)
    assert json.loads((root / INFO_FILE).read_text())["seed"] == 5
    # The old dataset's categories are gone, the new image differs from the old one.
    assert list_categories(root) == ["wood"]
    assert (root / "wood/train/good/000.png").read_bytes() != before["wood/train/good/000.png"]

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not a synthetic dataset"):
        make_dataset(foreign, progress=False)
    make_dataset(foreign, categories=("pill",), n_train=1, n_test_good=0, n_test_defect=0, size=64,
                 overwrite=True, progress=False)
    assert (foreign / "keep.txt").read_text() == "user data"


def test_interrupted_or_damaged_dataset_is_redone(tmp_path: Path) -> None:
    args = dict(seed=0, categories=("carpet",), n_train=2, n_test_good=0, n_test_defect=0, size=64, progress=False)
    root = make_dataset(tmp_path / "d", **args)
    reference = _files(root)
    (root / "carpet/train/good/001.png").unlink()
    make_dataset(root, **args)
    assert _files(root) == reference
    info = json.loads((root / INFO_FILE).read_text())
    (root / INFO_FILE).write_text(json.dumps({**info, "complete": False}))
    (root / "carpet/train/good/000.png").write_bytes(b"half written")
    make_dataset(root, **args)
    assert _files(root) == reference


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(categories=("marble",)), "unknown synthetic category"),
        (dict(categories=()), "empty"),
        (dict(categories=("wood", "wood")), "duplicates"),
        (dict(seed=-1), "seed"),
        (dict(seed=1.5), "seed"),
        (dict(n_train=0), "n_train"),
        (dict(n_test_defect=-1), "n_test_defect"),
        (dict(size=16), "size"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        make_dataset(tmp_path / "x", progress=False, **kwargs)
    assert not (tmp_path / "x").exists()


def test_render_sample_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown defect"):
        render_sample("pill", "scratch")
    with pytest.raises(ValueError, match="unknown synthetic category"):
        render_sample("marble")
    with pytest.raises(ValueError, match="index"):
        render_sample("pill", index=-1)


def test_file_path_as_root_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        make_dataset(f, progress=False)


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = [str(tmp_path / "cli"), "--seed", "2", "--categories", "nut", "--n-train", "1", "--n-test-good", "1",
            "--n-test-defect", "3", "--size", "64", "--quiet"]
    assert main(argv) == 0
    assert "dataset ready" in capsys.readouterr().out
    assert MVTecCategory(tmp_path / "cli", "nut").defect_types == sorted(DEFECT_TYPES["nut"])
    assert main([argv[0], "--seed", "3", "--quiet"]) == 2
    assert "overwrite" in capsys.readouterr().err


def test_generation_time_is_reported(tmp_path: Path, record_property) -> None:
    # Not a speed assertion (STYLE rule 8): the time is reported for the record (pytest -s shows it).
    torch.set_num_threads(1)
    n = dict(n_train=6, n_test_good=2, n_test_defect=3)
    start = time.process_time()
    make_dataset(tmp_path / "t", categories=SYNTHETIC_CATEGORIES, progress=False, **n)
    per_image = (time.process_time() - start) / (len(SYNTHETIC_CATEGORIES) * sum(n.values()))
    default_total = per_image * len(SYNTHETIC_CATEGORIES) * (40 + 10 + 15)
    record_property("synthetic_ms_per_image", round(per_image * 1e3, 2))
    print(f"\nsynthetic: {per_image * 1e3:.1f} ms CPU per 256x256 image (render + PNG); "
          f"default dataset ~{default_total:.1f} s CPU")
    assert per_image > 0
