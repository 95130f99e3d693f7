"""Evaluation that never loses work: image-only data, defect images without masks, per-category results files,
failed categories and --resume."""
import json
import shutil
import warnings

import pytest
import torch

from hetmm_fast import evaluate, metrics
from hetmm_fast.cli import main
from hetmm_fast.detector import HETMM

S = 64
PIXEL = ("pixel_auroc", "aupro", "paper_pro", "f1_max")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from hetmm_fast.data.synthetic import make_dataset

    root = tmp_path_factory.mktemp("source")
    return make_dataset(root, seed=3, categories=("carpet", "wood"), n_train=4, n_test_good=2, n_test_defect=4,
                        size=S, progress=False)


def _copy(source, tmp_path, *categories):
    root = tmp_path / "data"
    for cat in categories:
        shutil.copytree(source / cat, root / cat)
    return root


def _eval_args(root, js, *extra):
    return ["eval", "--data", str(root), "--tsize", "2", "--image-size", str(S), "--json", str(js), "--quiet",
            *extra]


def test_image_only_category(source, tmp_path, capsys):
    root = _copy(source, tmp_path, "carpet")
    shutil.rmtree(root / "carpet/ground_truth")
    js = tmp_path / "r.json"
    assert main(_eval_args(root, js, "--out", str(tmp_path / "pics"))) == 0
    res = json.loads(js.read_text())["categories"]["carpet"]
    assert 0.0 <= res["image_auroc"] <= 1.0
    assert all(res[k] is None for k in PIXEL)
    assert set(res["skipped"]) == set(PIXEL)
    assert all("no ground-truth masks" in res["skipped"][k] for k in PIXEL)
    assert res["n_defect_without_mask"] == 4 and res["n_pixel_images"] == 0
    out = capsys.readouterr().out
    assert "| carpet | 2 | " in out and "| – | – | – | – |" in out
    assert "not computed: no ground-truth masks" in out
    pics = tmp_path / "pics/carpet"
    assert (pics / "evaluation.png").is_file() and len(list(pics.glob("*.png"))) > 1


def test_defects_without_mask_are_left_out(source, tmp_path, monkeypatch):
    root = _copy(source, tmp_path, "carpet")
    gone = sorted((root / "carpet/ground_truth").rglob("*_mask.png"))[:2]
    for path in gone:
        path.unlink()
    preds = []
    predict = HETMM.predict

    def recording_predict(self, images):
        preds.append((list(images), predict(self, images)))
        return preds[-1][1]

    monkeypatch.setattr(HETMM, "predict", recording_predict)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unmasked defect image must not be loaded as an empty mask
        res = evaluate.evaluate_category(root, "carpet", tsize=2, image_size=S, progress=False,
                                         out_dir=tmp_path / "pics")
    assert res["n_defect_without_mask"] == 2 and res["n_test"] == 6 and res["n_pixel_images"] == 4
    assert res["skipped"] == {}

    (paths, pred), = preds
    from hetmm_fast.data.mvtec import MVTecCategory

    cat = MVTecCategory(root, "carpet")
    masked = [i for i, it in enumerate(cat.test_items) if it.label == 0 or it.mask_path is not None]
    assert [paths[i] for i in masked] == [it.path for it in cat.pixel_items]
    masks = cat.load_masks(S, cat.pixel_items)
    assert res["pixel_auroc"] == metrics.pixel_auroc(masks, pred.maps[masked])
    assert res["aupro"] == metrics.aupro(masks, pred.pro_maps[masked])
    assert res["paper_pro"] == metrics.paper_pro(masks, pred.pro_maps[masked])
    assert res["f1_max"] == metrics.f1_max(masks.flatten(), pred.maps[masked].flatten())
    # Scoring the unmasked defect images as all-normal pixels gives another number.
    all_normal = torch.zeros((len(paths), S, S), dtype=torch.bool)
    all_normal[masked] = masks
    assert res["pixel_auroc"] != metrics.pixel_auroc(all_normal, pred.maps)
    assert (tmp_path / "pics/carpet/evaluation.png").is_file()


def test_failed_category_and_resume(source, tmp_path, monkeypatch, capsys):
    root = _copy(source, tmp_path, "carpet", "wood")
    train = root / "wood/train/good"
    shutil.move(train, tmp_path / "wood_train")
    train.mkdir()  # an empty train folder: the category is listed but cannot be evaluated
    js = tmp_path / "r.json"
    assert main(_eval_args(root, js)) == 1
    captured = capsys.readouterr()
    assert "failed: 1 of 2 categories: wood (FileNotFoundError)" in captured.err
    doc = json.loads(js.read_text())
    assert set(doc["categories"]) == {"carpet"} and set(doc["failed"]) == {"wood"}
    assert doc["failed"]["wood"]["type"] == "FileNotFoundError"
    assert "images in" in doc["failed"]["wood"]["message"]
    assert doc["settings"] == {"tsize": 2, "backbone": "efficientnet_lite0", "preset": "default", "image_size": S,
                               "dtype": "float32", "backbone_dtype": "float32"}

    train.rmdir()
    shutil.move(tmp_path / "wood_train", train)
    calls = []
    real = evaluate.evaluate_category

    def counting(root_, category, **kw):
        calls.append(category)
        return real(root_, category, **kw)

    monkeypatch.setattr(evaluate, "evaluate_category", counting)
    assert main(_eval_args(root, js, "--resume")) == 0
    assert calls == ["wood"]
    out = capsys.readouterr().out
    assert "carpet: " in out and "finished earlier" in out and "| wood | 2 |" in out and "| carpet | 2 |" in out
    resumed = json.loads(js.read_text())
    assert resumed["failed"] == {} and resumed["categories"]["carpet"] == doc["categories"]["carpet"]
    assert 0.0 <= resumed["categories"]["wood"]["pixel_auroc"] <= 1.0

    # Other settings are refused, and nothing runs or is written.
    before = js.read_text()
    assert main(_eval_args(root, js, "--resume", "--tsize", "3")) == 2
    assert "tsize 2 there, 3 now" in capsys.readouterr().err
    assert calls == ["wood"] and js.read_text() == before
    assert main(["eval", "--data", str(root), "--resume", "--quiet"]) == 2
    assert "--resume needs --json" in capsys.readouterr().err


def test_results_written_atomically_after_each_category(tmp_path, monkeypatch):
    import hetmm_fast.bank as bank

    js = tmp_path / "out" / "r.json"
    seen = []

    def fake(root, category, **kw):
        seen.append(json.loads(js.read_text()) if js.exists() else None)
        if category == "b":
            raise ValueError("b is broken")
        if category == "c":
            raise KeyboardInterrupt  # a run stopped from outside: the finished categories stay on disk
        return {"image_auroc": 0.5, "timings": {}}

    writes = []
    real_write = bank.atomic_write_text
    monkeypatch.setattr(bank, "atomic_write_text", lambda path, text: writes.append(path) or real_write(path, text))
    monkeypatch.setattr(evaluate, "evaluate_category", fake)
    with pytest.raises(KeyboardInterrupt):
        evaluate.evaluate_dataset(tmp_path, ["a", "b", "c"], json_path=js, progress=False)
    assert seen[0] is None
    assert list(seen[1]["categories"]) == ["a"] and seen[1]["failed"] == {}
    assert seen[2]["failed"] == {"b": {"type": "ValueError", "message": "b is broken"}}
    assert writes == [js, js]
    assert json.loads(js.read_text()) == seen[2]
    assert [p.name for p in js.parent.iterdir()] == ["r.json"]  # no temporary file left behind


def test_format_table_marks_missing_metrics():
    row = {"tsize": None, "image_auroc": 0.75, "pixel_auroc": None, "aupro": None, "paper_pro": None,
           "f1_max": None, "timings": {"templates": 1.0, "predict_per_image": 0.25}}
    line = evaluate.format_table({"x": row}).splitlines()[-1]
    assert line == "| x | ALL | 0.750 | – | – | – | – | 1.0 | – | 0.250 |"
