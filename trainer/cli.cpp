#include "trainer/cli.h"

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <functional>
#include <iostream>
#include <optional>

#include "comm/mpi_session.h"
#include "core/error.h"
#include "core/logging.h"
#include "tessera/config.h"
#include "trainer/config/config_tree.h"
#include "trainer/sample_quality.h"

namespace tessera::trainer {
namespace {

constexpr const char* kExitCodes =
    "Exit codes: 0 success, 1 runtime failure, 2 usage/config/input error, 3 communication "
    "failure (collective timeout, lost peer), 4 not available in this build, 5 diverged "
    "(non-finite after rollbacks), 75 preempted after saving (requeue).";

constexpr const char* kWeightsHelp =
    "ema | live: the weight EMA of the largest decay (the default when the run kept one) or "
    "the live weights";

void addWeights(CLI::App* app, std::string& weights) {
  app->add_option("--weights", weights, kWeightsHelp)->check(CLI::IsMember({"ema", "live"}));
}

void addOverrides(CLI::App* app, std::vector<std::string>& overrides) {
  app->add_option("overrides", overrides,
                  "configuration overrides key=value, e.g. optim.lr=1e-3 data.batch_size=64");
}

}  // namespace

int runCli(int argc, char** argv) {
  CLI::App app{"Tessera: distributed training of VQ-VAE, VQGAN and diffusion models", "tessera"};
  app.footer(kExitCodes);
  app.set_version_flag("--version", std::string("tessera ") + TESSERA_VERSION);
  app.require_subcommand(1);
  std::function<int(const comm::MpiSession&)> command;

  TrainArgs train;
  auto* train_cmd = app.add_subcommand("train", "train a model (resumes from the run directory)");
  train_cmd->add_option("--config,-c", train.config, "YAML config file")->required();
  train_cmd->add_option("--run-dir", train.run_dir, "run directory (default runs/<run.name>)");
  auto* resume = train_cmd->add_option("--resume", train.resume, "resume from this checkpoint");
  auto* no_resume = train_cmd->add_flag("--no-resume", train.no_resume,
                                        "start over even if the run directory has checkpoints");
  resume->excludes(no_resume);
  train_cmd->add_flag("--print-config", train.print_config,
                      "print the resolved configuration (every key, with help) and exit");
  addOverrides(train_cmd, train.overrides);
  train_cmd->callback([&] { command = [&](const auto& mpi) { return runTrain(train, mpi); }; });

  BenchArgs bench;
  auto* bench_cmd = app.add_subcommand("bench", "benchmarks; one JSON line per result on stdout");
  bench_cmd->add_option("kind", bench.kind, "train | allreduce | data | optim")
      ->required()
      ->check(CLI::IsMember({"train", "allreduce", "data", "optim"}));
  bench_cmd->add_option("--config,-c", bench.config, "YAML config file")->required();
  bench_cmd->add_option("--steps", bench.steps, "timed steps")->check(CLI::NonNegativeNumber);
  bench_cmd->add_option("--warmup", bench.warmup, "untimed warm-up steps")
      ->check(CLI::NonNegativeNumber);
  bench_cmd->add_option(
      "--profile", bench.profile,
      "train: write a Chrome trace (chrome://tracing, Perfetto) of rank 0's timed "
      "steps, op by op, to this file; the steps then run slower");
  addOverrides(bench_cmd, bench.overrides);
  bench_cmd->callback([&] { command = [&](const auto& mpi) { return runBench(bench, mpi); }; });

  ConvertArgs convert;
  auto* convert_cmd = app.add_subcommand("convert", "convert a dataset to Tessera's HDF5 format");
  convert_cmd->add_option("format", convert.format, "fmnist | idx | cifar10 | images")
      ->required()
      ->check(CLI::IsMember({"fmnist", "idx", "cifar10", "images"}));
  convert_cmd->add_option("--out,-o", convert.out, "output HDF5 file")->required();
  convert_cmd->add_option("--split", convert.split, "fmnist/cifar10: train or test")
      ->check(CLI::IsMember({"train", "test"}));
  convert_cmd->add_option("--input,-i", convert.input,
                          "fmnist/cifar10: directory of the files; images: folder of images");
  convert_cmd->add_option("--images", convert.images, "idx: images file (.gz or plain)");
  convert_cmd->add_option("--labels", convert.labels, "idx: labels file (.gz or plain)");
  convert_cmd->add_option("--size", convert.size, "images: output size (resize, centre-crop)")
      ->check(CLI::PositiveNumber);
  convert_cmd->add_flag("--labels-from-dirs", convert.labels_from_dirs,
                        "images: label = index of the sub-folder name (sorted)");
  convert_cmd->add_option("--chunk", convert.chunk, "images per HDF5 chunk (default automatic)")
      ->check(CLI::NonNegativeNumber);
  convert_cmd->add_option("--compression", convert.compression, "gzip level 0-9 (0: none)")
      ->check(CLI::Range(0, 9));
  convert_cmd->add_flag("--force", convert.force, "overwrite an existing output file");
  convert_cmd->callback([&] { command = [&](const auto&) { return runConvert(convert); }; });

  CheckpointArgs recon;
  auto* recon_cmd =
      app.add_subcommand("reconstruct", "PNG grid of images (top) and reconstructions (bottom)");
  recon_cmd->add_option("--checkpoint", recon.checkpoint, "checkpoint file")->required();
  recon_cmd->add_option("--data", recon.data, "HDF5 dataset")->required();
  recon_cmd->add_option("--out,-o", recon.out, "output PNG")->required();
  recon_cmd->add_option("--n", recon.n, "images to show (default 16)")->check(CLI::PositiveNumber);
  addWeights(recon_cmd, recon.weights);
  recon_cmd->callback(
      [&] { command = [&](const auto& mpi) { return runReconstruct(recon, mpi); }; });

  EncodeArgs encode;
  auto* encode_cmd = app.add_subcommand(
      "encode",
      "write the quantised latents of an image file under a VQ-VAE/VQGAN checkpoint as an HDF5 "
      "file for latent diffusion; under mpirun each rank encodes a shard");
  encode_cmd
      ->add_option("--checkpoint", encode.checkpoint,
                   "autoencoder checkpoint file, or a run's checkpoint directory (its latest)")
      ->required();
  encode_cmd->add_option("--data", encode.data, "HDF5 image file to encode")->required();
  encode_cmd->add_option("--out,-o", encode.out, "output HDF5 file")->required();
  encode_cmd->add_option("--n", encode.n, "encode the first n images (default: all)")
      ->check(CLI::PositiveNumber);
  encode_cmd->add_option("--batch", encode.batch, "images per encoder batch (default 256)")
      ->check(CLI::PositiveNumber);
  encode_cmd->add_flag("--force", encode.force, "overwrite an existing output file");
  addWeights(encode_cmd, encode.weights);
  encode_cmd->callback([&] { command = [&](const auto& mpi) { return runEncode(encode, mpi); }; });

  EvalArgs eval;
  auto* eval_cmd = app.add_subcommand(
      "eval",
      "evaluate a checkpoint on a dataset, or an image file against a reference (--samples); "
      "JSON on stdout");
  eval_cmd->add_option("--checkpoint", eval.checkpoint, "checkpoint file (not with --samples)");
  eval_cmd->add_option("--data", eval.data, "HDF5 dataset (not with --samples)");
  eval_cmd->add_option("--samples", eval.samples,
                       "HDF5 image file to judge against --reference (FD, precision/recall)");
  eval_cmd->add_option("--reference", eval.reference, "HDF5 reference images for --samples");
  eval_cmd->add_option("--features", eval.features,
                       "feature network: a classifier checkpoint or inception:WEIGHTS."
                       "safetensors (with --checkpoint: also the reconstructions' FD)");
  eval_cmd
      ->add_option("--pr-images", eval.pr_images,
                   "images of each set for precision/recall (default 10000; 0: none)")
      ->check(CLI::NonNegativeNumber);
  eval_cmd->add_flag("--no-cache", eval.no_cache,
                     "recompute the reference statistics (and do not write the cache)");
  eval_cmd->add_option("--out,-o", eval.out, "also write the JSON to this file");
  eval_cmd->add_option("--n", eval.n, "evaluate only the first N images")
      ->check(CLI::PositiveNumber);
  addWeights(eval_cmd, eval.weights);
  eval_cmd->callback([&] { command = [&](const auto& mpi) { return runEval(eval, mpi); }; });

  SampleArgs sample;
  auto* sample_cmd = app.add_subcommand(
      "sample",
      "sample images from a generative checkpoint: a PNG grid (and an HDF5 image file); under "
      "mpirun each rank draws its share, the same images for any number of ranks");
  sample_cmd->add_option("--checkpoint", sample.checkpoint, "checkpoint file")->required();
  sample_cmd->add_option("--n", sample.n, "images (default 64)")->check(CLI::PositiveNumber);
  sample_cmd->add_option("--steps", sample.steps, "sampler steps (default: the run's sample.steps)")
      ->check(CLI::PositiveNumber);
  sample_cmd
      ->add_option("--sampler", sample.sampler,
                   "ddpm | ddim | dpm++2m (Gaussian) | euler | heun (flow); default: the run's")
      ->check(CLI::IsMember({"ddpm", "ddim", "dpm++2m", "euler", "heun"}));
  auto* eta = sample_cmd->add_option("--eta", sample.eta, "ddim: eta (0: deterministic)")
                  ->check(CLI::NonNegativeNumber);
  auto* guidance = sample_cmd->add_option("--guidance", sample.guidance,
                                          "classifier-free guidance scale (class-conditional)");
  auto* seed = sample_cmd->add_option("--seed", sample.seed, "noise seed (default: the run's)");
  sample_cmd->add_option("--batch", sample.batch, "samples per model batch (default 16)")
      ->check(CLI::PositiveNumber);
  sample_cmd->add_option("--out,-o", sample.out, "output PNG")->required();
  sample_cmd->add_option("--h5", sample.h5, "also write the samples as an HDF5 image file");
  addWeights(sample_cmd, sample.weights);
  sample_cmd->callback([&, eta, guidance, seed] {
    sample.has_eta = eta->count() > 0;
    sample.has_guidance = guidance->count() > 0;
    sample.has_seed = seed->count() > 0;
    command = [&](const auto& mpi) { return runSampling(sample, mpi); };
  });

  ExportArgs exp;
  auto* export_cmd = app.add_subcommand(
      "export",
      "export a checkpoint's weights: tensors under model/ without that prefix, EMA weights as "
      "ema/<rate>/<name>, no optimizer state; metadata: step, epoch, config (resolved YAML), "
      "...");
  export_cmd->add_option("--checkpoint", exp.checkpoint, "checkpoint file")->required();
  export_cmd->add_option("--format", exp.format, "safetensors")
      ->check(CLI::IsMember({"safetensors"}));
  export_cmd->add_option("--out,-o", exp.out, "output file")->required();
  export_cmd
      ->add_option("--weights", exp.weights,
                   "ema | live: the model's tensors are its weight EMA of the largest decay "
                   "(the default when the run kept one) or the live weights")
      ->check(CLI::IsMember({"ema", "live"}));
  export_cmd->callback([&] { command = [&](const auto&) { return runExport(exp); }; });

  InfoArgs info;
  auto* info_cmd = app.add_subcommand("info", "versions, backends, devices and the MPI world");
  info_cmd->add_flag("--json", info.json, "one JSON object per rank on stdout (rank 0 prints)");
  info_cmd->callback([&] { command = [&](const auto& mpi) { return runInfo(info, mpi); }; });

  // CLI11 reports a misspelt command only as "A subcommand is required": name it instead.
  if (argc > 1 && argv[1][0] != '-') {
    const std::string word = argv[1];
    std::vector<std::string> names;
    for (const CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
      names.push_back(sub->get_name());
    if (std::find(names.begin(), names.end(), word) == names.end()) {
      std::string list;
      for (const auto& name : names) list += (list.empty() ? "" : ", ") + name;
      const std::string closest = config::closestName(word, names);
      std::cerr << "tessera: unknown command '" << word << "'"
                << (closest.empty() ? "" : " (did you mean '" + closest + "'?)")
                << "; commands: " << list << " (tessera --help)\n";
      return kExitUsage;
    }
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }

  std::optional<comm::MpiSession> mpi;
  try {
    mpi.emplace();
    initLogging(mpi->world().rank);
    return command(*mpi);
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    const int code = exitCodeFor(e);
    // Errors every rank meets alike (usage) and agreed stops (preemption) end normally. Any other
    // error may leave peers inside a collective, where MPI_Finalize would wait for them forever:
    // abort the job instead, so the launcher tears it down now.
    const bool agreed = dynamic_cast<const UsageError*>(&e) || dynamic_cast<const Preempted*>(&e) ||
                        dynamic_cast<const AgreedError*>(&e);
    if (mpi && mpi->world().size > 1 && !agreed) mpi->abort(code);
    return code;
  }
}

}  // namespace tessera::trainer
