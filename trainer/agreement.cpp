#include "trainer/agreement.h"

#include <ATen/ATen.h>

#include <exception>

#include "comm/communicator.h"
#include "core/error.h"
#include "trainer/state_io.h"

namespace tessera::trainer {

void runAgreed(comm::Communicator& control, const std::string& what,
               const std::function<void()>& work) {
  if (control.size() == 1) {
    work();
    return;
  }
  std::exception_ptr failure;
  int code = kExitOk;
  std::string message;
  try {
    work();
  } catch (const std::exception& e) {
    failure = std::current_exception();
    code = exitCodeFor(e);
    message = e.what();
  }
  // The lowest failing rank (size when none failed) speaks for the job.
  at::Tensor first = at::full({1}, failure ? control.rank() : control.size(), at::kLong);
  control.allReduce({first}, comm::ReduceOp::kMin, {"allreduce", what + " agreement", -1, -1});
  const int root = static_cast<int>(first.item<std::int64_t>());
  if (root == control.size()) return;
  at::Tensor code_t = at::full({1}, code, at::kLong);
  control.broadcast({code_t}, root, {"broadcast", what + " exit code", -1, -1});
  message = broadcastString(control, message, root);
  const int agreed_code = static_cast<int>(code_t.item<std::int64_t>());
  if (control.rank() == root) throw AgreedError(agreed_code, message);
  throw AgreedError(agreed_code,
                    "rank " + std::to_string(root) + " failed during " + what + ": " + message);
}

}  // namespace tessera::trainer
