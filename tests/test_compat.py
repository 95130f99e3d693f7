"""hetmm_fast.compat and the HETMM_cuda shim: the published API's three functions against brute force and a
plain-Python transcription, the clusters file against scikit-learn, official template files both ways."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import hetmm_fast as hf
from hetmm_fast import compat
from hetmm_fast.bank import load_bank, save_bank
from hetmm_fast.testing import (clustered_points, clustered_templates, noncontiguous, pts_transcription,
                                reduction_tol, same_partition, unit_features)

ROOT = Path(__file__).resolve().parents[1]
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@pytest.fixture(autouse=True)
def _exact_mode(monkeypatch):
    monkeypatch.delenv(compat.MODE_ENV, raising=False)
    compat.set_mode(None)
    yield
    compat.set_mode(None)


def brute_atm(query, temp, patch, backward):
    """The published definition, float64, per template: Tensor[B, T, H, W]."""
    q, t = query.double(), temp.double()
    B, _, H, W = q.shape
    d = patch // 2
    out = torch.full((B, t.shape[0], H, W), -1.0, dtype=torch.float64)
    for dy in range(-d, d + 1):
        for dx in range(-d, d + 1):
            y0, y1, x0, x1 = max(0, -dy), min(H, H - dy), max(0, -dx), min(W, W - dx)
            if y0 >= y1 or x0 >= x1:
                continue
            here = (slice(None), slice(None), slice(y0, y1), slice(x0, x1))
            there = (slice(None), slice(None), slice(y0 + dy, y1 + dy), slice(x0 + dx, x1 + dx))
            if backward:  # template pixel (y, x) against query pixel (y + dy, x + dx)
                v = torch.einsum("bchw,tchw->bthw", q[there], t[here])
            else:  # query pixel (y, x) against template pixel (y + dy, x + dx)
                v = torch.einsum("bchw,tchw->bthw", q[here], t[there])
            out[here] = torch.maximum(out[here], v)
    return out


def tolerance(dtype, c):
    # Engines accumulate 16-bit inputs in float32, float64 in float64; results pass through float32, then dtype.
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    return reduction_tol(c, acc, out=torch.float32) + torch.finfo(dtype).eps / 2


# ------------------------------------------------------------------------------------------------------ ATM
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 2, 5, 5, 7), (1, 1, 16, 6, 3)], ids=["B3T2-5x7", "B1T1-6x3"])
def test_atm_equals_brute_force_every_patch(dtype, shape):
    B, T, C, H, W = shape
    q = unit_features((B, C, H, W), seed=1).to(dtype)
    t = unit_features((T, C, H, W), seed=2).to(dtype)
    qn, tn = noncontiguous(q), noncontiguous(t)
    for patch in range(16):
        for fn, backward in ((compat.forward_ATM, False), (compat.backward_ATM, True)):
            want = brute_atm(q, t, patch, backward)
            got = fn(qn if patch % 2 else q, tn if patch % 3 else t, patch)
            assert got.dtype == dtype and got.shape == (B, T, H, W)
            err = (got.double() - want).abs().max().item()
            assert err <= tolerance(dtype, C), (fn.__name__, patch, err)


def test_fused_mode_gives_the_max_over_templates_without_memory(monkeypatch):
    q = unit_features((2, 8, 6, 5), seed=3)
    t = unit_features((4, 8, 6, 5), seed=4)
    exact = [compat.forward_ATM(q, t, 7), compat.backward_ATM(q, t, 3)]
    compat.set_mode("fused")
    assert compat.get_mode() == "fused"
    fused = [compat.forward_ATM(q, t, 7), compat.backward_ATM(q, t, 3)]
    for e, f in zip(exact, fused):
        assert f.shape == e.shape and f.dtype == e.dtype and f.stride(1) == 0
        assert (f - e.amax(dim=1, keepdim=True)).abs().max().item() <= 2 * reduction_tol(8)
        assert torch.equal(f.amax(dim=1), f[:, 0])
    compat.set_mode(None)
    monkeypatch.setenv(compat.MODE_ENV, "fused")
    assert compat.get_mode() == "fused" and compat.forward_ATM(q, t, 7).stride(1) == 0
    monkeypatch.setenv(compat.MODE_ENV, "fast")
    with pytest.raises(ValueError, match="HETMM_COMPAT_MODE"):
        compat.forward_ATM(q, t, 7)
    with pytest.raises(ValueError, match="mode must be one of"):
        compat.set_mode("fast")


def test_atm_empty_batch_or_templates():
    q = unit_features((2, 4, 3, 3), seed=5)
    assert compat.forward_ATM(q[:0], q, 3).shape == (0, 2, 3, 3)
    assert compat.backward_ATM(q, q[:0], 3).shape == (2, 0, 3, 3)


@pytest.mark.parametrize("args, exc, match", [
    (lambda q: (q, q, -1), ValueError, "patch must be >= 0"),
    (lambda q: (q, q, 3.0), TypeError, "patch must be an int"),
    (lambda q: (q, q, True), TypeError, "patch must be an int"),
    (lambda q: (q, q.double(), 3), TypeError, "dtype"),
    (lambda q: (q, q[:, :2], 3), ValueError, "same C, H, W"),
    (lambda q: (q[0], q, 3), ValueError, "4-D"),
    (lambda q: (q.int(), q.int(), 3), TypeError, "dtype must be"),
    (lambda q: (q, q.to("meta"), 3), ValueError, "is on"),
    (lambda q: (q[:, :0], q[:, :0], 3), ValueError, "must be positive"),
    (lambda q: (q.numpy(), q, 3), TypeError, "must be a torch.Tensor"),
])
def test_atm_errors(args, exc, match):
    q = unit_features((2, 4, 3, 3), seed=6)
    for fn in (compat.forward_ATM, compat.backward_ATM):
        with pytest.raises(exc, match=match):
            fn(*args(q))


# ------------------------------------------------------------------------------------------------------ PTS
def transcription_sheets(temp, labels, tsize):
    """Sheets from ``pts_transcription`` per pixel (Gram in float64), zeros past N."""
    N, C, H, W = temp.shape
    x = temp.double()
    out = torch.zeros((tsize, C, H, W), dtype=temp.dtype)
    for y in range(H):
        for xx in range(W):
            v = x[:, :, y, xx]
            chosen = pts_transcription((v @ v.T).numpy(), labels[:, y, xx].tolist(), min(tsize, N))
            out[: len(chosen), :, y, xx] = temp[chosen, :, y, xx]
    return out


def quantised(n, c, h, w, seed):
    """Templates with values in {-2..2} / 4: every dot product and sum is exact in float64, in any order, so ties
    are exact ties for every implementation."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-2, 3, (n, c, h, w), generator=g).float() / 4
    x[n // 2] = x[0]  # duplicate templates
    return x


@pytest.mark.parametrize("seed", range(3))
def test_pts_equals_transcription_with_ties(seed):
    N, C, H, W = 12, 3, 3, 4
    temp = quantised(N, C, H, W, seed)
    g = torch.Generator().manual_seed(100 + seed)
    labels = torch.randint(-1, 4, (N, H, W), generator=g)
    labels[:, 0, 0] = -1  # all noise: the global medoid
    labels[:, 0, 1] = torch.arange(N)  # N singleton clusters: more clusters than tsize
    labels[:, 1, 1] = torch.arange(N) // 2 + 7  # pairs, ids not starting at 0
    for tsize in (1, 3, 5, N, N + 3):
        got = compat.PTS(temp, labels, tsize)
        assert got.dtype == temp.dtype and got.shape == (tsize, C, H, W)
        assert torch.equal(got, transcription_sheets(temp, labels, tsize)), tsize
    assert not compat.PTS(temp, labels, N + 3)[N:].any()  # N < tsize: zero sheets


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_pts_random_features_every_dtype(dtype):
    temp = unit_features((10, 6, 2, 3), seed=7).to(dtype)
    temp[9] = temp[2]
    labels = torch.randint(-1, 3, (10, 2, 3), generator=torch.Generator().manual_seed(8))
    got = compat.PTS(noncontiguous(temp), labels, 4)
    assert got.dtype == dtype and torch.equal(got, transcription_sheets(temp, labels, 4))


def test_pts_with_optics_labels_equals_the_engine():
    temp = clustered_templates(40, 8, 3, 4, seed=9)
    for k in (5, 12):
        labels = compat.optics_clusters({"layer1": temp}, k)["layer1"].long()
        assert torch.equal(compat.PTS(temp, labels, k), hf.pts_select(temp, k))


@pytest.mark.parametrize("make, exc, match", [
    (lambda t, c: (t, c.float(), 2), TypeError, "int64"),
    (lambda t, c: (t, c[:, :1], 2), ValueError, r"\[N, H, W\]"),
    (lambda t, c: (t, c - 2, 2), ValueError, "labels are -1"),
    (lambda t, c: (t, c, 0), ValueError, "tsize must be a positive int"),
    (lambda t, c: (t * float("nan"), c, 2), ValueError, "NaN"),
    (lambda t, c: (t.int(), c, 2), ValueError, "floating-point"),
    (lambda t, c: (t[:0], c[:0], 2), ValueError, "empty"),
    (lambda t, c: (t, c.to("meta"), 2), ValueError, "is on"),
])
def test_pts_errors(make, exc, match):
    temp = unit_features((4, 3, 2, 2), seed=10)
    clus = torch.zeros((4, 2, 2), dtype=torch.int64)
    with pytest.raises(exc, match=match):
        compat.PTS(*make(temp, clus))


# -------------------------------------------------------------------------------------------------- clusters
@pytest.mark.parametrize("seed", range(2))
def test_clusters_are_partition_equal_to_sklearn(seed):
    from sklearn.cluster import OPTICS

    rng = np.random.default_rng(seed)
    N, C, H, W, K = 36, 6, 2, 3, 6
    x = np.stack([clustered_points(N, C, 3, 0.3, rng) for _ in range(H * W)], axis=-1).reshape(N, C, H, W)
    labels = compat.optics_clusters({"layer2": torch.from_numpy(x)}, K)["layer2"]
    assert labels.dtype == torch.float32 and labels.shape == (N, H, W)
    for y in range(H):
        for xx in range(W):
            sk = OPTICS(min_samples=N // K, metric=lambda a, b: 1 - a @ b).fit_predict(x[:, :, y, xx].copy())
            assert same_partition(labels[:, y, xx].long().numpy(), sk), (y, xx)


def write_all(path, tdict):
    torch.save(tdict, path)
    return path


def test_clusters_file(tmp_path):
    tdict = {"layer1": clustered_templates(24, 4, 2, 3, seed=11), "layer4": clustered_templates(24, 5, 1, 2, seed=12)}
    src = write_all(tmp_path / "wide_resnet101_2_ALL.pkl", tdict)
    out = compat.write_official_clusters(src, 4)
    assert out == tmp_path / "wide_resnet101_2_PC_OPTICSx4.pkl"
    got = torch.load(out, weights_only=True)
    want = compat.optics_clusters(tdict, 4)
    assert sorted(got) == ["layer1", "layer4"] and all(torch.equal(got[k], want[k]) for k in got)
    assert got["layer1"].dtype == torch.float32 and got["layer1"].shape == (24, 2, 3)
    with pytest.raises(ValueError, match="refuses min_samples below 2"):
        compat.write_official_clusters(src, 13)
    assert not (tmp_path / "wide_resnet101_2_PC_OPTICSx13.pkl").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, out.name])  # no temporary left
    other = write_all(tmp_path / "templates.pkl", tdict)
    with pytest.raises(ValueError, match="_ALL.pkl"):
        compat.write_official_clusters(other, 4)
    assert compat.write_official_clusters(other, 4, out=tmp_path / "c.pkl").is_file()


class _Foreign:
    pass


def bad_files(tmp_path):
    """(path, message) for files that are not official template files."""
    good = tmp_path / "good.pkl"
    torch.save({"layer1": unit_features((2, 4, 2, 2))}, good)
    cases = []
    p = tmp_path / "foreign.pkl"
    p.write_bytes(pickle.dumps(_Foreign()))
    cases.append((p, "weights_only"))
    p = tmp_path / "truncated.pkl"
    p.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases.append((p, "not a readable"))
    for name, obj, match in (("list", [torch.zeros(1)], "non-empty dict"),
                             ("keys", {"feat": torch.zeros(1, 1, 1, 1)}, "unexpected keys"),
                             ("ints", {"layer1": torch.zeros((1, 1, 1, 1), dtype=torch.int64)}, "floating-point"),
                             ("ragged", {"layer1": torch.zeros(2, 1, 1, 1), "layer2": torch.zeros(3, 1, 1, 1)},
                              "along dim 0"),
                             ("nan", {"layer1": torch.full((1, 1, 1, 1), float("nan"))}, "NaN"),
                             ("rank", {"layer1": torch.zeros(2, 3)}, r"Tensor\[N, C, H, W\]")):
        p = tmp_path / f"{name}_ALL.pkl"
        torch.save(obj, p)
        cases.append((p, match))
    return cases


def test_bad_template_files_are_refused(tmp_path):
    for path, match in bad_files(tmp_path):
        with pytest.raises(compat.OfficialFileError, match=match):
            compat.write_official_clusters(path, 1, out=tmp_path / "out.pkl")
    assert not (tmp_path / "out.pkl").exists()
    with pytest.raises(FileNotFoundError):
        compat.write_official_clusters(tmp_path / "missing_ALL.pkl", 2)
    with pytest.raises(compat.OfficialFileError, match="not a file"):
        compat.read_official(tmp_path)


# --------------------------------------------------------------------------------------------- banks both ways
def official_all(n=4, dtype=torch.float32, layer4=False, seed=0):
    shapes = {"layer1": (256, 64, 64), "layer2": (512, 32, 32), "layer3": (1024, 16, 16)}
    if layer4:
        shapes["layer4"] = (2048, 8, 8)
    return {k: unit_features((n, *s), seed=seed + j).to(dtype) for j, (k, s) in enumerate(shapes.items())}


def official_pts(tdict, k):
    """A PTS file's content: k sheets per layer, sheet i taken from template (i + y + x) % N at pixel (y, x) (any
    choice of templates is a valid selection); zero sheets past N, as the published PTS writes them."""
    out = {}
    for key, t in tdict.items():
        if key == "layer4":
            continue
        n, c, h, w = t.shape
        ramp = torch.arange(h).view(h, 1) + torch.arange(w).view(1, w)
        idx = (torch.arange(min(k, n)).view(-1, 1, 1) + ramp) % n
        sheets = torch.gather(t, 0, idx.unsqueeze(1).expand(-1, c, h, w))
        out[key] = torch.cat([sheets, sheets.new_zeros((k - min(k, n), c, h, w))])
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_import_export_round_trip(tmp_path, dtype):
    tdict = official_all(dtype=dtype)
    pts = official_pts(tdict, 2)
    torch.save(tdict, tmp_path / "wide_resnet101_2_ALL.pkl")
    torch.save(pts, tmp_path / "wide_resnet101_2_PTSx2.pkl")
    bank = compat.import_official(tmp_path / "wide_resnet101_2_ALL.pkl", "bottle", tmp_path / "b.hetmm",
                                  pts=tmp_path / "wide_resnet101_2_PTSx2.pkl", pretrained=False)
    tensors, meta = load_bank(bank)
    assert meta["tsize"] == 2 and meta["n_templates"] == 4 and meta["std"] == [0.229, 0.256, 0.225]
    assert meta["weights_id"] == "random" and meta["dtype"] == str(dtype).removeprefix("torch.")
    assert '"category": "bottle"' in meta["preset"] and "official HETMM templates" in meta["source"]
    written = compat.export_official(bank, tmp_path / "out")
    assert [p.name for p in written] == ["wide_resnet101_2_ALL.pkl", "wide_resnet101_2_PTSx2.pkl"]
    for path, want in zip(written, (tdict, pts)):
        got = torch.load(path, weights_only=True)
        assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want)
        assert all(got[k].dtype == dtype for k in got)


def test_import_drops_layer4_and_records_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no torchvision cache here
    tdict = official_all(layer4=True)
    src = tmp_path / "wide_resnet101_2_ALL.pkl"
    torch.save(tdict, src)
    _, meta = load_bank(compat.import_official(src, "cable", tmp_path / "a.hetmm"))
    assert meta["weights_id"] == compat.OFFICIAL_WEIGHTS_ID and meta["tsize"] is None
    weights = tmp_path / "wide_resnet101_2-32ee1156.pth"
    weights.write_bytes(b"not checked at import")
    _, meta = load_bank(compat.import_official(src, "cable", tmp_path / "b.hetmm", weights=weights))
    from hetmm_fast.backbones.weights import file_weights_id

    assert meta["weights_id"] == file_weights_id(weights)
    exported = torch.load(compat.export_official(tmp_path / "b.hetmm", tmp_path / "out")[0], weights_only=True)
    assert sorted(exported) == ["layer1", "layer2", "layer3"]
    assert all(torch.equal(exported[k], tdict[k]) for k in exported)


def test_imported_bank_predicts_without_recomputing_templates(tmp_path):
    tdict = official_all(n=2)
    torch.save(tdict, tmp_path / "wide_resnet101_2_ALL.pkl")
    torch.save(official_pts(tdict, 1), tmp_path / "wide_resnet101_2_PTSx1.pkl")
    bank = compat.import_official(tmp_path / "wide_resnet101_2_ALL.pkl", "tile", tmp_path / "t.hetmm",
                                  pts=tmp_path / "wide_resnet101_2_PTSx1.pkl", pretrained=False)
    det = hf.HETMM.load(bank, pretrained=False, progress=False)
    assert det.preset.category == "tile" and det.tsize == 1 and det.std == (0.229, 0.256, 0.225)
    assert all(torch.equal(a, tdict[f"layer{j + 1}"]) for j, a in enumerate(det.templates))
    out = det.predict(torch.rand(1, 3, 256, 256))
    assert out.maps.shape == (1, 256, 256) and torch.isfinite(out.scores).all()


def test_import_errors(tmp_path):
    tdict = official_all()
    src = tmp_path / "wide_resnet101_2_ALL.pkl"

    def refused(obj, match, pts=None, exc=compat.OfficialFileError, **kw):
        torch.save(obj, src)
        if pts is not None:
            torch.save(pts, tmp_path / "p.pkl")
        with pytest.raises(exc, match=match):
            compat.import_official(src, kw.pop("category", "bottle"), tmp_path / "x.hetmm",
                                   pts=None if pts is None else tmp_path / "p.pkl", pretrained=False, **kw)
        assert not (tmp_path / "x.hetmm").exists()

    refused({k: v for k, v in tdict.items() if k != "layer3"}, "no layer3")
    refused({**tdict, "layer2": tdict["layer2"][:, :256]}, r"expected \[N, 512, 32, 32\]")
    refused({**tdict, "layer1": tdict["layer1"] * 2}, "not L2-normalised")
    refused({**tdict, "layer1": tdict["layer1"].double()}, "float64")
    refused({**tdict, "layer2": tdict["layer2"].half()}, "different dtypes")
    refused(tdict, "is none of the ALL file's templates", pts=official_pts(tdict, 6))  # zero sheets, N < K
    refused(tdict, "none of the ALL", pts=official_pts(official_all(seed=5), 2))
    refused(tdict, "expected torch.float32", pts={k: v.half() for k, v in official_pts(tdict, 2).items()})
    refused(tdict, "no layer2", pts={"layer1": official_pts(tdict, 2)["layer1"]})
    refused(tdict, "category", exc=ValueError, category="not_mvtec")
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        compat.import_official(src, "bottle", tmp_path / "x.hetmm", weights=tmp_path / "none.pth")
    for path, match in bad_files(tmp_path):
        with pytest.raises(compat.OfficialFileError, match=match):
            compat.import_official(path, "bottle", tmp_path / "x.hetmm", pretrained=False)
    with pytest.raises(ValueError, match="pretrained=False"):
        compat.import_official(src, "bottle", tmp_path / "x.hetmm", weights=src, pretrained=False)
    assert not (tmp_path / "x.hetmm").exists()


def test_export_errors_and_nothing_half_written(tmp_path, monkeypatch):
    torch.save(official_all(), tmp_path / "wide_resnet101_2_ALL.pkl")
    torch.save(official_pts(official_all(), 2), tmp_path / "pts.pkl")
    bank = compat.import_official(tmp_path / "wide_resnet101_2_ALL.pkl", "bottle", tmp_path / "b.hetmm",
                                  pts=tmp_path / "pts.pkl", pretrained=False)
    tensors, meta = load_bank(bank)
    for change, match in (({"std": [0.229, 0.224, 0.225]}, "normalised with"),
                          ({"backbone": "mobilenet_v2"}, "not one of the published code's")):
        save_bank(tmp_path / "other.hetmm", tensors, {**meta, **change})
        with pytest.raises(ValueError, match=match):
            compat.export_official(tmp_path / "other.hetmm", tmp_path / "nope")
        assert not (tmp_path / "nope").exists() or not any((tmp_path / "nope").iterdir())
    (tmp_path / "bad.hetmm").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a readable bank"):
        compat.export_official(tmp_path / "bad.hetmm", tmp_path / "nope")
    real_save, calls = torch.save, []

    def failing_save(obj, f, *a, **k):
        calls.append(f)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        compat.export_official(bank, tmp_path / "half")
    assert list((tmp_path / "half").iterdir()) == []


# ----------------------------------------------------------------------------------------------------- CLI, shim
def test_cli_commands(tmp_path, capsys, monkeypatch):
    from hetmm_fast.cli import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    tdict = official_all()
    src = tmp_path / "wide_resnet101_2_ALL.pkl"
    torch.save(tdict, src)
    small = tmp_path / "small" / "wide_resnet101_2_ALL.pkl"
    small.parent.mkdir()
    torch.save({"layer1": clustered_templates(12, 4, 2, 2, seed=13)}, small)
    assert main(["official-clusters", str(small), "--tsize", "3"]) == 0
    assert (small.parent / "wide_resnet101_2_PC_OPTICSx3.pkl").is_file()
    assert main(["official-clusters", str(small), "--tsize", "7"]) == 2
    assert "refuses min_samples below 2" in capsys.readouterr().err
    assert main(["import-official", str(src), "--category", "wood", "--out", str(tmp_path / "w.hetmm")]) == 0
    assert "weights" in capsys.readouterr().out
    assert main(["export-official", str(tmp_path / "w.hetmm"), str(tmp_path / "exp")]) == 0
    got = torch.load(tmp_path / "exp" / "wide_resnet101_2_ALL.pkl", weights_only=True)
    assert all(torch.equal(got[k], tdict[k]) for k in tdict)
    assert main(["import-official", str(small), "--category", "wood", "--out", str(tmp_path / "x.hetmm")]) == 2
    assert "expected [N, 256, 64, 64]" in capsys.readouterr().err
    assert main(["export-official", str(tmp_path / "missing.hetmm"), str(tmp_path / "exp2")]) == 2


def test_shim_reexports_compat():
    import HETMM_cuda

    assert HETMM_cuda.forward_ATM is compat.forward_ATM and HETMM_cuda.backward_ATM is compat.backward_ATM
    assert HETMM_cuda.PTS is compat.PTS and HETMM_cuda.set_mode is compat.set_mode


def test_shim_is_installed_with_the_package(tmp_path):
    import tomllib

    with open(ROOT / "pyproject.toml", "rb") as f:
        assert "HETMM_cuda" in tomllib.load(f)["tool"]["setuptools"]["py-modules"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-c", "from HETMM_cuda import forward_ATM, backward_ATM, PTS"],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    if run.returncode and "No module named 'HETMM_cuda'" in run.stderr:
        pytest.skip("the installed package predates the shim: reinstall (pip install -e . --no-build-isolation)")
    assert run.returncode == 0, run.stderr
