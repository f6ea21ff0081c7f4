// The `tessera` command line: subcommands, their options, and dispatch. The shape is part of
// the user contract (README "Command line"); options may be added, never changed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::comm {
class MpiSession;
}

namespace tessera::trainer {

struct TrainArgs {
  std::string config;
  std::string run_dir;  // default: runs/<run.name>
  std::string resume;   // explicit checkpoint file
  bool no_resume = false;
  bool print_config = false;
  std::vector<std::string> overrides;
};

struct BenchArgs {
  std::string kind;  // train | allreduce | data | optim
  std::string config;
  std::int64_t steps = 0;  // 0: the benchmark's default
  std::int64_t warmup = -1;
  std::string profile;  // train: Chrome trace of rank 0's timed steps (LibTorch's profiler)
  std::vector<std::string> overrides;
};

struct ConvertArgs {
  std::string format;  // fmnist | idx | cifar10 | images
  std::string split = "train";
  std::string images;  // idx: image file
  std::string labels;  // idx: label file
  std::string input;   // fmnist: directory; cifar10: directory; images: folder
  std::string out;
  int size = 0;  // images: output height and width
  bool labels_from_dirs = false;
  std::int64_t chunk = 0;  // images per HDF5 chunk (0: automatic)
  int compression = 0;     // gzip level 0-9
  bool force = false;
};

struct CheckpointArgs {
  std::string checkpoint;
  std::string data;
  std::string out;
  std::int64_t n = 0;   // images (0: the command's default)
  std::string weights;  // "ema", "live" or "" (EMA when the run kept one)
  std::vector<std::string> overrides;
};

struct SampleArgs {
  std::string checkpoint;
  std::int64_t n = 64;
  std::int64_t steps = 0;  // 0: the checkpoint's sample.steps
  std::string sampler;     // "": the checkpoint's sample.sampler
  std::string out;
  std::string weights;
  std::string h5;           // also write the samples as a Tessera image file
  std::int64_t batch = 16;  // samples per model batch
  double eta = 0, guidance = 1;
  std::uint64_t seed = 0;
  bool has_eta = false, has_guidance = false, has_seed = false;  // given on the command line
};

struct EncodeArgs {
  std::string checkpoint;  // a VQ-VAE or VQGAN checkpoint file or run checkpoint directory
  std::string data;
  std::string out;
  std::string weights;
  std::int64_t n = 0;        // the first n images (0: all)
  std::int64_t batch = 256;  // images per encoder batch
  bool force = false;
};

struct ExportArgs {
  std::string checkpoint;
  std::string format = "safetensors";
  std::string out;
  std::string weights;
};

struct InfoArgs {
  bool json = false;
};

int runTrain(const TrainArgs& args, const comm::MpiSession& mpi);
int runBench(const BenchArgs& args, const comm::MpiSession& mpi);
int runConvert(const ConvertArgs& args);
int runReconstruct(const CheckpointArgs& args, const comm::MpiSession& mpi);
int runExport(const ExportArgs& args);
int runInfo(const InfoArgs& args, const comm::MpiSession& mpi);
// trainer/commands/sample.cpp
int runSampling(const SampleArgs& args, const comm::MpiSession& mpi);
// trainer/commands/encode.cpp
int runEncode(const EncodeArgs& args, const comm::MpiSession& mpi);

// Parses argv and runs the chosen subcommand; returns the process exit code. Turns every
// exception into one log line and its documented exit code.
int runCli(int argc, char** argv);

}  // namespace tessera::trainer
