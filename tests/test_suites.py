"""Benchmark suites: a miniature of every layout (tiny PNG/BMP files made here), missing parts, extra files that
must be ignored, per-defect breakdowns, and `hetmm-fast benchmark` with its table, JSON, resume and compare."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hetmm_fast import evaluate
from hetmm_fast.cli import main
from hetmm_fast.data.suites import SUITES, get_suite

S = 32
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _img(path: Path, seed: int, defect: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    a = (rng.random((S, S, 3)) * 40 + 100).astype(np.uint8)
    if defect:
        a[8:16, 8:16] = 255
    Image.fromarray(a).save(path)
    return path


def _mask(path: Path, box=(8, 16), value: int = 255) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((S, S), np.uint8)
    if box is not None:
        m[box[0]:box[1], box[0]:box[1]] = value
    Image.fromarray(m).save(path)
    return path


def _junk(folder: Path) -> None:
    """Files every reader must ignore."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("README.md", ".DS_Store", "license.txt", ".hidden.png", "notes.csv"):
        (folder / name).write_text("not an image")


def _mvtec(root: Path, cat: str = "widget", n: int = 3) -> Path:
    for i in range(n):
        _img(root / cat / "train/good" / f"{i:03d}.png", i)
        _img(root / cat / "test/good" / f"{i:03d}.png", 100 + i)
        _img(root / cat / "test/crack" / f"{i:03d}.png", 200 + i, defect=True)
        _mask(root / cat / "ground_truth/crack" / f"{i:03d}_mask.png")
    _junk(root / cat / "test")
    _junk(root / cat / "train/good")
    _junk(root)
    return root


def test_registry_and_unknown_suite():
    assert set(SUITES) == {"mvtec_ad", "visa", "mpdd", "btad", "mvtec_loco", "sd_saliency_900"}
    with pytest.raises(ValueError, match="unknown benchmark suite 'nope'; known suites"):
        get_suite("nope")


def test_mvtec_and_mpdd_ignore_extra_files(tmp_path):
    root = _mvtec(tmp_path / "mvtec")
    for name in ("mvtec_ad", "mpdd"):
        suite = SUITES[name]
        assert suite.categories(root) == ["widget"]
        cat = suite.category(root, "widget")
        assert len(cat.train_paths) == 3 and len(cat.test_items) == 6 and cat.defect_types == ["crack"]
        assert cat.load_mask(cat.test_items[0], S).sum() == 64


def _visa(root: Path, write_csv: bool = True) -> Path:
    rows = ["object,split,label,image,mask"]
    for i in range(3):
        rows.append(f"candle,train,normal,{_img(root / 'candle/Data/Images/Normal' / f'{i:04d}.JPG', i).relative_to(root)},")
        rows.append(f"candle,test,normal,{_img(root / 'candle/Data/Images/Normal' / f'1{i:03d}.JPG', 50 + i).relative_to(root)},")
        img = _img(root / "candle/Data/Images/Anomaly" / f"{i:03d}.JPG", 90 + i, defect=True)
        mask = root / "candle/Data/Masks/Anomaly" / f"{i:03d}.png"
        if i < 2:  # the third mask file is missing
            _mask(mask, value=1)  # VisA masks mark defects with small values
        rows.append(f"candle,test,anomaly,{img.relative_to(root)},{mask.relative_to(root)}")
    _junk(root)
    if write_csv:
        (root / "split_csv").mkdir(parents=True, exist_ok=True)
        (root / "split_csv/1cls.csv").write_text("\n".join(rows) + "\n")
    return root


def test_visa(tmp_path):
    root = _visa(tmp_path / "visa")
    suite = SUITES["visa"]
    assert suite.categories(root) == ["candle"]
    cat = suite.category(root, "candle")
    assert len(cat.train_paths) == 3 and len(cat.test_items) == 6 and cat.defect_types == ["anomaly"]
    assert len(cat.defects_without_mask) == 1 and len(cat.pixel_items) == 5 and cat.has_ground_truth
    with pytest.warns(UserWarning, match="no mask file"):
        assert not cat.load_mask(cat.defects_without_mask[0], S).any()
    masked = next(it for it in cat.test_items if it.mask_path is not None)
    assert cat.load_mask(masked, S).sum() == 64  # value 1 is a defect in VisA
    with pytest.raises(FileNotFoundError, match="object 'bottle' not in"):
        suite.category(root, "bottle")


def test_visa_without_split_file(tmp_path):
    root = _visa(tmp_path / "visa", write_csv=False)
    with pytest.raises(FileNotFoundError, match=r"split file .*1cls.csv' not found"):
        SUITES["visa"].categories(root)
    with pytest.raises(FileNotFoundError, match="1cls.csv"):
        SUITES["visa"].category(root, "candle")


def test_btad_png_and_bmp_masks(tmp_path):
    root = tmp_path / "btad"
    for i in range(3):
        _img(root / "02/train/ok" / f"{i:04d}.png", i)
        _img(root / "02/test/ok" / f"{i:04d}.png", 10 + i)
        _img(root / "02/test/ko" / f"{i:04d}.bmp", 20 + i, defect=True)
    _mask(root / "02/ground_truth/ko/0000.png")
    _mask(root / "02/ground_truth/ko/0001.bmp")
    _junk(root / "02/ground_truth/ko")
    _junk(root)
    (root / "03/train").mkdir(parents=True)  # no train/ok: not a category
    suite = SUITES["btad"]
    assert suite.categories(root) == ["02"]
    cat = suite.category(root, "02")
    assert [it.mask_path.name if it.mask_path else None for it in cat.test_items if it.label] == \
        ["0000.png", "0001.bmp", None]
    assert cat.load_mask(cat.test_items[1], S).sum() == 64
    with pytest.raises(FileNotFoundError, match=r"missing: folder .*03/train/ok.*03/test/ok.*03/test/ko"):
        suite.category(root, "03")


def _loco(root: Path) -> Path:
    cat = root / "juice_bottle"
    for i in range(3):
        _img(cat / "train/good" / f"{i:03d}.png", i)
        _img(cat / "validation/good" / f"{i:03d}.png", 5 + i)
        _img(cat / "test/good" / f"{i:03d}.png", 10 + i)
        _img(cat / "test/structural_anomalies" / f"{i:03d}.png", 20 + i, defect=True)
        _img(cat / "test/logical_anomalies" / f"{i:03d}.png", 30 + i, defect=True)
        _mask(cat / "ground_truth/structural_anomalies" / f"{i:03d}/000.png")
    # Two regions of one logical image, stored as two files with LOCO's per-defect pixel values.
    _mask(cat / "ground_truth/logical_anomalies/000/000.png", box=(0, 4), value=7)
    _mask(cat / "ground_truth/logical_anomalies/000/001.png", box=(20, 30), value=255)
    _mask(cat / "ground_truth/logical_anomalies/001/000.png", box=(4, 12))
    (cat / "ground_truth/logical_anomalies/002").mkdir(parents=True)  # empty folder: no mask
    (cat / "defects_config.json").write_text("[]")
    _junk(cat)
    _junk(cat / "ground_truth/logical_anomalies/001")
    return root


def test_loco_subsets_and_mask_union(tmp_path):
    root = _loco(tmp_path / "loco")
    suite = SUITES["mvtec_loco"]
    assert suite.categories(root) == ["juice_bottle/structural", "juice_bottle/logical"]
    logical = suite.category(root, "juice_bottle/logical")
    assert len(logical.train_paths) == 3 and logical.defect_types == ["logical_anomalies"]
    assert len(logical.test_items) == 6 and len(logical.defects_without_mask) == 1
    first = next(it for it in logical.test_items if it.path.name == "000.png" and it.label)
    m = logical.load_mask(first, S)
    assert m.sum() == 16 + 100 and m[0, 0] and m[25, 25] and not m[15, 15]
    both = suite.category(root, "juice_bottle")
    assert both.defect_types == ["logical_anomalies", "structural_anomalies"] and len(both.test_items) == 9
    with pytest.raises(ValueError, match="subset must be one of"):
        suite.category(root, "juice_bottle/other")


def test_sd_saliency_900(tmp_path):
    root = tmp_path / "sd900"
    for i in range(1, 4):
        _img(root / "Source Images" / f"Pa_{i}.bmp", i, defect=True)
        _mask(root / "Ground truth" / f"Pa_{i}.png")
    _junk(root / "Source Images")
    suite = SUITES["sd_saliency_900"]
    assert suite.categories(root) == ["Pa"]
    with pytest.raises(FileNotFoundError, match="has no normal image .*publishes none"):
        suite.category(root, "Pa")
    for i in range(4, 8):  # defect-free images (all-zero masks) make the class usable
        _img(root / "Source Images" / f"Pa_{i}.bmp", i)
        _mask(root / "Ground truth" / f"Pa_{i}.png", box=None)
    cat = suite.category(root, "Pa")
    assert [p.stem for p in cat.train_paths] == ["Pa_4", "Pa_6"]
    assert sorted(it.path.stem for it in cat.test_items if it.label == 0) == ["Pa_5", "Pa_7"]
    assert len([it for it in cat.test_items if it.label]) == 3
    with pytest.raises(FileNotFoundError, match="Source Images"):
        suite.category(tmp_path, "Pa")


def _bench(root, js, *extra):
    return ["benchmark", "--suite", "mvtec_ad", "--data", str(root), "--tsize", "2", "--image-size", str(S),
            "--json", str(js), "--quiet", *extra]


def test_benchmark_table_json_resume_compare(tmp_path, capsys, monkeypatch):
    root = _mvtec(_mvtec(tmp_path / "data", "alpha"), "beta")
    js = tmp_path / "run.json"
    calls = []
    real = evaluate.evaluate_category

    def interrupted(root_, cat, **kw):
        calls.append(cat)
        if cat == "beta":
            raise KeyboardInterrupt  # the run dies on the second category
        return real(root_, cat, **kw)

    monkeypatch.setattr(evaluate, "evaluate_category", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(_bench(root, js))
    assert list(json.loads(js.read_text())["categories"]) == ["alpha"]
    monkeypatch.setattr(evaluate, "evaluate_category", real)

    calls.clear()
    monkeypatch.setattr(evaluate, "evaluate_category", lambda r, c, **kw: calls.append(c) or real(r, c, **kw))
    assert main(_bench(root, js, "--resume")) == 0
    assert calls == ["beta"]
    out = capsys.readouterr().out
    assert "[1/2] alpha:" in out and "finished earlier" in out and "[2/2] beta:" in out
    assert "| **mean** (2 categories) |" in out and "img/s" in out
    doc = json.loads(js.read_text())
    assert doc["settings"]["suite"] == "mvtec_ad" and set(doc["categories"]) == {"alpha", "beta"}
    res = doc["categories"]["alpha"]
    crack = res["by_defect"]["crack"]
    assert crack["n_images"] == 3 and crack["n_with_mask"] == 3
    assert crack["image_auroc"] == res["image_auroc"] and crack["pixel_auroc"] == res["pixel_auroc"]
    assert res["aupimo"] is None and "AUPIMO undefined" in res["aupimo_reason"]  # 32 px: too few pixels
    assert (tmp_path / "run.md").read_text().count("\n") >= 5

    other = tmp_path / "other.json"
    doc["categories"]["alpha"]["image_auroc"] = (res["image_auroc"] or 0) - 0.25
    doc["categories"]["gamma"] = doc["categories"].pop("beta")
    other.write_text(json.dumps(doc))
    assert main(_bench(root, js, "--resume", "--compare", str(other))) == 0
    out = capsys.readouterr().out
    assert "| alpha | +0.250 |" in out and "| beta | – | – | – | – | only in this run |" in out
    assert f"only in {other}" in out and "| **mean** (1 in both) | +0.250 |" in out

    assert main(["benchmark", "--suite", "btad", "--data", str(root), "--category", "alpha", "--json", str(js),
                 "--resume", "--quiet"]) == 2
    assert "suite 'mvtec_ad' there, 'btad' now" in capsys.readouterr().err


def test_benchmark_records_unreadable_category(tmp_path, capsys):
    root = _loco(tmp_path / "loco")
    js = tmp_path / "loco.json"
    assert main(["benchmark", "--suite", "mvtec_loco", "--data", str(root), "--category", "juice_bottle/logical",
                 "--category", "juice_bottle/nope", "--tsize", "all", "--image-size", str(S), "--json", str(js),
                 "--quiet"]) == 1
    doc = json.loads(js.read_text())
    assert doc["failed"]["juice_bottle/nope"]["type"] == "ValueError"
    logical = doc["categories"]["juice_bottle/logical"]
    assert logical["n_defect_without_mask"] == 1 and logical["n_pixel_images"] == 5
    assert "FAILED (ValueError" in capsys.readouterr().out


@pytest.mark.skipif(not (SHARED / "battery_weld").is_dir(), reason="../shared/data is absent")
def test_benchmark_on_shared_data(tmp_path, capsys):
    js = tmp_path / "bw.json"
    assert main(["benchmark", "--suite", "mvtec_ad", "--data", str(SHARED), "--category", "battery_weld",
                 "--tsize", "5", "--image-size", "64", "--json", str(js), "--quiet"]) == 0
    res = json.loads(js.read_text())["categories"]["battery_weld"]
    assert res["image_auroc"] > 0.6 and res["n_test"] == 128 and "defective" in res["by_defect"]
    assert "| battery_weld | PTS-5 of 37 |" in capsys.readouterr().out
