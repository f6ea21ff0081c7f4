// GradReducer: N ranks with batch B train the same model as one process with batch N*B
// (docs/design.md, contract 1), also with bf16 wire compression and gradient accumulation;
// parameters without a gradient contribute zeros; buckets follow reverse registration order.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "comm/communicator.h"
#include "comm/grad_reducer.h"
#include "comm/model_sync.h"
#include "comm/mpi_session.h"
#include "comm/reducer_benchmark.h"
#include "core/error.h"
#include "core/keyed_rng.h"
#include "tests/mpi_test_support.h"

namespace tessera::comm {
namespace {

namespace nn = torch::nn;

struct NetImpl : nn::Module {
  NetImpl()
      : c1(register_module("c1", nn::Conv2d(nn::Conv2dOptions(1, 4, 3).padding(1)))),
        c2(register_module("c2", nn::Conv2d(nn::Conv2dOptions(4, 8, 3).stride(2).padding(1)))),
        fc(register_module("fc", nn::Linear(8 * 4 * 4, 10))),
        aux(register_module("aux", nn::Linear(8 * 4 * 4, 10))) {}

  at::Tensor forward(const at::Tensor& x, bool use_aux = false) {
    at::Tensor h = torch::relu(c2(torch::relu(c1(x)))).flatten(1);
    at::Tensor out = fc(h);
    return use_aux ? out + aux(h) : out;
  }

  nn::Conv2d c1, c2;
  nn::Linear fc, aux;
};
TORCH_MODULE(Net);

constexpr std::int64_t kBatch = 4;  // per rank
constexpr std::uint64_t kSeed = 2024;
constexpr int kSteps = 10;

Net makeNet() {
  torch::manual_seed(7);
  return Net();
}

at::Tensor inputs(std::int64_t step, int rank) {
  return torch::randn({kBatch, 1, 8, 8},
                      makeGenerator(rngKey(kSeed, RngPurpose::kTest, step, rank, 0)));
}
at::Tensor targets(std::int64_t step, int rank) {
  return torch::randn({kBatch, 10}, makeGenerator(rngKey(kSeed, RngPurpose::kTest, step, rank, 1)));
}

std::unique_ptr<Communicator> makeComm() {
  CommOptions o;
  o.timeout = std::chrono::seconds(60);
  return makeCommunicator(testing::mpiSession(), c10::Device(c10::kCPU), o);
}

GradReducerOptions smallBuckets(WireDtype wire = WireDtype::kNative) {
  GradReducerOptions o;
  o.first_bucket_cap_bytes = 512;
  o.bucket_cap_bytes = 4096;
  o.wire = wire;
  o.name = "grads[test]";
  return o;
}

std::vector<at::Tensor> snapshot(const std::vector<at::Tensor>& ps) {
  std::vector<at::Tensor> out;
  for (const auto& p : ps) out.push_back(p.detach().clone());
  return out;
}

at::Tensor flatten(const std::vector<at::Tensor>& ts) {
  std::vector<at::Tensor> flat;
  for (const auto& t : ts) flat.push_back(t.reshape(-1));
  return torch::cat(flat);
}

// Trains on this rank's share of each step's global batch, through the reducer.
std::vector<at::Tensor> trainDistributed(Communicator& comm, const GradReducerOptions& options,
                                         int micro_batches) {
  Net net = makeNet();
  NamedTensors named;
  for (const auto& item : net->named_parameters()) named.emplace_back(item.key(), item.value());
  verifySameParameters(comm, named, "test net");
  broadcastFromRoot(comm, net->parameters());
  torch::optim::Adam adam(net->parameters(), torch::optim::AdamOptions(1e-2));
  GradReducer reducer(comm, net->parameters(), options);
  for (int step = 0; step < kSteps; ++step) {
    reducer.zeroGrad();
    const auto xs = inputs(step, comm.rank()).chunk(micro_batches);
    const auto ys = targets(step, comm.rank()).chunk(micro_batches);
    for (int m = 0; m < micro_batches; ++m) {
      reducer.prepare(m == micro_batches - 1, step);
      const at::Tensor loss =
          torch::mse_loss(net->forward(xs[m]), ys[m]) * (reducer.lossScale() / micro_batches);
      loss.backward();
    }
    reducer.finish();
    adam.step();
  }
  return snapshot(net->parameters());
}

// One process, the concatenation of every rank's data as one batch.
std::vector<at::Tensor> trainReference(int ranks) {
  Net net = makeNet();
  torch::optim::Adam adam(net->parameters(), torch::optim::AdamOptions(1e-2));
  for (auto& p : net->parameters()) p.mutable_grad() = torch::zeros_like(p);
  for (int step = 0; step < kSteps; ++step) {
    for (auto& p : net->parameters()) p.mutable_grad().zero_();
    std::vector<at::Tensor> xs, ys;
    for (int r = 0; r < ranks; ++r) {
      xs.push_back(inputs(step, r));
      ys.push_back(targets(step, r));
    }
    torch::mse_loss(net->forward(torch::cat(xs)), torch::cat(ys)).backward();
    adam.step();
  }
  return snapshot(net->parameters());
}

// The largest relative difference of one parameter tensor, and that of all of them together.
struct Difference {
  double worst_tensor = 0;
  double overall = 0;
};

Difference relativeDifference(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  Difference d;
  for (size_t i = 0; i < a.size(); ++i) {
    const double norm = std::max(b[i].norm().item<double>(), 1e-12);
    d.worst_tensor = std::max(d.worst_tensor, (a[i] - b[i]).norm().item<double>() / norm);
  }
  d.overall = (flatten(a) - flatten(b)).norm().item<double>() / flatten(b).norm().item<double>();
  return d;
}

// Every rank ends with bit-identical parameters.
void expectIdenticalOnAllRanks(Communicator& comm, const std::vector<at::Tensor>& params) {
  at::Tensor hi = flatten(params);
  at::Tensor lo = hi.clone();
  comm.allReduce({hi}, ReduceOp::kMax, {"allreduce", "check max"});
  comm.allReduce({lo}, ReduceOp::kMin, {"allreduce", "check min"});
  EXPECT_TRUE(torch::equal(hi, lo)) << "parameters differ between ranks";
}

// Native: every parameter tensor within `tolerance` of the reference. Compressed wires: the
// model as a whole within `tolerance` (a 16-bit gradient changes Adam's steps on small tensors
// such as biases by more, by design).
void expectEquivalent(const GradReducerOptions& options, int micro_batches, double tolerance) {
  auto comm = makeComm();
  const auto distributed = trainDistributed(*comm, options, micro_batches);
  expectIdenticalOnAllRanks(*comm, distributed);
  if (comm->rank() == 0) {
    const Difference d = relativeDifference(distributed, trainReference(comm->size()));
    const double checked = options.wire == WireDtype::kNative ? d.worst_tensor : d.overall;
    EXPECT_LE(checked, tolerance) << "world size " << comm->size() << ", wire "
                                  << toString(options.wire) << ", micro-batches " << micro_batches;
    std::printf(
        "[ equivalence ] world %d wire %s micro %d: relative difference %.3g (worst tensor "
        "%.3g)\n",
        comm->size(), toString(options.wire), micro_batches, d.overall, d.worst_tensor);
  }
  comm->barrier({"barrier", "reference done"});
}

TEST(GradReducerEquivalence, MatchesOneProcessWithTheGlobalBatch) {
  expectEquivalent(smallBuckets(), 1, 1e-5);
}

TEST(GradReducerEquivalence, MatchesWithGradientAccumulation) {
  expectEquivalent(smallBuckets(), 2, 1e-5);
}

TEST(GradReducerEquivalence, MatchesWhenTheCallerScalesTheLoss) {
  GradReducerOptions o = smallBuckets();
  o.caller_scales_loss = true;
  expectEquivalent(o, 2, 1e-5);
}

TEST(GradReducerEquivalence, MatchesWithBf16WireCompression) {
  expectEquivalent(smallBuckets(WireDtype::kBf16), 1, 5e-2);
}

TEST(GradReducerEquivalence, MatchesWithFp16WireCompressionAndDefaultBuckets) {
  GradReducerOptions o;
  o.wire = WireDtype::kFp16;
  expectEquivalent(o, 1, 1e-2);
}

// The naive reference: each rank's own gradient (zeros where it has none), averaged.
at::Tensor averagedLocalGradients(Communicator& comm, Net& net, const at::Tensor& x,
                                  const at::Tensor& y, bool use_aux) {
  const auto params = net->parameters();
  const at::Tensor loss = torch::mse_loss(net->forward(x, use_aux), y);
  auto grads = torch::autograd::grad({loss}, params, {}, false, false, /*allow_unused=*/true);
  for (size_t i = 0; i < grads.size(); ++i) {
    if (!grads[i].defined()) grads[i] = torch::zeros_like(params[i]);
  }
  at::Tensor flat = flatten(grads);
  comm.allReduce({flat}, ReduceOp::kAverage, {"allreduce", "expected gradients"});
  return flat;
}

std::vector<at::Tensor> gradsOf(const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> out;
  for (const auto& p : params) out.push_back(p.grad());
  return out;
}

TEST(GradReducer, ParametersWithoutGradientContributeZerosAndNobodyHangs) {
  auto comm = makeComm();
  Net net = makeNet();
  GradReducer reducer(*comm, net->parameters(), smallBuckets());
  for (int step = 0; step < 4; ++step) {
    // The aux head is used by a different subset of ranks each step (none, at world size 1,
    // on odd steps), so its bucket is complete on some ranks and never ready on others.
    const bool use_aux = (step + comm->rank()) % 2 == 0;
    const at::Tensor x = inputs(step, comm->rank());
    const at::Tensor y = targets(step, comm->rank());
    const at::Tensor expected = averagedLocalGradients(*comm, net, x, y, use_aux);
    if (step == 2) {
      // As optimizer.zero_grad() does in LibTorch 2.x: the reducer must re-attach.
      for (auto& p : net->parameters()) p.mutable_grad().reset();
    } else {
      reducer.zeroGrad();
    }
    reducer.prepare(true, step);
    torch::mse_loss(net->forward(x, use_aux), y).backward();
    reducer.finish();
    EXPECT_TRUE(torch::allclose(flatten(gradsOf(net->parameters())), expected, 1e-5, 1e-7))
        << "step " << step;
    if (comm->size() > 1) {
      EXPECT_EQ(reducer.stats().buckets, 5);
      EXPECT_EQ(reducer.stats().bytes, 11664);  // every parameter's float32 bytes
    }
  }
}

TEST(GradReducer, BucketsFollowReverseRegistrationOrderAndCaps) {
  auto comm = makeComm();
  Net net = makeNet();
  // Registration order: c1.weight 144 B, c1.bias 16 B, c2.weight 1152 B, c2.bias 32 B,
  // fc.weight 5120 B, fc.bias 40 B, aux.weight 5120 B, aux.bias 40 B.
  GradReducer reducer(*comm, net->parameters(), smallBuckets());
  const std::vector<std::vector<std::size_t>> expected = {{7}, {6}, {5}, {4}, {3, 2, 1, 0}};
  EXPECT_EQ(reducer.bucketLayout(), expected);
  GradReducer one(*comm, net->parameters(), GradReducerOptions{});
  EXPECT_EQ(one.bucketLayout().size(), 1u);
}

TEST(GradReducer, AccumulationStepsDoNotCommunicate) {
  auto comm = makeComm();
  Net net = makeNet();
  GradReducer reducer(*comm, net->parameters(), smallBuckets());
  const at::Tensor x = inputs(0, comm->rank());
  const at::Tensor y = targets(0, comm->rank());
  const auto local = torch::autograd::grad({torch::mse_loss(net->forward(x), y)}, net->parameters(),
                                           {}, false, false, true);
  reducer.zeroGrad();
  for (int m = 0; m < 2; ++m) {
    reducer.prepare(false, 0);
    torch::mse_loss(net->forward(x), y).backward();
    reducer.finish();
  }
  // Twice this rank's own gradient (the aux head's stays zero), not an average over ranks.
  const auto params = net->parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor expected = local[i].defined() ? local[i] * 2 : torch::zeros_like(params[i]);
    EXPECT_TRUE(torch::allclose(params[i].grad(), expected, 1e-6, 1e-8)) << "parameter " << i;
  }
  EXPECT_EQ(reducer.stats().buckets, 0);
}

TEST(GradReducer, MisuseIsAnErrorNotAHang) {
  auto comm = makeComm();
  Net net = makeNet();
  GradReducer reducer(*comm, net->parameters(), smallBuckets());
  EXPECT_THROW(reducer.finish(), Error);
  reducer.prepare(true, 0);
  EXPECT_THROW(reducer.prepare(true, 1), Error);
  // With the aux head every parameter gets a gradient, so all buckets launch during backward.
  at::Tensor loss = torch::mse_loss(net->forward(inputs(0, 0), true), targets(0, 0));
  loss.backward(at::Tensor(), /*retain_graph=*/true);
  if (comm->size() > 1) {
    // Every bucket was launched during the first backward; a second one would race with MPI.
    EXPECT_THROW(loss.backward(), Error);
  }
  reducer.finish();
}

TEST(ReducerBenchmark, ReportsBandwidthAndOverlap) {
  auto comm = makeComm();
  Net net = makeNet();
  const BenchIterations iters{1, 2};
  const std::string bandwidth =
      benchReducerBandwidth(*comm, net->parameters(), smallBuckets(), iters).str();
  EXPECT_NE(bandwidth.find("\"reducer_gbps\":"), std::string::npos) << bandwidth;
  if (comm->size() > 1) {
    EXPECT_NE(bandwidth.find("\"ratio_vs_raw_mpi\":"), std::string::npos) << bandwidth;
  }
  std::int64_t step = 0;
  const std::string overlap = benchReducerOverlap(
                                  *comm, *net,
                                  [&] {
                                    ++step;
                                    return torch::mse_loss(net->forward(inputs(step, comm->rank())),
                                                           targets(step, comm->rank()));
                                  },
                                  smallBuckets(), iters)
                                  .str();
  EXPECT_NE(overlap.find("\"hidden_fraction\":"), std::string::npos) << overlap;
}

}  // namespace
}  // namespace tessera::comm
