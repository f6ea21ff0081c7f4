// A configuration as loaded from YAML files and command-line overrides, before it is bound into
// typed structs. This is the only place that knows YAML.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "trainer/config/field_visitor.h"

namespace tessera::trainer::config {

// Describes a typed config: calls the visitor on the root struct's fields.
using Schema = std::function<void(FieldVisitor&)>;

class ConfigTree {
 public:
  // Reads a YAML file. A top-level `include:` (a path or a list of paths, relative to the file
  // that names them) is loaded first; keys of the including file override included ones, maps
  // merge key by key. Throws ConfigError naming the file (missing, syntax error, include cycle).
  static ConfigTree load(const std::string& path);
  static ConfigTree parse(const std::string& yaml, const std::string& origin);

  // Applies `a.b.c=value` (Hydra-style); `value` is parsed as YAML, so `[1, 2]`, `true` and
  // numbers keep their types. Throws UsageError for a malformed assignment.
  void applyOverride(const std::string& assignment);

  // Binds into the structs that `schema` visits. Absent keys keep their defaults. Throws
  // ConfigError for an unknown key (naming the key, the file and line or the override, and the
  // closest valid key), a wrong type or an out-of-range value.
  void bind(const Schema& schema) const;

  struct Impl;  // defined in config_tree.cpp

 private:
  std::shared_ptr<Impl> impl_;
};

// The configuration `schema` currently holds, as YAML with each key's help as a comment.
std::string dumpYaml(const Schema& schema);

// Every valid key path ("optim.lr"), sections included, in declaration order.
std::vector<std::string> listKeys(const Schema& schema);

// Levenshtein distance; exposed for tests.
std::size_t editDistance(const std::string& a, const std::string& b);

// The name of `names` closest to `word` when it is close enough to be a likely misspelling
// (edit distance at most max(2, length / 3)); "" otherwise.
std::string closestName(const std::string& word, const std::vector<std::string>& names);

}  // namespace tessera::trainer::config
