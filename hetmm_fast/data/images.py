"""Reading images and turning them into model-ready batches.

Every image entering hetmm_fast goes through :func:`to_tensor_batch`: whatever the input (a folder, file paths,
PIL images, numpy arrays, tensors) the result is ``Tensor[B, 3, S, S]`` float32 RGB in [0, 1], resized to
``S x S`` with bilinear interpolation and no crop (SPEC section 1).

Resizing uses ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False, antialias=False)``: plain
bilinear as SPEC section 1 states. Downscaling by more than 2x therefore aliases (no low-pass first); this is
deliberate, so that the same image always maps to the same tensor whatever library read it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "list_images",
    "read_image",
    "max_image_pixels",
    "MAX_IMAGE_PIXELS",
    "to_tensor_batch",
    "iter_image_batches",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# Default limit of max_image_pixels(): 268 M pixels, 805 MB as 8-bit RGB. It refuses decompression bombs and
# absurd headers before any pixel memory is committed.
MAX_IMAGE_PIXELS = 2**28

# A file may decode to at most this many pixels per byte of its own size once the image is over
# _DENSITY_FREE_PIXELS. Deflate (PNG, TIFF) compresses at most about 1032:1, so even a 1-bit image stores a byte per
# ~8,300 pixels; a few hundred bytes that claim tens of millions of pixels are a malformed or malicious file whose
# decoder would fill gigabytes (a 225-byte BMP claiming 67 M pixels decoded for 46 s).
_MAX_PIXELS_PER_BYTE = 2**13
_DENSITY_FREE_PIXELS = 2**24

# Float inputs are expected in [0, 1]; a little slack absorbs rounding from upstream arithmetic.
_FLOAT_RANGE_SLACK = 1e-3


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder`` (not recursive), sorted by name.

    A file counts as an image when its extension (case-insensitive) is in :data:`IMAGE_EXTENSIONS`.
    Hidden files (name starting with ".") are skipped.

    Raises:
        FileNotFoundError: ``folder`` does not exist, or holds no image file.
        NotADirectoryError: ``folder`` is a file.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"list_images: folder '{folder}' does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"list_images: '{folder}' is not a folder")
    paths = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not paths:
        raise FileNotFoundError(
            f"list_images: no image file ({', '.join(IMAGE_EXTENSIONS)}) in folder '{folder}'"
        )
    return paths


def _pil_to_rgb_array(image: Image.Image, where: str) -> np.ndarray:
    """PIL image of any common mode -> ``HxWx3`` uint8 RGB.

    Alpha is dropped (not composited); 16-bit and 32-bit integer grayscale are scaled to 8 bits by their
    nominal range (``I;16``: /257; ``I``: /257 when the values exceed 255, else taken as 8-bit); float
    grayscale (``F``) is taken as [0, 1] when its maximum is <= 1, else as [0, 255].
    """
    mode = image.mode
    if mode in ("RGB",):
        arr = np.asarray(image)
    elif mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image).astype(np.float64)
        if values.size and not np.isfinite(values).all():
            raise ValueError(f"{where}: image of mode {mode} contains NaN or infinite values")
        vmax = float(values.max()) if values.size else 0.0
        if mode == "F":
            scale = 255.0 if vmax <= 1.0 else 1.0
        elif mode.startswith("I;16") or vmax > 255:
            scale = 1.0 / 257.0
        else:
            scale = 1.0
        gray = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        arr = np.repeat(gray[:, :, None], 3, axis=2)
    else:
        # "1", "L", "LA", "P", "PA", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", ...: PIL knows the way.
        try:
            arr = np.asarray(image.convert("RGB"))
        except (ValueError, OSError) as exc:
            raise ValueError(f"{where}: cannot convert image of mode {mode!r} to RGB ({exc})") from exc
    # A copy: PIL hands out read-only buffers, and callers (and torch.from_numpy) expect a writable array.
    return np.array(arr, dtype=np.uint8, order="C")


def max_image_pixels() -> int:
    """Largest width x height :func:`read_image` decodes: ``HETMM_MAX_IMAGE_PIXELS``, else :data:`MAX_IMAGE_PIXELS`.

    Pillow's own limit applies first: it warns above ``PIL.Image.MAX_IMAGE_PIXELS`` (89.5 M pixels by default) and
    refuses above twice that; raise it too to read larger images.

    Raises:
        ValueError: ``HETMM_MAX_IMAGE_PIXELS`` is set but not an int >= 1.
    """
    return _env_positive_int("HETMM_MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS, " (pixels)")


def _env_positive_int(name: str, default: int, unit: str = "") -> int:
    """The environment variable ``name`` as an int >= 1, ``default`` when unset or blank; ValueError otherwise."""
    env = os.environ.get(name, "").strip()
    if not env:
        return default
    try:
        value = int(env)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name} must be an int >= 1{unit}, got {env!r}")
    return value


def _open_header(path: Path, max_pixels: int) -> Image.Image:
    """``Image.open`` (which parses the header only) plus the size checks, so nothing is decoded for a refused file."""
    n_bytes = path.stat().st_size
    if n_bytes == 0:
        raise ValueError(f"read_image: '{path}' is an empty file (0 bytes)")
    try:
        image = Image.open(path)
    except UnidentifiedImageError as exc:
        raise ValueError(f"read_image: '{path}' is not a readable image (unknown or corrupt format)") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning arrives as an exception only when warnings are errors (python -W error).
        raise ValueError(f"read_image: '{path}' is too large to decode, refused by Pillow ({exc})") from exc
    except Exception as exc:
        # Pillow's format plugins report a damaged header with many exception types (OSError, SyntaxError,
        # struct.error, EOFError, IndexError, ...); each means this file cannot be read.
        raise ValueError(f"read_image: '{path}' cannot be read ({type(exc).__name__}: {exc})") from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        image.close()
        raise ValueError(f"read_image: '{path}' has zero size ({width}x{height} pixels)")
    if width * height > max_pixels:
        image.close()
        raise ValueError(
            f"read_image: '{path}' is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
            "(HETMM_MAX_IMAGE_PIXELS); refused before decoding"
        )
    if width * height > max(_DENSITY_FREE_PIXELS, _MAX_PIXELS_PER_BYTE * n_bytes):
        image.close()
        raise ValueError(
            f"read_image: '{path}' claims {width}x{height} pixels in a file of {n_bytes} bytes, more than "
            f"{_MAX_PIXELS_PER_BYTE} pixels per byte, which no valid compression reaches; refused before decoding"
        )
    return image


def read_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Read one image file as an ``HxWx3`` uint8 RGB array.

    Grayscale is repeated to three channels, alpha is dropped, palette and CMYK images are converted, 16-bit
    images are scaled to 8 bits (see ``_pil_to_rgb_array``).

    The size in the file's header is checked before anything is decoded: an empty file, a zero-size image, one
    of more than ``max_pixels`` pixels (default :func:`max_image_pixels`), or one over 16.8 M pixels that claims
    more than 8192 pixels per byte of file (beyond what any valid compression reaches) is refused, and so is what
    Pillow refuses as a possible decompression bomb.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the path is a folder, or the file is empty, too large, of zero size, or cannot be decoded
            (unknown format, truncated, corrupt); the message names the path and the reason.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"read_image: file '{path}' does not exist")
    if path.is_dir():
        raise ValueError(f"read_image: '{path}' is a folder, not an image file")
    with _open_header(path, max_image_pixels() if max_pixels is None else max_pixels) as image:
        try:
            image.load()
        except Exception as exc:
            # Truncated or damaged data: OSError from most decoders, other types from a few (see _open_header).
            raise ValueError(f"read_image: '{path}' cannot be decoded ({exc})") from exc
        return _pil_to_rgb_array(image, f"read_image('{path}')")


def _numpy_to_float_chw(array: np.ndarray, where: str) -> torch.Tensor:
    """``HxW`` / ``HxWx1`` / ``HxWx3`` array (uint8, or float in [0, 1]) -> ``Tensor[3, H, W]`` float32."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(
            f"{where}: numpy image must be HxW (gray) or HxWx3 (RGB), got shape {tuple(array.shape)}"
            + (" (for RGBA pass array[..., :3])" if array.ndim == 3 and array.shape[2] == 4 else "")
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{where}: numpy image has an empty side, shape {tuple(array.shape)}")
    if array.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div_(255.0)
    if np.issubdtype(array.dtype, np.floating):
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).permute(2, 0, 1)
        return _check_float_range(tensor, where)
    raise TypeError(
        f"{where}: numpy image must be uint8 (0..255) or float in [0, 1], got dtype {array.dtype}"
    )


def _check_float_range(tensor: torch.Tensor, where: str) -> torch.Tensor:
    """Check a float image lies in [0, 1] (with slack) and clamp the slack away; returns float32."""
    tensor = tensor.float()
    if tensor.numel() == 0:
        return tensor
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{where}: float image contains NaN or infinite values")
    lo, hi = float(tensor.min()), float(tensor.max())
    if lo < -_FLOAT_RANGE_SLACK or hi > 1.0 + _FLOAT_RANGE_SLACK:
        raise ValueError(
            f"{where}: float image values must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}] "
            "(pass uint8 for 0..255 data; do not pass mean/std-normalised tensors)"
        )
    return tensor.clamp_(0.0, 1.0)


def _tensor_to_float_bchw(tensor: torch.Tensor, where: str) -> torch.Tensor:
    """``Tensor[B, C, H, W]`` or ``[C, H, W]`` with C in {1, 3} -> float32 ``[B, 3, H, W]`` in [0, 1]."""
    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 4 or tensor.shape[1] not in (1, 3):
        raise ValueError(
            f"{where}: tensor image must be [B, 3, H, W] or [3, H, W] (channels first, RGB; 1 channel is "
            f"taken as gray), got shape {tuple(tensor.shape)}"
        )
    if tensor.shape[0] == 0:
        raise ValueError(f"{where}: tensor batch is empty, shape {tuple(tensor.shape)}")
    if tensor.shape[2] == 0 or tensor.shape[3] == 0:
        raise ValueError(f"{where}: tensor image has an empty side, shape {tuple(tensor.shape)}")
    if tensor.dtype == torch.uint8:
        tensor = tensor.float().div_(255.0)
    elif tensor.is_floating_point():
        tensor = _check_float_range(tensor, where)
    else:
        raise TypeError(
            f"{where}: tensor image must be uint8 (0..255) or floating point in [0, 1], got dtype {tensor.dtype}"
        )
    if tensor.shape[1] == 1:
        tensor = tensor.expand(-1, 3, -1, -1)
    return tensor


def _resize(batch: torch.Tensor, size: int) -> torch.Tensor:
    """``Tensor[B, 3, H, W]`` -> ``Tensor[B, 3, size, size]`` contiguous float32, bilinear, no antialias."""
    if batch.shape[-2:] == (size, size):
        return batch.contiguous()
    out = F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return out.clamp_(0.0, 1.0)


def _check_size(size: Any, where: str) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
        raise ValueError(f"{where}: size must be a positive int, got {size!r}")
    return int(size)


def _kind(item: Any) -> str:
    if isinstance(item, (str, os.PathLike)):
        return "path"
    if isinstance(item, Image.Image):
        return "PIL.Image"
    if isinstance(item, np.ndarray):
        return "numpy"
    if isinstance(item, torch.Tensor):
        return "tensor"
    return type(item).__name__


def _paths_from(images: str | os.PathLike, where: str) -> list[Path]:
    path = Path(images)
    if path.is_dir():
        return list_images(path)
    if not path.exists():
        raise FileNotFoundError(f"{where}: '{path}' is neither an existing folder nor an existing image file")
    return [path]


def to_tensor_batch(images: Any, size: int) -> tuple[torch.Tensor, list[str]]:
    """Turn images of any supported kind into one batch ``Tensor[B, 3, size, size]``.

    Args:
        images: one of
            - a folder path (every image directly inside it, sorted by name) or a single image file path;
            - a list of paths;
            - a ``PIL.Image`` or a list of them (any mode; converted as by :func:`read_image`);
            - a numpy array ``HxWx3`` (RGB) or ``HxW`` (gray), uint8 0..255 or float in [0, 1], or a list
              of them (sizes may differ: each one is resized);
            - a tensor ``[B, 3, H, W]`` or ``[3, H, W]`` (1 channel is taken as gray), uint8 0..255 or
              floating point in [0, 1] (values outside [-1e-3, 1 + 1e-3] are an error: mean/std-normalised
              tensors are refused), or a list of ``[3, H, W]`` tensors.
        size: side ``S`` of the output.

    Returns:
        ``(batch, names)``: ``batch`` is ``Tensor[B, 3, S, S]`` float32 in [0, 1] (on the input tensor's device
        for tensor input, else on the CPU); ``names`` are the file stems for path input, else ``"image_000"``,
        ``"image_001"``, ...

    Resizing is bilinear with ``align_corners=False`` and no antialiasing (module docstring); no crop, so a
    non-square image is squashed.

    Raises:
        TypeError: unsupported type, unsupported dtype, or a list mixing kinds.
        ValueError: empty list, wrong shape, float values outside [0, 1], undecodable file.
        FileNotFoundError: a path that does not exist, a folder without images.
    """
    where = "to_tensor_batch"
    size = _check_size(size, where)
    kind = _kind(images)

    if kind == "path":
        paths = _paths_from(images, where)
        return _load_paths(paths, size), [p.stem for p in paths]
    if kind == "tensor":
        batch = _resize(_tensor_to_float_bchw(images, where), size)
        return batch, [f"image_{i:03d}" for i in range(batch.shape[0])]
    if kind in ("PIL.Image", "numpy"):
        images = [images]
    elif not isinstance(images, (list, tuple)):
        raise TypeError(
            f"{where}: images must be a path, a list of paths, PIL image(s), numpy array(s) or a tensor, "
            f"got {type(images).__name__}"
        )
    if len(images) == 0:
        raise ValueError(f"{where}: images is an empty list")

    kinds = [_kind(item) for item in images]
    first = kinds[0]
    if any(k != first for k in kinds):
        found = sorted(set(kinds))
        raise TypeError(f"{where}: a list of images must hold one kind of item, got a mix of {found}")
    if first == "path":
        paths = [Path(p) for p in images]
        return _load_paths(paths, size), [p.stem for p in paths]
    if first == "PIL.Image":
        chw = [
            torch.from_numpy(_pil_to_rgb_array(img, f"{where}[{i}]")).permute(2, 0, 1).float().div_(255.0)
            for i, img in enumerate(images)
        ]
    elif first == "numpy":
        chw = [_numpy_to_float_chw(arr, f"{where}[{i}]") for i, arr in enumerate(images)]
    elif first == "tensor":
        for i, t in enumerate(images):
            if t.dim() != 3:
                raise ValueError(
                    f"{where}[{i}]: a list of tensors must hold [3, H, W] images, got shape {tuple(t.shape)}"
                )
        chw = [_tensor_to_float_bchw(t, f"{where}[{i}]")[0] for i, t in enumerate(images)]
        devices = {t.device for t in chw}
        if len(devices) > 1:
            raise ValueError(f"{where}: tensors are on different devices {sorted(map(str, devices))}")
    else:
        raise TypeError(
            f"{where}: unsupported list item type {first}; expected paths, PIL images, numpy arrays or tensors"
        )
    batch = torch.cat([_resize(t.unsqueeze(0), size) for t in chw], dim=0)
    return batch, [f"image_{i:03d}" for i in range(batch.shape[0])]


def _load_paths(paths: Sequence[Path], size: int) -> torch.Tensor:
    """Read and resize image files -> ``Tensor[len(paths), 3, size, size]`` float32 (CPU)."""
    out = torch.empty((len(paths), 3, size, size), dtype=torch.float32)
    for i, path in enumerate(paths):
        out[i] = _load_one(path, size)
    return out


def _load_one(path: Path, size: int, max_pixels: int | None = None) -> torch.Tensor:
    """One image file -> ``Tensor[3, size, size]`` float32 in [0, 1] (CPU)."""
    rgb = torch.from_numpy(read_image(path, max_pixels=max_pixels)).permute(2, 0, 1).float().div_(255.0)
    return _resize(rgb.unsqueeze(0), size)[0]


def _load_or_error(path: Path, size: int, max_pixels: int | None = None) -> torch.Tensor | Exception:
    """:func:`_load_one`, with the reasons a file cannot be read returned instead of raised."""
    try:
        return _load_one(path, size, max_pixels)
    except (ValueError, OSError, MemoryError) as exc:
        return exc


def _reader_threads() -> int:
    """Threads that decode files for :func:`iter_image_batches`: ``HETMM_READ_THREADS``, else up to 8 (cores)."""
    return _env_positive_int("HETMM_READ_THREADS", max(1, min(8, os.cpu_count() or 1)))


def iter_image_batches(
    paths: str | os.PathLike | Sequence[str | os.PathLike], size: int, batch_size: int, *, on_error: str = "raise"
) -> Iterator[tuple]:
    """Stream image files as batches of at most ``batch_size`` images, in input order.

    ``paths`` is a folder (its images, sorted) or a list of image paths. Files are read lazily, one batch ahead
    (decoded by up to 8 threads, ``HETMM_READ_THREADS`` to change), so memory stays bounded for big folders. Names
    are the file stems. Arguments are checked (and a folder listed) when this is called.

    ``on_error`` says what a file that cannot be read does (missing, empty, corrupt, truncated, too large; see
    :func:`read_image`):

    - ``"raise"`` (default): yields ``(Tensor[b, 3, size, size], names)``; the file's error is raised when its
      batch is reached (the batches before it come out whole).
    - ``"collect"``: yields ``(Tensor[b, 3, size, size], names, errors)`` with one row, name and entry of
      ``errors`` per file, batches as with ``"raise"``: ``errors[i]`` is ``None`` for a file that was read, else the
      exception (``ValueError`` or ``FileNotFoundError``, its message naming the file), and row ``i`` is then NaN.

    Raises:
        ValueError, TypeError, FileNotFoundError: invalid arguments, a missing folder, a folder without images,
            an invalid ``HETMM_READ_THREADS`` or ``HETMM_MAX_IMAGE_PIXELS``.
    """
    where = "iter_image_batches"
    size = _check_size(size, where)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"{where}: batch_size must be a positive int, got {batch_size!r}")
    if on_error not in ("raise", "collect"):
        raise ValueError(f"{where}: on_error must be 'raise' or 'collect', got {on_error!r}")
    if isinstance(paths, (str, os.PathLike)):
        path_list = _paths_from(paths, where)
    elif isinstance(paths, (list, tuple)):
        if len(paths) == 0:
            raise ValueError(f"{where}: paths is an empty list")
        bad = [p for p in paths if not isinstance(p, (str, os.PathLike))]
        if bad:
            raise TypeError(f"{where}: paths must be str or os.PathLike, got {type(bad[0]).__name__}")
        path_list = [Path(p) for p in paths]
    else:
        raise TypeError(f"{where}: paths must be a folder or a list of paths, got {type(paths).__name__}")
    return _stream_batches(path_list, size, int(batch_size), on_error == "collect", max_image_pixels())


def _batch_of(chunk: list[Path], items: list, size: int, collect: bool) -> tuple:
    """The loaded images (or errors) of one chunk of files as the batch tuple that iter_image_batches yields."""
    names = [p.stem for p in chunk]
    if not collect:
        return torch.stack(items), names
    errors = [x if isinstance(x, Exception) else None for x in items]
    rows = [torch.full((3, size, size), float("nan")) if e is not None else x for x, e in zip(items, errors)]
    return torch.stack(rows), names, errors


def _stream_batches(
    path_list: list[Path], size: int, batch_size: int, collect: bool, max_pixels: int
) -> Iterator[tuple]:
    # A separate generator so that iter_image_batches validates its arguments when called, not at first next().
    # Files are decoded and resized by a thread pool (PIL and torch release the GIL), and the next batch is read
    # while the caller works on this one; in "raise" mode an unreadable file still raises when its own batch is
    # asked for, in "collect" mode its error takes its place.
    chunks = [path_list[i : i + batch_size] for i in range(0, len(path_list), batch_size)]
    load = _load_or_error if collect else _load_one
    threads = _reader_threads()
    if threads == 1 or len(path_list) == 1:
        for chunk in chunks:
            yield _batch_of(chunk, [load(p, size, max_pixels) for p in chunk], size, collect)
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hetmm-read") as pool:
        pending = [pool.submit(load, p, size, max_pixels) for p in chunks[0]]
        try:
            for k, chunk in enumerate(chunks):
                current = pending
                pending = (
                    [pool.submit(load, p, size, max_pixels) for p in chunks[k + 1]] if k + 1 < len(chunks) else []
                )
                yield _batch_of(chunk, [f.result() for f in current], size, collect)
        finally:
            for f in pending:  # the caller stopped early or a file failed: drop the prefetch
                f.cancel()
