#!/usr/bin/env python3
"""Writes the LPIPS weights file that Tessera's perceptual loss reads (models/lpips.h).

Inputs, both local files (nothing is downloaded):
  --vgg16   torchvision's VGG16 ImageNet weights (a state dict with features.N.weight/bias; the
            classifier.* entries are ignored), e.g. vgg16-397923af.pth
  --lpips   the LPIPS v0.1 linear heads for VGG (a state dict with lin0..lin4 weights of shape
            [1, C, 1, 1]), e.g. the LPIPS project's weights/v0.1/vgg.pth
Output (--out): safetensors with __metadata__ {"format": "tessera-lpips-vgg16"} and float32 tensors
  trunk.conv{block}_{i}.weight / .bias   the 13 VGG16 convolutions (conv1_1 .. conv5_3)
  lin{l}.weight                          the 5 heads, [1, C, 1, 1], all >= 0

Needs PyTorch (to unpickle the .pth files) and NumPy; the safetensors format is written here
with the standard library. Usage:
  python3 launch/convert_lpips_weights.py --vgg16 vgg16.pth --lpips vgg.pth --out lpips.safetensors
"""

import argparse
import json
import os
import re
import struct
import sys

# VGG16's convolutions: (block, index in block, torchvision features index, out channels).
VGG16_CONVS = []
_index = 0
for _block, _widths in enumerate([[64, 64], [128, 128], [256] * 3, [512] * 3, [512] * 3], 1):
    for _i, _width in enumerate(_widths, 1):
        VGG16_CONVS.append((_block, _i, _index, _width))
        _index += 2  # conv, ReLU
    _index += 1  # max pooling
TAP_CHANNELS = [64, 128, 256, 512, 512]
FORMAT = "tessera-lpips-vgg16"


def load_state_dict(path):
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # PyTorch before 1.13's weights_only
        obj = torch.load(path, map_location="cpu")
    if hasattr(obj, "state_dict") and not isinstance(obj, dict):
        obj = obj.state_dict()
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a state dict")
    # Checkpoints saved from DataParallel prefix every key with "module.".
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def convert(vgg, lin):
    """(name, float32 tensor) pairs of the output file from the two state dicts."""
    import torch

    out = []
    for block, i, index, width in VGG16_CONVS:
        for part in ("weight", "bias"):
            key = f"features.{index}.{part}"
            if key not in vgg:
                raise ValueError(f"VGG16 state dict: '{key}' is missing (not torchvision's VGG16?)")
            t = vgg[key].detach().to(torch.float32).contiguous()
            expected_out = t.shape[0] if t.dim() else -1
            if expected_out != width or (part == "weight" and (t.dim() != 4 or t.shape[2:] != (3, 3))):
                raise ValueError(f"VGG16 state dict: '{key}' has shape {tuple(t.shape)}, "
                                 f"expected {width} output channels of 3x3 kernels")
            out.append((f"trunk.conv{block}_{i}.{part}", t))
    heads = {}
    for key, value in lin.items():
        m = re.fullmatch(r"lin(\d)\.(?:model\.\d+\.)?weight", key)
        if m:
            layer = int(m.group(1))
            if layer in heads:
                raise ValueError(f"LPIPS state dict: two weights for lin{layer}")
            heads[layer] = value
    for layer, channels in enumerate(TAP_CHANNELS):
        if layer not in heads:
            raise ValueError(f"LPIPS state dict: no weight for lin{layer} (keys: {sorted(lin)})")
        t = heads[layer].detach().to(torch.float32).reshape(-1)
        if t.numel() != channels:
            raise ValueError(f"LPIPS state dict: lin{layer} has {t.numel()} weights, expected {channels}")
        if (t < 0).any():
            raise ValueError(f"LPIPS state dict: lin{layer} has negative weights")
        out.append((f"lin{layer}.weight", t.reshape(1, channels, 1, 1).contiguous()))
    return out


def write_safetensors(path, tensors, metadata):
    """Writes float32 tensors as safetensors, through a temporary file renamed into place."""
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name, t in tensors:
        data = t.detach().cpu().contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vgg16", required=True, help="torchvision VGG16 state dict (.pth)")
    parser.add_argument("--lpips", required=True, help="LPIPS v0.1 VGG linear heads (.pth)")
    parser.add_argument("--out", required=True, help="output .safetensors file")
    args = parser.parse_args(argv)
    try:
        tensors = convert(load_state_dict(args.vgg16), load_state_dict(args.lpips))
    except (ValueError, OSError, RuntimeError) as e:
        print(f"convert_lpips_weights: {e}", file=sys.stderr)
        return 2
    write_safetensors(args.out, tensors, {"format": FORMAT, "source_vgg16": os.path.basename(args.vgg16),
                                          "source_lpips": os.path.basename(args.lpips)})
    print(f"wrote {args.out}: {len(tensors)} tensors, "
          f"{sum(t.numel() for _, t in tensors)} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
