"""Hostile sizes for the public ops and the raw ``torch.ops.hetmm`` ops: windows far beyond the map, 0 / negative /
even / 2**31 / int64-extreme windows, sizes and min_samples, empty dimensions, shapes whose products pass 2**32
(stride-0 expanded views and meta tensors, so nothing big is allocated), mismatched dtypes and devices.

Each case must give a correct result or raise ValueError/TypeError/RuntimeError/IndexError whose message names the op
and the offending value; never crash, hang or return garbage. The cases run in a child process (one per device, a
crash is reported as a failure of the case that was running and the remaining cases are run in a new child).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch

ERRORS = (ValueError, TypeError, RuntimeError, IndexError)
INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)


def _unit(*shape, seed=0, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=1).to(
        device=device, dtype=dtype)


def _raises(fn, *needles, types=ERRORS):
    """``fn()`` must raise one of ``types`` whose message contains every needle."""
    try:
        fn()
    except types as exc:
        msg = str(exc)
        missing = [n for n in needles if str(n) not in msg]
        assert not missing, f"{type(exc).__name__} message lacks {missing}: {msg}"
        return
    raise AssertionError(f"no error (expected one of {[t.__name__ for t in types]} naming {needles})")


def _backends(device):
    import hetmm_fast as hf

    return [b for b, why in hf.available_backends().items() if not why and b != "triton"
            and (b == "torch" or (b == "cuda") == (device == "cuda"))]


# ------------------------------------------------------------------ window_match
def wm_windows_beyond_the_map(device):
    import hetmm_fast as hf

    q, t = _unit(2, 3, 4, 5, seed=1, device=device), _unit(3, 3, 4, 5, seed=2, device=device)
    for b in _backends(device):
        want = hf.window_match(q, t, 9, 9, backend=b)
        for kf, kb in [(101, 2**31 - 1), (2**31 + 1, 9), (2**62 + 1, INT64_MAX), (2**64 + 1, 2**100 + 1)]:
            got = hf.window_match(q, t, kf, kb, backend=b)
            assert all(torch.equal(g, w) for g, w in zip(got, want)), (b, kf, kb)


def wm_bad_windows(device):
    import hetmm_fast as hf

    q = _unit(1, 2, 3, 3, device=device)
    for k in [0, -1, -3, 2, 2**31, INT64_MIN, 2**64, -(2**64) + 1]:
        _raises(lambda: hf.window_match(q, q, k, 1), "window_match", "fwd_window", k)
        _raises(lambda: hf.window_match(q, q, 1, k), "window_match", "bwd_window", k)
    for k in [True, 3.0, None, "3"]:
        _raises(lambda: hf.window_match(q, q, k, 1), "window_match", "fwd_window", types=(TypeError,))


def wm_raw_op_windows(device):
    q, t = _unit(1, 2, 3, 4, seed=3, device=device), _unit(2, 2, 3, 4, seed=4, device=device)
    want = torch.ops.hetmm.window_match(q, t, 7, 7)
    got = torch.ops.hetmm.window_match(q, t, INT64_MAX, 2**31 - 1)
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    for k in [0, -1, 2, 2**31, INT64_MIN]:
        _raises(lambda: torch.ops.hetmm.window_match(q, t, k, 1), "window_match", k)
    _raises(lambda: torch.ops.hetmm.window_match(q, t, 2**64, 1))  # not an int64: refused by the binding


def wm_empty_and_mismatched(device):
    import hetmm_fast as hf

    q = _unit(2, 3, 4, 4, device=device)
    for b in _backends(device):
        for shape in [(0, 3, 4, 4), (2, 0, 4, 4), (2, 3, 0, 4), (2, 3, 4, 0)]:
            e = torch.empty(shape, device=device)
            _raises(lambda: hf.window_match(e, e, 3, 1, backend=b), "window_match", "empty")
        _raises(lambda: hf.window_match(q, q[:0], 3, 1, backend=b), "window_match", "templates", "empty")
        _raises(lambda: hf.window_match(q, q.double(), 3, 1, backend=b), "window_match", "float64")
        _raises(lambda: hf.window_match(q, q[:, :2], 3, 1, backend=b), "window_match", "same C, H, W")
        _raises(lambda: hf.window_match(q[0], q[0], 3, 1, backend=b), "window_match", "4-D")
        _raises(lambda: hf.window_match(q.int(), q.int(), 3, 1, backend=b), "window_match", "int32")
        _raises(lambda: hf.window_match(q, q.to("meta"), 3, 1, backend=b), "window_match", "meta")
        _raises(lambda: hf.window_match(q.numpy() if device == "cpu" else 1, q, 3, 1, backend=b), "window_match",
                "query", types=(TypeError,))
    if device == "cpu":
        raw = torch.ops.hetmm.window_match
        _raises(lambda: raw(q, q[:0], 3, 1), "window_match", "empty")
        _raises(lambda: raw(q, q.double(), 3, 1), "window_match", "Double")
        _raises(lambda: raw(q, q[:, :2], 3, 1), "window_match")
        _raises(lambda: raw(q[0], q[0], 3, 1), "window_match", "4-D")
        _raises(lambda: raw(q.int(), q.int(), 3, 1), "window_match", "Int")


def wm_templates_past_2_32_elements(device):
    """N * C = 2**32 elements of one expanded template: nothing allocated, the int64 indexing walks all of them."""
    import hetmm_fast as hf

    C = 2**11
    t = _unit(1, C, 1, 1, seed=5, device=device).expand(2**21, C, 1, 1)
    assert t.numel() == 2**32
    for b in _backends(device):
        if b == "torch":
            continue  # the reference repacks each chunk of templates: gigabytes, not a hostile-size test of it
        fwd, bwd = hf.window_match(t[:1], t, 3, 3, backend=b)
        assert torch.allclose(fwd, torch.ones_like(fwd), atol=1e-5) and torch.allclose(bwd, fwd), (b, fwd, bwd)


def wm_map_past_2_32_pixels_meta(device):
    """Shapes only (meta tensors): B * H * W = 2**36 and N * C * H * W = 2**50."""
    import hetmm_fast as hf

    q = torch.empty(2**4, 2**10, 2**16, 2**16, device="meta")
    t = torch.empty(2**8, 2**10, 2**16, 2**16, device="meta")
    fwd, bwd = hf.window_match(q[:, :1, :1, :1], t[:, :1, :1, :1], 3, 1, backend="torch")
    assert fwd.shape == bwd.shape == (2**4, 1, 1)
    fwd, bwd = torch.ops.hetmm.window_match(q, t, 2**31 - 1, 1)  # the registered fake kernel
    assert fwd.shape == bwd.shape == (2**4, 2**16, 2**16) and fwd.dtype == torch.float32


def wm_strided_views(device):
    import hetmm_fast as hf

    base = _unit(3, 4, 6, 5, seed=6, device=device)
    q = base.transpose(2, 3).contiguous().transpose(2, 3)[:, :, ::2]  # odd strides, sliced
    t = _unit(1, 4, 6, 5, seed=7, device=device).expand(4, 4, 6, 5)[:, :, ::2]  # stride-0 N
    for b in _backends(device):
        got = hf.window_match(q, t, 5, 3, backend=b)
        want = hf.window_match(q.contiguous(), t.contiguous(), 5, 3, backend=b)
        assert all(torch.equal(g, w) for g, w in zip(got, want)), b


# ------------------------------------------------------------------ optics_labels
def _dist(P, N, seed=0, device="cpu"):
    x = torch.randn(P, N, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.cdist(x, x).to(device)


def ol_bad_arguments(device):
    import hetmm_fast as hf

    d = _dist(2, 5, device=device)
    for ms in [0, 1, -1, 6, INT64_MAX, INT64_MIN, 2**64]:
        _raises(lambda: hf.optics_labels(d, ms), "optics_labels", "min_samples", ms)
    for ms in [True, 2.0, None]:
        _raises(lambda: hf.optics_labels(d, ms), "optics_labels", "min_samples", types=(TypeError,))
    for xi in [0, 1, -0.1, 1.5, math.nan, math.inf, 2**64, "0.1", None, True]:
        _raises(lambda: hf.optics_labels(d, 2, xi), "optics_labels", "xi")
    for shape in [(0, 5, 5), (2, 0, 0), (2, 5, 4), (5, 5)]:
        _raises(lambda: hf.optics_labels(torch.zeros(shape, dtype=torch.float64, device=device), 2), "optics_labels")
    _raises(lambda: hf.optics_labels(d.float(), 2), "optics_labels", "float64")
    if device == "cpu":
        raw = torch.ops.hetmm.optics_labels
        for ms in [INT64_MAX, INT64_MIN, 0, 6]:
            _raises(lambda: raw(d, ms, 0.05), "optics_labels", "min_samples", ms)
        for xi in [math.nan, math.inf, 0.0, 1.0]:
            _raises(lambda: raw(d, 2, xi), "optics_labels", "xi")
        _raises(lambda: raw(d.float(), 2, 0.05), "optics_labels", "float64")


def ol_bad_distances(device):
    import hetmm_fast as hf

    for b in _backends(device):
        for value in [math.nan, math.inf, -1.0]:
            d = _dist(2, 5, device=device)
            d[1, 2, 3] = value
            _raises(lambda: hf.optics_labels(d, 2, backend=b), "optics_labels", "dist")


def ol_expanded_problems(device):
    """Stride-0 copies of one problem (2**14 for the engines): every row gets the labels of that problem."""
    import hetmm_fast as hf

    one = _dist(1, 9, seed=8, device=device)
    for b in _backends(device):
        P = 4 if b == "torch" else 2**14  # the reference fits one scikit-learn OPTICS per problem
        want = hf.optics_labels(one, 3, backend=b)
        got = hf.optics_labels(one.expand(P, 9, 9), 3, backend=b)
        assert torch.equal(got, want.expand(P, 9)), b


def ol_meta_fake(device):
    out = torch.ops.hetmm.optics_labels(torch.empty(2**20, 2**16, 2**16, dtype=torch.float64, device="meta"), 3, 0.05)
    assert out.shape == (2**20, 2**16) and out.dtype == torch.int64


# ------------------------------------------------------------------ pts_select / gather_sheets
def pts_sizes(device):
    import hetmm_fast as hf

    t = _unit(5, 3, 2, 3, seed=9, device=device)
    for b in _backends(device):
        for size in [0, -1, INT64_MIN]:
            _raises(lambda: hf.pts_select(t, size, backend=b), "pts_select", "size", size)
        for size in [True, 2.0, None]:
            _raises(lambda: hf.pts_select(t, size, backend=b), "pts_select", "size", types=(TypeError,))
        for size in [5, INT64_MAX, 2**64, 2**100]:
            out, idx = hf.pts_select(t, size, backend=b, return_indices=True)
            assert torch.equal(out, t) and torch.equal(idx, torch.arange(5, device=device).view(5, 1, 1).expand(5, 2, 3))
        for shape in [(0, 3, 2, 3), (5, 0, 2, 3), (5, 3, 0, 3), (5, 3, 2, 0)]:
            _raises(lambda: hf.pts_select(torch.empty(shape, device=device), 2, backend=b), "pts_select", "empty")
    if device == "cpu":
        raw = torch.ops.hetmm.pts_select
        for size in [0, -1, 6, INT64_MAX, INT64_MIN]:
            _raises(lambda: raw(t, size), "pts_select", "size", size)
        _raises(lambda: raw(t, 2**64))
        _raises(lambda: raw(t[:0], 1), "pts_select")
        _raises(lambda: raw(t.int(), 1), "pts_select", "Int")


def pts_nonfinite(device):
    import hetmm_fast as hf

    for b in _backends(device):
        t = _unit(6, 3, 2, 2, seed=10, device=device)
        t[4, 1, 1, 0] = math.nan
        _raises(lambda: hf.pts_select(t, 2, backend=b), "pts_select", "finite")


def pts_expanded_templates(device):
    import hetmm_fast as hf

    t = torch.cat([_unit(1, 4, 3, 2, seed=11, device=device).expand(6, 4, 3, 2), _unit(5, 4, 3, 2, seed=12,
                                                                                       device=device)])
    for b in _backends(device):
        got = hf.pts_select(t[::1], 3, backend=b, return_indices=True)
        want = hf.pts_select(t.contiguous(), 3, backend=b, return_indices=True)
        assert all(torch.equal(g, w) for g, w in zip(got, want)), b
    wide = _unit(1, 4, 3, 2, seed=13, device=device).expand(2**20, 4, 3, 2)  # N past int32 indices per pixel x C
    out = torch.ops.hetmm.gather_sheets(wide, torch.full((2, 3, 2), 2**20 - 1, dtype=torch.int64, device=device))
    assert torch.equal(out, wide[:2])


def gather_sheets_bad_index(device):
    t = _unit(4, 3, 2, 2, device=device)
    raw = torch.ops.hetmm.gather_sheets
    for value in [-1, 4, INT64_MAX, INT64_MIN]:
        _raises(lambda: raw(t, torch.full((2, 2, 2), value, dtype=torch.int64, device=device)), "gather_sheets",
                value)
    _raises(lambda: raw(t, torch.zeros(2, 2, 2, dtype=torch.int32, device=device)), "gather_sheets", "int64")
    _raises(lambda: raw(t, torch.zeros(2, 3, 2, dtype=torch.int64, device=device)), "gather_sheets", "[K, H, W]")
    assert raw(t, torch.zeros(0, 2, 2, dtype=torch.int64, device=device)).shape == (0, 3, 2, 2)


# ------------------------------------------------------------------ pixel_major
def pm_shapes(device):
    import hetmm_fast as hf

    for bad in [torch.zeros(2, 3, 4), torch.zeros(1, 2, 3, 4, 5), [1, 2], None]:
        _raises(lambda: hf.pixel_major(bad), "pixel_major")
    huge = torch.empty(2**20, 2**20, 2**10, 2**10, device="meta")  # 2**60 elements: a view, never memory
    out = hf.pixel_major(huge)
    assert out.shape == huge.shape and out.permute(2, 3, 0, 1).is_contiguous()
    x = _unit(1, 3, 2, 2, device=device).expand(4, 3, 2, 2)
    assert torch.equal(hf.pixel_major(x), x) and hf.pixel_major(x).permute(2, 3, 0, 1).is_contiguous()
    e = torch.empty(0, 3, 2, 2, device=device)
    assert hf.pixel_major(e).shape == e.shape


CASES = {f.__name__: f for f in [
    wm_windows_beyond_the_map, wm_bad_windows, wm_raw_op_windows, wm_empty_and_mismatched,
    wm_templates_past_2_32_elements, wm_map_past_2_32_pixels_meta, wm_strided_views,
    ol_bad_arguments, ol_bad_distances, ol_expanded_problems, ol_meta_fake,
    pts_sizes, pts_nonfinite, pts_expanded_templates, gather_sheets_bad_index, pm_shapes,
]}
NEEDS_EXTENSION = {"wm_raw_op_windows", "wm_map_past_2_32_pixels_meta", "ol_meta_fake", "pts_expanded_templates",
                   "gather_sheets_bad_index"}


def _child(device: str, names: list[str]) -> None:
    """Run the named cases in order, one JSON line each on stdout ("start" first, so a crash names its case)."""
    torch.set_num_threads(2)
    for name in names:
        print(json.dumps({"case": name, "start": True}), flush=True)
        t0 = time.perf_counter()
        try:
            CASES[name](device)
            result = {"case": name, "ok": True}
        except Exception:  # noqa: BLE001 - reported to the parent
            result = {"case": name, "ok": False, "error": traceback.format_exc()}
        result["seconds"] = round(time.perf_counter() - t0, 2)
        print(json.dumps(result), flush=True)


def _run_all(device: str) -> dict[str, str | None]:
    """Case name -> None when it passed, else why; a crashed child is replaced by one running the rest."""
    names = list(CASES)
    if not _extension_built():
        names = [n for n in names if n not in NEEDS_EXTENSION]
    results: dict[str, str | None] = {}
    while names:
        proc = subprocess.run([sys.executable, __file__, device, *names], capture_output=True, text=True,
                              timeout=600, cwd=Path(__file__).resolve().parents[1])
        running = None
        for line in proc.stdout.splitlines():
            if not line.startswith("{"):
                continue
            rec = json.loads(line)
            if rec.get("start"):
                running = rec["case"]
            else:
                results[rec["case"]] = None if rec["ok"] else rec["error"]
                running = None
        if running is not None:
            results[running] = f"child died (exit {proc.returncode}) in this case; stderr:\n{proc.stderr[-3000:]}"
        elif proc.returncode != 0:
            raise AssertionError(f"child failed outside a case (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        names = [n for n in names if n not in results]
    return results


def _extension_built() -> bool:
    import hetmm_fast as hf

    return not hf.available_backends()["cpu"]


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module", params=DEVICES)
def results(request):
    return request.param, _run_all(request.param)


@pytest.mark.parametrize("case", list(CASES))
def test_hostile(results, case):
    device, res = results
    if case not in res:
        pytest.skip("needs the compiled extension (hetmm_fast._C)")
    assert res[case] is None, f"[{device}] {case}:\n{res[case]}"


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2:])
