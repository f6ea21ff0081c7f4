// A small ordered JSON object writer for machine-readable output (bench lines, eval results,
// metrics.jsonl, info). Non-finite numbers are written as null.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tessera {

class JsonObject {
 public:
  JsonObject& add(const std::string& key, double v);
  JsonObject& add(const std::string& key, std::int64_t v);
  JsonObject& add(const std::string& key, int v) { return add(key, static_cast<std::int64_t>(v)); }
  JsonObject& add(const std::string& key, bool v);
  JsonObject& add(const std::string& key, const std::string& v);
  JsonObject& add(const std::string& key, const char* v) { return add(key, std::string(v)); }
  JsonObject& add(const std::string& key, const JsonObject& v);
  JsonObject& add(const std::string& key, const std::vector<JsonObject>& v);
  JsonObject& add(const std::string& key, const std::vector<double>& v);

  std::string str() const { return "{" + body_ + "}"; }
  bool empty() const { return body_.empty(); }

 private:
  JsonObject& raw(const std::string& key, const std::string& json);
  std::string body_;
};

std::string jsonQuote(const std::string& s);
std::string jsonNumber(double v);

}  // namespace tessera
