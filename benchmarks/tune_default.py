"""Choose the "default" preset by measuring on the real categories of ../shared/data (README, "Choosing the default
preset").

For each category: efficientnet_lite0 features of up to ``--templates`` evenly spaced train images (a stand-in for a
PTS set of that size) and of up to ``--tests`` test images. For every layer the per-offset similarity maxima
``M_s[b, p] = max_t <q[b, :, p], T[t, :, p + s]>`` are computed once for all offsets of the largest window, so any
(forward, backward) window pair is a cheap max over a subset of offsets. Then a coordinate search over windows,
alpha, lambda and blur maximises the mean over categories of (image AUROC + pixel AUROC + AUPRO) / 3.

    python benchmarks/tune_default.py --data ../shared/data --json benchmarks/results/default_preset_sweep.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import time

import torch
import torch.nn.functional as F

WINDOWS = (1, 3, 5, 7, 9, 11, 13)


def offset_maxima(q, t, dmax, backend=None):
    """q [B, C, H, W], t [N, C, H, W] -> dict (dy, dx) -> M [B, H, W] (-inf where p + s is outside the map).

    Each offset is one 1x1-window ``window_match`` of the query against the templates cropped to the overlap, so
    the fastest available engine does the products."""
    from hetmm_fast import window_match

    B, C, H, W = q.shape
    out = {}
    for dy in range(-dmax, dmax + 1):
        for dx in range(-dmax, dmax + 1):
            m = torch.full((B, H, W), -torch.inf)
            ys, ye = max(0, -dy), min(H, H - dy)
            xs, xe = max(0, -dx), min(W, W - dx)
            if ys < ye and xs < xe:
                qq = q[:, :, ys:ye, xs:xe]
                tt = t[:, :, ys + dy:ye + dy, xs + dx:xe + dx]
                m[:, ys:ye, xs:xe] = window_match(qq, tt, 1, 1, backend=backend)[0]
            out[(dy, dx)] = m
    return out


def directions(M, kf, kb):
    any_m = next(iter(M.values()))
    fwd = torch.full_like(any_m, -1.0)
    bwd = torch.full_like(any_m, -1.0)
    H, W = any_m.shape[1:]
    for (dy, dx), m in M.items():
        if abs(dy) <= kf // 2 and abs(dx) <= kf // 2:
            fwd = torch.maximum(fwd, m)
        if abs(dy) <= kb // 2 and abs(dx) <= kb // 2:
            # backward at template pixel p + s takes M_s[p]
            shifted = torch.full_like(m, -torch.inf)
            ys, ye = max(0, dy), min(H, H + dy)
            xs, xe = max(0, dx), min(W, W + dx)
            if ys < ye and xs < xe:
                shifted[:, ys:ye, xs:xe] = m[:, ys - dy:ye - dy, xs - dx:xe - dx]
            bwd = torch.maximum(bwd, shifted)
    return 1 - fwd, 1 - bwd


def evaluate(maps_f, maps_b, params, blur, labels, masks, S):
    """Fuse, blur and score at side S (blur given at 256 px is scaled to S)."""
    from hetmm_fast import metrics
    from hetmm_fast.postprocess import gaussian_blur

    total = 0
    for j, (kf, kb, alpha, lam) in enumerate(params):
        a = torch.stack([maps_f[j][(kf, kb)], maps_b[j][(kf, kb)]], 1)
        up = F.interpolate(a, size=(S, S), mode="bilinear", align_corners=True)
        total = total + lam * (alpha * up[:, 0] + (1 - alpha) * up[:, 1])
    if blur:
        f = S / 256
        k = max(1, int(round(blur[1] * f)) | 1)
        total = gaussian_blur(total, blur[0] * f, k)
    scores = total.flatten(1).amax(1)
    r = {"image_auroc": metrics.image_auroc(labels, scores), "pixel_auroc": metrics.pixel_auroc(masks, total),
         "aupro": metrics.aupro(masks, total)}
    r["objective"] = (r["image_auroc"] + r["pixel_auroc"] + r["aupro"]) / 3
    return r


def prepare(root, category, n_templates, n_tests, S, eval_size, backend=None):
    from hetmm_fast import HETMM
    from hetmm_fast.data.mvtec import MVTecCategory

    data = MVTecCategory(root, category)
    train = data.train_paths
    step = max(1, len(train) // n_templates)
    train = train[::step][:n_templates]
    items = data.test_items
    if len(items) > n_tests:  # keep both classes, evenly spaced
        good = [i for i in items if i.label == 0]
        bad = [i for i in items if i.label == 1]
        good = good[:: max(1, len(good) // (n_tests // 2))][: n_tests // 2]
        bad = bad[:: max(1, len(bad) // (n_tests - len(good)))][: n_tests - len(good)]
        items = good + bad
    det = HETMM(image_size=S, progress=False).fit(train)
    q, _ = det._extract([i.path for i in items], "test")
    labels = torch.tensor([i.label for i in items])
    masks = torch.stack([data.load_mask(i, eval_size) for i in items])
    maps_f, maps_b = [], []
    for qj, tj in zip(q, det.templates):
        M = offset_maxima(qj.float(), tj.float(), max(WINDOWS) // 2, backend)
        mf, mb = {}, {}
        for kf, kb in itertools.product(WINDOWS, WINDOWS):
            if kb <= kf:
                mf[(kf, kb)], mb[(kf, kb)] = directions(M, kf, kb)
        maps_f.append(mf)
        maps_b.append(mb)
        del M
    return maps_f, maps_b, labels, masks


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--categories", nargs="*", default=None)
    ap.add_argument("--templates", type=int, default=60)
    ap.add_argument("--tests", type=int, default=160)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--eval-size", type=int, default=128, help="maps and masks are compared at this side")
    ap.add_argument("--sweeps", type=int, default=1)
    ap.add_argument("--json", default="benchmarks/results/default_preset_sweep.json")
    args = ap.parse_args()
    from hetmm_fast.data.mvtec import list_categories

    cats = args.categories or list_categories(args.data)
    t0 = time.time()
    prepared = {}
    for c in cats:
        prepared[c] = prepare(args.data, c, args.templates, args.tests, args.image_size, args.eval_size)
        print(f"{c}: prepared after {time.time() - t0:.0f} s", flush=True)
    print(f"features and offset maxima: {time.time() - t0:.0f} s", flush=True)
    log = []

    def score(params, blur):
        per = {c: evaluate(*prepared[c][:2], params, blur, *prepared[c][2:], args.eval_size) for c in cats}
        obj = sum(r["objective"] for r in per.values()) / len(per)
        log.append({"params": params, "blur": blur, "objective": obj, "per_category": per})
        return obj

    params = [[7, 3, 0.5, 1.0], [5, 3, 0.5, 1.0], [3, 3, 0.5, 1.0]]
    blur = [4.0, 17]
    best = score(params, blur)
    for sweep in range(args.sweeps):
        for j in range(3):
            for kf, kb in itertools.product(WINDOWS, WINDOWS):
                if kb > kf:
                    continue
                trial = [list(p) for p in params]
                trial[j][0], trial[j][1] = kf, kb
                s = score(trial, blur)
                if s > best:
                    best, params = s, trial
            for alpha in (0.3, 0.5, 0.7):
                trial = [list(p) for p in params]
                trial[j][2] = alpha
                s = score(trial, blur)
                if s > best:
                    best, params = s, trial
            if j > 0:
                for lam in (0.3, 0.5, 0.8, 1.0):
                    trial = [list(p) for p in params]
                    trial[j][3] = lam
                    s = score(trial, blur)
                    if s > best:
                        best, params = s, trial
        for b in (None, [2.0, 9], [4.0, 17], [6.0, 25], [8.0, 33]):
            s = score(params, b)
            if s > best:
                best, blur = s, b
        print(f"sweep {sweep}: objective {best:.4f} params {params} blur {blur}", flush=True)
    final = [e for e in log if e["params"] == params and e["blur"] == blur][-1]
    out = {"categories": cats, "templates": args.templates, "tests": args.tests, "best": final,
           "evaluated": len(log), "seconds": time.time() - t0,
           "start": log[0]}
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({"params": params, "blur": blur, "objective": best}, indent=1))
    for c, r in final["per_category"].items():
        print(f"{c}: image {r['image_auroc']:.3f} pixel {r['pixel_auroc']:.3f} aupro {r['aupro']:.3f}")


if __name__ == "__main__":
    main()
