#!/usr/bin/env python3
"""Writes the FID Inception weights file that Tessera's sample-quality evaluation reads
(models/fid_inception.h).

Input (--pth), a local file (nothing is downloaded): pytorch-fid's Inception v3 weights, the state
dict pt_inception-2015-12-05-6726825d.pth that pytorch-fid itself fetches from its GitHub
releases (the TensorFlow FID graph's weights ported to PyTorch). Its classifier (fc.*, 1008
classes) and BatchNorm batch counters are dropped; any other tensor it lacks or has extra is an
error. torchvision's ImageNet Inception v3 (a 1000-class fc) is refused: its features are not
those of FID, and scores computed with it are not comparable with published ones
(--allow-other-weights converts it anyway).
Output (--out): safetensors with __metadata__ {"format": "tessera-fid-inception-v3"} and, for each
of the 94 convolutions (e.g. Conv2d_1a_3x3, Mixed_6b.branch7x7dbl_3), float32 tensors
  <conv>.conv.weight [out, in, kh, kw]   <conv>.bn.weight / bias / running_mean / running_var [out]

Needs PyTorch (to unpickle the .pth file) and NumPy. Usage:
  python3 launch/convert_fid_inception_weights.py --pth pt_inception-2015-12-05-6726825d.pth \\
      --out fid_inception.safetensors
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_lpips_weights import load_state_dict, write_safetensors  # noqa: E402

FORMAT = "tessera-fid-inception-v3"
FID_CLASSES = 1008  # the TensorFlow graph's classifier; torchvision's has 1000
BN_PARTS = ("weight", "bias", "running_mean", "running_var")


def _block_a(name, cin, pool):
    return [(f"{name}.branch1x1", cin, 64, 1, 1), (f"{name}.branch5x5_1", cin, 48, 1, 1),
            (f"{name}.branch5x5_2", 48, 64, 5, 5), (f"{name}.branch3x3dbl_1", cin, 64, 1, 1),
            (f"{name}.branch3x3dbl_2", 64, 96, 3, 3), (f"{name}.branch3x3dbl_3", 96, 96, 3, 3),
            (f"{name}.branch_pool", cin, pool, 1, 1)]


def _block_c(name, c7):
    convs = [(f"{name}.branch1x1", 768, 192, 1, 1), (f"{name}.branch7x7_1", 768, c7, 1, 1),
             (f"{name}.branch7x7_2", c7, c7, 1, 7), (f"{name}.branch7x7_3", c7, 192, 7, 1),
             (f"{name}.branch7x7dbl_1", 768, c7, 1, 1)]
    for i, (kh, kw) in enumerate([(7, 1), (1, 7), (7, 1), (1, 7)], 2):
        convs.append((f"{name}.branch7x7dbl_{i}", c7, 192 if i == 5 else c7, kh, kw))
    return convs + [(f"{name}.branch_pool", 768, 192, 1, 1)]


def _block_e(name, cin):
    return [(f"{name}.branch1x1", cin, 320, 1, 1), (f"{name}.branch3x3_1", cin, 384, 1, 1),
            (f"{name}.branch3x3_2a", 384, 384, 1, 3), (f"{name}.branch3x3_2b", 384, 384, 3, 1),
            (f"{name}.branch3x3dbl_1", cin, 448, 1, 1), (f"{name}.branch3x3dbl_2", 448, 384, 3, 3),
            (f"{name}.branch3x3dbl_3a", 384, 384, 1, 3), (f"{name}.branch3x3dbl_3b", 384, 384, 3, 1),
            (f"{name}.branch_pool", cin, 192, 1, 1)]


def convolutions():
    """(name, in channels, out channels, kernel height, kernel width) of the 94 convolutions."""
    convs = [("Conv2d_1a_3x3", 3, 32, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3),
             ("Conv2d_2b_3x3", 32, 64, 3, 3), ("Conv2d_3b_1x1", 64, 80, 1, 1),
             ("Conv2d_4a_3x3", 80, 192, 3, 3)]
    convs += _block_a("Mixed_5b", 192, 32) + _block_a("Mixed_5c", 256, 64) + _block_a("Mixed_5d", 288, 64)
    convs += [("Mixed_6a.branch3x3", 288, 384, 3, 3), ("Mixed_6a.branch3x3dbl_1", 288, 64, 1, 1),
              ("Mixed_6a.branch3x3dbl_2", 64, 96, 3, 3), ("Mixed_6a.branch3x3dbl_3", 96, 96, 3, 3)]
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        convs += _block_c(name, c7)
    convs += [("Mixed_7a.branch3x3_1", 768, 192, 1, 1), ("Mixed_7a.branch3x3_2", 192, 320, 3, 3),
              ("Mixed_7a.branch7x7x3_1", 768, 192, 1, 1), ("Mixed_7a.branch7x7x3_2", 192, 192, 1, 7),
              ("Mixed_7a.branch7x7x3_3", 192, 192, 7, 1), ("Mixed_7a.branch7x7x3_4", 192, 192, 3, 3)]
    return convs + _block_e("Mixed_7b", 1280) + _block_e("Mixed_7c", 2048)


def _ignored(key):
    return key.startswith("fc.") or key.startswith("AuxLogits.") or key.endswith(".num_batches_tracked")


def convert(sd, allow_other_weights=False):
    """(name, float32 tensor) pairs of the output file from pytorch-fid's state dict."""
    import torch

    fc = sd.get("fc.weight")
    if fc is not None and tuple(fc.shape) != (FID_CLASSES, 2048) and not allow_other_weights:
        raise ValueError(f"'fc.weight' has shape {tuple(fc.shape)}, expected ({FID_CLASSES}, 2048): these "
                         "are not pytorch-fid's FID Inception weights (torchvision's ImageNet Inception v3 "
                         "has 1000 classes); --allow-other-weights converts them anyway")
    out, expected = [], set()
    for name, cin, cout, kh, kw in convolutions():
        shapes = [("conv.weight", (cout, cin, kh, kw))] + [(f"bn.{p}", (cout,)) for p in BN_PARTS]
        for part, shape in shapes:
            key = f"{name}.{part}"
            expected.add(key)
            if key not in sd:
                raise ValueError(f"'{key}' is missing (not pytorch-fid's Inception v3?)")
            t = sd[key].detach()
            if not t.is_floating_point():
                raise ValueError(f"'{key}' is not floating point")
            if tuple(t.shape) != shape:
                raise ValueError(f"'{key}' has shape {tuple(t.shape)}, expected {shape}")
            t = t.to(torch.float32).contiguous()
            if not torch.isfinite(t).all():
                raise ValueError(f"'{key}' has non-finite values")
            if part == "bn.running_var" and (t < 0).any():
                raise ValueError(f"'{key}' has negative variances")
            out.append((key, t))
    extra = sorted(k for k in sd if k not in expected and not _ignored(k))
    if extra:
        raise ValueError(f"unexpected tensors {extra[:5]}{' ...' if len(extra) > 5 else ''} "
                         "(not pytorch-fid's Inception v3?)")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pth", required=True, help="pytorch-fid's pt_inception-2015-12-05-*.pth")
    parser.add_argument("--out", required=True, help="output .safetensors file")
    parser.add_argument("--allow-other-weights", action="store_true",
                        help="convert an Inception v3 whose classifier is not FID's 1008 classes")
    args = parser.parse_args(argv)
    try:
        tensors = convert(load_state_dict(args.pth), args.allow_other_weights)
    except (ValueError, OSError, RuntimeError) as e:
        print(f"convert_fid_inception_weights: {args.pth}: {e}", file=sys.stderr)
        return 2
    write_safetensors(args.out, tensors, {"format": FORMAT, "source": os.path.basename(args.pth)})
    print(f"wrote {args.out}: {len(tensors)} tensors, {sum(t.numel() for _, t in tensors)} values")
    return 0


if __name__ == "__main__":
    sys.exit(main())
