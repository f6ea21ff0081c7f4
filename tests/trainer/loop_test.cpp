// The training loop with a task of two optimizers (a test task registered here, not shipped):
// each optimizer gets its own learning rate, one of them is skipped as non-finite on one step
// while the other applies (the step counts), loss terms that start mid-run or appear only on
// some steps are averaged over the steps that had them, and metrics.jsonl carries each
// optimizer's outcome. Runs `trainer::train` in-process under mpirun.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>

#include "comm/communicator.h"
#include "comm/mpi_session.h"
#include "core/file_tree.h"
#include "data/batch.h"
#include "data/image_transform.h"
#include "tests/data/data_test_support.h"
#include "tests/mpi_test_support.h"
#include "trainer/model_updater.h"
#include "trainer/task_factory.h"
#include "trainer/task_registry.h"
#include "trainer/trainer.h"

namespace tessera::trainer {
namespace {
namespace fs = std::filesystem;

struct ToyOptions {
  std::int64_t late_start = 3;     // the generator's "adv" term from this step on
  std::int64_t disc_nan_step = 4;  // the discriminator's loss is NaN on this step
  void fields(FieldVisitor& v) {
    v.value("late_start", late_start, config::atLeast(0), "adv term from this step");
    v.value("disc_nan_step", disc_nan_step, config::atLeast(-1), "NaN discriminator loss");
  }
};

struct ToySections final : TaskConfig {
  ToyOptions toy;
  std::unique_ptr<TaskConfig> clone() const override {
    return std::make_unique<ToySections>(*this);
  }
  void fields(FieldVisitor& v) override { v.section("toy", toy, "the test task"); }
};

// Per step, this rank's loss terms as the task computed them.
std::map<std::int64_t, std::map<std::string, double>> g_recorded;

class ToyTask final : public Task {
 public:
  ToyTask(const TrainConfig& c, const TaskEnvironment& env)
      : options_(c.taskConfig<ToySections>().toy), updaters_(*env.grads) {
    torch::manual_seed(3);
    gen_ = torch::nn::Linear(4, 4);
    disc_ = torch::nn::Linear(4, 1);
    updaters_.add("generator", *gen_, updaterOptions(c, "generator"));
    updaters_.add("discriminator", *disc_, updaterOptions(c, "discriminator"));
  }
  std::string name() const override { return "toy2"; }
  std::vector<std::pair<std::string, torch::nn::Module*>> modules() override {
    return {{"generator", gen_.get()}, {"discriminator", disc_.get()}};
  }
  StepResult step(const data::Batch& batch, const StepContext& ctx) override {
    const at::Tensor x = data::modelInput(batch.images, batch.flips).flatten(1).narrow(1, 0, 4);
    auto& rec = g_recorded[ctx.step];
    StepResult r;
    at::Tensor rec_loss, adv_loss, total;
    r.updates.push_back(updaters_.update("generator", ctx, 1, [&](int) {
      const at::Tensor y = gen_(x);
      rec_loss = torch::mse_loss(y, x);
      total = rec_loss;
      if (ctx.step >= options_.late_start) {
        adv_loss = disc_(y).mean();
        total = total + 0.1 * adv_loss;
      }
      return total;
    }));
    r.losses = {{"loss", total.detach()}, {"rec", rec_loss.detach()}};
    rec["loss"] = total.item<double>();
    rec["rec"] = rec_loss.item<double>();
    if (adv_loss.defined()) {
      r.losses.emplace_back("adv", adv_loss.detach());
      rec["adv"] = adv_loss.item<double>();
    }
    if (ctx.step % 2 == 0) {
      at::Tensor d;
      r.updates.push_back(updaters_.update("discriminator", ctx, 1, [&](int) {
        d = disc_(gen_(x).detach()).pow(2).mean();
        if (ctx.step == options_.disc_nan_step) d = d * std::numeric_limits<double>::quiet_NaN();
        return d;
      }));
      r.losses.emplace_back("disc", d.detach());
      rec["disc"] = d.item<double>();
    }
    return r;
  }
  void collectState(NamedTensors& tensors,
                    std::map<std::string, std::int64_t>& ints) const override {
    updaters_.collectState(tensors, ints);
  }
  void restoreState(const std::map<std::string, at::Tensor>& tensors,
                    const std::map<std::string, std::int64_t>& ints) override {
    updaters_.restoreState(tensors, ints);
  }
  std::vector<const comm::ReducerStats*> commStats() const override {
    return updaters_.commStats();
  }

 private:
  ToyOptions options_;
  torch::nn::Linear gen_{nullptr}, disc_{nullptr};
  Updaters updaters_;
};

void registerToy() {
  TaskRegistration r;
  r.name = "toy2";
  r.help = "test task with a generator and a discriminator";
  r.sections = [] { return std::make_unique<ToySections>(); };
  OptimConfig g, d;
  g.lr = 0.01;
  d.lr = 0.005;
  r.optimizers = {{"generator", g}, {"discriminator", d}};
  r.make = [](const TrainConfig& c, const TaskEnvironment& env) {
    return std::make_unique<ToyTask>(c, env);
  };
  registerTask(r);
}

// The number after "key": in a metrics.jsonl line, or NaN when the key is absent.
double field(const std::string& line, const std::string& key) {
  const std::string needle = "\"" + key + "\": ";
  const auto at = line.find(needle);
  if (at == std::string::npos) return std::numeric_limits<double>::quiet_NaN();
  return std::strtod(line.c_str() + at + needle.size(), nullptr);
}

std::unique_ptr<comm::Communicator> control() {
  comm::CommOptions o;
  o.timeout = std::chrono::seconds(60);
  return comm::makeControlCommunicator(testing::mpiSession(), o);
}

// Mean over ranks of this rank's recorded term at `step` (every rank calls it).
double rankMean(comm::Communicator& c, std::int64_t step, const std::string& term) {
  at::Tensor v = torch::tensor({g_recorded.at(step).at(term)}, torch::kDouble);
  c.allReduce({v}, comm::ReduceOp::kSum, {"allreduce", "test", step, -1});
  return v.item<double>() / c.size();
}

TEST(TrainingLoop, TwoOptimizersWithTheirOwnOutcomesAndLossTerms) {
  registerToy();
  const auto& world = testing::mpiSession().world();
  const fs::path dir =
      fs::temp_directory_path() /
      ("tessera_loop_test_" + std::to_string(::getppid()) + "_np" + std::to_string(world.size));
  if (world.rank == 0) {
    removeTree(dir.string());
    fs::create_directories(dir);
    data::testing::writeDataset((dir / "train.h5").string(), 64, {8, 8, 1});
  }
  auto c = control();
  c->barrier({"barrier", "test data", -1, -1});

  // The same configuration a user would write: optim.<name>.* for a task with two optimizers.
  TrainerOptions o;
  o.config = parseTrainConfig(
      "task: toy2\n"
      "run: {steps: 8, log_every: 2, eval_at_end: false, threads: 1}\n"
      "data: {train: " +
          (dir / "train.h5").string() +
          ", batch_size: 4}\n"
          "optim: {generator: {lr: 0.01}, discriminator: {lr: 0.005, betas: [0.5, 0.9]}}\n"
          "checkpoint: {every: 0}\nlog: {progress: false}\ncomm: {timeout: 60}\n",
      "loop_test");
  o.run_dir = (dir / "run").string();
  o.no_resume = true;
  const TrainingSummary summary = train(o, testing::mpiSession());
  EXPECT_EQ(summary.steps, 8);  // the step with a skipped discriminator still counts
  EXPECT_EQ(summary.skipped_steps, 1);

  // Every rank computes the expected means (collectives); rank 0 reads the file.
  const double adv3 = rankMean(*c, 3, "adv"), disc2 = rankMean(*c, 2, "disc");
  const double adv5 = rankMean(*c, 5, "adv");
  const double rec01 = (rankMean(*c, 0, "rec") + rankMean(*c, 1, "rec")) / 2;
  if (world.rank != 0) return;
  std::ifstream in(dir / "run" / "metrics.jsonl");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 4u);
  for (const auto& line : lines) {
    EXPECT_DOUBLE_EQ(field(line, "generator/lr"), 0.01) << line;
    EXPECT_DOUBLE_EQ(field(line, "discriminator/lr"), 0.005) << line;
    EXPECT_EQ(field(line, "generator/applied"), 2) << line;
  }
  // Steps 0-1: no adv yet; one discriminator update (step 0).
  EXPECT_TRUE(std::isnan(field(lines[0], "adv"))) << lines[0];
  EXPECT_NEAR(field(lines[0], "rec"), rec01, 1e-12 * std::abs(rec01)) << lines[0];
  EXPECT_EQ(field(lines[0], "discriminator/applied"), 1);
  // Steps 2-3: adv only on step 3, averaged over that step alone; disc from step 2.
  EXPECT_NEAR(field(lines[1], "adv"), adv3, 1e-12 * std::abs(adv3) + 1e-15) << lines[1];
  EXPECT_NEAR(field(lines[1], "disc"), disc2, 1e-12 * std::abs(disc2) + 1e-15) << lines[1];
  // Steps 4-5: the discriminator's update of step 4 was skipped (NaN); its losses do not count,
  // so adv is step 5's and disc is absent.
  EXPECT_EQ(field(lines[2], "discriminator/applied"), 0) << lines[2];
  EXPECT_EQ(field(lines[2], "discriminator/skipped"), 1) << lines[2];
  EXPECT_EQ(field(lines[2], "skipped_steps"), 1) << lines[2];
  EXPECT_NEAR(field(lines[2], "adv"), adv5, 1e-12 * std::abs(adv5) + 1e-15) << lines[2];
  EXPECT_TRUE(std::isnan(field(lines[2], "disc"))) << lines[2];
  EXPECT_EQ(field(lines[3], "discriminator/applied"), 1) << lines[3];
  removeTree(dir.string());
}

TEST(TrainingLoop, TaskSectionsAndOptimizersBelongToTheirTask) {
  registerToy();
  auto errorOf = [](const std::string& yaml) {
    try {
      parseTrainConfig(yaml, "t.yaml");
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  // The VQ-VAE's sections are not the toy's, and its optimizers are named.
  EXPECT_NE(errorOf("task: toy2\nquantizer: {decay: 0.9}\n").find("unknown key 'quantizer'"),
            std::string::npos);
  const std::string lr = errorOf("task: toy2\noptim: {lr: 0.1}\n");
  EXPECT_NE(lr.find("unknown key 'optim.lr'"), std::string::npos) << lr;
  EXPECT_NE(lr.find("did you mean 'optim.generator.lr'"), std::string::npos) << lr;
  EXPECT_NE(errorOf("task: toy2\ntoy: {late_strat: 1}\n").find("did you mean 'toy.late_start'"),
            std::string::npos);
  EXPECT_NE(errorOf("task: toy3\n").find("did you mean 'toy2'"), std::string::npos);
  EXPECT_NE(errorOf("task: toy2\noptim: {discriminator: {warmup_steps: 2000}}\n")
                .find("optim.discriminator.warmup_steps"),
            std::string::npos);
  const TrainConfig c = parseTrainConfig("task: toy2\noptim: {discriminator: {lr: 0.5}}\n", "t");
  EXPECT_DOUBLE_EQ(c.optimizer("generator").lr, 0.01);  // the task's default
  EXPECT_DOUBLE_EQ(c.optimizer("discriminator").lr, 0.5);
  EXPECT_EQ(parseTrainConfig(toYaml(c), "dump").optimizer("discriminator").lr, 0.5);
  // task: vqvae keeps its single `optim.*` form and its own sections.
  EXPECT_EQ(errorOf("task: vqvae\noptim: {lr: 0.1}\nquantizer: {decay: 0.9}\n"), "");
}

}  // namespace
}  // namespace tessera::trainer
