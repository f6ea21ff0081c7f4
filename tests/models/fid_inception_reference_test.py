#!/usr/bin/env python3
"""The FID Inception network in C++ against PyTorch on the same random weights (ctest:
models_fid_inception_reference).

1. Builds the reference network: torchvision's Inception v3 (1008 classes, no auxiliary head, as
   pytorch-fid's weights have) with the FID graph's blocks, written here as subclasses of
   torchvision's: Mixed_5b..5d, 6b..6e and 7b average-pool without counting the padding, 7c
   max-pools. Its weights are random: convolutions as PyTorch initialises them, random BatchNorm
   affine parameters, running statistics those of one batch, a noise image and a smooth one (so activations keep their
   scale through the 94 layers).
2. Saves the state dict as pytorch-fid's file is laid out (fc.* and num_batches_tracked included)
   and converts it with launch/convert_fid_inception_weights.py; checks the converter refuses a
   state dict with a tensor missing (from the command line) and one with torchvision's
   1000-class classifier.
3. Computes pool3 features the way pytorch-fid does (images in [0, 1], bilinear resize to 299,
   then 2x - 1) in float64 and float32 on 2 RGB images at 299x299, 1 RGB at 40x56 and 1 gray at 28x28.
4. Runs tests/models/fid_inception_compare.cpp: models::FidInception on the same images in
   [-1, 1] must give float32 features within 5e-5 of PyTorch's float32 features and within 1e-4
   of its float64 ones (max absolute difference relative to the largest feature; PyTorch's own
   float32 features are 2e-5 to 5e-5 from its float64 ones on these weights, and torchvision's
   stock blocks instead of FID's change the features by ~1, which the test also checks).
5. The fingerprint: equal for the same weights converted twice, different when one BatchNorm mean
   changes; loading refuses, naming the file and the tensor, a file with a tensor missing, one
   misshapen and one of another format.
"""

import argparse
import copy
import importlib.util
import os
import re
import subprocess
import sys

import torch
import torch.nn.functional as F
from torchvision.models import inception as tv

TOL_F32 = 5e-5
TOL_F64 = 1e-4


class FidBlockA(tv.InceptionA):
    def forward(self, x):
        pooled = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        return torch.cat([self.branch1x1(x),
                          self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(pooled)], 1)


class FidBlockC(tv.InceptionC):
    def forward(self, x):
        h7 = x
        for conv in (self.branch7x7_1, self.branch7x7_2, self.branch7x7_3):
            h7 = conv(h7)
        hd = x
        for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                     self.branch7x7dbl_4, self.branch7x7dbl_5):
            hd = conv(hd)
        pooled = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        return torch.cat([self.branch1x1(x), h7, hd, self.branch_pool(pooled)], 1)


class FidBlockE(tv.InceptionE):
    def __init__(self, in_channels, max_pool):
        super().__init__(in_channels)
        self.max_pool = max_pool

    def forward(self, x):
        h3 = self.branch3x3_1(x)
        hd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        if self.max_pool:
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(h3), self.branch3x3_2b(h3),
                          self.branch3x3dbl_3a(hd), self.branch3x3dbl_3b(hd),
                          self.branch_pool(pooled)], 1)


def fid_network():
    net = tv.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = FidBlockA(192, 32), FidBlockA(256, 64), FidBlockA(288, 64)
    net.Mixed_6b, net.Mixed_6c = FidBlockC(768, 128), FidBlockC(768, 160)
    net.Mixed_6d, net.Mixed_6e = FidBlockC(768, 160), FidBlockC(768, 192)
    net.Mixed_7b, net.Mixed_7c = FidBlockE(1280, max_pool=False), FidBlockE(2048, max_pool=True)
    return net


def pool3(net, images01):
    """pytorch-fid's pipeline: [0, 1] images -> 299x299 bilinear -> [-1, 1] -> pool3 [N, 2048]."""
    x = F.interpolate(images01, size=(299, 299), mode="bilinear", align_corners=False)
    x = 2 * x - 1
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    for layer in (net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, net.maxpool1,
                  net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, net.maxpool2,
                  net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a,
                  net.Mixed_6b, net.Mixed_6c, net.Mixed_6d, net.Mixed_6e,
                  net.Mixed_7a, net.Mixed_7b, net.Mixed_7c, net.avgpool):
        x = layer(x)
    return torch.flatten(x, 1)


def randomise_batch_norm(net, gen):
    """Random affine parameters, then running statistics of one random batch, layer by layer as
    the network in eval mode sees them (each BatchNorm's input depends on those before it)."""
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 94, len(bns)
    with torch.no_grad():
        for bn in bns:
            bn.weight.copy_(0.6 + 0.8 * torch.rand(bn.weight.shape, generator=gen))
            bn.bias.copy_(0.2 * torch.randn(bn.bias.shape, generator=gen))
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: after one batch, that batch's statistics
        # A noise image and a smooth one (as small images resized to 299 are).
        smooth = F.interpolate(torch.rand(1, 3, 16, 16, generator=gen), size=(299, 299), mode="bilinear")
        net.train()
        pool3(net, torch.cat([torch.rand(1, 3, 299, 299, generator=gen), smooth]))
    net.eval()


def run(cmd, expect_ok=True):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    sys.stdout.write(p.stdout)
    sys.stderr.write(p.stderr)
    if (p.returncode == 0) != expect_ok:
        raise SystemExit(f"FAIL: {' '.join(cmd)} exited {p.returncode}")
    return p


def fingerprint(compare, weights):
    m = re.search(r"^fingerprint ([0-9a-f]{16})$", run([compare, weights]).stdout, re.M)
    assert m, "no fingerprint printed"
    return m.group(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--compare", required=True, help="the fid_inception_compare binary")
    ap.add_argument("--converter", required=True, help="launch/convert_fid_inception_weights.py")
    ap.add_argument("--scratch", required=True)
    args = ap.parse_args()
    os.makedirs(args.scratch, exist_ok=True)
    torch.set_num_threads(2)
    spec = importlib.util.spec_from_file_location("converter", args.converter)
    converter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(converter)

    torch.manual_seed(2015)  # torchvision's initialisation draws from the global generator
    gen = torch.Generator().manual_seed(1512)
    net = fid_network()
    randomise_batch_norm(net, gen)
    sd = net.state_dict()
    assert "fc.weight" in sd and not any(k.startswith("AuxLogits") for k in sd)

    py = sys.executable
    pth = os.path.join(args.scratch, "pt_inception-2015-12-05-random.pth")
    out = os.path.join(args.scratch, "fid_inception.safetensors")
    for stale in (out, out + ".bad"):
        if os.path.exists(stale):
            os.remove(stale)
    torch.save(sd, pth)
    run([py, args.converter, "--pth", pth, "--out", out])

    # The converter refuses what is not pytorch-fid's Inception.
    bad_path = os.path.join(args.scratch, "bad.pth")
    torch.save({k: v for k, v in sd.items() if k != "Mixed_6c.branch7x7dbl_4.conv.weight"}, bad_path)
    p = run([py, args.converter, "--pth", bad_path, "--out", out + ".bad"], expect_ok=False)
    assert "Mixed_6c.branch7x7dbl_4.conv.weight" in p.stderr and bad_path in p.stderr, p.stderr
    assert not os.path.exists(out + ".bad")
    try:
        converter.convert(dict(sd, **{"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}))
        raise SystemExit("FAIL: the converter took torchvision's 1000-class Inception")
    except ValueError as e:
        assert "1000" in str(e) and "torchvision" in str(e), e

    # Reference features, float64 and float32, from images in [0, 1] as pytorch-fid takes them.
    cases = {}
    net64 = copy.deepcopy(net).double()
    with torch.no_grad():
        for name, shape in {"rgb299": (2, 3, 299, 299), "rgb40x56": (1, 3, 40, 56),
                            "gray28": (1, 1, 28, 28)}.items():
            x01 = torch.rand(shape, generator=gen).float()
            f64 = pool3(net64, x01.double())
            f32 = pool3(net, x01)
            spread = f64.abs().max().item()
            print(f"{name}: features in [{f64.min().item():.3g}, {f64.max().item():.3g}], "
                  f"PyTorch float32 - float64: {(f32.double() - f64).abs().max().item() / spread:.3g}")
            # Tessera's images are in [-1, 1] (float32 rounding of 2x - 1 is far below the tolerances).
            cases.update({f"{name}.x": (2 * x01 - 1).double(), f"{name}.f64": f64, f"{name}.f32": f32.double()})
    # The tolerances tell the FID blocks from torchvision's own (padding counted in the average
    # pools, an average pool in Mixed_7c), whose features on the same weights differ by far more.
    stock = tv.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    stock.load_state_dict(sd)
    stock.eval()
    with torch.no_grad():
        want = cases["rgb299.f64"]
        x01 = (cases["rgb299.x"][:1].float() + 1) / 2
        off = (pool3(stock, x01).double() - want[:1]).abs().max() / want[:1].abs().max()
    print(f"rgb299: torchvision's blocks instead of FID's: {off.item():.3g}")
    assert off > 100 * TOL_F64, off
    cases_path = os.path.join(args.scratch, "cases.safetensors")
    converter.write_safetensors(cases_path, list(cases.items()), {"what": "fid inception reference cases"})
    p = run([args.compare, out, cases_path, str(TOL_F32), str(TOL_F64)])

    # The fingerprint names the weights, not the file.
    first = re.search(r"^fingerprint ([0-9a-f]{16})$", p.stdout, re.M).group(1)
    again = os.path.join(args.scratch, "again.safetensors")
    converter.write_safetensors(again, converter.convert(sd), {"format": converter.FORMAT})
    assert fingerprint(args.compare, again) == first, "the same weights changed fingerprint"
    changed = dict(sd)
    changed["Mixed_6b.branch_pool.bn.running_mean"] = changed["Mixed_6b.branch_pool.bn.running_mean"].clone()
    changed["Mixed_6b.branch_pool.bn.running_mean"][7] += 1e-3
    tensors = converter.convert(changed)
    converter.write_safetensors(again, tensors, {"format": converter.FORMAT})
    assert fingerprint(args.compare, again) != first, "changed weights kept their fingerprint"

    # Loading refuses a broken file, naming it and the tensor.
    bad = os.path.join(args.scratch, "bad.safetensors")
    for what, broken, meta, needle in [
            ("missing", [t for t in tensors if t[0] != "Mixed_7b.branch3x3_2a.bn.bias"], converter.FORMAT,
             "'Mixed_7b.branch3x3_2a.bn.bias' is missing"),
            ("misshapen", [(n, t[:-1] if n == "Conv2d_4a_3x3.bn.running_var" else t) for n, t in tensors],
             converter.FORMAT, "'Conv2d_4a_3x3.bn.running_var' has shape [191], expected [192]"),
            ("format", tensors, "tessera-lpips-vgg16", "not an FID Inception weights file")]:
        converter.write_safetensors(bad, broken, {"format": meta})
        p = run([args.compare, bad], expect_ok=False)
        assert needle in p.stderr and bad in p.stderr, f"{what}: {p.stderr}"
    print("PASS")


if __name__ == "__main__":
    main()
