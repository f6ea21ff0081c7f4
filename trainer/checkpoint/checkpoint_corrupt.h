// The error for a checkpoint file that cannot be trusted.
#pragma once

#include "core/error.h"

namespace tessera::trainer {

// A checkpoint that is missing, not HDF5, truncated, of another format version, or whose
// checksums do not match. The message names the file and the first bad dataset or attribute.
// An InputError (exit code 2) where it reaches the user, e.g. `--resume` or `tessera export`;
// CheckpointStore::loadLatest catches it and falls back to an older checkpoint.
class CheckpointCorrupt : public InputError {
 public:
  using InputError::InputError;
};

}  // namespace tessera::trainer
