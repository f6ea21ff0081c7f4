#include "trainer/metrics/training_metrics.h"

#include <spdlog/spdlog.h>

#include "tessera/config.h"

#if TESSERA_HAVE_PROMETHEUS
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "trainer/metrics/metrics_http_server.h"

#include <cmath>
#include <exception>
#include <map>
#include <mutex>
#endif

namespace tessera::trainer {

#if TESSERA_HAVE_PROMETHEUS

namespace {

using prometheus::Counter;
using prometheus::Gauge;
using prometheus::Histogram;
using prometheus::Labels;
using prometheus::Registry;

// Durations span four orders of magnitude between a tiny CPU model and a large GPU one.
const Histogram::BucketBoundaries kStepBuckets{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                               0.25,  0.5,    1,     2.5,  5,     10,   30};
const Histogram::BucketBoundaries kCommBuckets{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                               0.025,  0.05,    0.1,    0.25,  0.5,    1,     5};
const Histogram::BucketBoundaries kCheckpointBuckets{0.01, 0.05, 0.1, 0.5, 1,   2.5,
                                                     5,    10,   30,  60,  120, 300};

void increment(Counter& c, double v) {
  if (std::isfinite(v) && v > 0) c.Increment(v);
}

// A non-finite duration would turn the histogram's _sum into NaN for the rest of the run.
void observe(Histogram& h, double seconds) {
  if (std::isfinite(seconds) && seconds >= 0) h.Observe(seconds);
}

}  // namespace

struct TrainingMetrics::Impl {
  explicit Impl(const MetricsOptions& o)
      : registry(std::make_shared<Registry>()),
        base{{"job", o.job}, {"rank", std::to_string(o.rank)}} {}

  Gauge& gauge(const std::string& name, const std::string& help) {
    return prometheus::BuildGauge().Name(name).Help(help).Labels(base).Register(*registry).Add({});
  }
  Counter& counter(const std::string& name, const std::string& help) {
    return prometheus::BuildCounter().Name(name).Help(help).Labels(base).Register(*registry).Add(
        {});
  }
  Histogram& histogram(const std::string& name, const std::string& help,
                       const Histogram::BucketBoundaries& buckets) {
    return prometheus::BuildHistogram().Name(name).Help(help).Labels(base).Register(*registry).Add(
        {}, buckets);
  }
  prometheus::Family<Gauge>& gaugeFamily(const std::string& name, const std::string& help) {
    return prometheus::BuildGauge().Name(name).Help(help).Labels(base).Register(*registry);
  }
  prometheus::Family<Counter>& counterFamily(const std::string& name, const std::string& help) {
    return prometheus::BuildCounter().Name(name).Help(help).Labels(base).Register(*registry);
  }

  std::shared_ptr<Registry> registry;
  Labels base;

  Counter& steps = counter("tessera_steps_total", "Optimizer steps completed by this process.");
  Counter& samples =
      counter("tessera_samples_total", "Training samples processed by this rank (this process).");
  Gauge& step = gauge("tessera_step", "Global step number (continues across resumes).");
  Histogram& step_seconds =
      histogram("tessera_step_duration_seconds", "Wall time of one training step.", kStepBuckets);
  Histogram& data_wait_seconds =
      histogram("tessera_data_wait_duration_seconds",
                "Time per step spent waiting for the next batch.", kStepBuckets);
  prometheus::Family<Gauge>& loss = gaugeFamily("tessera_loss", "Training loss by term.");
  prometheus::Family<Gauge>& task_value = gaugeFamily(
      "tessera_task_value", "A value the task publishes, by name (codebook health, ...).");
  Gauge& learning_rate = gauge("tessera_learning_rate", "Current learning rate.");
  Gauge& grad_norm = gauge("tessera_grad_norm", "Global L2 norm of the averaged gradients.");
  Histogram& allreduce_seconds =
      histogram("tessera_allreduce_duration_seconds",
                "Time per step this rank waited for gradient all-reduce.", kCommBuckets);
  Counter& allreduce_bytes =
      counter("tessera_allreduce_bytes_total", "Gradient bytes all-reduced by this rank.");
  Gauge& overlap = gauge("tessera_comm_overlap_ratio",
                         "Fraction of gradient communication hidden behind backward (0-1).");
  Gauge& samples_per_second =
      gauge("tessera_samples_per_second", "Global training throughput in samples per second.");
  prometheus::Family<Gauge>& codebook_usage = gaugeFamily(
      "tessera_codebook_usage_ratio", "Fraction of codebook entries used in the recent window.");
  prometheus::Family<Gauge>& codebook_perplexity =
      gaugeFamily("tessera_codebook_perplexity", "Perplexity of the code assignment distribution.");
  prometheus::Family<Gauge>& codebook_dead =
      gaugeFamily("tessera_codebook_dead_codes",
                  "Codebook entries currently below the usage "
                  "threshold.");
  prometheus::Family<Counter>& codebook_restarts =
      counterFamily("tessera_codebook_restarts_total", "Dead codebook entries restarted.");
  Gauge& gan_weight = gauge("tessera_gan_adaptive_weight", "VQGAN adaptive generator loss weight.");
  Gauge& logits_real =
      gauge("tessera_gan_discriminator_logits_real", "Mean discriminator logit on real images.");
  Gauge& logits_fake = gauge("tessera_gan_discriminator_logits_fake",
                             "Mean discriminator logit on generated images.");
  Histogram& checkpoint_seconds =
      histogram("tessera_checkpoint_duration_seconds", "Time to write and commit one checkpoint.",
                kCheckpointBuckets);
  Gauge& checkpoint_bytes =
      gauge("tessera_checkpoint_size_bytes", "Size of the last committed checkpoint.");
  Counter& checkpoint_written_bytes =
      counter("tessera_checkpoint_written_bytes_total", "Bytes of committed checkpoints.");
  Gauge& checkpoint_time = gauge("tessera_checkpoint_last_success_timestamp_seconds",
                                 "Unix time of the last committed checkpoint.");
  Counter& checkpoint_failures =
      counter("tessera_checkpoint_failures_total", "Checkpoint saves that failed.");
  Counter& skipped_steps =
      counter("tessera_skipped_steps_total", "Steps skipped for non-finite loss or gradients.");
  Gauge& device_memory =
      gauge("tessera_device_memory_bytes", "Accelerator memory allocated by this rank.");
  Gauge& mfu = gauge("tessera_model_flops_utilization_ratio",
                     "Model FLOPs utilisation: achieved / peak FLOP/s of the device (0-1).");

  // Converts the running totals codebook() receives into counter increments.
  std::mutex restarts_mutex;
  std::map<std::string, std::int64_t> restarts_seen;

  // Declared last: destroyed first, so no scrape runs while the metrics go away.
  std::unique_ptr<MetricsHttpServer> server;
};

TrainingMetrics::TrainingMetrics(const MetricsOptions& options) {
  if (options.port <= 0) return;
  const int port = options.port + options.local_rank;
  if (port > 65535) {
    spdlog::warn(
        "metrics: port {} (metrics.port {} + local rank {}) is out of range; "
        "not serving metrics",
        port, options.port, options.local_rank);
    return;
  }
  const std::string address = options.bind + ":" + std::to_string(port);
  auto impl = std::make_unique<Impl>(options);
  try {
    const std::shared_ptr<prometheus::Registry> registry = impl->registry;
    impl->server = std::make_unique<MetricsHttpServer>(options.bind, port, [registry] {
      return prometheus::TextSerializer().Serialize(registry->Collect());
    });
  } catch (const std::exception& e) {
    spdlog::warn("metrics: cannot serve on {} ({}); training goes on without metrics", address,
                 e.what());
    return;
  }
  spdlog::debug("metrics: serving http://{}/metrics", address);
  impl_ = std::move(impl);
  port_ = port;
}

TrainingMetrics::~TrainingMetrics() = default;

bool TrainingMetrics::serving() const {
  return impl_ != nullptr;
}

int TrainingMetrics::port() const {
  return port_;
}

void TrainingMetrics::stepCompleted(std::int64_t samples, double step_seconds,
                                    double data_wait_seconds) {
  if (!impl_) return;
  impl_->steps.Increment();
  increment(impl_->samples, static_cast<double>(samples));
  observe(impl_->step_seconds, step_seconds);
  observe(impl_->data_wait_seconds, data_wait_seconds);
}

void TrainingMetrics::setStep(std::int64_t step) {
  if (impl_) impl_->step.Set(static_cast<double>(step));
}

void TrainingMetrics::setLoss(const std::string& term, double value) {
  if (impl_) impl_->loss.Add({{"term", term}}).Set(value);
}

void TrainingMetrics::taskValue(const std::string& name, double value) {
  if (impl_) impl_->task_value.Add({{"name", name}}).Set(value);
}

void TrainingMetrics::setLearningRate(double lr) {
  if (impl_) impl_->learning_rate.Set(lr);
}

void TrainingMetrics::setGradNorm(double norm) {
  if (impl_) impl_->grad_norm.Set(norm);
}

void TrainingMetrics::allReduce(double seconds, std::int64_t bytes, double overlap_fraction) {
  if (!impl_) return;
  observe(impl_->allreduce_seconds, seconds);
  increment(impl_->allreduce_bytes, static_cast<double>(bytes));
  impl_->overlap.Set(overlap_fraction);
}

void TrainingMetrics::setSamplesPerSecond(double v) {
  if (impl_) impl_->samples_per_second.Set(v);
}

void TrainingMetrics::codebook(const std::string& model, double usage, double perplexity,
                               std::int64_t dead_codes, std::int64_t restarts_total) {
  if (!impl_) return;
  const Labels labels{{"model", model}};
  impl_->codebook_usage.Add(labels).Set(usage);
  impl_->codebook_perplexity.Add(labels).Set(perplexity);
  impl_->codebook_dead.Add(labels).Set(static_cast<double>(dead_codes));
  auto& restarts = impl_->codebook_restarts.Add(labels);
  std::lock_guard<std::mutex> lock(impl_->restarts_mutex);
  // The first report of a process counts everything since the run began (a resumed run's
  // counter restarts from its checkpointed total; Prometheus handles the counter reset).
  auto [it, first] = impl_->restarts_seen.try_emplace(model, 0);
  if (restarts_total > it->second) {
    increment(restarts, static_cast<double>(restarts_total - it->second));
    it->second = restarts_total;
  }
}

void TrainingMetrics::gan(double adaptive_weight, double logits_real, double logits_fake) {
  if (!impl_) return;
  impl_->gan_weight.Set(adaptive_weight);
  impl_->logits_real.Set(logits_real);
  impl_->logits_fake.Set(logits_fake);
}

void TrainingMetrics::checkpointSaved(double seconds, std::int64_t bytes, double unix_time) {
  if (!impl_) return;
  observe(impl_->checkpoint_seconds, seconds);
  impl_->checkpoint_bytes.Set(static_cast<double>(bytes));
  increment(impl_->checkpoint_written_bytes, static_cast<double>(bytes));
  impl_->checkpoint_time.Set(unix_time);
}

void TrainingMetrics::checkpointFailed() {
  if (impl_) impl_->checkpoint_failures.Increment();
}

void TrainingMetrics::skippedStep() {
  if (impl_) impl_->skipped_steps.Increment();
}

void TrainingMetrics::deviceMemory(double bytes) {
  if (impl_) impl_->device_memory.Set(bytes);
}

void TrainingMetrics::modelFlopsUtilization(double mfu) {
  if (impl_) impl_->mfu.Set(mfu);
}

#else  // !TESSERA_HAVE_PROMETHEUS

struct TrainingMetrics::Impl {};

TrainingMetrics::TrainingMetrics(const MetricsOptions& options) {
  if (options.port > 0) {
    spdlog::warn(
        "metrics: metrics.port is {} but this build has no prometheus-cpp; "
        "not serving metrics",
        options.port);
  }
}
TrainingMetrics::~TrainingMetrics() = default;
bool TrainingMetrics::serving() const {
  return false;
}
int TrainingMetrics::port() const {
  return 0;
}
void TrainingMetrics::stepCompleted(std::int64_t, double, double) {}
void TrainingMetrics::setStep(std::int64_t) {}
void TrainingMetrics::setLoss(const std::string&, double) {}
void TrainingMetrics::taskValue(const std::string&, double) {}
void TrainingMetrics::setLearningRate(double) {}
void TrainingMetrics::setGradNorm(double) {}
void TrainingMetrics::allReduce(double, std::int64_t, double) {}
void TrainingMetrics::setSamplesPerSecond(double) {}
void TrainingMetrics::codebook(const std::string&, double, double, std::int64_t, std::int64_t) {}
void TrainingMetrics::gan(double, double, double) {}
void TrainingMetrics::checkpointSaved(double, std::int64_t, double) {}
void TrainingMetrics::checkpointFailed() {}
void TrainingMetrics::skippedStep() {}
void TrainingMetrics::deviceMemory(double) {}
void TrainingMetrics::modelFlopsUtilization(double) {}

#endif

}  // namespace tessera::trainer
