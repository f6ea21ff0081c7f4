// Stands in for the training loop in the Prometheus integration test: every rank of an mpirun
// job serves TrainingMetrics on port + local_rank and updates them the way a training loop does,
// at a steady pace, until SIGTERM/SIGINT or --seconds have passed.
//
//   tessera_metrics_driver --port P [--bind ADDR] [--job NAME] [--seconds S] [--rate STEPS/S]
//
// Exits 0 after a clean stop, 2 on bad arguments, 3 when the port cannot be served (so the
// caller can retry with other ports instead of waiting for a scrape that never succeeds).
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "comm/mpi_session.h"
#include "core/logging.h"
#include "trainer/metrics/training_metrics.h"

namespace {

std::atomic<bool> g_stop{false};

void onSignal(int) {
  g_stop = true;
}

int usage(const std::string& why) {
  std::fprintf(stderr,
               "tessera_metrics_driver: %s\nusage: tessera_metrics_driver --port P [--bind ADDR] "
               "[--job NAME] [--seconds S] [--rate STEPS_PER_S]\n",
               why.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  using tessera::trainer::MetricsOptions;
  using tessera::trainer::TrainingMetrics;
  MetricsOptions options;
  options.job = "metrics-driver";
  double seconds = 120;
  double rate = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) return usage("missing value after " + arg);
    const std::string value = argv[++i];
    if (arg == "--port") {
      options.port = std::atoi(value.c_str());
    } else if (arg == "--bind") {
      options.bind = value;
    } else if (arg == "--job") {
      options.job = value;
    } else if (arg == "--seconds") {
      seconds = std::atof(value.c_str());
    } else if (arg == "--rate") {
      rate = std::atof(value.c_str());
    } else {
      return usage("unknown argument " + arg);
    }
  }
  if (options.port <= 0 || rate <= 0) return usage("--port and --rate must be positive");

  std::signal(SIGTERM, onSignal);
  std::signal(SIGINT, onSignal);
  try {
    tessera::comm::MpiSession mpi;
    tessera::initLogging(mpi.world().rank, {"info", true});
    options.rank = mpi.world().rank;
    options.local_rank = mpi.world().local_rank;
    TrainingMetrics metrics(options);
    if (!metrics.serving()) return 3;
    spdlog::info("serving metrics on port {}", metrics.port());

    using Clock = std::chrono::steady_clock;
    const auto start = Clock::now();
    const auto period = std::chrono::duration<double>(1.0 / rate);
    auto next = start;
    std::int64_t step = 0;
    while (!g_stop && Clock::now() - start < std::chrono::duration<double>(seconds)) {
      // Pacing, as a real step's compute would take time; nothing waits on it.
      next += std::chrono::duration_cast<Clock::duration>(period);
      std::this_thread::sleep_until(next);
      ++step;
      const double loss = 1.0 / (1.0 + 0.01 * static_cast<double>(step));
      metrics.stepCompleted(32, period.count(), 0.1 * period.count());
      metrics.setStep(step);
      metrics.setLoss("total", loss);
      metrics.setLoss("recon", 0.8 * loss);
      metrics.setLoss("commit", 0.2 * loss);
      metrics.setLearningRate(2e-4);
      metrics.setGradNorm(1.0 + loss);
      metrics.allReduce(0.1 * period.count(), 4 << 20, 0.6);
      metrics.setSamplesPerSecond(32 * rate * mpi.world().size);
      metrics.codebook("vq", 0.9, 400, 5, step / 50);
      if (step % 100 == 0) {
        metrics.checkpointSaved(
            0.5, 1 << 20,
            std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
                .count());
      }
    }
    spdlog::info("stopped after {} steps", step);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tessera_metrics_driver: %s\n", e.what());
    return 1;
  }
  return 0;
}
