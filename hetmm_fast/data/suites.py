"""Public anomaly-detection benchmark suites in their published layouts.

Every reader builds category objects with the interface of :class:`~hetmm_fast.data.mvtec.MVTecCategory`
(``name``, ``train_paths``, ``test_items``, ``defect_types``, ``has_ground_truth``, ``defects_without_mask``,
``pixel_items``, ``load_mask``, ``load_masks``), so :mod:`hetmm_fast.evaluate` scores them all alike.
:data:`SUITES` maps a suite name to a :class:`Suite`; ``SUITES[name].categories(root)`` lists what a root holds and
``SUITES[name].category(root, name)`` reads one.

Layouts (only image files count; hidden files, READMEs, licences and other non-image files are ignored):

``mvtec_ad``, ``mpdd``
    ``<cat>/train/good``, ``<cat>/test/good``, ``<cat>/test/<defect>``, ``<cat>/ground_truth/<defect>/<stem>_mask.*``
    (MPDD uses the MVTec AD layout).
``visa``
    ``split_csv/1cls.csv`` with the columns ``object,split,label,image,mask``: ``split`` train or test, ``label``
    normal or anomaly, ``image`` and ``mask`` relative to the root (``mask`` empty for normal images). Train rows
    must be normal. VisA has one anomaly class per object, reported as defect type ``anomaly``. Its masks label
    defect pixels with small nonzero values, so any value above 0 is a defect.
``btad``
    ``01|02|03/train/ok``, ``test/ok``, ``test/ko``, ``ground_truth/ko/<stem>.png|.bmp`` (mask named by the image's
    stem, no suffix).
``mvtec_loco``
    ``<cat>/train/good``, ``validation/good``, ``test/good``, ``test/logical_anomalies``,
    ``test/structural_anomalies``, ``ground_truth/<type>/<image stem>/000.png, 001.png, ...``. Each mask file is one
    defect region; the pixel ground truth is their union (value > 0; the saturation thresholds of
    ``defects_config.json`` matter only for sPRO, which is not computed). Templates come from ``train/good`` (the
    validation images are for model selection, which a training-free method does not do). The structural and
    logical subsets are separate categories, ``<cat>/structural`` and ``<cat>/logical``, each with every good test
    image; ``<cat>`` alone gives both together.
``sd_saliency_900``
    ``Source Images/<In|Pa|Sc>_<n>.bmp`` and ``Ground truth/<In|Pa|Sc>_<n>.png`` (300 images per class: inclusion,
    patch, scratch). The set has no defect-free image, so the anomaly-detection protocol cannot be followed as
    published; see :class:`SDSaliencyCategory` for the protocol used here.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hetmm_fast.data.images import IMAGE_EXTENSIONS
from hetmm_fast.data.mvtec import GOOD, MVTecCategory, TestItem, images_or_note, list_categories

__all__ = ["Suite", "SUITES", "get_suite", "SuiteCategory", "VisACategory", "BTADCategory", "LOCOCategory",
           "SDSaliencyCategory"]


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _mask_by_stem(folder: Path, stem: str) -> Path | None:
    """The image file ``<folder>/<stem>.<any image extension>``, or None."""
    if not folder.is_dir():
        return None
    found = sorted(p for p in folder.glob(f"{stem}.*") if p.stem == stem and _is_image(p))
    return found[0] if found else None


def _root_dir(root, who: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{who}: dataset root '{root}' is not an existing folder")
    return root


class SuiteCategory(MVTecCategory):
    """A category assembled by a suite reader: the :class:`MVTecCategory` interface over given lists.

    Args:
        name: the category name reported in results (may contain "/", e.g. ``breakfast_box/logical``).
        root: the folder the category's files live in.
        train_paths: normal images for the templates.
        test_items: test images with labels, defect types and mask paths.
        mask_root: where the masks live (``has_ground_truth`` is whether it exists).
        mask_hint: ``mask_hint(item)`` names the mask file a defect item would need (used in warnings).
    """

    def __init__(self, name: str, root: Path, train_paths: list[Path], test_items: list[TestItem],
                 mask_root: Path | None, mask_hint: Callable[[TestItem], Path] | None = None) -> None:
        self.name = name
        self.root = Path(root)
        self.train_paths = list(train_paths)
        self.test_items = list(test_items)
        self.defect_types = sorted({it.defect for it in self.test_items if it.label == 1})
        self._mask_root = mask_root
        self._mask_hint = mask_hint

    @property
    def has_ground_truth(self) -> bool:
        return self._mask_root is not None and self._mask_root.is_dir()

    def expected_mask_path(self, item: TestItem) -> Path:
        if self._mask_hint is not None:
            return self._mask_hint(item)
        return (self._mask_root or self.root) / item.defect / item.path.name

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, root='{self.root}', train={len(self.train_paths)}, "
                f"test={len(self.test_items)}, defect_types={self.defect_types})")


# --- VisA ------------------------------------------------------------------------------------------------------

VISA_SPLIT = Path("split_csv") / "1cls.csv"
VISA_COLUMNS = ("object", "split", "label", "image", "mask")


def _visa_rows(root: Path) -> list[dict]:
    path = root / VISA_SPLIT
    if not path.is_file():
        raise FileNotFoundError(f"VisA: split file '{path}' not found; VisA is read from its 1-class split "
                                f"({VISA_SPLIT}, columns {','.join(VISA_COLUMNS)})")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        absent = [c for c in VISA_COLUMNS if c not in (reader.fieldnames or [])]
        if absent:
            raise ValueError(f"VisA: split file '{path}' lacks the columns {absent} (has {reader.fieldnames})")
        return [{k: (row.get(k) or "").strip() for k in VISA_COLUMNS} for row in reader]


def visa_categories(root) -> list[str]:
    return sorted({row["object"] for row in _visa_rows(_root_dir(root, "VisA")) if row["object"]})


class VisACategory(SuiteCategory):
    """One object of VisA, read from ``split_csv/1cls.csv`` (paths in it are relative to the root).

    Raises:
        FileNotFoundError: no split file, an object the file does not list, or image files it names that do not
            exist (all listed). A missing mask file of an anomaly image is not fatal (``defects_without_mask``).
        ValueError: a row with an unknown split or label, or a normal image in no split.
    """

    def __init__(self, root, category: str) -> None:
        root = _root_dir(root, "VisA")
        rows = [r for r in _visa_rows(root) if r["object"] == category]
        if not rows:
            raise FileNotFoundError(f"VisA: object '{category}' not in '{root / VISA_SPLIT}'; objects there: "
                                    f"{visa_categories(root)}")
        train, items, missing = [], [], []
        for r in rows:
            if r["split"] not in ("train", "test") or r["label"] not in ("normal", "anomaly"):
                raise ValueError(f"VisA: '{root / VISA_SPLIT}' row {r} has split {r['split']!r} (train|test) or "
                                 f"label {r['label']!r} (normal|anomaly) out of range")
            image = root / r["image"]
            if not image.is_file():
                missing.append(str(image))
                continue
            if r["split"] == "train":
                if r["label"] != "normal":
                    raise ValueError(f"VisA: training image '{image}' is labelled {r['label']!r}; templates must "
                                     "be normal")
                train.append(image)
            elif r["label"] == "normal":
                items.append(TestItem(image, 0, GOOD, None))
            else:
                mask = root / r["mask"] if r["mask"] else None
                items.append(TestItem(image, 1, "anomaly", mask if mask is not None and mask.is_file() else None))
        if missing:
            raise FileNotFoundError(f"VisA: {len(missing)} image files listed for '{category}' in "
                                    f"'{root / VISA_SPLIT}' do not exist: {missing[:5]}"
                                    + (" ..." if len(missing) > 5 else ""))
        if not train:
            raise FileNotFoundError(f"VisA: no training (normal) images for '{category}' in '{root / VISA_SPLIT}'")
        items.sort(key=lambda it: (it.defect, str(it.path)))
        masks = {root / r["image"]: r["mask"] for r in rows}
        super().__init__(category, root / category, sorted(train), items, root / category,
                         lambda it: root / masks[it.path] if masks.get(it.path) else
                         Path(f"(no mask listed for '{it.path}' in {VISA_SPLIT})"))

    # VisA's masks label defect pixels with small integers, not 255.
    mask_nonzero_is_defect = True

    @property
    def has_ground_truth(self) -> bool:
        return any(it.mask_path is not None for it in self.test_items)


# --- BTAD ------------------------------------------------------------------------------------------------------

BTAD_CATEGORIES = ("01", "02", "03")


def btad_categories(root) -> list[str]:
    root = _root_dir(root, "BTAD")
    return sorted(p.name for p in _subfolders(root) if (p / "train" / "ok").is_dir())


class BTADCategory(SuiteCategory):
    """One BTAD product (``01``, ``02``, ``03``): ``train/ok``, ``test/ok``, ``test/ko``,
    ``ground_truth/ko/<stem>.png|.bmp``. Defect type ``ko``.

    Raises:
        FileNotFoundError: the category or one of ``train/ok``, ``test/ok``, ``test/ko`` is missing or has no image
            (every missing part listed).
    """

    def __init__(self, root, category: str) -> None:
        root = _root_dir(root, "BTAD")
        folder = root / category
        if not folder.is_dir():
            raise FileNotFoundError(f"BTAD: category '{category}' not found in '{root}'; categories there: "
                                    f"{btad_categories(root)}")
        missing: list[str] = []
        train = images_or_note(folder / "train" / "ok", missing)
        good = images_or_note(folder / "test" / "ok", missing)
        bad = images_or_note(folder / "test" / "ko", missing)
        if missing:
            raise FileNotFoundError(f"BTAD: '{folder}' is not a valid BTAD category; missing: " + "; ".join(missing))
        gt = folder / "ground_truth" / "ko"
        items = [TestItem(p, 1, "ko", _mask_by_stem(gt, p.stem)) for p in bad]
        items += [TestItem(p, 0, GOOD, None) for p in good]
        super().__init__(category, folder, train, items, folder / "ground_truth",
                         lambda it: gt / f"{it.path.stem}.png")


# --- MVTec LOCO AD ---------------------------------------------------------------------------------------------

LOCO_TYPES = {"structural": "structural_anomalies", "logical": "logical_anomalies"}


def loco_categories(root) -> list[str]:
    """``<cat>/structural`` and ``<cat>/logical`` for every folder with ``train/good``."""
    return [f"{cat}/{sub}" for cat in list_categories(root) for sub in LOCO_TYPES]


class LOCOCategory(SuiteCategory):
    """One MVTec LOCO AD category, or its structural or logical subset (``name`` ``<cat>/structural``,
    ``<cat>/logical`` or ``<cat>`` for both). A defect item's ``mask_path`` is its folder
    ``ground_truth/<type>/<stem>/``; :meth:`load_mask` takes the union of the files in it.

    Raises:
        FileNotFoundError: the category, ``train/good``, ``test/good`` or a needed anomaly folder is missing
            (every missing part listed). A defect image without a mask folder (or with an empty one) is not
            fatal (``defects_without_mask``).
        ValueError: a subset other than structural or logical.
    """

    def __init__(self, root, category: str) -> None:
        root = _root_dir(root, "MVTec LOCO AD")
        base, _, sub = category.partition("/")
        if sub and sub not in LOCO_TYPES:
            raise ValueError(f"MVTec LOCO AD: subset must be one of {sorted(LOCO_TYPES)}, got {category!r}")
        folder = root / base
        if not base or not folder.is_dir():
            raise FileNotFoundError(f"MVTec LOCO AD: category '{base}' not found in '{root}'; categories there: "
                                    f"{list_categories(root)}")
        missing: list[str] = []
        train = images_or_note(folder / "train" / GOOD, missing)
        items = [TestItem(p, 0, GOOD, None) for p in images_or_note(folder / "test" / GOOD, missing)]
        for kind in ([LOCO_TYPES[sub]] if sub else sorted(LOCO_TYPES.values())):
            gt = folder / "ground_truth" / kind
            for p in images_or_note(folder / "test" / kind, missing):
                masks = gt / p.stem
                has = masks.is_dir() and any(_is_image(m) for m in masks.iterdir())
                items.append(TestItem(p, 1, kind, masks if has else None))
        if missing:
            raise FileNotFoundError(f"MVTec LOCO AD: '{folder}' is not a valid LOCO category; missing: "
                                    + "; ".join(missing))
        items.sort(key=lambda it: (it.defect, it.path.name))
        super().__init__(category, folder, train, items, folder / "ground_truth",
                         lambda it: folder / "ground_truth" / it.defect / it.path.stem / "000.png")


# --- SD-saliency-900 -------------------------------------------------------------------------------------------

SD_CLASSES = ("In", "Pa", "Sc")
SD_IMAGES = "Source Images"
SD_MASKS = "Ground truth"


class SDSaliencyCategory(SuiteCategory):
    """One defect class of SD-saliency-900 (``In`` inclusion, ``Pa`` patch, ``Sc`` scratch).

    The published set holds 300 defective strip-steel images per class and no defect-free image, while HETMM
    needs normal images for its templates. Protocol used here: an image whose mask marks no pixel is normal;
    the class's normal images, sorted by name, alternate between templates (1st, 3rd, ...) and good test images
    (2nd, 4th, ...); every image with a non-empty mask is a defect test image. With no normal image (the
    published set) the category refuses with an error saying so, rather than invent templates.

    Raises:
        FileNotFoundError: ``Source Images`` is missing or has no image of the class, or no normal image exists.
    """

    def __init__(self, root, category: str) -> None:
        from hetmm_fast.data.mvtec import _read_mask_rgb

        root = _root_dir(root, "SD-saliency-900")
        if category not in SD_CLASSES:
            raise FileNotFoundError(f"SD-saliency-900: class '{category}' unknown; classes: {list(SD_CLASSES)}")
        src, gt = root / SD_IMAGES, root / SD_MASKS
        if not src.is_dir():
            raise FileNotFoundError(f"SD-saliency-900: folder '{src}' not found (expected '{SD_IMAGES}/' and "
                                    f"'{SD_MASKS}/' under '{root}')")
        images = sorted((p for p in src.iterdir() if _is_image(p) and p.stem.split("_")[0] == category),
                        key=lambda p: (len(p.stem), p.stem))
        if not images:
            raise FileNotFoundError(f"SD-saliency-900: no '{category}_*' image in '{src}'")
        normal, defects = [], []
        for p in images:
            mask = _mask_by_stem(gt, p.stem)
            if mask is not None and not (_read_mask_rgb(mask) > 0).any():
                normal.append(p)
            else:
                defects.append(TestItem(p, 1, category, mask))
        if not normal:
            raise FileNotFoundError(
                f"SD-saliency-900: class '{category}' has no normal image ({len(images)} images, every mask marks "
                "a defect or is absent). HETMM builds its templates from normal images, and SD-saliency-900 "
                "publishes none; add defect-free images of the class with all-zero masks to evaluate it")
        good = [TestItem(p, 0, GOOD, None) for p in normal[1::2]]
        super().__init__(category, root, normal[0::2], defects + good, gt,
                         lambda it: gt / f"{it.path.stem}.png")


# --- registry --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Suite:
    """A benchmark suite: how to list a root's categories and how to read one.

    Attributes:
        name: the registry key.
        title: the dataset's name.
        list_categories: ``list_categories(root) -> [name]``.
        load: ``load(root, name)`` -> a category object with the :class:`MVTecCategory` interface.
        paper_preset: whether ``preset="paper"`` (the published MVTec AD table) applies to its categories.
    """

    name: str
    title: str
    list_categories: Callable[[str | os.PathLike], list[str]]
    load: Callable[[str | os.PathLike, str], MVTecCategory]
    paper_preset: bool = False

    def categories(self, root) -> list[str]:
        """The categories found under ``root``."""
        _root_dir(root, self.title)
        return self.list_categories(root)

    def category(self, root, name: str) -> MVTecCategory:
        """Read category ``name`` under ``root``."""
        return self.load(root, name)


def _sd_categories(root) -> list[str]:
    src = _root_dir(root, "SD-saliency-900") / SD_IMAGES
    if not src.is_dir():
        raise FileNotFoundError(f"SD-saliency-900: folder '{src}' not found")
    present = {p.stem.split("_")[0] for p in src.iterdir() if _is_image(p)}
    return [c for c in SD_CLASSES if c in present]


SUITES: dict[str, Suite] = {
    "mvtec_ad": Suite("mvtec_ad", "MVTec AD", list_categories, MVTecCategory, paper_preset=True),
    "visa": Suite("visa", "VisA", visa_categories, VisACategory),
    "mpdd": Suite("mpdd", "MPDD", list_categories, MVTecCategory),
    "btad": Suite("btad", "BTAD", btad_categories, BTADCategory),
    "mvtec_loco": Suite("mvtec_loco", "MVTec LOCO AD", loco_categories, LOCOCategory),
    "sd_saliency_900": Suite("sd_saliency_900", "SD-saliency-900", _sd_categories, SDSaliencyCategory),
}


def get_suite(name: str) -> Suite:
    """The suite registered as ``name``.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if name not in SUITES:
        raise ValueError(f"unknown benchmark suite {name!r}; known suites: {sorted(SUITES)}")
    return SUITES[name]
