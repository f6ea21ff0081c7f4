// A small data-parallel training loop for process-level tests of the watchdog: every rank runs
// GradReducer steps on an MLP; with --stop-rank R --stop-step K, rank R freezes itself with
// SIGSTOP at step K (after writing the time to <dir>/stopped), so the others must fail on their
// collective's deadline instead of hanging. Errors end the job like the tessera CLI does:
// one log line, then MPI_Abort with the error's exit code.
#include <spdlog/spdlog.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>

#include "comm/communicator.h"
#include "comm/grad_reducer.h"
#include "comm/mpi_session.h"
#include "core/error.h"
#include "core/keyed_rng.h"
#include "core/logging.h"

namespace {

struct Args {
  int steps = 20;
  int timeout_ms = 3000;
  int stop_rank = -1;
  int stop_step = -1;
  std::string dir = ".";
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i];
    const char* value = argv[i + 1];
    if (key == "--steps") {
      a.steps = std::atoi(value);
    } else if (key == "--timeout-ms") {
      a.timeout_ms = std::atoi(value);
    } else if (key == "--stop-rank") {
      a.stop_rank = std::atoi(value);
    } else if (key == "--stop-step") {
      a.stop_step = std::atoi(value);
    } else if (key == "--dir") {
      a.dir = value;
    } else {
      throw tessera::UsageError("unknown option " + key);
    }
  }
  return a;
}

double wallSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

int run(const Args& args, const tessera::comm::MpiSession& mpi) {
  using namespace tessera;
  const int rank = mpi.world().rank;
  std::ofstream(args.dir + "/rank" + std::to_string(rank) + ".pid") << getpid() << "\n";

  comm::CommOptions options;
  options.timeout = std::chrono::milliseconds(args.timeout_ms);
  auto communicator = comm::makeCommunicator(mpi, c10::Device(c10::kCPU), options);

  torch::manual_seed(1);
  torch::nn::Sequential model(torch::nn::Linear(64, 256), torch::nn::ReLU(),
                              torch::nn::Linear(256, 64));
  comm::GradReducerOptions reducer_options;
  reducer_options.name = "grads[driver]";
  reducer_options.first_bucket_cap_bytes = 4096;
  reducer_options.bucket_cap_bytes = 64 << 10;
  comm::GradReducer reducer(*communicator, model->parameters(), reducer_options);
  torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(1e-2));

  for (int step = 0; step < args.steps; ++step) {
    if (rank == args.stop_rank && step == args.stop_step) {
      {
        std::ofstream stopped(args.dir + "/stopped.tmp");
        char buf[64];
        std::snprintf(buf, sizeof(buf), "%.3f\n", wallSeconds());
        stopped << buf;
      }
      std::rename((args.dir + "/stopped.tmp").c_str(), (args.dir + "/stopped").c_str());
      spdlog::warn("freezing myself with SIGSTOP at step {}", step);
      flushLogs();
      std::raise(SIGSTOP);
    }
    const auto gen = makeGenerator(rngKey(3, RngPurpose::kTest, step, rank));
    const at::Tensor x = torch::randn({32, 64}, gen);
    reducer.zeroGrad();
    reducer.prepare(true, step);
    torch::mse_loss(model->forward(x), x).backward();
    reducer.finish();
    sgd.step();
  }
  spdlog::info("finished {} steps", args.steps);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::optional<tessera::comm::MpiSession> mpi;
  try {
    const Args args = parse(argc, argv);
    mpi.emplace();
    tessera::initLogging(mpi->world().rank, {"info", true});
    return run(args, *mpi);
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    const int code = tessera::exitCodeFor(e);
    if (mpi && mpi->world().size > 1) mpi->abort(code);
    return code;
  }
}
