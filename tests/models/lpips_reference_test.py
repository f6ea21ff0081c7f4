#!/usr/bin/env python3
"""LPIPS in C++ against PyTorch on the same random weights (ctest: models_lpips_reference).

1. Writes random state dicts shaped like torchvision's VGG16 (features.*; a small stand-in for the
   classifier.*, which the converter ignores) and like the LPIPS v0.1 VGG heads (lin{l}.model.1.weight,
   non-negative), and converts them with launch/convert_lpips_weights.py.
2. Checks that the converter refuses a negative head and a VGG16 without a convolution.
3. Computes LPIPS distances and their gradients in float64 with PyTorch, from the ORIGINAL state
   dicts, on random image pairs (RGB and gray), and writes them to cases.safetensors.
4. Runs the C++ checker (tests/models/lpips_compare.cpp), which loads the converted file with
   models::Lpips and compares its distances (float32: within 1e-5; float64: within 1e-9) and
   gradients with these.
"""

import argparse
import json
import os
import struct
import subprocess
import sys

import torch
import torch.nn.functional as F

BLOCKS = [[0, 2], [5, 7], [10, 12, 14], [17, 19, 21], [24, 26, 28]]
WIDTHS = [64, 128, 256, 512, 512]
SHIFT = [-0.030, -0.088, -0.188]
SCALE = [0.458, 0.448, 0.450]


def random_vgg16(gen):
    sd = {}
    cin = 3
    for block, width in zip(BLOCKS, WIDTHS):
        for idx in block:
            std = (2.0 / (cin * 9)) ** 0.5
            sd[f"features.{idx}.weight"] = torch.randn(width, cin, 3, 3, generator=gen) * std
            sd[f"features.{idx}.bias"] = torch.randn(width, generator=gen) * 0.05
            cin = width
    # torchvision's classifier is 4096 x 25088 (400 MB); the converter ignores it, so a small
    # stand-in with the same keys.
    for idx in (0, 3, 6):
        sd[f"classifier.{idx}.weight"] = torch.randn(8, 16, generator=gen)
        sd[f"classifier.{idx}.bias"] = torch.randn(8, generator=gen)
    return sd


def random_heads(gen):
    return {f"lin{l}.model.1.weight": torch.rand(1, c, 1, 1, generator=gen) for l, c in enumerate(WIDTHS)}


def lpips(vgg, heads, x, y):
    """The formula of models/lpips.h, in x's dtype: distances [B]."""
    dt = x.dtype
    shift = torch.tensor(SHIFT, dtype=dt).view(1, 3, 1, 1)
    scale = torch.tensor(SCALE, dtype=dt).view(1, 3, 1, 1)

    def taps(img):
        if img.shape[1] == 1:
            img = img.expand(-1, 3, -1, -1)
        h = (img - shift) / scale
        out = []
        for b, block in enumerate(BLOCKS):
            if b:
                h = F.max_pool2d(h, 2, 2)
            for idx in block:
                h = F.relu(F.conv2d(h, vgg[f"features.{idx}.weight"].to(dt), vgg[f"features.{idx}.bias"].to(dt), padding=1))
            out.append(h)
        return out

    total = 0
    for l, (a, b) in enumerate(zip(taps(x), taps(y))):
        na = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        nb = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        w = heads[f"lin{l}.model.1.weight"].to(dt).view(1, -1, 1, 1)
        total = total + (w * (na - nb) ** 2).sum(1).mean((1, 2))
    return total


def write_f64_safetensors(path, tensors):
    header, blobs, offset = {"__metadata__": {"what": "lpips reference cases"}}, [], 0
    for name, t in tensors.items():
        data = t.detach().contiguous().to(torch.float64).numpy().astype("<f8").tobytes()
        header[name] = {"dtype": "F64", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def run(cmd, expect_ok=True):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    sys.stdout.write(p.stdout)
    sys.stderr.write(p.stderr)
    if (p.returncode == 0) != expect_ok:
        raise SystemExit(f"FAIL: {' '.join(cmd)} exited {p.returncode}")
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--compare", required=True, help="the lpips_compare binary")
    ap.add_argument("--converter", required=True, help="launch/convert_lpips_weights.py")
    ap.add_argument("--scratch", required=True)
    args = ap.parse_args()
    os.makedirs(args.scratch, exist_ok=True)
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(2018)
    vgg, heads = random_vgg16(gen), random_heads(gen)
    vgg_path = os.path.join(args.scratch, "vgg16.pth")
    heads_path = os.path.join(args.scratch, "lpips_vgg_v0.1.pth")
    out = os.path.join(args.scratch, "lpips.safetensors")
    torch.save(vgg, vgg_path)
    torch.save(heads, heads_path)
    for stale in (out,):
        if os.path.exists(stale):
            os.remove(stale)
    py = sys.executable
    run([py, args.converter, "--vgg16", vgg_path, "--lpips", heads_path, "--out", out])

    # The converter refuses what is not LPIPS/VGG16.
    bad_heads = dict(heads)
    bad_heads["lin2.model.1.weight"] = -bad_heads["lin2.model.1.weight"]
    bad_path = os.path.join(args.scratch, "bad_heads.pth")
    torch.save(bad_heads, bad_path)
    p = run([py, args.converter, "--vgg16", vgg_path, "--lpips", bad_path, "--out", out + ".bad"], expect_ok=False)
    assert "negative" in p.stderr, p.stderr
    bad_vgg = {k: v for k, v in vgg.items() if k != "features.19.weight"}
    torch.save(bad_vgg, bad_path)
    p = run([py, args.converter, "--vgg16", bad_path, "--lpips", heads_path, "--out", out + ".bad"], expect_ok=False)
    assert "features.19.weight" in p.stderr, p.stderr
    assert not os.path.exists(out + ".bad")

    cases = {}
    for name, (b, c, side) in {"rgb": (2, 3, 48), "gray": (2, 1, 32)}.items():
        x = (torch.rand(b, c, side, side, generator=gen, dtype=torch.float64) * 2 - 1).requires_grad_(True)
        y = (x.detach() + 0.3 * torch.randn(b, c, side, side, generator=gen, dtype=torch.float64)).clamp(-1, 1)
        d = lpips(vgg, heads, x, y)
        (grad,) = torch.autograd.grad(d.sum(), x)
        d32 = lpips(vgg, heads, x.detach().float(), y.float())
        print(f"{name}: d = {d.tolist()}, float32 PyTorch - float64: {(d32.double() - d).abs().max().item():.3g}")
        cases.update({f"{name}.x": x.detach(), f"{name}.y": y, f"{name}.d": d.detach(), f"{name}.grad": grad})
    cases_path = os.path.join(args.scratch, "cases.safetensors")
    write_f64_safetensors(cases_path, cases)
    run([args.compare, out, cases_path])
    print("PASS")


if __name__ == "__main__":
    main()
