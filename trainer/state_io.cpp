#include "trainer/state_io.h"

#include <torch/torch.h>

#include <cstring>
#include <sstream>

#include "comm/communicator.h"
#include "core/error.h"

namespace tessera::trainer {

NamedTensors moduleTensors(const ModuleList& modules) {
  NamedTensors out;
  for (const auto& [name, module] : modules) {
    for (const auto& item : module->named_parameters()) {
      out.emplace_back(name + "/" + item.key(), item.value());
    }
    for (const auto& item : module->named_buffers()) {
      out.emplace_back(name + "/" + item.key(), item.value());
    }
  }
  return out;
}

TrainingState snapshot(const Task& task, const ModuleList& modules, const TrainingState* reuse) {
  torch::NoGradGuard no_grad;
  std::map<std::string, at::Tensor> spare;
  if (reuse != nullptr) spare = tensorMap(*reuse);
  TrainingState state;
  NamedTensors live = moduleTensors(modules);
  task.collectState(live, state.ints);
  for (auto& [name, t] : live) {
    auto it = spare.find(name);
    if (it != spare.end() && it->second.sizes() == t.sizes() &&
        it->second.scalar_type() == t.scalar_type() && it->second.is_contiguous()) {
      it->second.copy_(t.detach());
      state.tensors.emplace_back(name, it->second);
    } else {
      state.tensors.emplace_back(name, t.detach()
                                           .to(torch::kCPU, /*non_blocking=*/false,
                                               /*copy=*/true)
                                           .contiguous());
    }
  }
  return state;
}

void restoreModules(const ModuleList& modules, const std::map<std::string, at::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  for (auto& [name, live] : moduleTensors(modules)) {
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      throw InputError("checkpoint has no tensor '" + name +
                       "' (was it written by another model "
                       "configuration?)");
    }
    if (it->second.sizes() != live.sizes()) {
      throw InputError("checkpoint tensor '" + name + "' has shape " +
                       c10::str(it->second.sizes()) + " but the configured model has " +
                       c10::str(live.sizes()));
    }
    at::Tensor target = live;
    target.copy_(it->second);
  }
}

std::map<std::string, at::Tensor> tensorMap(const TrainingState& state) {
  return {state.tensors.begin(), state.tensors.end()};
}

std::string broadcastString(comm::Communicator& control, const std::string& text, int root) {
  at::Tensor len = torch::tensor({static_cast<std::int64_t>(text.size())}, torch::kLong);
  control.broadcast({len}, root, {"broadcast", "string length", -1, -1});
  const auto n = len.item<std::int64_t>();
  at::Tensor bytes = torch::empty({n}, torch::kUInt8);
  if (control.rank() == root && n > 0) std::memcpy(bytes.data_ptr(), text.data(), text.size());
  control.broadcast({bytes}, root, {"broadcast", "string", -1, -1});
  return std::string(static_cast<const char*>(bytes.data_ptr()), static_cast<std::size_t>(n));
}

namespace {

// One record per line; strings are length-prefixed so they may hold anything.
std::string encodeHeader(const TrainingState& s) {
  std::ostringstream out;
  out.precision(17);
  for (const auto& [name, t] : s.tensors) {
    out << "T " << name.size() << ' ' << name << ' ' << static_cast<int>(t.scalar_type()) << ' '
        << t.dim();
    for (auto d : t.sizes()) out << ' ' << d;
    out << '\n';
  }
  for (const auto& [k, v] : s.ints) out << "I " << k.size() << ' ' << k << ' ' << v << '\n';
  for (const auto& [k, v] : s.reals) {
    out << "R " << k.size() << ' ' << k << ' ' << std::hexfloat << v << std::defaultfloat << '\n';
  }
  for (const auto& [k, v] : s.texts) {
    out << "S " << k.size() << ' ' << k << ' ' << v.size() << ' ' << v << '\n';
  }
  return out.str();
}

std::string readSized(std::istream& in) {
  std::size_t n = 0;
  in >> n;
  in.get();  // the separating space
  std::string s(n, '\0');
  in.read(s.data(), static_cast<std::streamsize>(n));
  return s;
}

TrainingState decodeHeader(const std::string& text) {
  TrainingState s;
  std::istringstream in(text);
  char kind = 0;
  while (in >> kind) {
    const std::string key = readSized(in);
    if (kind == 'T') {
      int dtype = 0, dim = 0;
      in >> dtype >> dim;
      std::vector<std::int64_t> sizes(static_cast<std::size_t>(dim));
      for (auto& d : sizes) in >> d;
      s.tensors.emplace_back(key, torch::empty(sizes, static_cast<at::ScalarType>(dtype)));
    } else if (kind == 'I') {
      std::int64_t v = 0;
      in >> v;
      s.ints[key] = v;
    } else if (kind == 'R') {
      std::string v;
      in >> v;
      s.reals[key] = std::strtod(v.c_str(), nullptr);
    } else if (kind == 'S') {
      s.texts[key] = readSized(in);
    } else {
      throw Error("corrupt state header received from rank 0");
    }
  }
  return s;
}

}  // namespace

std::optional<TrainingState> broadcastState(comm::Communicator& control,
                                            const std::optional<TrainingState>& state) {
  const bool root = control.rank() == 0;
  const std::string header =
      broadcastString(control, root ? (state ? "1" + encodeHeader(*state) : "0") : "");
  if (header.empty() || header[0] == '0') return std::nullopt;
  if (control.size() == 1) return state;
  TrainingState out = root ? *state : decodeHeader(header.substr(1));
  std::int64_t total = 0;
  for (const auto& [name, t] : out.tensors) total += t.numel() * t.element_size();
  at::Tensor bytes = torch::empty({total}, torch::kUInt8);
  auto* base = static_cast<std::uint8_t*>(bytes.data_ptr());
  if (root) {
    std::int64_t offset = 0;
    for (const auto& [name, t] : out.tensors) {
      const at::Tensor c = t.contiguous();
      const std::int64_t n = c.numel() * c.element_size();
      if (n > 0) std::memcpy(base + offset, c.data_ptr(), static_cast<std::size_t>(n));
      offset += n;
    }
  }
  control.broadcast({bytes}, 0, {"broadcast", "checkpoint state", -1, -1});
  if (!root) {
    std::int64_t offset = 0;
    for (auto& [name, t] : out.tensors) {
      const std::int64_t n = t.numel() * t.element_size();
      if (n > 0) std::memcpy(t.data_ptr(), base + offset, static_cast<std::size_t>(n));
      offset += n;
    }
  }
  return out;
}

}  // namespace tessera::trainer
