"""Datasets in MVTec AD layout (SPEC section 7).

::

    <root>/<category>/train/good/*.png                  normal images (templates)
    <root>/<category>/test/good/*.png                   normal test images      (label 0)
    <root>/<category>/test/<defect>/*.png               defective test images   (label 1)
    <root>/<category>/ground_truth/<defect>/<stem>_mask.png   0/255 defect masks

Any extension of :data:`~hetmm_fast.data.images.IMAGE_EXTENSIONS` is accepted for images and masks.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from hetmm_fast.data.images import IMAGE_EXTENSIONS, _pil_to_rgb_array, list_images

__all__ = ["GOOD", "TestItem", "MVTecCategory", "list_categories"]

GOOD = "good"
MASK_SUFFIX = "_mask"


def list_categories(root: str | os.PathLike) -> list[str]:
    """Names of the subfolders of ``root`` that have a ``train/good`` folder, sorted.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        NotADirectoryError: ``root`` is a file.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"list_categories: dataset root '{root}' does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"list_categories: dataset root '{root}' is not a folder")
    return sorted(p.name for p in root.iterdir() if (p / "train" / GOOD).is_dir())


@dataclass(frozen=True)
class TestItem:
    """One test image of a category.

    Attributes:
        path: the image file.
        label: 0 for ``test/good``, 1 for any defect folder.
        defect: name of the folder under ``test/`` (``"good"`` for normal images).
        mask_path: the ground-truth mask file, or None (always None for good images; None for a defect image
            whose mask file is absent). A folder stands for the union of the mask files in it (MVTec LOCO AD).
    """

    __test__ = False  # not a pytest test class despite the name

    path: Path
    label: int
    defect: str
    mask_path: Path | None


def images_or_note(folder: Path, missing: list[str]) -> list[Path]:
    """The images in ``folder``; when it is absent or holds none, ``[]`` and a note in ``missing`` (readers collect
    every missing part of a category before refusing it, so one error names them all)."""
    if not folder.is_dir():
        missing.append(f"folder {folder}")
        return []
    try:
        return list_images(folder)
    except FileNotFoundError:
        missing.append(f"images in {folder}")
        return []


def _find_mask(folder: Path, stem: str) -> Path | None:
    for ext in IMAGE_EXTENSIONS:
        for candidate in (folder / f"{stem}{MASK_SUFFIX}{ext}", folder / f"{stem}{MASK_SUFFIX}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def _read_mask_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image.load()
            return _pil_to_rgb_array(image, f"MVTecCategory.load_mask('{path}')")
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"MVTecCategory.load_mask: cannot read mask '{path}' ({exc})") from exc


def _mask_union(folder: Path) -> np.ndarray:
    """Union of the mask files in ``folder`` (one file per defect region, as MVTec LOCO AD stores them) as
    float32 0/1: a pixel is a defect where any file has a value above 0. All files must have one size."""
    union = None
    for path in list_images(folder):
        binary = _read_mask_rgb(path).max(axis=2) > 0
        if union is None:
            union = binary
        elif union.shape != binary.shape:
            raise ValueError(f"MVTecCategory.load_mask: mask '{path}' is {binary.shape[1]}x{binary.shape[0]}, "
                             f"the other masks in '{folder}' are {union.shape[1]}x{union.shape[0]}")
        else:
            union |= binary
    return union.astype(np.float32)


class MVTecCategory:
    """One category of an MVTec-layout dataset: its training paths, test items and masks.

    Args:
        root: the dataset root (the folder holding the category folders).
        category: the category folder name.

    Attributes:
        name: the category name.
        root: the category folder ``<root>/<category>``.
        train_paths: ``train/good`` images, sorted.
        test_items: every test image, ordered by defect folder name then file name (``good`` sorts with the rest).
        defect_types: the defect folder names under ``test/`` (not ``good``), sorted.

    Raises:
        FileNotFoundError: the root or category does not exist (the message lists the available categories), or
            required parts of the layout are missing (the message lists every missing part).
    """

    #: Whether any mask value above 0 marks a defect (datasets that store defect labels as small integers) instead
    #: of the 0/255 convention read as [0, 1] and thresholded at 0.5.
    mask_nonzero_is_defect: bool = False

    def __init__(self, root: str | os.PathLike, category: str) -> None:
        dataset_root = Path(root)
        if not dataset_root.is_dir():
            raise FileNotFoundError(f"MVTecCategory: dataset root '{dataset_root}' is not an existing folder")
        if not isinstance(category, str) or not category or "/" in category or "\\" in category:
            raise ValueError(f"MVTecCategory: category must be a folder name, got {category!r}")
        folder = dataset_root / category
        if not folder.is_dir():
            available = list_categories(dataset_root)
            raise FileNotFoundError(
                f"MVTecCategory: category '{category}' not found in '{dataset_root}'; available categories "
                f"(folders with train/good): {available if available else 'none'}"
            )
        self.name = category
        self.root = folder

        missing: list[str] = []
        train_dir = folder / "train" / GOOD
        test_dir = folder / "test"
        self.train_paths: list[Path] = images_or_note(train_dir, missing)
        test_folders: list[Path] = []
        if not test_dir.is_dir():
            missing.append(f"folder {test_dir}")
        else:
            test_folders = sorted(p for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
            if not test_folders:
                missing.append(f"subfolders of {test_dir} (expected test/good and test/<defect>)")
        test_items: list[TestItem] = []
        for sub in test_folders:
            paths = images_or_note(sub, missing)
            if sub.name == GOOD:
                test_items.extend(TestItem(p, 0, GOOD, None) for p in paths)
            else:
                mask_dir = folder / "ground_truth" / sub.name
                test_items.extend(TestItem(p, 1, sub.name, _find_mask(mask_dir, p.stem)) for p in paths)
        if missing:
            raise FileNotFoundError(
                f"MVTecCategory: '{folder}' is not a valid MVTec-layout category; missing: " + "; ".join(missing)
            )
        self.test_items: list[TestItem] = test_items
        self.defect_types: list[str] = [p.name for p in test_folders if p.name != GOOD]

    def __repr__(self) -> str:
        return (
            f"MVTecCategory(name={self.name!r}, root='{self.root}', train={len(self.train_paths)}, "
            f"test={len(self.test_items)}, defect_types={self.defect_types})"
        )

    @property
    def labels(self) -> list[int]:
        """Labels of :attr:`test_items` in order (0 good, 1 defect)."""
        return [item.label for item in self.test_items]

    @property
    def has_ground_truth(self) -> bool:
        """Whether the category has a ``ground_truth`` folder (image-level-only datasets have none)."""
        return (self.root / "ground_truth").is_dir()

    @property
    def defects_without_mask(self) -> list[TestItem]:
        """Defect items of :attr:`test_items` whose mask file is absent, in order."""
        return [item for item in self.test_items if item.label == 1 and item.mask_path is None]

    @property
    def pixel_items(self) -> list[TestItem]:
        """Test items with a pixel ground truth, in :attr:`test_items` order: every good image (all normal by
        definition) and every defect image that has a mask file. Pixel metrics are defined on these only: a defect
        image without its mask would otherwise count its defect pixels as normal ones."""
        return [item for item in self.test_items if item.label == 0 or item.mask_path is not None]

    def load_mask(self, item: TestItem, size: int) -> torch.Tensor:
        """Ground truth of one test item as ``Tensor[size, size]`` bool (True = defect).

        The mask is read in [0, 1] (the maximum over channels for a colour mask; 0/1 by value > 0 with
        :attr:`mask_nonzero_is_defect`, and the union of the files for a mask folder), resized bilinearly
        (``align_corners=False``, no antialias) and thresholded ``> 0.5`` (SPEC section 5). Good items give all
        False. A defect item without a mask file gives all False and a ``UserWarning`` naming the image.

        Raises:
            ValueError: the mask file cannot be decoded, or ``size`` is not a positive int.
        """
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
            raise ValueError(f"MVTecCategory.load_mask: size must be a positive int, got {size!r}")
        size = int(size)
        empty = torch.zeros((size, size), dtype=torch.bool)
        if item.label == 0:
            return empty
        if item.mask_path is None:
            warnings.warn(
                f"MVTecCategory.load_mask: defect image '{item.path}' has no mask file "
                f"({self.expected_mask_path(item)}); using an empty mask",
                UserWarning,
                stacklevel=2,
            )
            return empty
        if item.mask_path.is_dir():
            gray = _mask_union(item.mask_path)
        elif self.mask_nonzero_is_defect:
            gray = (_read_mask_rgb(item.mask_path).max(axis=2) > 0).astype(np.float32)
        else:
            # A colour mask marks a defect in any channel.
            gray = _read_mask_rgb(item.mask_path).max(axis=2).astype(np.float32) / 255.0
        mask = torch.from_numpy(gray)[None, None]
        if mask.shape[-2:] != (size, size):
            mask = F.interpolate(mask, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        return mask[0, 0] > 0.5

    def expected_mask_path(self, item: TestItem) -> Path:
        """Where the mask file of a defect ``item`` would be (named in the warning for a missing one)."""
        return self.root / "ground_truth" / item.defect / (item.path.stem + MASK_SUFFIX + ".png")

    def load_masks(self, size: int, items: list[TestItem] | None = None) -> torch.Tensor:
        """Masks of ``items`` (default: all :attr:`test_items`) stacked as ``Tensor[N, size, size]`` bool."""
        items = self.test_items if items is None else items
        if not items:
            return torch.zeros((0, size, size), dtype=torch.bool)
        return torch.stack([self.load_mask(item, size) for item in items])
