import pytest
import torch

from hetmm_fast.postprocess import gaussian_blur, gaussian_kernel1d, image_scores, maxpool_score
from hetmm_fast.presets import PAPER_MVTEC, PostProcess, Preset, get_preset
from hetmm_fast.testing import reduction_tol


def test_kernel_matches_spec_formula():
    k = gaussian_kernel1d(4.0, 9, dtype=torch.float64)
    i = torch.arange(9, dtype=torch.float64)
    raw = torch.exp(-(((i - 4) / 4.0) ** 2) / 2)
    two_d = torch.outer(raw, raw)
    # testing.py rule 1: a normalising sum of 81 positive terms in float64, then one product
    torch.testing.assert_close(torch.outer(k, k), two_d / two_d.sum(), atol=2 * reduction_tol(81, torch.float64),
                               rtol=0)


def test_blur_of_delta_is_kernel_and_zero_padding_loses_mass():
    m = torch.zeros(1, 21, 21, dtype=torch.float64)
    m[0, 10, 10] = 1
    out = gaussian_blur(m, 2.0, 7)
    k = gaussian_kernel1d(2.0, 7, dtype=torch.float64)
    # a blur (two 7-tap passes, or one 49-tap) of a unit delta in float64: rule 1
    torch.testing.assert_close(out[0, 7:14, 7:14], torch.outer(k, k), atol=reduction_tol(49, torch.float64), rtol=0)
    corner = torch.zeros(1, 21, 21, dtype=torch.float64)
    corner[0, 0, 0] = 1
    assert gaussian_blur(corner, 2.0, 7).sum() < 0.5  # mass pushed outside is dropped, not reflected


def test_maxpool_score_by_hand():
    m = torch.arange(36, dtype=torch.float32).view(1, 6, 6)
    # 4x4 pool, stride 4, remainder dropped: one window over rows/cols 0..3 -> max 21
    assert maxpool_score(m, 4).item() == 21.0
    assert maxpool_score(m, 3).item() == pytest.approx((14 + 17 + 32 + 35) / 4)
    assert image_scores(m, PostProcess()).item() == 35.0
    with pytest.raises(ValueError, match="exceeds the map size"):
        maxpool_score(m, 7)


def test_paper_table_and_json_roundtrip():
    assert len(PAPER_MVTEC) == 15
    p = get_preset("paper", "zipper")
    assert p.windows == [(13, 5), (7, 5), (7, 1)] and p.image_post == PostProcess("maxpool", 0.0, 11)
    assert p.pixel_post == PostProcess("blur", 10.4, 61) and p.layers[2].alpha == 0.7 and p.layers[2].lam == 0.3
    assert Preset.from_json(p.to_json()) == p
    with pytest.raises(ValueError, match="kind"):
        PostProcess("median", 1, 3)
