import csv
import json

import pytest

from hetmm_fast.cli import main

S = 64


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from hetmm_fast.data.synthetic import make_dataset

    root = tmp_path_factory.mktemp("data")
    return make_dataset(root, seed=1, categories=("carpet",), n_train=5, n_test_good=2, n_test_defect=3, size=S,
                        progress=False)


def test_fit_select_predict(tmp_path, dataset, capsys):
    bank = tmp_path / "carpet.hetmm"
    assert main(["fit", str(dataset / "carpet/train/good"), "--out", str(bank), "--image-size", str(S), "--quiet"]) == 0
    assert "5 templates, tsize=ALL" in capsys.readouterr().out
    assert main(["select", str(bank), "--tsize", "2", "--quiet"]) == 0
    assert "tsize=2 of 5" in capsys.readouterr().out
    out = tmp_path / "pred"
    test_dir = dataset / "carpet/test/good"
    assert main(["predict", str(bank), str(test_dir), "--out", str(out), "--threshold", "0.5", "--quiet"]) == 0
    rows = list(csv.DictReader(open(out / "scores.csv")))
    assert len(rows) == 2 and {r["verdict"] for r in rows} <= {"normal", "anomalous"}
    assert all(float(r["score"]) >= 0 for r in rows)
    assert len(list(out.glob("*_overlay.png"))) == 2


def test_eval_json(tmp_path, dataset, capsys):
    js = tmp_path / "r.json"
    code = main(["eval", "--data", str(dataset), "--category", "carpet", "--tsize", "3", "--image-size", str(S),
                 "--json", str(js), "--out", str(tmp_path / "pics"), "--quiet"])
    assert code == 0
    res = json.loads(js.read_text())["categories"]["carpet"]
    for key in ("image_auroc", "pixel_auroc", "aupro", "paper_pro", "f1_max"):
        assert 0 <= res[key] <= (100 if key == "paper_pro" else 1)
    assert res["tsize"] == 3 and res["n_train"] == 5 and res["n_test"] == 5
    assert {"templates", "pts", "predict", "metrics"} <= set(res["timings"])
    assert (tmp_path / "pics/carpet/evaluation.png").is_file()
    assert "| carpet | 3 |" in capsys.readouterr().out


def test_demo_small(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path), "--categories", "pill", "--n-train", "4", "--n-test", "5",
                 "--image-size", str(S), "--tsize", "2", "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "pill: image AUROC" in out
    assert json.loads((tmp_path / "results.json").read_text())["categories"]["pill"]["tsize"] == 2
    assert list((tmp_path / "pictures/pill").glob("*.png"))


def test_info_and_errors(tmp_path, capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "backends (ladder order):" in out and "torch   available" in out
    assert main(["predict", str(tmp_path / "none.hetmm"), str(tmp_path), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "bank file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--data", str(tmp_path), "--tsize", "0"])


def test_fit_dtypes_are_recorded(tmp_path, dataset, capsys):
    from hetmm_fast.bank import load_bank

    bank = tmp_path / "half.hetmm"
    assert main(["fit", str(dataset / "carpet/train/good"), "--out", str(bank), "--image-size", str(S), "--quiet",
                 "--dtype", "float16", "--backbone-dtype", "bfloat16"]) == 0
    tensors, meta = load_bank(bank)
    assert meta["dtype"] == "float16" and meta["backbone_dtype"] == "bfloat16"
    assert all(str(t.dtype) == "torch.float16" for k, t in tensors.items() if k.startswith("all."))
    with pytest.raises(SystemExit):
        main(["fit", str(dataset / "carpet/train/good"), "--out", str(bank), "--backbone-dtype", "float64"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("terminal", [False, True])
def test_progress_bars_only_on_a_terminal(tmp_path, dataset, capsys, monkeypatch, terminal):
    """A log file or pipe gets no bars (no cursor escapes); a terminal gets them unless --quiet."""
    import sys

    import hetmm_fast as hf

    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    train = str(dataset / "carpet/train/good")
    assert main(["fit", train, "--out", str(tmp_path / "a.hetmm"), "--image-size", str(S), "--tsize", "2"]) == 0
    err = capsys.readouterr().err
    assert ("templates" in err and "PTS-2" in err) == terminal, err
    assert main(["fit", train, "--out", str(tmp_path / "b.hetmm"), "--image-size", str(S), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    hf.HETMM(image_size=S).fit(train).select(2)  # the library is quiet unless asked, terminal or not
    assert capsys.readouterr().err == ""
