"""`tessera convert` end to end, and dataset files as a Python user sees them.

- converted files read with h5py (shape, dtype, chunking along N, compression, labels);
- refusing to overwrite without --force; misused options exit 2 with a message;
- files made with h5py, good and bad, opened as the trainer opens them (image_file_check):
  every bad one gives its message and exit code 2, never a crash.
"""
import os
import struct
import sys
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402
from harness import check, run  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402

FMNIST = "/usr/share/datasets/fashion-mnist"


def png(path, pixels):
    """Writes an 8-bit grayscale (H x W) or RGB (H x W x 3) PNG with the standard library."""
    pixels = np.asarray(pixels, dtype=np.uint8)
    h, w = pixels.shape[:2]
    color = 2 if pixels.ndim == 3 else 0
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(h))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw)))
        f.write(chunk(b"IEND", b""))


def convert(args, *extra, rc=0):
    return run([args.tessera, "convert", *extra], timeout=120, check_rc=rc)


def expect_usage_error(p, needle):
    check(p.returncode == 2, f"exit {p.returncode}, expected 2\n{p.stderr}")
    check(needle in p.stderr, f"'{needle}' not in stderr:\n{p.stderr}")


def fashion_mnist(args):
    if not os.path.exists(os.path.join(FMNIST, "t10k-images-idx3-ubyte.gz")):
        print("skip: dataset-fashion-mnist not installed")
        return
    out = os.path.join(args.scratch, "fm_test.h5")
    convert(args, "fmnist", "--split", "test", "--out", out)
    with h5py.File(out, "r") as f:
        images, labels = f["images"], f["labels"]
        check(images.shape == (10000, 28, 28, 1), f"shape {images.shape}")
        check(images.dtype == np.uint8, f"dtype {images.dtype}")
        check(images.chunks is not None and images.chunks[1:] == (28, 28, 1),
              f"chunks {images.chunks}")
        check(labels.dtype == np.int64 and labels.shape == (10000,), f"labels {labels}")
        check(np.bincount(labels[:]).tolist() == [1000] * 10, "label histogram")
        check(int(images[0].astype(np.int64).sum()) == 33456, "pixels of image 0")
    p = convert(args, "fmnist", "--split", "test", "--out", out, rc=None)
    expect_usage_error(p, "exists; pass --force")
    convert(args, "fmnist", "--split", "test", "--out", out, "--force", "--chunk", "100",
            "--compression", "1")
    with h5py.File(out, "r") as f:
        check(f["images"].chunks == (100, 28, 28, 1), f"chunks {f['images'].chunks}")
        check(f["images"].compression == "gzip", "compression")
    p = run([args.check, out, "images", "28", "28", "1"], check_rc=0)
    check("images 10000 shape 28x28x1 labels 1 first_label 9" in p.stdout, p.stdout)


def image_folder(args):
    root = os.path.join(args.scratch, "folder")
    rng = np.random.default_rng(0)
    pictures = {"shoes/a.png": rng.integers(0, 256, (10, 12), dtype=np.uint8),
                "shoes/b.png": rng.integers(0, 256, (10, 12, 3), dtype=np.uint8),
                "shirts/c.png": np.full((12, 10, 3), 77, dtype=np.uint8)}
    for name, pixels in pictures.items():
        png(os.path.join(root, name), pixels)
    out = os.path.join(args.scratch, "folder.h5")
    p = convert(args, "images", "--input", root, "--out", out, "--size", "8",
                "--labels-from-dirs", "--chunk", "2", "--compression", "4")
    check("3/3 images" in p.stderr, f"no progress line:\n{p.stderr}")
    with h5py.File(out, "r") as f:
        check(f["images"].shape == (3, 8, 8, 3), f"shape {f['images'].shape}")
        check(f["images"].chunks == (2, 8, 8, 3), f"chunks {f['images'].chunks}")
        # sorted paths: shirts/c.png (label 0), shoes/a.png, shoes/b.png (label 1)
        check(f["labels"][:].tolist() == [0, 1, 1], f"labels {f['labels'][:]}")
        check(int(np.abs(f["images"][0].astype(int) - 77).max()) <= 1, "solid image")
        first = f["images"][1]
        check((first[..., 0] == first[..., 1]).all(), "gray image not replicated to RGB")
    # Same input, same bytes.
    again = os.path.join(args.scratch, "folder2.h5")
    convert(args, "images", "--input", root, "--out", again, "--size", "8",
            "--labels-from-dirs", "--chunk", "2", "--compression", "4")
    check(open(out, "rb").read() == open(again, "rb").read(), "conversion is not deterministic")


def misuse(args):
    out = os.path.join(args.scratch, "never.h5")
    expect_usage_error(convert(args, "idx", "--out", out, rc=None), "needs --images")
    expect_usage_error(convert(args, "fmnist", "--size", "3", "--out", out, rc=None),
                       "does not take --size")
    expect_usage_error(convert(args, "images", "--input", os.path.join(args.scratch, "nope"),
                               "--out", out, rc=None), "does not exist")
    empty = os.path.join(args.scratch, "empty")
    os.makedirs(empty)
    expect_usage_error(convert(args, "fmnist", "--input", empty, "--out", out, rc=None),
                       "dataset-fashion-mnist")
    expect_usage_error(convert(args, "cifar10", "--input", empty, "--out", out, rc=None),
                       "data_batch_1.bin")
    check(not os.path.exists(out), "a failed conversion left a file behind")


def bad_files(args):
    d = os.path.join(args.scratch, "bad")
    os.makedirs(d)

    def make(name, **datasets):
        path = os.path.join(d, name)
        with h5py.File(path, "w") as f:
            for key, value in datasets.items():
                f[key] = value
        return path

    good = make("good.h5", images=np.zeros((5, 4, 4, 3), np.uint8),
                labels=np.arange(5, dtype=np.int32) + 3)
    p = run([args.check, good], check_rc=0)
    check("images 5 shape 4x4x3 labels 1 first_label 3" in p.stdout, p.stdout)
    gray = make("gray.h5", pixels=np.zeros((2, 6, 6), np.uint8))
    check("shape 6x6x1" in run([args.check, gray, "pixels"], check_rc=0).stdout, "3-d dataset")

    truncated = os.path.join(d, "truncated.h5")
    data = open(make("whole.h5", images=np.ones((400, 8, 8, 1), np.uint8)), "rb").read()
    open(truncated, "wb").write(data[: len(data) // 2])
    text = os.path.join(d, "text.h5")
    open(text, "w").write("not hdf5\n")
    cases = [
        ([os.path.join(d, "missing.h5")], "does not exist"),
        ([text], "not an HDF5 file"),
        ([truncated], "truncated"),
        ([good, "imgs"], "no dataset 'imgs' (found: images, labels"),
        ([make("float.h5", images=np.zeros((3, 4, 4, 1), np.float32))],
         "expected uint8, found float32"),
        ([make("rank.h5", images=np.zeros((3, 16), np.uint8))], "wrong rank"),
        ([make("zero.h5", images=np.zeros((0, 4, 4, 1), np.uint8))], "zero images"),
        ([good, "images", "28", "28", "1"], "expected images of 28x28x1 (H x W x C), found 4x4x3"),
        ([make("labels.h5", images=np.zeros((3, 2, 2, 1), np.uint8), labels=np.zeros(4, np.int64))],
         "one label per image"),
    ]
    # One process for all cases (each process start loads LibTorch), then one case alone for
    # the exit code a process returns.
    case_file = os.path.join(d, "cases.tsv")
    with open(case_file, "w") as f:
        for argv, _ in cases:
            f.write("\t".join(argv) + "\n")
    p = run([args.check, "--cases", case_file], check_rc=0)
    results = p.stdout.splitlines()
    check(len(results) == len(cases), f"{len(results)} results for {len(cases)} cases:\n{p.stdout}")
    for (argv, needle), line in zip(cases, results):
        rc, _, message = line.partition("\t")
        check(rc == "2", f"{argv}: exit code {rc}, expected 2: {message}")
        check(needle in message, f"{argv}: '{needle}' not in: {message}")
        check(argv[0] in message, f"{argv}: message does not name the file: {message}")
    p = run([args.check, truncated])
    check(p.returncode == 2, f"exit {p.returncode} (negative: crashed), expected 2\n{p.stderr}")
    check(p.stderr.count("\n") == 1 and "truncated" in p.stderr,
          f"expected one line naming the problem, got\n{p.stderr}")


def main():
    args = harness.parse_args(lambda ap: ap.add_argument("--check", required=True))
    fashion_mnist(args)
    image_folder(args)
    misuse(args)
    bad_files(args)
    print("ok")


if __name__ == "__main__":
    main()
