"""Checkpoints as a Python user sees them, without Tessera.

h5py reads every tensor (dtype, shape, values, crc32) and attribute of a checkpoint written by
Tessera; `tessera export` writes safetensors that a few lines of numpy parse into the same values
h5py sees; a checkpoint written by h5py following the documented format exports too; damaged or
unsuitable checkpoints fail with exit code 2 and a message naming the problem.
"""
import json
import math
import os
import struct
import sys
import zlib

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import check, parse_args, run  # noqa: E402

args = parse_args(lambda ap: ap.add_argument("--writer", required=True))
T = args.tessera
S = args.scratch


def ramp(shape, base, scale, dtype):
    """tests/checkpoint/test_states.cpp's ramp(): base + i * scale in float64, then cast."""
    v = base + np.arange(math.prod(shape), dtype=np.float64) * scale
    return v.astype(dtype).reshape(shape)


def bf16_bits(shape, base, scale):
    return (ramp(shape, base, scale, np.float32).view(np.uint32) >> 16).astype(np.uint16)


# testing::sampleState(): name -> (dtype attribute, values as h5py returns them).
EXPECTED = {
    "model/encoder.0.weight": ("float32", ramp((4, 3), -1.0, 0.25, np.float32)),
    "model/encoder.0.bias": ("float64", ramp((3,), 0.0, 1.5, np.float64)),
    "model/half": ("float16", ramp((2, 2), -0.5, 0.5, np.float16)),
    "model/bf16": ("bfloat16", bf16_bits((5,), -2.0, 1.0)),
    "model/codebook.count": ("int64", ramp((3,), -5.0, 1000000007.0, np.int64)),
    "model/int32": ("int32", ramp((2,), -2.0, 3.0, np.int32)),
    "model/int16": ("int16", ramp((3,), -3.0, 1.0, np.int16)),
    "model/int8": ("int8", ramp((3,), -3.0, 1.0, np.int8)),
    "model/uint8": ("uint8", ramp((2, 3), 0.0, 40.0, np.uint8)),
    "model/mask": ("bool", ramp((5,), 0.0, 1.0, np.float64) != 0),
    "model/empty": ("float32", np.zeros((0, 4), np.float32)),
    "model/scalar": ("float32", ramp((), 3.5, 0.0, np.float32)),
    "model/step_count": ("int64", ramp((), 42.0, 0.0, np.int64)),
    "ema/0.999/encoder.0.weight": ("float32", ramp((4, 3), -0.875, 0.25, np.float32)),
    "optim/0/exp_avg": ("float32", ramp((4, 3), 0.0, 0.01, np.float32)),
}
NUMPY_DTYPE = {"float32": np.float32, "float64": np.float64, "float16": np.float16,
               "bfloat16": np.uint16, "int64": np.int64, "int32": np.int32, "int16": np.int16,
               "int8": np.int8, "uint8": np.uint8, "bool": np.bool_}
SAFETENSORS_DTYPE = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "BF16": np.uint16,
                     "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
                     "U8": np.uint8, "BOOL": np.bool_}
CHECKPOINT_TO_SAFETENSORS = {"float32": "F32", "float64": "F64", "float16": "F16",
                             "bfloat16": "BF16", "int64": "I64", "int32": "I32", "int16": "I16",
                             "int8": "I8", "uint8": "U8", "bool": "BOOL"}


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def text(value):
    """Tessera stores texts as fixed-length UTF-8 strings, which h5py returns as bytes."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


def read_checkpoint(path):
    """A checkpoint through h5py, verifying the format as documented in checkpoint_file.h."""
    tensors, attrs = {}, {}
    with h5py.File(path, "r") as f:
        check(f.attrs["tessera_format_version"] == 1, "format version")
        check(isinstance(f.attrs["tessera_manifest"], bytes), "texts are fixed-length strings")
        manifest = text(f.attrs["tessera_manifest"])
        lines = manifest.split("\n")
        check(lines[-1] == "" and lines[0] == "tessera-checkpoint 1", manifest[:40])
        end = lines[-2]
        body = manifest[: len(manifest) - len(end) - 1]
        check(end == "end %08x" % zlib.crc32(body.encode()), "manifest end line")
        for line in lines[1:-2]:
            kind, crc, name = line.split(" ", 2)
            if kind == "tensor":
                ds = f[name]
                arr = np.asarray(ds[()])
                dtype = text(ds.attrs["dtype"])
                check(arr.dtype == NUMPY_DTYPE[dtype],
                      f"{name}: h5py dtype {arr.dtype} for {dtype}")
                check(ds.attrs["crc32"].dtype == np.uint32, f"{name}: crc32 type")
                check(int(ds.attrs["crc32"]) == zlib.crc32(arr.tobytes()) == int(crc, 16),
                      f"{name}: crc32")
                tensors[name] = (dtype, arr)
            else:
                value = text(f.attrs[name]) if kind == "text" else f.attrs[name]
                raw = {"int": lambda v: struct.pack("<q", int(v)),
                       "real": lambda v: struct.pack("<d", float(v)),
                       "text": lambda v: v.encode()}[kind](value)
                check(zlib.crc32(raw) == int(crc, 16), f"attribute {name}: crc32")
                attrs[name] = value
    return tensors, attrs


def read_safetensors(path):
    """The safetensors format with numpy alone: returns (ordered {name: array}, metadata)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    check((8 + n) % 8 == 0, f"data is not 8-byte aligned (header length {n})")
    header = json.loads(data[8 : 8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    buf = data[8 + n :]
    tensors, spans = {}, []
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dtype = np.dtype(SAFETENSORS_DTYPE[info["dtype"]]).newbyteorder("<")
        count = math.prod(info["shape"])
        check(end - begin == count * dtype.itemsize, f"{name}: size")
        check((8 + n + begin) % dtype.itemsize == 0, f"{name}: not aligned to its element size")
        arr = np.frombuffer(buf[begin:end], dtype=dtype).reshape(info["shape"])
        tensors[name] = (info["dtype"], arr)
        spans.append((begin, end))
    offset = 0
    for begin, end in sorted(spans):
        check(begin == offset, f"data_offsets leave a gap or overlap at {offset}")
        offset = end
    check(offset == len(buf), f"{len(buf) - offset} trailing bytes")
    return tensors, meta


# 1. h5py reads what Tessera wrote.
ckpt = os.path.join(S, "step-00000007.h5")
run([args.writer, ckpt, "7"], check_rc=0)
tensors, attrs = read_checkpoint(ckpt)
check(list(tensors) == list(EXPECTED), f"tensor order {list(tensors)}")
for name, (dtype, values) in EXPECTED.items():
    got_dtype, got = tensors[name]
    check(got_dtype == dtype, f"{name}: dtype attribute {got_dtype}")
    check(same(got, values), f"{name}: h5py sees {got!r}, expected {values!r}")
check(attrs["step"] == 7 and attrs["epoch"] == 2 and attrs["samples"] == 12345
      and attrs["world_size"] == 2, f"int attributes {attrs}")
check(attrs["lr"] == 0.001 and attrs["loss_scale"] == 65536.0, "real attributes")
check(attrs["config"] == "run:\n  name: demo\n  steps: 30\n", repr(attrs["config"]))
check(attrs["note"] == "unicode: \u03c0 \u2713" and attrs["empty"] == "", "text attributes")

# 2. `tessera export` gives the model (prefix removed) and EMA weights, as h5py saw them.
out = os.path.join(S, "model.safetensors")
p = run([T, "export", "--checkpoint", ckpt, "--format", "safetensors", "--out", out], check_rc=0)
exported, meta = read_safetensors(out)
want = [n[len("model/"):] for n in EXPECTED if n.startswith("model/")]
want += [n for n in EXPECTED if n.startswith("ema/")]
check(list(exported) == want, f"exported names {list(exported)}")
for name, (st_dtype, arr) in exported.items():
    source = name if name.startswith("ema/") else "model/" + name
    dtype, h5 = tensors[source]
    check(st_dtype == CHECKPOINT_TO_SAFETENSORS[dtype], f"{name}: {st_dtype} for {dtype}")
    check(same(arr.astype(arr.dtype.newbyteorder("=")), h5), f"{name}: differs from h5py")
check(meta.get("step") == "7" and meta.get("format") == "pt", f"metadata {meta}")
check(meta.get("config") == attrs["config"] and meta.get("lr") == "0.001", f"metadata {meta}")
check("exported 14 tensors" in p.stderr, p.stderr)


# 3. A checkpoint written by h5py from the documented format exports the same way (h5py writes str
#    attributes as variable-length strings, which Tessera reads too).
def write_checkpoint(path, tensors, ints, texts):
    manifest = "tessera-checkpoint 1\n"
    with h5py.File(path, "w") as f:
        for name, (dtype, arr) in tensors.items():
            ds = f.create_dataset(name, data=arr)
            crc = zlib.crc32(np.ascontiguousarray(arr).tobytes())
            ds.attrs["dtype"] = dtype
            ds.attrs["crc32"] = np.uint32(crc)
            manifest += "tensor %08x %s\n" % (crc, name)
        f.attrs["tessera_format_version"] = np.int64(1)
        for key, v in ints.items():
            f.attrs[key] = np.int64(v)
            manifest += "int %08x %s\n" % (zlib.crc32(struct.pack("<q", v)), key)
        for key, v in texts.items():
            f.attrs[key] = v
            manifest += "text %08x %s\n" % (zlib.crc32(v.encode()), key)
        manifest += "end %08x\n" % zlib.crc32(manifest.encode())
        f.attrs["tessera_manifest"] = manifest


foreign = os.path.join(S, "foreign.h5")
w = np.arange(6, dtype=np.float32).reshape(2, 3)
mask = np.array([True, False, True])
half = np.array([1.5, -2.0], np.float16)
write_checkpoint(foreign, {"model/w": ("float32", w), "model/mask": ("bool", mask),
                           "model/half": ("float16", half)}, {"step": 3}, {"config": "a: 1\n"})
out2 = os.path.join(S, "foreign.safetensors")
run([T, "export", "--checkpoint", foreign, "--out", out2], check_rc=0)
exported, meta = read_safetensors(out2)
check(list(exported) == ["w", "mask", "half"], f"foreign names {list(exported)}")
check(same(exported["w"][1], w) and same(exported["mask"][1], mask)
      and same(exported["half"][1], half), "foreign values")
check(meta.get("step") == "3" and meta.get("config") == "a: 1\n", f"foreign metadata {meta}")

# 4. Failures: exit code 2 and a message naming the file and what is wrong with it.
no_model = os.path.join(S, "no_model.h5")
write_checkpoint(no_model, {"optim/0/m": ("float32", w)}, {"step": 1}, {})
p = run([T, "export", "--checkpoint", no_model, "--out", os.path.join(S, "x.safetensors")],
        check_rc=2)
check("no model weights" in p.stderr and no_model in p.stderr, p.stderr)

damaged = os.path.join(S, "damaged.h5")
with open(ckpt, "rb") as f:
    data = bytearray(f.read())
with h5py.File(ckpt, "r") as f:
    offset = f["model/encoder.0.bias"].id.get_offset()
data[offset + 3] ^= 0x40
with open(damaged, "wb") as f:
    f.write(data)
p = run([T, "export", "--checkpoint", damaged, "--out", os.path.join(S, "d.safetensors")],
        check_rc=2)
check("'model/encoder.0.bias': checksum mismatch" in p.stderr and damaged in p.stderr, p.stderr)
check(not os.path.exists(os.path.join(S, "d.safetensors")), "no output for a damaged checkpoint")

with open(damaged, "wb") as f:
    f.write(bytes(data[: len(data) // 2]))
p = run([T, "export", "--checkpoint", damaged, "--out", os.path.join(S, "d.safetensors")],
        check_rc=2)
check(damaged in p.stderr, p.stderr)

p = run([T, "export", "--checkpoint", os.path.join(S, "missing.h5"), "--out", out], check_rc=2)
check("missing.h5" in p.stderr, p.stderr)

bad_out = os.path.join(S, "no", "such", "dir", "m.safetensors")
p = run([T, "export", "--checkpoint", ckpt, "--out", bad_out], check_rc=1)
check(bad_out in p.stderr, p.stderr)
print("ok")
