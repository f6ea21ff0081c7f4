// Typed configuration structs describe their fields once, through a FieldVisitor; binding from
// YAML (with strict validation), dumping the resolved config and listing valid keys are all
// visitors. Nothing here knows YAML: models/, data/ and comm/ only ever see the plain structs.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace tessera::trainer::config {

// An interval a numeric value must lie in, with a human description for error messages.
struct Range {
  double lo = -std::numeric_limits<double>::infinity();
  double hi = std::numeric_limits<double>::infinity();
  bool lo_open = false;
  bool hi_open = false;

  bool contains(double v) const;
  std::string describe() const;  // e.g. "a value > 0", "a value in [0, 1]"
};

inline Range any() {
  return {};
}
inline Range atLeast(double lo) {
  return {lo};
}
inline Range greaterThan(double lo) {
  return {lo, std::numeric_limits<double>::infinity(), true};
}
inline Range between(double lo, double hi) {
  return {lo, hi};
}
inline Range probability() {
  return {0.0, 1.0};
}

class FieldVisitor {
 public:
  virtual ~FieldVisitor() = default;

  virtual void value(const char* key, bool& v, const char* help) = 0;
  virtual void value(const char* key, int& v, Range range, const char* help) = 0;
  virtual void value(const char* key, std::int64_t& v, Range range, const char* help) = 0;
  virtual void value(const char* key, double& v, Range range, const char* help) = 0;
  virtual void value(const char* key, std::string& v, const char* help) = 0;
  virtual void value(const char* key, std::vector<double>& v, Range range, const char* help) = 0;
  // `index` selects one of `names`; the YAML holds the name.
  virtual void choiceIndex(const char* key, int& index, const std::vector<std::string>& names,
                           const char* help) = 0;

  // A nested struct with a `void fields(FieldVisitor&)` member.
  template <class Section>
  void section(const char* key, Section& s, const char* help) {
    if (enter(key, help)) {
      s.fields(*this);
      leave();
    }
  }

  // An enum (or any value type) chosen by name.
  template <class E>
  void choice(const char* key, E& v, std::initializer_list<std::pair<const char*, E>> items,
              const char* help) {
    std::vector<std::string> names;
    int index = -1;
    int i = 0;
    for (const auto& item : items) {
      names.emplace_back(item.first);
      if (item.second == v) index = i;
      ++i;
    }
    choiceIndex(key, index, names, help);
    if (index >= 0) v = (items.begin() + index)->second;
  }

 protected:
  // Returns false when the visitor does not descend (the section stays at its defaults).
  virtual bool enter(const char* key, const char* help) = 0;
  virtual void leave() = 0;
};

}  // namespace tessera::trainer::config
