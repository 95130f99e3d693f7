"""hetmm_fast.viz: overlay colours and geometry, PNG files, atomic writes, input checks."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hetmm_fast import viz


def grey(h=32, w=40, value=128):
    return np.full((h, w, 3), value, dtype=np.uint8)


def hot_spot(h=32, w=40, y=10, x=20, r=2):
    amap = np.zeros((h, w), dtype=np.float32)
    amap[y - r:y + r + 1, x - r:x + r + 1] = 1.0
    return amap


def png_ok(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


# ---------------------------------------------------------------------------------------------------------------
# heatmap_overlay
# ---------------------------------------------------------------------------------------------------------------
def test_overlay_shape_dtype_and_hot_spot_is_warm():
    out = viz.heatmap_overlay(grey(), hot_spot())
    assert out.shape == (32, 40, 3) and out.dtype == np.uint8
    r, b = out[..., 0].astype(int), out[..., 2].astype(int)
    assert r[10, 20] - b[10, 20] > 40  # jet max = red over grey
    assert b[0, 0] - r[0, 0] > 40 and b[25, 5] - r[25, 5] > 40  # jet min = blue elsewhere
    warm = (r - b) > 40
    assert warm.sum() == 25 and warm[8:13, 18:23].all()


def test_overlay_resizes_a_small_map_to_the_image():
    amap = np.zeros((8, 10), dtype=np.float32)
    amap[:4, 5:] = 1.0  # top-right quadrant
    out = viz.heatmap_overlay(grey(32, 40), amap)
    r, b = out[..., 0].astype(int), out[..., 2].astype(int)
    assert out.shape == (32, 40, 3)
    assert (r[2:12, 24:38] - b[2:12, 24:38] > 40).all()
    assert (b[20:, :16] - r[20:, :16] > 40).all()


def test_fixed_scale_makes_a_weak_map_cold():
    amap = hot_spot() * 0.1
    own = viz.heatmap_overlay(grey(), amap)
    fixed = viz.heatmap_overlay(grey(), amap, vmin=0.0, vmax=10.0)
    assert own[10, 20, 0] > own[10, 20, 2]  # its own max is red
    assert fixed[10, 20, 2] > fixed[10, 20, 0]  # 0.1 on a 0..10 scale is blue
    assert np.abs(fixed[10, 20].astype(int) - fixed[0, 0]).max() <= 6  # 0 and 0.1 both near the bottom


def test_alpha_extremes():
    img = np.random.default_rng(0).integers(0, 256, (12, 14, 3), dtype=np.uint8)
    np.testing.assert_array_equal(viz.heatmap_overlay(img, hot_spot(12, 14, 5, 5, 1), alpha=0.0), img)
    full = viz.heatmap_overlay(img, hot_spot(12, 14, 5, 5, 1), alpha=1.0)
    # jet endpoints: dark red (0.5, 0, 0) and dark blue (0, 0, 0.5)
    assert full[5, 5, 0] in (127, 128) and full[5, 5, 1:].tolist() == [0, 0]
    assert full[0, 0, :2].tolist() == [0, 0] and full[0, 0, 2] in (127, 128)


def test_constant_map_is_uniform():
    out = viz.heatmap_overlay(grey(), np.full((32, 40), 3.0))
    assert (out == out[0, 0]).all()


def test_mask_contour_is_drawn_around_the_region_only():
    mask = np.zeros((32, 40), dtype=bool)
    mask[10:20, 10:25] = True
    out = viz.heatmap_overlay(grey(), np.zeros((32, 40)), mask=mask)
    white = (out == 255).all(axis=2)
    assert white[10, 10:25].all() and white[9, 12] and white[19, 15] and white[20, 15]  # inside and outside band
    assert not white[15, 17]  # interior
    assert not white[0, 0] and not white[30, 35]
    assert white.sum() == 46 + 54  # 2-pixel band: inner ring of the 10x15 box + outer ring, corners included
    assert white[9, 9] and white[20, 25]
    half = viz.heatmap_overlay(grey(), np.zeros((32, 40)), mask=mask[::2, ::2])  # resized to the image
    assert (half == 255).all(axis=2)[10, 12]


def test_tensor_and_pil_images_match_numpy():
    img = np.random.default_rng(1).integers(0, 256, (16, 18, 3), dtype=np.uint8)
    amap = np.random.default_rng(2).random((16, 18))
    ref = viz.heatmap_overlay(img, amap)
    t = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    np.testing.assert_array_equal(viz.heatmap_overlay(t, torch.from_numpy(amap)[None]), ref)
    np.testing.assert_array_equal(viz.heatmap_overlay(Image.fromarray(img), amap), ref)
    np.testing.assert_array_equal(viz.heatmap_overlay(img / 255.0, amap[None, None]), ref)
    gray = viz.heatmap_overlay(img[..., 0], amap)
    assert gray.shape == (16, 18, 3)


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        (dict(image=np.zeros((4, 4, 4), np.uint8)), ValueError, r"heatmap_overlay: image must be \[H, W, 3\]"),
        (dict(image=torch.zeros(4, 5, 6)), ValueError, r"Tensor image must be \[3, H, W\]"),
        (dict(image=np.full((4, 5, 3), 2.0)), ValueError, r"\[0, 1\].*normalisation"),
        (dict(image=np.zeros((4, 5, 3), np.int64)), TypeError, r"uint8 or float"),
        (dict(image="img.png"), TypeError, r"image must be a numpy array"),
        (dict(amap=np.zeros((2, 4, 5))), ValueError, r"amap must be \[H, W\]"),
        (dict(amap=np.full((4, 5), np.nan)), ValueError, r"amap contains NaN"),
        (dict(vmin=2.0, vmax=1.0), ValueError, r"vmin \(2\) must be <= vmax \(1\)"),
        (dict(alpha=1.5), ValueError, r"alpha must be a number in \[0, 1\]"),
        (dict(mask=np.full((4, 5), 0.5)), ValueError, r"mask must be bool or 0/1"),
    ],
)
def test_overlay_bad_inputs_raise(kwargs, error, pattern):
    args = dict(image=grey(4, 5), amap=np.zeros((4, 5)))
    args.update(kwargs)
    image, amap = args.pop("image"), args.pop("amap")
    with pytest.raises(error, match=pattern):
        viz.heatmap_overlay(image, amap, **args)


# ---------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------
def test_write_png_roundtrip(tmp_path):
    img = np.random.default_rng(3).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    p = viz.write_png(tmp_path / "a.png", img)
    assert p == tmp_path / "a.png" and png_ok(p) == (11, 9)
    with Image.open(p) as im:
        np.testing.assert_array_equal(np.asarray(im), img)
    assert sorted(os.listdir(tmp_path)) == ["a.png"]


def test_save_overlay_writes_png_with_or_without_mask(tmp_path):
    img, amap = grey(64, 64), hot_spot(64, 64, 30, 30, 4)
    mask = amap > 0
    p2 = viz.save_overlay(tmp_path / "sub" / "two.png", img, amap, score=0.73, title="bottle 000")
    p3 = viz.save_overlay(str(tmp_path / "sub" / "three.png"), img, amap, mask=mask, vmin=0, vmax=2)
    w2, h2 = png_ok(p2)
    w3, h3 = png_ok(p3)
    assert h2 == h3 and w3 > w2  # one more panel
    assert sorted(os.listdir(tmp_path / "sub")) == ["three.png", "two.png"]
    viz.save_overlay(p2, img, amap, score=torch.tensor(0.5))  # overwrites in place
    assert sorted(os.listdir(tmp_path / "sub")) == ["three.png", "two.png"]


def test_plot_evaluation_with_and_without_pixels(tmp_path):
    rng = np.random.default_rng(4)
    masks = np.zeros((6, 32, 32), dtype=bool)
    masks[3:, 8:16, 8:20] = True
    maps = (rng.random(masks.shape) + 0.7 * masks).astype(np.float32)
    labels = masks.reshape(6, -1).any(1)
    scores = maps.reshape(6, -1).max(1)
    small = viz.plot_evaluation(tmp_path / "img.png", labels=labels, scores=scores, title="bottle")
    big = viz.plot_evaluation(tmp_path / "all.png", labels=labels, scores=scores, masks=masks, maps=maps)
    assert png_ok(big)[1] > png_ok(small)[1]  # a second row of panels
    assert sorted(os.listdir(tmp_path)) == ["all.png", "img.png"]


def test_plot_evaluation_pro_panel_uses_pro_maps(tmp_path, monkeypatch):
    """The PRO panel's AUPRO is computed on pro_maps when given (a preset may blur them differently)."""
    rng = np.random.default_rng(5)
    masks = np.zeros((4, 16, 16), dtype=bool)
    masks[2:, 4:8, 4:10] = True
    maps = (rng.random(masks.shape) + 0.7 * masks).astype(np.float32)
    pro_maps = maps[:, ::-1].copy()
    seen = []
    real = viz.metrics.aupro
    monkeypatch.setattr(viz.metrics, "aupro", lambda m, a, *args, **kw: seen.append(a) or real(m, a, *args, **kw))
    labels, scores = masks.reshape(4, -1).any(1), maps.reshape(4, -1).max(1)
    viz.plot_evaluation(tmp_path / "a.png", labels=labels, scores=scores, masks=masks, maps=maps, pro_maps=pro_maps)
    viz.plot_evaluation(tmp_path / "b.png", labels=labels, scores=scores, masks=masks, maps=maps)
    assert len(seen) == 2 and seen[0] is pro_maps and seen[1] is maps
    with pytest.raises(ValueError, match="pro_maps needs masks and maps"):
        viz.plot_evaluation(tmp_path / "c.png", labels=labels, scores=scores, pro_maps=pro_maps)


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    target = tmp_path / "x.png"

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(viz.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        viz.save_overlay(target, grey(), hot_spot())
    assert os.listdir(tmp_path) == []


def test_existing_file_survives_a_failed_overwrite(tmp_path, monkeypatch):
    target = viz.write_png(tmp_path / "x.png", grey(4, 5))
    before = target.read_bytes()

    def broken_savefig(self, *args, **kwargs):
        raise RuntimeError("render failed")

    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="render failed"):
        viz.save_overlay(target, grey(), hot_spot())
    assert target.read_bytes() == before and os.listdir(tmp_path) == ["x.png"]


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (lambda p: viz.save_overlay(p / "x.jpg", grey(), hot_spot()), ValueError, r"save_overlay: path must end in"),
        (lambda p: viz.save_overlay(3, grey(), hot_spot()), TypeError, r"path must be a str or os.PathLike"),
        (lambda p: viz.save_overlay(p / "x.png", grey(), hot_spot(), score=float("nan")), ValueError, r"finite"),
        (lambda p: viz.save_overlay(p / "x.png", grey(), hot_spot(), score="high"), TypeError, r"score must be a nu"),
        (
            lambda p: viz.plot_evaluation(p / "x.png", labels=[0, 1], scores=[0.1, 0.2], masks=np.ones((2, 2, 2))),
            ValueError,
            r"plot_evaluation: give both masks and maps or neither",
        ),
        (lambda p: viz.plot_evaluation(p / "x.png", labels=[0, 0], scores=[0.1, 0.2]), ValueError, r"class 1"),
        (lambda p: viz.write_png(p / "x.png", np.zeros((3, 3, 2), np.uint8)), ValueError, r"write_png: image must"),
    ],
)
def test_file_bad_inputs_raise_and_write_nothing(tmp_path, call, error, pattern):
    with pytest.raises(error, match=pattern):
        call(tmp_path)
    assert os.listdir(tmp_path) == []


def test_does_not_touch_pyplot_or_the_chosen_backend(tmp_path):
    # In a fresh interpreter: a user picked a backend; drawing must neither switch it nor import pyplot.
    code = (
        "import matplotlib, sys, numpy as np\n"
        "matplotlib.use('svg')\n"
        "from hetmm_fast import viz\n"
        f"viz.save_overlay(r'{tmp_path / 'a.png'}', np.zeros((8, 8, 3), np.uint8), np.eye(8))\n"
        f"viz.plot_evaluation(r'{tmp_path / 'b.png'}', labels=[0, 1, 1], scores=[0.1, 0.5, 0.3])\n"
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["svg", "False"]
