#include "models/vector_quantizer.h"

#include <torch/torch.h>

#include <cmath>
#include <cstring>

#include "core/keyed_rng.h"

namespace tessera::models {
namespace {

// FNV-1a over the raw bytes of contiguous CPU copies.
std::uint64_t hashBytes(std::uint64_t h, const at::Tensor& t) {
  const at::Tensor c = t.detach().to(at::kCPU).contiguous();
  const auto* p = static_cast<const unsigned char*>(c.data_ptr());
  const std::size_t n = static_cast<std::size_t>(c.numel()) * c.element_size();
  for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001B3ULL;
  return h;
}

at::Tensor l2normalize(const at::Tensor& x) {
  return x / x.norm(2, /*dim=*/1, /*keepdim=*/true).clamp_min(1e-12);
}

// Squared distances up to a per-row constant: ||e||^2 - 2 z.e   ([N, K]).
at::Tensor scores(const at::Tensor& flat, const at::Tensor& codes) {
  return at::addmm(codes.pow(2).sum(1).unsqueeze(0), flat, codes.t(), /*beta=*/1, /*alpha=*/-2);
}

}  // namespace

VectorQuantizerImpl::VectorQuantizerImpl(const VectorQuantizerOptions& options)
    : options_(options), dim_(options.lookup_dim > 0 ? options.lookup_dim : options.code_dim) {
  TORCH_CHECK(options.codebook_size >= 2, "VectorQuantizer: codebook_size must be >= 2");
  const std::int64_t k = options.codebook_size;
  if (options.lookup_dim > 0) {
    project_in_ = register_module(
        "project_in", torch::nn::Linear(torch::nn::LinearOptions(options.code_dim, dim_)));
    project_out_ = register_module(
        "project_out", torch::nn::Linear(torch::nn::LinearOptions(dim_, options.code_dim)));
  }
  auto gen = makeGenerator(rngKey(options.seed, RngPurpose::kCodebookInit, 1));
  at::Tensor init = at::randn({k, dim_}, gen, at::TensorOptions().dtype(at::kFloat));
  if (options.l2_normalize) init = l2normalize(init);
  embedding_ = register_buffer("embedding", init);
  cluster_size_ = register_buffer("cluster_size", torch::zeros({k}));
  embed_sum_ = register_buffer("embed_sum", init.clone());
  usage_ = register_buffer("usage", torch::zeros({k}));
  initialized_ = register_buffer("initialized", torch::zeros({1}));
  window_counts_ = register_buffer("window_counts", torch::zeros({k}));
  last_window_counts_ = register_buffer("last_window_counts", torch::zeros({k}));
  window_steps_ = register_buffer("window_steps", torch::zeros({1}, torch::kLong));
  restarts_ = register_buffer("restarts", torch::zeros({1}, torch::kLong));
  if (options.init == CodebookInit::kRandom) initialized_.fill_(1);
}

bool VectorQuantizerImpl::initialized() const {
  // The buffer is read (a device synchronisation) only when its version counter moved since the
  // last read: after initialize() or a restore into the buffer; every other step, not at all.
  const std::int64_t version = initialized_._version();
  if (version != initialized_version_) {
    initialized_host_ = initialized_.item<float>() > 0;
    initialized_version_ = version;
  }
  return initialized_host_;
}

at::Tensor VectorQuantizerImpl::flatten(const at::Tensor& z_e) {
  TORCH_CHECK(z_e.dim() == 4 && z_e.size(1) == options_.code_dim, "VectorQuantizer: expected [B, ",
              options_.code_dim, ", H, W], got ", z_e.sizes());
  // Distances in fp32 even under mixed precision: argmin over 512 codes is not robust in bf16.
  at::Tensor flat = z_e.permute({0, 2, 3, 1}).reshape({-1, options_.code_dim}).to(at::kFloat);
  if (project_in_) flat = project_in_->forward(flat);
  if (options_.l2_normalize) flat = l2normalize(flat);
  return flat;
}

at::Tensor VectorQuantizerImpl::nearest(const at::Tensor& flat) const {
  return scores(flat.detach(), embedding_).argmin(1);
}

QuantizerOutput VectorQuantizerImpl::forward(const at::Tensor& z_e) {
  const at::Tensor flat = flatten(z_e);
  const at::Tensor codes = nearest(flat);
  const at::Tensor q = embedding_.index_select(0, codes);
  // Straight-through: the decoder sees q, the encoder receives the decoder's gradient unchanged.
  // Written as q + (flat - sg(flat)), whose value is q to the bit (flat + sg(q - flat) rounds),
  // so decoding the codes reproduces the forward pass exactly.
  const at::Tensor q_st = q + (flat - flat.detach());
  const at::Tensor commitment = options_.beta * (flat - q).pow(2).mean();

  if (is_training()) {
    torch::NoGradGuard no_grad;
    const at::Tensor x = flat.detach();
    // Counts by index_add rather than bincount, which reads the largest code on the host (a
    // device synchronisation on CUDA). Whole numbers: exact in float32 in any order.
    at::Tensor counts = torch::zeros({options_.codebook_size}, x.options())
                            .index_add_(0, codes, torch::ones({codes.size(0)}, x.options()));
    at::Tensor sums =
        torch::zeros({options_.codebook_size, dim_}, x.options()).index_add_(0, codes, x);
    if (pending_counts_.defined()) {
      pending_counts_.add_(counts);
      pending_sums_.add_(sums);
    } else {
      pending_counts_ = counts;
      pending_sums_ = sums;
    }
    pending_inputs_.push_back(x);
  }

  at::Tensor out = project_out_ ? project_out_->forward(q_st) : q_st;
  const auto b = z_e.size(0), h = z_e.size(2), w = z_e.size(3);
  out = out.reshape({b, h, w, options_.code_dim}).permute({0, 3, 1, 2});
  return {out.to(z_e.scalar_type()), commitment, codes.reshape({b, h, w})};
}

at::Tensor VectorQuantizerImpl::lookup(const at::Tensor& codes) {
  at::Tensor q = embedding_.index_select(0, codes.reshape(-1));
  if (project_out_) q = project_out_->forward(q);
  return q.reshape({codes.size(0), codes.size(1), codes.size(2), options_.code_dim})
      .permute({0, 3, 1, 2});
}

void VectorQuantizerImpl::initialize(const at::Tensor& z_e, StatsReducer& reducer) {
  torch::NoGradGuard no_grad;
  const at::Tensor all = reducer.allGather(flatten(z_e).detach().contiguous());
  const std::int64_t n = all.size(0), k = options_.codebook_size;
  TORCH_CHECK(n > 0, "VectorQuantizer: no encoder outputs to initialise the codebook from");
  KeyedStream stream(rngKey(options_.seed, RngPurpose::kCodebookInit, 2));

  at::Tensor centers = torch::empty({k, dim_}, all.options());
  if (options_.init == CodebookInit::kEncoder || options_.init == CodebookInit::kRandom) {
    const auto perm = keyedPermutation(n, stream.next());
    for (std::int64_t i = 0; i < k; ++i) centers[i].copy_(all[perm[i % n]]);
  } else {
    // k-means++ seeding: each next center drawn with probability proportional to the squared
    // distance to the nearest chosen one (keyed draws: identical on every rank).
    centers[0].copy_(all[static_cast<std::int64_t>(stream.below(n))]);
    at::Tensor d2 = (all - centers[0]).pow(2).sum(1);
    for (std::int64_t i = 1; i < k; ++i) {
      const at::Tensor cdf = d2.to(at::kDouble).cumsum(0);
      const double total = cdf[n - 1].item<double>();
      std::int64_t pick = static_cast<std::int64_t>(stream.below(n));
      if (total > 0) {
        const double u = stream.uniform() * total;
        pick =
            std::min<std::int64_t>(n - 1, at::searchsorted(cdf, at::scalar_tensor(u, cdf.options()),
                                                           /*out_int32=*/false, /*right=*/true)
                                              .item<std::int64_t>());
      }
      centers[i].copy_(all[pick]);
      d2 = at::minimum(d2, (all - centers[i]).pow(2).sum(1));
    }
    for (int it = 0; it < options_.kmeans_iters; ++it) {
      const at::Tensor assign = scores(all, centers).argmin(1);
      const at::Tensor counts = at::bincount(assign, {}, k).to(at::kFloat);
      const at::Tensor sums = torch::zeros_like(centers).index_add_(0, assign, all);
      const at::Tensor used = counts > 0;
      centers = at::where(used.unsqueeze(1), sums / counts.clamp_min(1).unsqueeze(1), centers);
      if (options_.l2_normalize) centers = l2normalize(centers);
    }
  }
  // Pseudo-counts: codes start as if each had been chosen by its share of this batch (at least
  // one vector), so the first EMA updates neither collapse unused codes to zero nor jerk them.
  const at::Tensor assign = scores(all, centers).argmin(1);
  const at::Tensor counts = at::bincount(assign, {}, k).to(at::kFloat).clamp_min(1);
  embedding_.copy_(centers);
  cluster_size_.copy_(counts);
  embed_sum_.copy_(centers * counts.unsqueeze(1));
  usage_.copy_(at::bincount(assign, {}, k).to(at::kFloat));
  initialized_.fill_(1);
  initialized_host_ = true;
  initialized_version_ = initialized_._version();
  // Bitwise agreement does not depend on every rank computing identically.
  reducer.broadcast(embedding_, 0);
  reducer.broadcast(cluster_size_, 0);
  reducer.broadcast(embed_sum_, 0);
  reducer.broadcast(usage_, 0);
}

void VectorQuantizerImpl::refreshCodebook() {
  const at::Tensor n = cluster_size_.sum();
  const double k = static_cast<double>(options_.codebook_size);
  // Laplace smoothing: never divides by zero, keeps the total count.
  const at::Tensor smoothed = (cluster_size_ + options_.eps) / (n + k * options_.eps) * n;
  at::Tensor codes = embed_sum_ / smoothed.clamp_min(1e-30).unsqueeze(1);
  if (options_.l2_normalize) codes = l2normalize(codes);
  embedding_.copy_(codes);
}

void VectorQuantizerImpl::update(StatsReducer& reducer, std::int64_t step) {
  torch::NoGradGuard no_grad;
  const std::int64_t k = options_.codebook_size;
  at::Tensor packed;
  if (pending_counts_.defined()) {
    packed = at::cat({pending_counts_, pending_sums_.reshape({-1})});
  } else {
    // No forward this step: contribute nothing.
    packed = torch::zeros({k + k * dim_}, embedding_.options());
  }
  reducer.sumInPlace(packed);
  const at::Tensor counts = packed.slice(0, 0, k);
  const at::Tensor sums = packed.slice(0, k).reshape({k, dim_});
  const double d = options_.decay;
  cluster_size_.mul_(d).add_(counts, 1 - d);
  embed_sum_.mul_(d).add_(sums, 1 - d);
  refreshCodebook();
  const double usage_decay =
      1.0 - 1.0 / static_cast<double>(std::max<std::int64_t>(2, options_.restart_every));
  usage_.mul_(usage_decay).add_(counts, 1 - usage_decay);

  window_counts_.add_(counts);
  window_steps_.add_(1);
  // The end of a usage window, decided on the device (the step count is a buffer: reading it
  // here would wait for the device every step).
  const at::Tensor full = window_steps_ >= options_.usage_window;
  last_window_counts_.copy_(at::where(full, window_counts_, last_window_counts_));
  window_counts_.masked_fill_(full, 0);
  window_steps_.masked_fill_(full, 0);
  if (options_.restart_threshold > 0 && (step + 1) % options_.restart_every == 0) {
    restartDeadCodes(reducer, step);
  }
  discardPending();
}

void VectorQuantizerImpl::restartDeadCodes(StatsReducer& reducer, std::int64_t step) {
  // The decision uses only replicated buffers, so every rank takes the same branch. (These reads
  // wait for the device, once every restart_every steps.)
  const double expected_usage = usage_.sum().item<double>() / options_.codebook_size;
  const at::Tensor dead =
      (usage_ < options_.restart_threshold * expected_usage).nonzero().reshape(-1);
  const double expected = cluster_size_.sum().item<double>() / options_.codebook_size;
  const std::int64_t num_dead = dead.numel();
  if (num_dead == 0) return;
  const at::Tensor mine = pending_inputs_.empty() ? torch::zeros({0, dim_}, embedding_.options())
                                                  : at::cat(pending_inputs_);
  const std::int64_t n = mine.size(0);

  // Candidates are global indices into the global batch (every rank's inputs in rank order, the
  // order one process with the global batch holds them), drawn from a keyed permutation: the same
  // choice on every rank and at every world size. A rank needs only its offset in that order.
  // With equal shares, which data-parallel steps have, it is rank * n, and one 16-byte sum
  // confirms the shares are equal: (sum n_r)^2 == world * sum n_r^2 only then. Otherwise the
  // ranks' counts are gathered (8 bytes a rank).
  at::Tensor shares = torch::tensor({n, n * n}, torch::kLong).to(embedding_.device());
  reducer.sumInPlace(shares);
  const at::Tensor shares_host = shares.cpu();
  const std::int64_t total = shares_host[0].item<std::int64_t>();
  const std::int64_t sum_squares = shares_host[1].item<std::int64_t>();
  std::int64_t offset = reducer.rank() * n;
  if (total * total != reducer.size() * sum_squares) {
    const at::Tensor counts =
        reducer.allGather(torch::tensor({n}, torch::kLong).to(embedding_.device())).cpu();
    offset = counts.slice(0, 0, reducer.rank()).sum().item<std::int64_t>();
  }
  if (total == 0) return;
  const auto perm = keyedPermutation(
      total, rngKey(options_.seed, RngPurpose::kCodeRestart, static_cast<std::uint64_t>(step)));

  // One sum of num_dead x D floats, whatever the world size: each candidate row is written by the
  // rank that holds it; the others contribute -0.0, which leaves every value's bits as they are
  // (x + -0.0 == x, -0.0 included), so all ranks receive exactly the chosen inputs.
  std::vector<std::int64_t> rows, local;
  for (std::int64_t i = 0; i < num_dead; ++i) {
    const std::int64_t g = perm[static_cast<std::size_t>(i % total)];
    if (g >= offset && g < offset + n) {
      rows.push_back(i);
      local.push_back(g - offset);
    }
  }
  at::Tensor picks = torch::full({num_dead, dim_}, -0.0, embedding_.options());
  if (!rows.empty()) {
    const auto index = [&](const std::vector<std::int64_t>& v) {
      return torch::tensor(v, torch::kLong).to(embedding_.device());
    };
    picks.index_copy_(0, index(rows), mine.index_select(0, index(local)));
  }
  reducer.sumInPlace(picks);
  // A restarted code starts with the expected count and usage, so one quiet step does not kill
  // it again.
  cluster_size_.index_fill_(0, dead, expected);
  usage_.index_fill_(0, dead, expected_usage);
  embed_sum_.index_copy_(0, dead, picks * expected);
  embedding_.index_copy_(0, dead, options_.l2_normalize ? l2normalize(picks) : picks);
  restarts_.add_(num_dead);
}

void VectorQuantizerImpl::discardPending() {
  pending_counts_ = at::Tensor();
  pending_sums_ = at::Tensor();
  pending_inputs_.clear();
}

std::uint64_t VectorQuantizerImpl::stateHash() const {
  std::uint64_t h = 0xCBF29CE484222325ULL;
  for (const auto* t : {&embedding_, &cluster_size_, &embed_sum_, &usage_, &window_counts_}) {
    h = hashBytes(h, *t);
  }
  return h;
}

bool VectorQuantizerImpl::checkReplicated(StatsReducer& reducer) {
  const std::uint64_t mine = stateHash();
  // Collectives run on the codebook's device.
  at::Tensor h =
      torch::tensor({static_cast<std::int64_t>(mine)}, torch::kLong).to(embedding_.device());
  const at::Tensor all = reducer.allGather(h);
  const bool same = all.eq(all[0]).all().item<bool>();
  if (!same) {
    for (auto* t : {&embedding_, &cluster_size_, &embed_sum_, &usage_, &window_counts_}) {
      reducer.broadcast(*t, 0);
    }
  }
  return same;
}

CodebookHealth VectorQuantizerImpl::health() const {
  torch::NoGradGuard no_grad;
  CodebookHealth h;
  const at::Tensor counts =
      last_window_counts_.sum().item<double>() > 0 ? last_window_counts_ : window_counts_;
  const double total = counts.sum().item<double>();
  if (total > 0) {
    h.usage = (counts > 0).sum().item<double>() / options_.codebook_size;
    const at::Tensor p = counts / total;
    const double entropy = -(p * (p + 1e-30).log()).sum().item<double>();
    h.perplexity = std::exp(entropy);
  }
  const double expected = usage_.sum().item<double>() / options_.codebook_size;
  h.dead = (usage_ < options_.restart_threshold * expected).sum().item<std::int64_t>();
  h.restarts = restarts_.item<std::int64_t>();
  return h;
}

}  // namespace tessera::models
