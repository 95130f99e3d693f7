"""Image input, MVTec-layout datasets, and the embedded synthetic dataset.

::

    batch, names = to_tensor_batch("photos/", size=256)     # Tensor[B, 3, 256, 256] float32 in [0, 1]
    cat = MVTecCategory("data/", "carpet")                   # train_paths, test_items, load_mask(item, size)
    make_dataset("synthetic/")                               # no download needed: procedurally generated
"""

from hetmm_fast.data.images import IMAGE_EXTENSIONS, iter_image_batches, list_images, read_image, to_tensor_batch
from hetmm_fast.data.mvtec import MVTecCategory, TestItem, list_categories

_SYNTHETIC_NAMES = ("SYNTHETIC_CATEGORIES", "DEFECT_TYPES", "make_dataset", "render_sample")

__all__ = [
    "IMAGE_EXTENSIONS",
    "list_images",
    "read_image",
    "to_tensor_batch",
    "iter_image_batches",
    "MVTecCategory",
    "TestItem",
    "list_categories",
    *_SYNTHETIC_NAMES,
]


def __getattr__(name: str):
    # Imported on first use, so that `python -m hetmm_fast.data.synthetic` does not find its module pre-imported.
    if name in _SYNTHETIC_NAMES:
        from hetmm_fast.data import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module 'hetmm_fast.data' has no attribute {name!r}")
