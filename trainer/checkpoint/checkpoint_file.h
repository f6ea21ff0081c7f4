// One checkpoint as one HDF5 file, readable with h5py.
//
// Layout (format version 1):
//   /<name>                one dataset per tensor at its '/'-separated name (groups created on
//                          the way), little-endian, the tensor's shape (a scalar dataspace for
//                          0-d tensors, zero-length dimensions for empty ones). HDF5 types:
//                          float32/float64 IEEE, float16 as h5py's half type (reads as
//                          numpy.float16), bfloat16 as uint16 bit patterns, int8..int64 and
//                          uint8 as integers, bool as h5py's enum (reads as numpy.bool_).
//     attrs  dtype         "float32", "float64", "float16", "bfloat16", "int64", "int32",
//                          "int16", "int8", "uint8" or "bool"
//            crc32         uint32: zlib CRC-32 of the dataset's raw little-endian bytes (0 for an
//                          empty tensor)
//   / attrs
//     tessera_format_version  int64, kCheckpointFormatVersion
//     tessera_manifest        text, one entry per line, in order:
//                               "tessera-checkpoint <version>"
//                               "tensor <crc32 as 8 hex digits> <name>"   (state order)
//                               "int|real|text <crc32 as 8 hex digits> <key>"
//                               "end <crc32 of every byte of the manifest before this line>"
//                             The CRC of an int or real is over its 8 little-endian bytes, of a
//                             text over its UTF-8 bytes.
//     <key>                   every int (int64), real (float64) and text
//   Texts (dtype, manifest, keys' texts) are fixed-length NUL-padded UTF-8 strings, which h5py
//   returns as bytes (`f.attrs["config"].decode()`); a reader also accepts variable-length ones,
//   which h5py writes for str values.
//
// Metadata (superblock, object headers) uses the HDF5 1.8+ formats, which HDF5 itself checksums;
// the CRCs above cover the data and attribute values.
#pragma once

#include <cstdint>
#include <string>

#include "trainer/checkpoint/training_state.h"

namespace tessera::trainer {

inline constexpr std::int64_t kCheckpointFormatVersion = 1;

// Throws Error naming the offending tensor or key when `state` cannot be written: an undefined or
// non-CPU tensor, an unsupported dtype, an invalid or duplicate name, a reserved or duplicate key,
// a text with a NUL byte. Cheap (touches no tensor data).
void validateTrainingState(const TrainingState& state);

// Writes `state` to `path` (replacing any file there) and fsyncs it before returning. HDF5 builds
// the file in memory (about the state's size again, while writing); the bytes then go to disk
// with write(2), so a full disk or an I/O error is an ordinary Error, and other threads' HDF5
// calls wait only for the in-memory part. Throws Error naming the path and the reason on any
// failure; the partial file is left for the caller to remove (CheckpointStore writes to a
// temporary name).
void writeCheckpointFile(const std::string& path, const TrainingState& state);

// Reads and verifies every checksum. Throws CheckpointCorrupt naming the file and the first bad
// dataset or attribute for a missing, unreadable, non-HDF5 or truncated file, a wrong format
// version, a flipped byte, a missing dataset or attribute. Tensors come back in the order they
// were written, as contiguous CPU tensors.
TrainingState readCheckpointFile(const std::string& path);

}  // namespace tessera::trainer
