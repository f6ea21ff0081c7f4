#include "core/json.h"

#include <charconv>
#include <cmath>
#include <cstdio>

namespace tessera {

std::string jsonQuote(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string jsonNumber(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}

JsonObject& JsonObject::raw(const std::string& key, const std::string& json) {
  if (!body_.empty()) body_ += ", ";
  body_ += jsonQuote(key) + ": " + json;
  return *this;
}

JsonObject& JsonObject::add(const std::string& key, double v) {
  return raw(key, jsonNumber(v));
}
JsonObject& JsonObject::add(const std::string& key, std::int64_t v) {
  return raw(key, std::to_string(v));
}
JsonObject& JsonObject::add(const std::string& key, bool v) {
  return raw(key, v ? "true" : "false");
}
JsonObject& JsonObject::add(const std::string& key, const std::string& v) {
  return raw(key, jsonQuote(v));
}
JsonObject& JsonObject::add(const std::string& key, const JsonObject& v) {
  return raw(key, v.str());
}
JsonObject& JsonObject::add(const std::string& key, const std::vector<JsonObject>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i].str();
  return raw(key, s + "]");
}
JsonObject& JsonObject::add(const std::string& key, const std::vector<double>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + jsonNumber(v[i]);
  return raw(key, s + "]");
}

}  // namespace tessera
