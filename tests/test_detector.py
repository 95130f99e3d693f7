import pytest
import torch

import hetmm_fast as hf
from hetmm_fast.bank import BankError, load_bank, save_bank
from hetmm_fast.presets import PAPER_STD, PostProcess, Preset, get_preset
from hetmm_fast.testing import reduction_tol, unit_roundoff

S = 64


def images(n, seed=0):
    """Smooth random scenes (a shared low-frequency pattern) with small per-image variation."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(S, S), mode="bilinear")
    return (base + 0.02 * torch.rand(n, 3, S, S, generator=g)).clamp(0, 1)


@pytest.fixture(scope="module")
def train():
    return images(6)


@pytest.fixture(scope="module")
def det(train):
    return hf.HETMM(image_size=S, progress=False).fit(train)


def test_fit_predict_shapes(det, train):
    assert det.n_templates == 6
    assert [tuple(t.shape) for t in det.templates] == [(6, 24, 16, 16), (6, 40, 8, 8), (6, 112, 4, 4)]
    out = det.predict(images(3, seed=1))
    assert out.scores.shape == (3,) and out.maps.shape == (3, S, S) and out.raw.shape == (3, S, S)
    assert out.names == ["image_000", "image_001", "image_002"]
    assert torch.isfinite(out.maps).all()


def test_training_image_scores_zero_with_all_set(train):
    det = hf.HETMM(image_size=S, progress=False, preset=Preset(
        "flat", get_preset().layers))  # no blur: the raw map is reported
    det.fit(train)
    out = det.predict(train[:2])
    # Every pixel finds itself at offset 0, so 1 - similarity is only rounding: per layer the dot product and the
    # normalisation that made |f| = 1 (testing.py rule 1 each), then a convex interpolation (a few roundings).
    bound = sum(p.lam * (2 * reduction_tol(c) + 4 * unit_roundoff(torch.float32))
                for p, c in zip(det.preset.layers, det.backbone.channels))
    assert out.raw.abs().max().item() <= bound


def test_defect_is_localised():
    """Synthetic carpet: the anomaly map is higher inside the true defect than elsewhere, and so is the score."""
    from hetmm_fast.data.synthetic import render_sample

    size = 128
    normal = [render_sample("carpet", seed=0, index=i, size=size, split="train").image for i in range(6)]
    det = hf.HETMM(image_size=size, progress=False).fit(normal)
    bad = render_sample("carpet", "hole", seed=0, index=0, size=size, split="test")
    good = render_sample("carpet", seed=0, index=1, size=size, split="test")
    out = det.predict([bad.image, good.image])
    mask = torch.from_numpy(bad.mask)
    assert mask.any()
    assert out.maps[0][mask].mean() > 1.5 * out.maps[0][~mask].mean()
    assert out.scores[0] > out.scores[1]


def test_select_and_roundtrip(tmp_path, train):
    det = hf.HETMM(image_size=S, progress=False).fit(train).select(3)
    assert det.tsize == 3 and [tuple(s.shape) for s in det.selection] == [(3, 16, 16), (3, 8, 8), (3, 4, 4)]
    q = images(2, seed=4)
    want = det.predict(q)
    path = det.save(tmp_path / "bank.hetmm")
    back = hf.HETMM.load(path, progress=False)
    assert back.tsize == 3 and back.n_templates == 6
    got = back.predict(q)
    assert torch.equal(got.maps, want.maps) and torch.equal(got.scores, want.scores)
    assert [p.name for p in tmp_path.iterdir()] == ["bank.hetmm"]  # no temp files left


def test_pixel_major_templates_only_on_cuda_and_saved_like_any(tmp_path, train):
    """On the CPU the templates stay NCHW; a detector on a GPU keeps them pixel-major (tested in test_engine_cuda),
    and such templates save, load and match exactly like NCHW ones."""
    det = hf.HETMM(image_size=S, progress=False).fit(train)
    assert all(t.is_contiguous() for t in det.templates)
    q = images(2, seed=5)
    want = det.predict(q)
    det.templates = [hf.pixel_major(t) for t in det.templates]
    assert not any(t.is_contiguous() for t in det.templates)
    assert torch.equal(det.predict(q).maps, want.maps)
    back = hf.HETMM.load(det.save(tmp_path / "bank.hetmm"), progress=False)
    assert all(torch.equal(a, b) for a, b in zip(back.templates, det.templates))
    assert torch.equal(back.predict(q).maps, want.maps)


def test_add_normals_equals_fit_on_union(train):
    extra = images(3, seed=5)
    # Batches of 3 split both runs into the same backbone calls, so the features (and the selection) are the very
    # same bits; other batch sizes may take other convolution kernels.
    a = hf.HETMM(image_size=S, progress=False, batch_size=3).fit(train).select(4).add_normals(extra)
    b = hf.HETMM(image_size=S, progress=False, batch_size=3).fit(torch.cat([train, extra])).select(4)
    assert a.n_templates == 9 and a.tsize == 4
    for x, y in zip(a.selection, b.selection):
        assert torch.equal(x, y)
    for x, y in zip(a.templates, b.templates):
        assert torch.equal(x, y)


def test_errors(tmp_path, det):
    with pytest.raises(ValueError, match="image_size must be a multiple of 16"):
        hf.HETMM(image_size=100, progress=False)
    with pytest.raises(ValueError, match="unknown preset"):
        hf.HETMM(preset="fancy", image_size=S, progress=False)
    with pytest.raises(ValueError, match="needs category"):
        hf.HETMM(preset="paper", image_size=S, progress=False)
    fresh = hf.HETMM(image_size=S, progress=False)
    with pytest.raises(RuntimeError, match="no templates yet"):
        fresh.predict(images(1))
    with pytest.raises(RuntimeError, match="no templates yet"):
        fresh.save(tmp_path / "x.hetmm")
    with pytest.raises(ValueError, match="size must be a positive int"):
        det.select(0)
    with pytest.raises(FileNotFoundError):
        det.predict(str(tmp_path / "missing.png"))


def test_paper_preset_std_applies_to_imagenet_backbones():
    mob = hf.HETMM(backbone="mobilenet_v2", preset="paper", category="bottle", image_size=S, progress=False)
    assert mob.std == PAPER_STD
    lite = hf.HETMM(preset="paper", category="bottle", image_size=S, progress=False)
    assert lite.std == tuple(lite.backbone.std) != PAPER_STD
    assert hf.HETMM(backbone="mobilenet_v2", image_size=S, progress=False).std == (0.229, 0.224, 0.225)


# ------------------------------------------------------------------ bank files
@pytest.fixture()
def bank(tmp_path, det):
    return det.save(tmp_path / "b.hetmm")


def test_truncated_bank(bank):
    data = bank.read_bytes()
    bank.write_bytes(data[: len(data) // 2])
    with pytest.raises(BankError, match="corrupt, truncated or not safetensors"):
        hf.HETMM.load(bank, progress=False)


def test_bitflip_bank(bank):
    data = bytearray(bank.read_bytes())
    data[-10] ^= 0xFF
    bank.write_bytes(bytes(data))
    with pytest.raises(BankError, match="checksum mismatch"):
        load_bank(bank)


def test_foreign_files(tmp_path):
    from safetensors.torch import save_file

    other = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(BankError, match="not a hetmm_fast bank"):
        load_bank(other)
    junk = tmp_path / "junk.hetmm"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(BankError, match="not a readable bank file"):
        load_bank(junk)
    pickle_file = tmp_path / "p.hetmm"
    torch.save({"a": 1}, pickle_file)
    with pytest.raises(BankError):
        load_bank(pickle_file)
    with pytest.raises(FileNotFoundError, match="bank file not found"):
        load_bank(tmp_path / "nope.hetmm")


def test_inconsistent_metadata(tmp_path, bank):
    tensors, meta = load_bank(bank)
    for key, value, text in [
        ("n_templates", 7, "layer 0 templates have shape"),
        ("tsize", 2, "layer 0 selection has shape"),
    ]:
        bad = dict(meta, **{key: value})
        p = save_bank(tmp_path / f"{key}.hetmm", tensors, bad)
        with pytest.raises(BankError, match=text):
            load_bank(p)
    p = save_bank(tmp_path / "w.hetmm", tensors, dict(meta, weights_id="file:other.pth sha256:0"))
    with pytest.raises(BankError, match="weights_id"):
        hf.HETMM.load(p, progress=False)
    with pytest.raises(BankError, match="lacks"):
        save_bank(tmp_path / "m.hetmm", tensors, {k: v for k, v in meta.items() if k != "taps"})


def test_failed_save_keeps_old_file(monkeypatch, bank, det):
    before = bank.read_bytes()
    import safetensors.torch

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        det.save(bank)
    assert bank.read_bytes() == before
    assert sorted(p.name for p in bank.parent.iterdir()) == ["b.hetmm"]


# ------------------------------------------------------------------ precision and post-processing
def test_backbone_dtype_bfloat16_features_close_and_recorded(tmp_path, train):
    ref = hf.HETMM(image_size=S, progress=False)
    low = hf.HETMM(image_size=S, progress=False, backbone_dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in low.backbone.parameters())
    x = images(2, seed=7)
    for a, b in zip(ref.features(x), low.features(x)):
        assert a.dtype == b.dtype == torch.float32  # normalised in float32 whatever the backbone ran in
        cos = (a * b).sum(dim=1)  # both unit vectors per pixel
        assert cos.min().item() > 0.99, cos.min().item()
        assert not torch.equal(a, b)  # the backbone really ran in bfloat16
    low.fit(train)
    path = low.save(tmp_path / "bf16.hetmm")
    _, meta = load_bank(path)
    assert meta["backbone_dtype"] == "bfloat16" and meta["dtype"] == "float32"
    back = hf.HETMM.load(path, progress=False)
    assert back.backbone_dtype == torch.bfloat16
    torch.testing.assert_close(back.predict(x).maps, low.predict(x).maps, rtol=0, atol=0)


def test_backbone_dtype_errors_and_old_banks(tmp_path, bank):
    with pytest.raises(ValueError, match="backbone_dtype must be float32, float16 or bfloat16"):
        hf.HETMM(image_size=S, progress=False, backbone_dtype=torch.float64)
    tensors, meta = load_bank(bank)
    old = save_bank(tmp_path / "old.hetmm", tensors, {k: v for k, v in meta.items() if k != "backbone_dtype"})
    assert hf.HETMM.load(old, progress=False).backbone_dtype == torch.float32
    for key in ("backbone_dtype", "dtype"):
        for value in ("zeros", "float64", 3):
            bad = save_bank(tmp_path / f"bad_{key}.hetmm", tensors, dict(meta, **{key: value}))
            with pytest.raises(BankError, match="dtype metadata is invalid"):
                hf.HETMM.load(bad, progress=False)


def test_predict_postprocessing_independent_of_batching(train):
    pre = Preset("blurs", get_preset().layers, pixel_post=PostProcess("blur", 2.0, 9),
                            pro_post=PostProcess("blur", 1.0, 5),
                            image_post=PostProcess("maxpool", ksize=8))
    q = images(5, seed=8)
    det = hf.HETMM(image_size=S, preset=pre, progress=False).fit(train)
    outs = []
    for bs in (2, 5):
        det.batch_size = bs
        outs.append(det.predict(q))
    # The backbone may round differently for a batch of 2 than of 5. A query feature moved by d (L2) moves every
    # similarity with a unit template by at most d, and max, 1 - x, the convex blends and the interpolation pass
    # that on; so the raw maps differ by at most sum_j lam_j d_j plus the matching's rounding (rule 2).
    pairs = [torch.cat([det.features(q[i:i + 2])[j] for i in range(0, 5, 2)]) for j in range(3)]
    whole = det.features(q)
    bound = sum(p.lam * ((a - b).norm(dim=1).max().item() + 2 * reduction_tol(c))
                for p, a, b, c in zip(pre.layers, pairs, whole, det.backbone.channels))
    assert (outs[0].raw - outs[1].raw).abs().max().item() <= bound
    a = outs[0]
    assert not torch.equal(a.maps, a.raw) and not torch.equal(a.pro_maps, a.maps)
    from hetmm_fast.postprocess import apply_map, image_scores

    torch.testing.assert_close(a.maps, apply_map(a.raw, pre.pixel_post))
    torch.testing.assert_close(a.pro_maps, apply_map(a.raw, pre.pro_post))
    torch.testing.assert_close(a.scores, image_scores(a.raw, pre.image_post))
    with pytest.raises(ValueError, match="empty"):
        hf.HETMM(image_size=S, progress=False).fit(train).predict([])


def test_cuda_graph_needs_a_cuda_detector(det):
    with pytest.raises(RuntimeError, match="needs a detector on a CUDA device"):
        det.cuda_graph()
