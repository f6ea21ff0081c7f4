#!/usr/bin/env python3
"""Fréchet distance and precision/recall in C++ against scipy/numpy on the same features (ctest:
models_distribution_metrics_reference).

The reference is pytorch-fid's calculate_frechet_distance: numpy.cov, scipy.linalg.sqrtm of
sigma1 sigma2 (with its eps offset when the product is singular), real part. Precision and recall
are Kynkäänniemi et al.'s with k = 3, computed with numpy distances. Feature sets: correlated
Gaussians of 64 dimensions (1000 and 1200 vectors, different means and covariances), a nearly
rank-deficient pair (300 vectors of 64 dimensions with 40 active), and a set against itself.
The Fréchet distance must agree to 1e-6 relative (absolute 1e-8 for the set against itself),
precision and recall exactly.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
from scipy import linalg


def frechet_reference(x, y):
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    covmean = covmean.real
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def pr_reference(real, fake, k=3):
    def d2(a, b):
        return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0)
    real_r = np.sort(d2(real, real), axis=1)[:, k]
    fake_r = np.sort(d2(fake, fake), axis=1)[:, k]
    precision = float((d2(fake, real) <= real_r[None, :]).any(1).mean())
    recall = float((d2(real, fake) <= fake_r[None, :]).any(1).mean())
    return precision, recall


def write(path, x):
    with open(path, "wb") as f:
        f.write(np.array(x.shape, dtype="<i8").tobytes())
        f.write(np.ascontiguousarray(x, dtype="<f8").tobytes())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--compare", required=True)
    ap.add_argument("--scratch", required=True)
    args = ap.parse_args()
    os.makedirs(args.scratch, exist_ok=True)
    rng = np.random.default_rng(15)
    mix1 = rng.normal(size=(64, 64)) / 8
    mix2 = mix1 + rng.normal(size=(64, 64)) / 16
    low = np.zeros((64, 64))
    low[:40, :40] = rng.normal(size=(40, 40)) / 6
    base = rng.normal(size=(1000, 64)) @ mix1
    cases = {
        "gaussians": (base, rng.normal(size=(1200, 64)) @ mix2 + 0.3),
        "low_rank": (rng.normal(size=(300, 64)) @ low, rng.normal(size=(300, 64)) @ low + 0.1),
        "itself": (base, base),
    }
    failures = 0
    for name, (x, y) in cases.items():
        pa, pb = os.path.join(args.scratch, name + "_a.bin"), os.path.join(args.scratch, name + "_b.bin")
        write(pa, x)
        write(pb, y)
        got = json.loads(subprocess.run([args.compare, pa, pb], check=True, capture_output=True,
                                        text=True).stdout)
        fd_ref = frechet_reference(x, y)
        p_ref, r_ref = pr_reference(x, y)
        if name == "itself":
            ok_fd = abs(got["fd"]) < 1e-8
        else:
            ok_fd = abs(got["fd"] - fd_ref) <= 1e-6 * abs(fd_ref)
        ok_pr = got["precision"] == p_ref and got["recall"] == r_ref
        print(f"{name}: fd {got['fd']:.12g} (scipy {fd_ref:.12g}, rel "
              f"{abs(got['fd'] - fd_ref) / max(abs(fd_ref), 1e-300):.2e}), precision "
              f"{got['precision']:.4f} ({p_ref:.4f}), recall {got['recall']:.4f} ({r_ref:.4f})")
        if not (ok_fd and ok_pr):
            print(f"FAIL {name}", file=sys.stderr)
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
