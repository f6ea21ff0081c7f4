#include "core/error.h"

namespace tessera {

int exitCodeFor(const std::exception& e) {
  if (const auto* err = dynamic_cast<const Error*>(&e)) return err->exitCode();
  return kExitFailure;
}

}  // namespace tessera
