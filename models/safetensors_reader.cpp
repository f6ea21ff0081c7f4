#include "models/safetensors_reader.h"

#include <ATen/ATen.h>

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
#include <set>

#include "core/error.h"

namespace tessera::models {
namespace {

// A JSON value, enough for a safetensors header: objects (in file order), arrays, strings,
// integers and the literals.
struct Json {
  enum Kind { kNull, kBool, kNumber, kString, kArray, kObject } kind = kNull;
  bool boolean = false;
  std::string text;  // kString: the value; kNumber: the literal
  std::vector<Json> items;
  std::vector<std::pair<std::string, Json>> members;

  const Json* find(const std::string& key) const {
    for (const auto& [k, v] : members) {
      if (k == key) return &v;
    }
    return nullptr;
  }
};

class JsonParser {
 public:
  JsonParser(const std::string& s, std::string where) : s_(s), where_(std::move(where)) {}

  Json parseDocument() {
    Json v = value(0);
    skipSpace();
    if (i_ != s_.size()) fail("trailing characters");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw InputError(where_ + ": malformed header JSON at byte " + std::to_string(i_) + ": " +
                     what);
  }
  void skipSpace() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t'))
      ++i_;
  }
  char peek() {
    skipSpace();
    if (i_ >= s_.size()) fail("unexpected end");
    return s_[i_];
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++i_;
  }
  bool literal(const char* word) {
    const std::size_t n = std::strlen(word);
    if (s_.compare(i_, n, word) != 0) return false;
    i_ += n;
    return true;
  }

  Json value(int depth) {
    if (depth > 64) fail("nested too deeply");
    Json v;
    const char c = peek();
    if (c == '{') {
      v.kind = Json::kObject;
      ++i_;
      if (peek() == '}') {
        ++i_;
        return v;
      }
      while (true) {
        if (peek() != '"') fail("expected a key");
        std::string key = string();
        expect(':');
        v.members.emplace_back(std::move(key), value(depth + 1));
        if (peek() == ',') {
          ++i_;
          continue;
        }
        expect('}');
        return v;
      }
    }
    if (c == '[') {
      v.kind = Json::kArray;
      ++i_;
      if (peek() == ']') {
        ++i_;
        return v;
      }
      while (true) {
        v.items.push_back(value(depth + 1));
        if (peek() == ',') {
          ++i_;
          continue;
        }
        expect(']');
        return v;
      }
    }
    if (c == '"') {
      v.kind = Json::kString;
      v.text = string();
      return v;
    }
    if (literal("true")) {
      v.kind = Json::kBool;
      v.boolean = true;
      return v;
    }
    if (literal("false")) {
      v.kind = Json::kBool;
      return v;
    }
    if (literal("null")) return v;
    const std::size_t start = i_;
    while (i_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[i_])) || s_[i_] == '-' ||
                              s_[i_] == '+' || s_[i_] == '.' || s_[i_] == 'e' || s_[i_] == 'E'))
      ++i_;
    if (i_ == start) fail("unexpected character");
    v.kind = Json::kNumber;
    v.text = s_.substr(start, i_ - start);
    return v;
  }

  static void appendUtf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::uint32_t hex4() {
    if (i_ + 4 > s_.size()) fail("short \\u escape");
    std::uint32_t cp = 0;
    for (int k = 0; k < 4; ++k) {
      const char h = s_[i_++];
      cp <<= 4;
      if (h >= '0' && h <= '9') {
        cp |= static_cast<std::uint32_t>(h - '0');
      } else if (h >= 'a' && h <= 'f') {
        cp |= static_cast<std::uint32_t>(h - 'a' + 10);
      } else if (h >= 'A' && h <= 'F') {
        cp |= static_cast<std::uint32_t>(h - 'A' + 10);
      } else {
        fail("bad \\u escape");
      }
    }
    return cp;
  }

  std::string string() {
    expect('"');
    std::string out;
    while (true) {
      if (i_ >= s_.size()) fail("unterminated string");
      const char c = s_[i_++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= s_.size()) fail("unterminated escape");
      const char e = s_[i_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out += e;
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          std::uint32_t cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && i_ + 1 < s_.size() && s_[i_] == '\\' &&
              s_[i_ + 1] == 'u') {
            i_ += 2;
            const std::uint32_t low = hex4();
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          appendUtf8(out, cp);
          break;
        }
        default:
          fail("bad escape");
      }
    }
  }

  const std::string& s_;
  std::string where_;
  std::size_t i_ = 0;
};

c10::ScalarType dtypeOf(const std::string& code, const std::string& where) {
  if (code == "F64") return at::kDouble;
  if (code == "F32") return at::kFloat;
  if (code == "F16") return at::kHalf;
  if (code == "BF16") return at::kBFloat16;
  if (code == "I64") return at::kLong;
  if (code == "I32") return at::kInt;
  if (code == "I16") return at::kShort;
  if (code == "I8") return at::kChar;
  if (code == "U8") return at::kByte;
  if (code == "BOOL") return at::kBool;
  throw InputError(where + ": unsupported dtype '" + code + "'");
}

std::int64_t integer(const Json& v, const std::string& where) {
  if (v.kind != Json::kNumber || v.text.empty() ||
      v.text.find_first_not_of("0123456789") != std::string::npos || v.text.size() > 18) {
    throw InputError(where + ": expected a non-negative integer");
  }
  return std::stoll(v.text);
}

}  // namespace

SafetensorsContents readSafetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError("safetensors file " + path + ": cannot open: " + std::strerror(errno));
  in.seekg(0, std::ios::end);
  const std::int64_t size = static_cast<std::int64_t>(in.tellg());
  in.seekg(0);
  const std::string where = "safetensors file " + path;
  unsigned char len_bytes[8];
  if (size < 8 || !in.read(reinterpret_cast<char*>(len_bytes), 8)) {
    throw InputError(where + ": too short for a header");
  }
  std::uint64_t header_len = 0;
  for (int k = 7; k >= 0; --k) header_len = (header_len << 8) | len_bytes[k];
  if (header_len > static_cast<std::uint64_t>(size - 8) || header_len > (100u << 20)) {
    throw InputError(where + ": header length " + std::to_string(header_len) + " exceeds the file");
  }
  std::string header(header_len, '\0');
  if (!in.read(header.data(), static_cast<std::streamsize>(header_len))) {
    throw InputError(where + ": cannot read the header");
  }
  const std::int64_t data_start = 8 + static_cast<std::int64_t>(header_len);
  const std::int64_t data_size = size - data_start;
  const Json doc = JsonParser(header, where).parseDocument();
  if (doc.kind != Json::kObject) throw InputError(where + ": the header is not a JSON object");

  SafetensorsContents out;
  std::set<std::string> seen;
  for (const auto& [name, entry] : doc.members) {
    if (!seen.insert(name).second) throw InputError(where + ": duplicate name '" + name + "'");
    if (name == "__metadata__") {
      if (entry.kind != Json::kObject) throw InputError(where + ": __metadata__ is not an object");
      for (const auto& [k, v] : entry.members) {
        if (v.kind != Json::kString) {
          throw InputError(where + ": __metadata__ value of '" + k + "' is not a string");
        }
        out.metadata[k] = v.text;
      }
      continue;
    }
    const std::string what = where + ": tensor '" + name + "'";
    const Json* dtype = entry.find("dtype");
    const Json* shape = entry.find("shape");
    const Json* offsets = entry.find("data_offsets");
    if (entry.kind != Json::kObject || !dtype || dtype->kind != Json::kString || !shape ||
        shape->kind != Json::kArray || !offsets || offsets->kind != Json::kArray ||
        offsets->items.size() != 2) {
      throw InputError(what + ": expected {dtype, shape, data_offsets: [begin, end]}");
    }
    const c10::ScalarType type = dtypeOf(dtype->text, what);
    std::vector<std::int64_t> sizes;
    std::int64_t numel = 1;
    for (const Json& d : shape->items) {
      sizes.push_back(integer(d, what + " shape"));
      numel *= sizes.back();
    }
    const std::int64_t begin = integer(offsets->items[0], what + " data_offsets");
    const std::int64_t end = integer(offsets->items[1], what + " data_offsets");
    const std::int64_t bytes = numel * static_cast<std::int64_t>(c10::elementSize(type));
    if (begin > end || end > data_size || end - begin != bytes) {
      throw InputError(what + ": data_offsets [" + std::to_string(begin) + ", " +
                       std::to_string(end) + "] do not hold " + std::to_string(bytes) +
                       " bytes inside the " + std::to_string(data_size) + " bytes of data");
    }
    at::Tensor t = at::empty(sizes, at::TensorOptions().dtype(type));
    in.seekg(data_start + begin);
    if (bytes > 0 &&
        !in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(bytes))) {
      throw InputError(what + ": cannot read its bytes");
    }
    out.tensors.emplace_back(name, std::move(t));
  }
  return out;
}

}  // namespace tessera::models
