#include "trainer/config/config_tree.h"

#include <yaml-cpp/yaml.h>

#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "core/error.h"

namespace tessera::trainer::config {
namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Range

bool Range::contains(double v) const {
  if (std::isnan(v)) return false;
  const bool above = lo_open ? v > lo : v >= lo;
  const bool below = hi_open ? v < hi : v <= hi;
  return above && below;
}

namespace {

std::string formatNumber(double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}

}  // namespace

std::string Range::describe() const {
  const bool has_lo = !std::isinf(lo);
  const bool has_hi = !std::isinf(hi);
  if (has_lo && has_hi) {
    return std::string("a value in ") + (lo_open ? "(" : "[") + formatNumber(lo) + ", " +
           formatNumber(hi) + (hi_open ? ")" : "]");
  }
  if (has_lo) return std::string("a value ") + (lo_open ? "> " : ">= ") + formatNumber(lo);
  if (has_hi) return std::string("a value ") + (hi_open ? "< " : "<= ") + formatNumber(hi);
  return "any value";
}

std::size_t editDistance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t subst = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, subst});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string closestName(const std::string& word, const std::vector<std::string>& names) {
  std::string closest;
  std::size_t best = std::string::npos;
  for (const auto& name : names) {
    const std::size_t d = editDistance(word, name);
    if (d < best && d <= std::max<std::size_t>(2, name.size() / 3)) {
      best = d;
      closest = name;
    }
  }
  return closest;
}

// ---------------------------------------------------------------------------------------------
// Loading and merging

struct ConfigTree::Impl {
  YAML::Node root = YAML::Node(YAML::NodeType::Map);
  // Where each key path was last set: "file:line" or "command-line override 'k=v'".
  std::map<std::string, std::string> origin;

  std::string originOf(const std::string& path) const {
    for (std::string p = path;;) {
      if (auto it = origin.find(p); it != origin.end()) return it->second;
      const auto dot = p.rfind('.');
      if (dot == std::string::npos) return "config";
      p.resize(dot);
    }
  }
};

namespace {

std::string join(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

std::string where(const std::string& file, const YAML::Mark& mark) {
  if (mark.line < 0) return file;
  return file + ":" + std::to_string(mark.line + 1);
}

void recordOrigins(const YAML::Node& node, const std::string& prefix, const std::string& file,
                   std::map<std::string, std::string>& origin) {
  if (!node.IsMap()) return;
  for (const auto& kv : node) {
    const std::string path = join(prefix, kv.first.Scalar());
    origin[path] = where(file, kv.first.Mark());
    recordOrigins(kv.second, path, file, origin);
  }
}

// Merges `src` into `dst` (maps key by key, everything else replaced), recording origins.
void merge(YAML::Node dst, const YAML::Node& src, const std::string& prefix,
           const std::string& file, std::map<std::string, std::string>& origin) {
  for (const auto& kv : src) {
    const std::string key = kv.first.Scalar();
    const std::string path = join(prefix, key);
    YAML::Node existing = dst[key];
    if (existing.IsMap() && kv.second.IsMap()) {
      origin[path] = where(file, kv.first.Mark());
      merge(existing, kv.second, path, file, origin);
    } else {
      dst[key] = YAML::Clone(kv.second);
      origin[path] = where(file, kv.first.Mark());
      recordOrigins(kv.second, path, file, origin);
    }
  }
}

YAML::Node parseText(const std::string& text, const std::string& file) {
  YAML::Node node;
  try {
    node = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(where(file, e.mark) + ": YAML syntax error: " + e.msg);
  }
  if (node.IsNull()) return YAML::Node(YAML::NodeType::Map);
  if (!node.IsMap()) {
    throw ConfigError(file + ": expected a mapping of keys at the top level, found " +
                      (node.IsSequence() ? "a list" : "a single value"));
  }
  return node;
}

void loadInto(ConfigTree::Impl& impl, const fs::path& path, std::vector<fs::path>& chain);

void loadIncludes(ConfigTree::Impl& impl, const YAML::Node& node, const fs::path& path,
                  std::vector<fs::path>& chain) {
  const YAML::Node inc = node["include"];
  if (!inc) return;
  std::vector<std::string> names;
  if (inc.IsScalar()) {
    names.push_back(inc.Scalar());
  } else if (inc.IsSequence()) {
    for (const auto& item : inc) {
      if (!item.IsScalar()) {
        throw ConfigError(where(path.string(), item.Mark()) + ": include: expected file names");
      }
      names.push_back(item.Scalar());
    }
  } else {
    throw ConfigError(where(path.string(), inc.Mark()) +
                      ": include: expected a file name or a list of file names");
  }
  for (const auto& name : names) {
    fs::path target = fs::path(name).is_absolute() ? fs::path(name) : path.parent_path() / name;
    loadInto(impl, target, chain);
  }
}

void loadInto(ConfigTree::Impl& impl, const fs::path& path, std::vector<fs::path>& chain) {
  std::error_code ec;
  const fs::path canonical = fs::weakly_canonical(path, ec);
  for (const auto& p : chain) {
    if (p == canonical) {
      std::string cycle;
      for (const auto& q : chain) cycle += q.string() + " -> ";
      throw ConfigError("include cycle: " + cycle + canonical.string());
    }
  }
  std::ifstream in(path);
  if (!in) {
    const std::string who = chain.empty() ? "" : " (included from " + chain.back().string() + ")";
    throw ConfigError("config file '" + path.string() + "' cannot be read" + who + ": " +
                      (fs::exists(path) ? "permission denied" : "no such file"));
  }
  std::stringstream text;
  text << in.rdbuf();
  YAML::Node node = parseText(text.str(), path.string());
  chain.push_back(canonical);
  loadIncludes(impl, node, path, chain);
  chain.pop_back();
  node.remove("include");
  merge(impl.root, node, "", path.string(), impl.origin);
}

}  // namespace

ConfigTree ConfigTree::load(const std::string& path) {
  ConfigTree tree;
  tree.impl_ = std::make_shared<Impl>();
  std::vector<fs::path> chain;
  loadInto(*tree.impl_, path, chain);
  return tree;
}

ConfigTree ConfigTree::parse(const std::string& yaml, const std::string& origin) {
  ConfigTree tree;
  tree.impl_ = std::make_shared<Impl>();
  YAML::Node node = parseText(yaml, origin);
  if (node["include"]) throw ConfigError(origin + ": include: is only allowed in files");
  merge(tree.impl_->root, node, "", origin, tree.impl_->origin);
  return tree;
}

void ConfigTree::applyOverride(const std::string& assignment) {
  const auto eq = assignment.find('=');
  const std::string key = assignment.substr(0, eq);
  if (eq == std::string::npos || key.empty()) {
    throw UsageError("override '" + assignment +
                     "' is not of the form key=value (e.g. optim.lr=1e-3)");
  }
  const std::string text = assignment.substr(eq + 1);
  const std::string origin = "command-line override '" + assignment + "'";
  std::vector<std::string> parts;
  std::stringstream ss(key);
  for (std::string part; std::getline(ss, part, '.');) {
    if (part.empty()) throw UsageError(origin + ": empty key component in '" + key + "'");
    parts.push_back(part);
  }
  YAML::Node value;
  try {
    value = text.empty() ? YAML::Node(std::string()) : YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw UsageError(origin + ": value is not valid YAML: " + e.msg);
  }
  // Walk down by reassigning through a copy: yaml-cpp nodes are references, so `node = child`
  // would overwrite the parent's entry instead of moving the cursor.
  std::vector<YAML::Node> path{impl_->root};
  std::string prefix;
  for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
    prefix = join(prefix, parts[i]);
    YAML::Node child = path.back()[parts[i]];
    if (!child || child.IsNull()) {
      path.back()[parts[i]] = YAML::Node(YAML::NodeType::Map);
      child = path.back()[parts[i]];
    } else if (!child.IsMap()) {
      throw ConfigError(origin + ": '" + prefix + "' is a value, not a section");
    }
    path.push_back(child);
  }
  path.back()[parts.back()] = value;
  impl_->origin[key] = origin;
}

// ---------------------------------------------------------------------------------------------
// Visitors

namespace {

class KeyLister : public FieldVisitor {
 public:
  std::vector<std::string> keys;

  void value(const char* k, bool&, const char*) override { add(k); }
  void value(const char* k, int&, Range, const char*) override { add(k); }
  void value(const char* k, std::int64_t&, Range, const char*) override { add(k); }
  void value(const char* k, double&, Range, const char*) override { add(k); }
  void value(const char* k, std::string&, const char*) override { add(k); }
  void value(const char* k, std::vector<double>&, Range, const char*) override { add(k); }
  void choiceIndex(const char* k, int&, const std::vector<std::string>&, const char*) override {
    add(k);
  }

 protected:
  bool enter(const char* k, const char*) override {
    add(k);
    prefix_.push_back(keys.back());
    return true;
  }
  void leave() override { prefix_.pop_back(); }

 private:
  void add(const char* k) { keys.push_back(join(prefix_.empty() ? "" : prefix_.back(), k)); }
  std::vector<std::string> prefix_;
};

std::string lastComponent(const std::string& path) {
  const auto dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}

std::string parentOf(const std::string& path) {
  const auto dot = path.rfind('.');
  return dot == std::string::npos ? "" : path.substr(0, dot);
}

// The valid key closest to `unknown`, by full path or by its last component; "" if none is close.
std::string suggest(const std::string& unknown, const std::vector<std::string>& valid) {
  std::string best;
  std::size_t best_score = std::string::npos;
  const std::string last = lastComponent(unknown);
  for (const auto& candidate : valid) {
    const std::size_t full = editDistance(unknown, candidate);
    const std::size_t moved = editDistance(last, lastComponent(candidate)) +
                              (parentOf(candidate) == parentOf(unknown) ? 0 : 1);
    const std::size_t score = std::min(full, moved);
    if (score < best_score) {
      best_score = score;
      best = candidate;
    }
  }
  const std::size_t limit = std::max<std::size_t>(2, last.size() / 3);
  return best_score <= limit ? best : std::string();
}

std::string show(const YAML::Node& node) {
  if (node.IsScalar()) return "'" + node.Scalar() + "'";
  if (node.IsSequence()) return "a list";
  if (node.IsMap()) return "a section";
  return "nothing";
}

class Binder : public FieldVisitor {
 public:
  // `schema` lists the valid keys for suggestions; it is asked only when a key is unknown, so
  // that sections declared by an earlier choice (a task's own) are among them.
  Binder(const ConfigTree::Impl& tree, Schema schema) : tree_(tree), schema_(std::move(schema)) {
    frames_.push_back({tree.root, "", {}});
  }

  void finish() { checkUnknown(frames_.back()); }

  void value(const char* k, bool& v, const char*) override {
    YAML::Node n;
    if (!lookup(k, n)) return;
    try {
      v = n.as<bool>();
    } catch (const YAML::Exception&) {
      fail(k, "expected true or false, got " + show(n));
    }
  }

  void value(const char* k, int& v, Range r, const char* help) override {
    std::int64_t wide = v;
    value(k, wide, r, help);
    if (wide < std::numeric_limits<int>::min() || wide > std::numeric_limits<int>::max()) {
      fail(k, "value " + std::to_string(wide) + " does not fit in a 32-bit integer");
    }
    v = static_cast<int>(wide);
  }

  void value(const char* k, std::int64_t& v, Range r, const char*) override {
    YAML::Node n;
    if (!lookup(k, n)) return;
    v = parseInteger(k, n);
    checkRange(k, static_cast<double>(v), r);
  }

  void value(const char* k, double& v, Range r, const char*) override {
    YAML::Node n;
    if (!lookup(k, n)) return;
    v = parseDouble(k, n);
    checkRange(k, v, r);
  }

  void value(const char* k, std::string& v, const char*) override {
    YAML::Node n;
    if (!lookup(k, n, /*allow_null=*/true)) return;
    if (n.IsNull()) {
      v.clear();
      return;
    }
    if (!n.IsScalar()) fail(k, "expected a string, got " + show(n));
    v = n.Scalar();
  }

  void value(const char* k, std::vector<double>& v, Range r, const char*) override {
    YAML::Node n;
    if (!lookup(k, n, /*allow_null=*/true)) return;
    v.clear();
    if (n.IsNull()) return;
    if (!n.IsSequence()) fail(k, "expected a list of numbers like [0.9, 0.999], got " + show(n));
    for (std::size_t i = 0; i < n.size(); ++i) {
      const std::string item = std::string(k) + "[" + std::to_string(i) + "]";
      const double x = parseDouble(item.c_str(), n[i]);
      checkRange(item.c_str(), x, r);
      v.push_back(x);
    }
  }

  void choiceIndex(const char* k, int& index, const std::vector<std::string>& names,
                   const char*) override {
    YAML::Node n;
    if (!lookup(k, n)) return;
    std::string list;
    for (const auto& name : names) list += (list.empty() ? "" : ", ") + name;
    if (!n.IsScalar()) fail(k, "expected one of " + list + ", got " + show(n));
    for (std::size_t i = 0; i < names.size(); ++i) {
      if (names[i] == n.Scalar()) {
        index = static_cast<int>(i);
        return;
      }
    }
    const std::string closest = closestName(n.Scalar(), names);
    fail(k, "expected one of " + list + ", got " + show(n) +
                (closest.empty() ? "" : " (did you mean '" + closest + "'?)"));
  }

 protected:
  bool enter(const char* k, const char*) override {
    Frame& top = frames_.back();
    top.known.insert(k);
    YAML::Node n = top.node[k];
    const std::string path = join(top.prefix, k);
    if (!n || n.IsNull()) return false;
    if (!n.IsMap()) {
      throw ConfigError(tree_.originOf(path) + ": '" + path +
                        "' is a section and needs keys under it, got " + show(n));
    }
    frames_.push_back({n, path, {}});
    return true;
  }

  void leave() override {
    checkUnknown(frames_.back());
    frames_.pop_back();
  }

 private:
  struct Frame {
    YAML::Node node;
    std::string prefix;
    std::set<std::string> known;
  };

  bool lookup(const char* k, YAML::Node& out, bool allow_null = false) {
    Frame& top = frames_.back();
    top.known.insert(k);
    out = top.node[k];
    if (!out) return false;
    if (out.IsNull() && !allow_null) fail(k, "has no value");
    return true;
  }

  [[noreturn]] void fail(const char* k, const std::string& what) const {
    std::string key = k;
    if (auto bracket = key.find('['); bracket != std::string::npos) key.resize(bracket);
    const std::string path = join(frames_.back().prefix, key);
    throw ConfigError(tree_.originOf(path) + ": " + join(frames_.back().prefix, k) + ": " + what);
  }

  std::int64_t parseInteger(const char* k, const YAML::Node& n) const {
    if (n.IsScalar()) {
      const std::string& s = n.Scalar();
      std::int64_t out = 0;
      auto res = std::from_chars(s.data(), s.data() + s.size(), out);
      if (res.ec == std::errc() && res.ptr == s.data() + s.size()) return out;
      // Accept integral numbers written in floating-point notation, e.g. 1e6.
      double d = 0;
      if (tryDouble(s, d) && std::floor(d) == d && std::fabs(d) < 9.0e15) {
        return static_cast<std::int64_t>(d);
      }
    }
    fail(k, "expected an integer, got " + show(n));
  }

  static bool tryDouble(const std::string& s, double& out) {
    if (s == ".inf" || s == "+.inf" || s == ".Inf") {
      out = std::numeric_limits<double>::infinity();
      return true;
    }
    if (s == "-.inf" || s == "-.Inf") {
      out = -std::numeric_limits<double>::infinity();
      return true;
    }
    const char* begin = s.data() + (!s.empty() && s[0] == '+' ? 1 : 0);
    auto res = std::from_chars(begin, s.data() + s.size(), out);
    return res.ec == std::errc() && res.ptr == s.data() + s.size() && !std::isnan(out);
  }

  double parseDouble(const char* k, const YAML::Node& n) const {
    double d = 0;
    if (n.IsScalar() && tryDouble(n.Scalar(), d)) return d;
    fail(k, "expected a number, got " + show(n));
  }

  void checkRange(const char* k, double v, const Range& r) const {
    if (!r.contains(v)) fail(k, "expected " + r.describe() + ", got " + formatNumber(v));
  }

  void checkUnknown(const Frame& frame) const {
    for (const auto& kv : frame.node) {
      const std::string key = kv.first.Scalar();
      if (frame.known.count(key)) continue;
      const std::string path = join(frame.prefix, key);
      const std::string hint = suggest(path, listKeys(schema_));
      throw ConfigError(tree_.originOf(path) + ": unknown key '" + path + "'" +
                        (hint.empty() ? std::string() : " (did you mean '" + hint + "'?)"));
    }
  }

  const ConfigTree::Impl& tree_;
  Schema schema_;
  std::vector<Frame> frames_;
};

class Dumper : public FieldVisitor {
 public:
  Dumper() { out_ << YAML::BeginMap; }
  std::string text() {
    out_ << YAML::EndMap;
    return std::string(out_.c_str()) + "\n";
  }

  void value(const char* k, bool& v, const char* help) override {
    out_ << YAML::Key << k << YAML::Value << (v ? "true" : "false");
    comment(help);
  }
  void value(const char* k, int& v, Range, const char* help) override {
    out_ << YAML::Key << k << YAML::Value << v;
    comment(help);
  }
  void value(const char* k, std::int64_t& v, Range, const char* help) override {
    out_ << YAML::Key << k << YAML::Value << static_cast<long long>(v);
    comment(help);
  }
  void value(const char* k, double& v, Range, const char* help) override {
    out_ << YAML::Key << k << YAML::Value << formatNumber(v);
    comment(help);
  }
  void value(const char* k, std::string& v, const char* help) override {
    out_ << YAML::Key << k << YAML::Value;
    if (v.empty()) {
      out_ << YAML::Null;
    } else {
      out_ << v;
    }
    comment(help);
  }
  void value(const char* k, std::vector<double>& v, Range, const char* help) override {
    out_ << YAML::Key << k << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (double x : v) out_ << formatNumber(x);
    out_ << YAML::EndSeq;
    comment(help);
  }
  void choiceIndex(const char* k, int& index, const std::vector<std::string>& names,
                   const char* help) override {
    out_ << YAML::Key << k << YAML::Value << names.at(static_cast<std::size_t>(index));
    std::string list;
    for (const auto& name : names) list += (list.empty() ? "" : "|") + name;
    comment((std::string(help ? help : "") + " [" + list + "]").c_str());
  }

 protected:
  bool enter(const char* k, const char* help) override {
    out_ << YAML::Key << k;
    comment(help);
    out_ << YAML::Value << YAML::BeginMap;
    return true;
  }
  void leave() override { out_ << YAML::EndMap; }

 private:
  void comment(const char* help) {
    if (help != nullptr && *help != '\0') out_ << YAML::Comment(help);
  }
  YAML::Emitter out_;
};

}  // namespace

void ConfigTree::bind(const Schema& schema) const {
  Binder binder(*impl_, schema);
  schema(binder);
  binder.finish();
}

std::string dumpYaml(const Schema& schema) {
  Dumper dumper;
  schema(dumper);
  return dumper.text();
}

std::vector<std::string> listKeys(const Schema& schema) {
  KeyLister lister;
  schema(lister);
  return lister.keys;
}

}  // namespace tessera::trainer::config
