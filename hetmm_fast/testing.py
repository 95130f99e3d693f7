"""Input builders and slow, obviously-correct oracles shared by the tests and the benchmarks (STYLE.md rule 8).

Nothing here is used by the library itself.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch

# ------------------------------------------------------------------------------------------------ tolerance policy
#
# Every floating-point comparison in the tests takes its tolerance from one of the rules below, so that a test holds
# on any CPU (SSE4.1, AVX2, AVX-512; oneDNN and ATen pick different kernels, blockings and summation orders on each)
# and still fails on a real defect (a wrong index, window, tap or constant moves results by far more).
#
# 1. A reduction checked against an exact (float64) oracle: sum of n products whose absolute values add up to at
#    most ``scale``, accumulated in a dtype of unit roundoff u in any order, with or without FMA.
#    ``reduction_tol(n, dtype, scale)`` = min(gamma_n, LAMBDA * sqrt(n) * u) * scale, where gamma_n = n u / (1 - n u)
#    is the worst case of any summation order (Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed.,
#    eq. 3.5) and LAMBDA * sqrt(n) * u the probabilistic bound of Higham & Mary (SIAM J. Sci. Comput. 41(5), 2019,
#    Theorem 3.1), which holds with probability >= 1 - 2n exp(-LAMBDA^2 / 2) per result when rounding errors are
#    independent and zero-mean. With LAMBDA = 8 that is 1 - 2.5e-14 n. A result stored in a narrower dtype than it
#    was accumulated in adds the unit roundoff of the stored dtype times its magnitude (``out=``).
#    For L2-normalised features, Cauchy-Schwarz gives scale = 1 for every dot product.
# 2. Two implementations of the same reduction compared with each other: each is within rule 1 of the exact value,
#    so they are within twice that of each other.
# 3. 16-bit inputs (STYLE rule 5): error against a float64 oracle <= 2 x the error of the same-dtype PyTorch
#    reference against that oracle (+ rule 1 for the float32 accumulation).
# 4. Whole networks (a backbone's taps against the stock network): the rounding of a deep stack of convolutions
#    has no useful closed-form bound, so it is measured: both implementations run in float32 and in float64, and
#    the float32 result must be within FACTOR x the stock network's own float32 error (against its float64 run) plus
#    what our implementation differs by in float64 (its folded float32 weights, a fixed, machine-independent
#    amount). See ``assert_network_close``.
# 5. Bit-identical claims (thread counts, batch splits, strided inputs, save/load) are checked with ``torch.equal``
#    exactly where README says they hold: one build, one machine, any thread count.

LAMBDA = 8.0
NETWORK_FACTOR = 4.0


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = 2^-p for a dtype with p significand bits (half the spacing of floats near 1)."""
    return torch.finfo(dtype).eps / 2


def reduction_tol(n: int, dtype: torch.dtype = torch.float32, scale: float = 1.0,
                  out: torch.dtype | None = None) -> float:
    """Rule 1 above: bound on |computed - exact| for a sum of ``n`` products with sum |a_i b_i| <= ``scale``,
    accumulated in ``dtype`` (any order), optionally stored in ``out``."""
    n = max(1, int(n))
    u = unit_roundoff(dtype)
    gamma = n * u / (1 - n * u) if n * u < 1 else math.inf
    tol = min(gamma, LAMBDA * math.sqrt(n) * u) * scale
    if out is not None:
        tol += unit_roundoff(out) * scale
    return tol


def within_reference_error(got, ref, oracle, slack: float = 0.0, factor: float = 2.0) -> tuple[float, float]:
    """Rule 3: (error of ``got``, allowed) with allowed = factor x error of ``ref``, both against ``oracle``, + slack.
    Each argument is a tensor or a sequence of tensors compared pairwise."""
    got, ref, oracle = (tuple(x) if isinstance(x, (list, tuple)) else (x,) for x in (got, ref, oracle))
    err = max_err(got, oracle)
    return err, factor * max_err(ref, oracle) + slack


class Call(torch.nn.Module):
    """``fn(net, x)`` as a module, so that :func:`assert_network_close` can run it on dtype-converted copies of
    ``net`` (a stage of it, a hook on it, a slice of the batch...)."""

    def __init__(self, net: torch.nn.Module, fn):
        super().__init__()
        self.net, self.fn = net, fn

    def forward(self, x):
        return self.fn(self.net, x)


def assert_network_close(ours, stock, x: torch.Tensor, *, pick=lambda out: out, factor: float = NETWORK_FACTOR):
    """Rule 4: ``pick(ours(x))`` equals ``pick(stock(x))`` as well as float32 arithmetic allows.

    ``ours`` and ``stock`` are modules (or callables taking the input and a dtype-converted copy of the module, see
    below) computing the same function; ``pick`` maps each one's output to a list of tensors to compare. Both run
    in float32 and in float64 (deep copies); with e = max |a - b| per tensor:

        e(ours64, stock64) <= factor * e(stock32, stock64)
        e(ours32, stock64) <= factor * e(stock32, stock64) + e(ours64, stock64)

    e(stock32, stock64) is the stock network's own float32 rounding on this machine (whatever kernels it chose);
    e(ours64, stock64) what our implementation differs by in near-exact arithmetic (e.g. BatchNorm folded into
    float32 weights), which must be no larger than float32 arithmetic itself. A wrong tap, layer, padding or
    constant moves the result by orders of magnitude more.
    """
    def run(module, dtype):
        m = copy.deepcopy(module).to(dtype)
        with torch.no_grad():
            return [t.double() for t in pick(m(x.to(dtype)))]

    ours32, stock32 = run(ours, torch.float32), run(stock, torch.float32)
    ours64, stock64 = run(ours, torch.float64), run(stock, torch.float64)
    assert len(ours32) == len(stock32)
    for i, (o32, s32, o64, s64) in enumerate(zip(ours32, stock32, ours64, stock64)):
        assert o32.shape == s64.shape, (i, o32.shape, s64.shape)
        err = (o32 - s64).abs().max().item()
        own = (s32 - s64).abs().max().item()
        exact = (o64 - s64).abs().max().item()
        assert exact <= factor * own, (f"output {i}: in float64 |ours - stock| = {exact:.3g} > {factor} x the "
                                       f"stock network's float32 error ({own:.3g})")
        allowed = factor * own + exact
        assert err <= allowed, (f"output {i}: |ours32 - stock64| = {err:.3g} > {factor} x |stock32 - stock64| "
                                f"({own:.3g}) + |ours64 - stock64| ({exact:.3g}) = {allowed:.3g}")


def unit_features(shape, dtype=torch.float32, seed=0, device="cpu") -> torch.Tensor:
    """Random Tensor[*, C, H, W] L2-normalised over C (computed in float64, then cast)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    return torch.nn.functional.normalize(x, dim=1, eps=1e-12).to(dtype=dtype, device=device)


def noncontiguous(x: torch.Tensor) -> torch.Tensor:
    """Same values as ``x`` but laid out channels-last and strided (a view into a larger buffer)."""
    big = torch.zeros((x.shape[0], x.shape[2], x.shape[3], 2 * x.shape[1]), dtype=x.dtype, device=x.device)
    big[..., ::2] = x.permute(0, 2, 3, 1)
    view = big[..., ::2].permute(0, 3, 1, 2)
    assert not view.is_contiguous()
    return view


def max_err(got, want) -> float:
    """max |got - want| over paired tensors (e.g. the (forward, backward) outputs), in float64 on the CPU."""
    return max((g.double().cpu() - w.double().cpu()).abs().max().item() for g, w in zip(got, want))


def tf32_round(x: torch.Tensor) -> torch.Tensor:
    """float32 -> TF32 value (10 mantissa bits, round to nearest, ties away from zero), as cvt.rna does."""
    bits = x.float().contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def tf32_truncate(x: torch.Tensor) -> torch.Tensor:
    """float32 -> TF32 value by dropping the 13 low mantissa bits: what tensor cores read from a float32 register
    that was not rounded first (Triton's ``tl.dot`` with ``input_precision="tf32"``)."""
    bits = x.float().contiguous().view(torch.int32)
    return (bits & ~0x1FFF).view(torch.float32)


def precision_race(backend: str, query: torch.Tensor, templates: torch.Tensor, fwd_window: int, bwd_window: int,
                   rounds: int = 10) -> list[str]:
    """Two threads call ``window_match`` at once, one with precision "exact" and one with "tf32", ``rounds`` times
    each; returns the precisions whose results ever differed from a single-threaded call with the same precision
    (``[]``: no call saw the other's setting)."""
    import threading

    import hetmm_fast as hf

    precisions = ("exact", "tf32")
    want = {p: hf.window_match(query, templates, fwd_window, bwd_window, backend=backend, precision=p)
            for p in precisions}
    bad: list[str] = []
    start = threading.Barrier(len(precisions))

    def worker(p):
        start.wait()
        for _ in range(rounds):
            got = hf.window_match(query, templates, fwd_window, bwd_window, backend=backend, precision=p)
            if not all(torch.equal(x, y) for x, y in zip(got, want[p])):
                bad.append(p)

    threads = [threading.Thread(target=worker, args=(p,)) for p in precisions]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return bad


def brute_window_match(query: torch.Tensor, templates: torch.Tensor, kf: int, kb: int):
    """SPEC §2 by definition, float64, looping over pixels and window positions: (forward, backward) float64."""
    q = query.double()
    t = templates.double()
    B, C, H, W = q.shape
    fwd = torch.full((B, H, W), -1.0, dtype=torch.float64)
    bwd = torch.full((B, H, W), -1.0, dtype=torch.float64)
    for b in range(B):
        for y in range(H):
            for x in range(W):
                for k, out, fixed_query in ((kf, fwd, True), (kb, bwd, False)):
                    d = k // 2
                    best = -1.0
                    for y2 in range(max(0, y - d), min(H, y + d + 1)):
                        for x2 in range(max(0, x - d), min(W, x + d + 1)):
                            if fixed_query:  # query pixel (y, x) against template pixels (y2, x2)
                                v = (t[:, :, y2, x2] @ q[b, :, y, x]).max().item()
                            else:  # template pixel (y, x) against query pixels (y2, x2)
                                v = (t[:, :, y, x] @ q[b, :, y2, x2]).max().item()
                            best = max(best, v)
                    out[b, y, x] = best
    return fwd, bwd


def clustered_points(n: int, dim: int, n_clusters: int, spread: float, rng: np.random.Generator,
                     n_duplicates: int = 0) -> np.ndarray:
    """``n`` unit vectors in ``dim`` dims around ``n_clusters`` random centres (plus uniform outliers and exact
    duplicates of earlier points), as float64 [n, dim]."""
    centres = rng.normal(size=(max(1, n_clusters), dim))
    which = rng.integers(0, max(1, n_clusters), size=n)
    x = centres[which] + spread * rng.normal(size=(n, dim))
    n_out = n // 10
    x[:n_out] = rng.normal(size=(n_out, dim)) * 3
    for _ in range(n_duplicates):
        i, j = rng.integers(0, n, size=2)
        x[i] = x[j]
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def cosine_distances(x: np.ndarray) -> np.ndarray:
    """``max(0, 1 - <x_i, x_j>)`` float64 [n, n] (SPEC §4)."""
    return np.maximum(0.0, 1.0 - x @ x.T)


def same_partition(a, b) -> bool:
    """True when two label vectors define the same clusters and the same noise set (-1), whatever the numbering."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape or not np.array_equal(a < 0, b < 0):
        return False
    pairs = {}
    back = {}
    for u, v in zip(a.tolist(), b.tolist()):
        if u < 0:
            continue
        if pairs.setdefault(u, v) != v or back.setdefault(v, u) != u:
            return False
    return True


def pts_transcription(gram, labels, size: int) -> list[int]:
    """SPEC §4 steps 2-4 for one pixel in plain Python: ``gram`` float64 [N, N] (``<x_i, x_j>``), ``labels`` the
    OPTICS labels of that pixel -> the chosen indices in order. Sums run in ascending index order."""
    g = np.asarray(gram, dtype=np.float64).tolist()
    n = len(g)
    labels = [int(v) for v in labels]
    order = []
    for lab in labels:
        if lab >= 0 and lab not in order:
            order.append(lab)
    chosen = []
    for lab in order:
        if len(chosen) == size:
            break
        members = [i for i in range(n) if labels[i] == lab]
        best, best_j = None, None
        for j in members:
            s = 0.0
            for k in members:
                s += g[j][k]
            if best is None or s > best:
                best, best_j = s, j
        chosen.append(best_j)
    if not order:
        sums = []
        for j in range(n):
            s = 0.0
            for k in range(n):
                s += g[j][k]
            sums.append(s)
        chosen.append(max(range(n), key=lambda j: (sums[j], -j)))
    dp = [0.0] * n
    for s_ in chosen:
        for i in range(n):
            dp[i] += g[i][s_]
    while len(chosen) < size:
        best_i = None
        for i in range(n):
            if i in chosen:
                continue
            if best_i is None or dp[i] < dp[best_i]:
                best_i = i
        chosen.append(best_i)
        for i in range(n):
            dp[i] += g[i][best_i]
    return chosen


def clustered_templates(n, c, h, w, seed, n_dup=3, device="cpu") -> torch.Tensor:
    """Templates Tensor[n, c, h, w] float32 whose pixels form a few clusters, with outliers and exact duplicate
    images (ties), L2-normalised over C."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, c, h, w, generator=g, dtype=torch.float64)
    which = torch.randint(0, 3, (n,), generator=g)
    x = centres[which] + 0.3 * torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    x[: n // 8] = torch.randn(n // 8, c, h, w, generator=g, dtype=torch.float64)
    for i in range(n_dup):
        x[n - 1 - i] = x[i]
    return torch.nn.functional.normalize(x, dim=1).float().to(device)
