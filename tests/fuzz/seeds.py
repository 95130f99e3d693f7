"""Valid inputs the fuzzers start from: small images of many formats and modes, small banks.

``python tests/fuzz/seeds.py image|bank DIR`` writes them into DIR (one file each) as fuzzer inputs (see
fuzz_bank.py for the leading byte of a bank input). Everything is generated from a
fixed seed, so two runs write the same bytes.
"""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np

# (format, mode, save options); each combination is one seed, skipped when this Pillow cannot write it.
IMAGE_KINDS = [
    ("PNG", "1", {}), ("PNG", "L", {}), ("PNG", "LA", {}), ("PNG", "P", {}), ("PNG", "RGB", {}),
    ("PNG", "RGBA", {}), ("PNG", "I;16", {}), ("PNG", "RGB", {"optimize": True}),
    ("PNG", "P", {"transparency": 0}),
    ("JPEG", "L", {}), ("JPEG", "RGB", {"quality": 50}), ("JPEG", "CMYK", {}), ("JPEG", "RGB", {"progressive": True}),
    ("TIFF", "1", {}), ("TIFF", "L", {}), ("TIFF", "RGB", {}), ("TIFF", "RGBA", {}), ("TIFF", "CMYK", {}),
    ("TIFF", "I;16", {}), ("TIFF", "I", {}), ("TIFF", "F", {}), ("TIFF", "RGB", {"compression": "tiff_lzw"}),
    ("TIFF", "RGB", {"compression": "tiff_deflate"}), ("TIFF", "L", {"compression": "packbits"}),
    ("TIFF", "RGB", {"compression": "jpeg"}), ("TIFF", "YCbCr", {}), ("TIFF", "LAB", {}),
    ("BMP", "1", {}), ("BMP", "L", {}), ("BMP", "P", {}), ("BMP", "RGB", {}), ("BMP", "RGBA", {}),
    ("WEBP", "RGB", {}), ("WEBP", "RGBA", {}), ("WEBP", "RGB", {"lossless": True}),
    ("GIF", "P", {}), ("GIF", "L", {}), ("PPM", "RGB", {}), ("PPM", "L", {}), ("TGA", "RGB", {}),
    ("ICO", "RGBA", {}), ("PCX", "RGB", {}),
]


def _image(mode: str, w: int, h: int, rng: np.random.Generator):
    from PIL import Image

    base = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(0, 70000, (h, w), dtype=np.int32))
    if mode == "F":
        return Image.fromarray(rng.random((h, w), dtype=np.float32))
    return base.convert(mode)


def image_seeds() -> dict[str, bytes]:
    rng = np.random.default_rng(17)
    out = {}
    for i, (fmt, mode, opts) in enumerate(IMAGE_KINDS):
        w, h = [(8, 8), (5, 3), (1, 1), (16, 4)][i % 4]
        buf = io.BytesIO()
        try:
            _image(mode, w, h, rng).save(buf, fmt, **opts)
        except (OSError, ValueError, KeyError):
            continue
        tag = "_".join(f"{k}" for k in opts) or "plain"
        out[f"{fmt.lower()}_{mode.replace(';', '')}_{tag}_{w}x{h}.{fmt.lower()}"] = buf.getvalue()
    return out


def bank_bytes(save) -> bytes:
    """The bytes that ``save(path)`` writes (through a temporary folder)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "seed.hetmm"
        save(path)
        return path.read_bytes()


def bank_seeds() -> dict[str, bytes]:
    """Banks of a 16-pixel efficientnet_lite0 detector (feature maps 4x4, 2x2, 1x1) with random unit templates,
    with and without a PTS selection, in float32 and float16, plus a bare ``save_bank`` file with other metadata."""
    import torch
    import torch.nn.functional as F

    import hetmm_fast as hf
    from hetmm_fast.bank import save_bank

    g = torch.Generator().manual_seed(17)
    out = {}
    for name, n, k, dtype in [("n3", 3, None, torch.float32), ("n4_k2", 4, 2, torch.float32),
                              ("n2_k1_half", 2, 1, torch.float16), ("n1", 1, None, torch.bfloat16)]:
        det = hf.HETMM(image_size=16, progress=False, dtype=dtype)
        det.templates = [F.normalize(torch.randn(n, c, h, w, generator=g), dim=1).to(dtype)
                         for c, (h, w) in zip(det.backbone.channels, det.feature_sizes)]
        det.template_names = [f"t{i}.png" for i in range(n)]
        if k is not None:
            det.selection = [torch.randint(0, n, (k, h, w), generator=g) for h, w in det.feature_sizes]
            det.tsize = k
        out[f"{name}.hetmm"] = bank_bytes(det.save)
    meta = {"backbone": "resnet18", "weights_id": "x", "taps": ["a"], "strides": [4], "channels": [2],
            "image_size": 16, "mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2], "preset": "{}", "tsize": None,
            "n_templates": 2, "feature_sizes": [[4, 4]]}
    out["bare.hetmm"] = bank_bytes(lambda p: save_bank(p, {"all.0": torch.randn(2, 2, 4, 4, generator=g)}, meta))
    return out


def main(argv: list[str]) -> int:
    kind, folder = argv
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "image":
        seeds = image_seeds()
    else:  # fuzz_bank.py inputs: a leading 0 byte means "the rest is the file", 1 "the rest drives edits"
        rng = np.random.default_rng(17)
        seeds = {name: b"\x00" + data for name, data in bank_seeds().items()}
        seeds.update({f"edits{i}": b"\x01" + rng.bytes(64) for i in range(8)})
    for name, data in seeds.items():
        (folder / name).write_bytes(data)
    print(json.dumps({"kind": kind, "seeds": len(seeds), "bytes": sum(map(len, seeds.values()))}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
