// TrainingMetrics served over loopback HTTP and read back as Prometheus would read it.
#include "trainer/metrics/training_metrics.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <limits>
#include <memory>
#include <set>
#include <sstream>
#include <thread>

#include "tessera/config.h"
#include "tests/metrics/loopback_http.h"

namespace tessera::trainer {
namespace {

using testing::Exposition;
using testing::freeLoopbackPorts;
using testing::httpGet;
using testing::parseExposition;

// Captures what the default logger writes while alive.
class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(text_);
    auto logger = std::make_shared<spdlog::logger>("capture", sink);
    logger->set_level(spdlog::level::debug);
    spdlog::set_default_logger(logger);
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  std::string str() const { return text_.str(); }

 private:
  std::shared_ptr<spdlog::logger> previous_;
  std::ostringstream text_;
};

MetricsOptions optionsOn(int port) {
  MetricsOptions o;
  o.port = port;
  o.job = "unit-run";
  o.rank = 3;
  o.local_rank = 0;
  return o;
}

TEST(TrainingMetrics, PortZeroDoesNotServeAndUpdatesAreHarmless) {
  TrainingMetrics m(MetricsOptions{});
  EXPECT_FALSE(m.serving());
  EXPECT_EQ(m.port(), 0);
  m.stepCompleted(32, 0.1, 0.01);
  m.setLoss("total", 1.0);
  m.codebook("vq", 0.5, 100, 3, 7);
  m.checkpointSaved(1.0, 100, 1e9);
}

#if TESSERA_HAVE_PROMETHEUS

Exposition scrape(int port) {
  const auto body = httpGet(port);
  if (!body) {
    ADD_FAILURE() << "no answer from http://127.0.0.1:" << port << "/metrics";
    return {};
  }
  return parseExposition(*body);
}

double value(const Exposition& e, const std::string& name,
             const std::map<std::string, std::string>& labels = {}) {
  const auto found = e.find(name, labels);
  if (found.size() != 1) {
    ADD_FAILURE() << name << ": " << found.size() << " matching samples, expected 1";
    return -1;
  }
  return found[0].value;
}

TEST(TrainingMetrics, ServesOnPortPlusLocalRankWithJobAndRankLabels) {
  const int base = freeLoopbackPorts(2);
  MetricsOptions o = optionsOn(base);
  o.local_rank = 1;
  TrainingMetrics m(o);
  ASSERT_TRUE(m.serving());
  EXPECT_EQ(m.port(), base + 1);
  m.stepCompleted(32, 0.2, 0.05);
  const Exposition e = scrape(base + 1);
  EXPECT_EQ(value(e, "tessera_steps_total", {{"job", "unit-run"}, {"rank", "3"}}), 1);
  EXPECT_FALSE(httpGet(base).has_value()) << "nothing should listen on the base port";
}

TEST(TrainingMetrics, ExposesEveryValueWithConventionalNamesAndLabels) {
  const int port = freeLoopbackPorts(1);
  TrainingMetrics m(optionsOn(port));
  ASSERT_TRUE(m.serving());

  m.stepCompleted(32, 0.2, 0.05);
  m.stepCompleted(64, 0.3, 0.0);
  m.setStep(1234);
  m.setLoss("total", 0.5);
  m.setLoss("recon", 0.25);
  m.setLearningRate(2e-4);
  m.setGradNorm(1.5);
  m.allReduce(0.004, 1000, 0.75);
  m.allReduce(0.006, 500, 0.5);
  m.setSamplesPerSecond(640);
  m.codebook("vq", 0.8, 300, 12, 5);
  m.codebook("vq", 0.8, 300, 12, 5);  // the same running total: no new restarts
  m.codebook("vq", 0.9, 350, 4, 8);
  m.codebook("top", 0.1, 20, 100, 0);
  m.gan(0.7, 1.25, -0.5);
  m.checkpointSaved(2.0, 4096, 1.7e9);
  m.checkpointSaved(3.0, 8192, 1.8e9);
  m.checkpointFailed();
  m.skippedStep();
  m.skippedStep();
  m.skippedStep();
  m.deviceMemory(3e9);
  m.modelFlopsUtilization(0.42);

  const Exposition e = scrape(port);
  EXPECT_EQ(value(e, "tessera_steps_total"), 2);
  EXPECT_EQ(value(e, "tessera_samples_total"), 96);
  EXPECT_EQ(value(e, "tessera_step"), 1234);
  EXPECT_EQ(value(e, "tessera_step_duration_seconds_count"), 2);
  EXPECT_DOUBLE_EQ(value(e, "tessera_step_duration_seconds_sum"), 0.5);
  EXPECT_EQ(value(e, "tessera_step_duration_seconds_bucket", {{"le", "0.25"}}), 1);
  EXPECT_EQ(value(e, "tessera_step_duration_seconds_bucket", {{"le", "+Inf"}}), 2);
  EXPECT_DOUBLE_EQ(value(e, "tessera_data_wait_duration_seconds_sum"), 0.05);
  EXPECT_EQ(value(e, "tessera_loss", {{"term", "total"}}), 0.5);
  EXPECT_EQ(value(e, "tessera_loss", {{"term", "recon"}}), 0.25);
  EXPECT_DOUBLE_EQ(value(e, "tessera_learning_rate"), 2e-4);
  EXPECT_EQ(value(e, "tessera_grad_norm"), 1.5);
  EXPECT_EQ(value(e, "tessera_allreduce_duration_seconds_count"), 2);
  EXPECT_DOUBLE_EQ(value(e, "tessera_allreduce_duration_seconds_sum"), 0.01);
  EXPECT_EQ(value(e, "tessera_allreduce_bytes_total"), 1500);
  EXPECT_EQ(value(e, "tessera_comm_overlap_ratio"), 0.5);
  EXPECT_EQ(value(e, "tessera_samples_per_second"), 640);
  EXPECT_DOUBLE_EQ(value(e, "tessera_codebook_usage_ratio", {{"model", "vq"}}), 0.9);
  EXPECT_EQ(value(e, "tessera_codebook_perplexity", {{"model", "vq"}}), 350);
  EXPECT_EQ(value(e, "tessera_codebook_dead_codes", {{"model", "vq"}}), 4);
  EXPECT_EQ(value(e, "tessera_codebook_restarts_total", {{"model", "vq"}}), 8);
  EXPECT_EQ(value(e, "tessera_codebook_dead_codes", {{"model", "top"}}), 100);
  EXPECT_EQ(value(e, "tessera_codebook_restarts_total", {{"model", "top"}}), 0);
  EXPECT_DOUBLE_EQ(value(e, "tessera_gan_adaptive_weight"), 0.7);
  EXPECT_EQ(value(e, "tessera_gan_discriminator_logits_real"), 1.25);
  EXPECT_EQ(value(e, "tessera_gan_discriminator_logits_fake"), -0.5);
  EXPECT_EQ(value(e, "tessera_checkpoint_duration_seconds_count"), 2);
  EXPECT_EQ(value(e, "tessera_checkpoint_duration_seconds_sum"), 5);
  EXPECT_EQ(value(e, "tessera_checkpoint_size_bytes"), 8192);
  EXPECT_EQ(value(e, "tessera_checkpoint_written_bytes_total"), 12288);
  EXPECT_EQ(value(e, "tessera_checkpoint_last_success_timestamp_seconds"), 1.8e9);
  EXPECT_EQ(value(e, "tessera_checkpoint_failures_total"), 1);
  EXPECT_EQ(value(e, "tessera_skipped_steps_total"), 3);
  EXPECT_EQ(value(e, "tessera_device_memory_bytes"), 3e9);
  EXPECT_DOUBLE_EQ(value(e, "tessera_model_flops_utilization_ratio"), 0.42);

  // Conventions: prefix, _total exactly on counters, base-unit suffixes on histograms, and
  // only the documented labels, every sample carrying job and rank. prometheus-cpp adds its own
  // exposer_* families (scrapes served, bytes, latency); they are the only other ones.
  const std::set<std::string> allowed{"job", "rank", "term", "model", "le"};
  size_t families = 0;
  for (const auto& [name, type] : e.types) {
    if (name.rfind("exposer_", 0) == 0) continue;
    ++families;
    EXPECT_EQ(name.rfind("tessera_", 0), 0u) << name;
    const bool total = name.size() > 6 && name.substr(name.size() - 6) == "_total";
    EXPECT_EQ(type == "counter", total) << name << " is a " << type;
    if (type == "histogram") {
      EXPECT_EQ(name.substr(name.size() - 8), "_seconds") << name;
    }
  }
  EXPECT_EQ(families, 27u);
  for (const auto& s : e.samples) {
    if (s.name.rfind("exposer_", 0) == 0) continue;
    ASSERT_TRUE(s.labels.count("job") && s.labels.count("rank")) << s.name;
    EXPECT_EQ(s.labels.at("job"), "unit-run") << s.name;
    EXPECT_EQ(s.labels.at("rank"), "3") << s.name;
    for (const auto& [k, v] : s.labels) EXPECT_TRUE(allowed.count(k)) << s.name << " label " << k;
  }
}

TEST(TrainingMetrics, NonFiniteInputsDoNotPoisonCountersOrHistograms) {
  const int port = freeLoopbackPorts(1);
  TrainingMetrics m(optionsOn(port));
  ASSERT_TRUE(m.serving());
  const double nan = std::numeric_limits<double>::quiet_NaN();
  m.stepCompleted(32, 0.5, 0.1);
  m.stepCompleted(32, nan, std::numeric_limits<double>::infinity());
  m.allReduce(nan, -5, 0.5);
  m.setLoss("total", nan);
  const Exposition e = scrape(port);
  EXPECT_EQ(value(e, "tessera_steps_total"), 2);
  EXPECT_EQ(value(e, "tessera_step_duration_seconds_sum"), 0.5);
  EXPECT_EQ(value(e, "tessera_step_duration_seconds_count"), 1);
  EXPECT_DOUBLE_EQ(value(e, "tessera_data_wait_duration_seconds_sum"), 0.1);
  EXPECT_EQ(value(e, "tessera_allreduce_duration_seconds_count"), 0);
  EXPECT_EQ(value(e, "tessera_allreduce_bytes_total"), 0);
  // A diverging loss is shown as it is.
  EXPECT_TRUE(std::isnan(value(e, "tessera_loss", {{"term", "total"}})));
}

TEST(TrainingMetrics, PortInUseIsAWarningAndTrainingGoesOn) {
  const int port = freeLoopbackPorts(1);
  testing::ListeningSocket occupant(port);
  LogCapture log;
  TrainingMetrics m(optionsOn(port));
  EXPECT_FALSE(m.serving());
  EXPECT_EQ(m.port(), 0);
  EXPECT_NE(log.str().find("[warning] metrics: cannot serve on 127.0.0.1:" + std::to_string(port)),
            std::string::npos)
      << log.str();
  m.stepCompleted(32, 0.1, 0.0);
  m.setLoss("total", 1.0);
}

TEST(TrainingMetrics, PortOutOfRangeIsAWarning) {
  MetricsOptions o = optionsOn(65535);
  o.local_rank = 2;
  LogCapture log;
  TrainingMetrics m(o);
  EXPECT_FALSE(m.serving());
  EXPECT_NE(log.str().find("port 65537"), std::string::npos) << log.str();
}

TEST(TrainingMetrics, PortIsReleasedOnDestruction) {
  const int port = freeLoopbackPorts(1);
  {
    TrainingMetrics first(optionsOn(port));
    ASSERT_TRUE(first.serving());
  }
  TrainingMetrics second(optionsOn(port));
  EXPECT_TRUE(second.serving());
}

TEST(TrainingMetrics, ConcurrentUpdatesWhileScrapedAreAllCounted) {
  const int port = freeLoopbackPorts(1);
  TrainingMetrics m(optionsOn(port));
  ASSERT_TRUE(m.serving());
  constexpr int kSteps = 2000;
  auto train = [&] {
    for (int i = 0; i < kSteps; ++i) {
      m.stepCompleted(1, 0.001, 0.0);
      m.setLoss("total", i);
    }
  };
  auto checkpoint = [&] {
    for (int i = 0; i < 200; ++i) m.checkpointSaved(0.1, 10, i);
  };
  std::thread a(train), b(train), c(checkpoint);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(httpGet(port).has_value());
  a.join();
  b.join();
  c.join();
  const Exposition e = scrape(port);
  EXPECT_EQ(value(e, "tessera_steps_total"), 2 * kSteps);
  EXPECT_EQ(value(e, "tessera_samples_total"), 2 * kSteps);
  EXPECT_EQ(value(e, "tessera_checkpoint_written_bytes_total"), 2000);
}

#else

TEST(TrainingMetrics, WithoutPrometheusAPortIsAWarning) {
  LogCapture log;
  TrainingMetrics m(optionsOn(9999));
  EXPECT_FALSE(m.serving());
  EXPECT_NE(log.str().find("no prometheus-cpp"), std::string::npos) << log.str();
}

#endif

}  // namespace
}  // namespace tessera::trainer
