// json.cpp — see json.hpp.
#include "dsonas/core/json.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace dsonas {

const char* json_kind_name(JsonValue::Kind k) {
  switch (k) {
    case JsonValue::Null: return "null";
    case JsonValue::Bool: return "a boolean";
    case JsonValue::Num: return "a number";
    case JsonValue::Str: return "a string";
    case JsonValue::Arr: return "an array";
    case JsonValue::Obj: return "an object";
  }
  return "?";
}

namespace {

class JsonParser {
 public:
  JsonParser(const std::string& text, const std::string& file, int code) : t_(text), file_(file), code_(code) {}

  JsonValue parse() {
    skip_ws();
    JsonValue v = value(0);
    skip_ws();
    if (p_ != t_.size()) fail("unexpected text after the JSON value");
    return v;
  }

 private:
  static constexpr int kMaxDepth = 64;
  const std::string& t_;
  const std::string& file_;
  int code_;
  size_t p_ = 0;

  [[noreturn]] void fail(const std::string& msg) const {
    int line = 1, col = 1;
    for (size_t i = 0; i < p_ && i < t_.size(); ++i) {
      if (t_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    throw Error(code_, str(file_, ": line ", line, ", column ", col, ": ", msg));
  }
  void skip_ws() {
    while (p_ < t_.size() && (t_[p_] == ' ' || t_[p_] == '\t' || t_[p_] == '\n' || t_[p_] == '\r')) ++p_;
  }
  bool literal(const char* w) {
    const size_t n = std::strlen(w);
    if (t_.compare(p_, n, w) != 0) return false;
    p_ += n;
    return true;
  }

  JsonValue value(int depth) {
    if (depth > kMaxDepth) fail("nesting deeper than 64 levels");
    if (p_ >= t_.size()) fail("unexpected end of text (a value was expected)");
    JsonValue v;
    const char c = t_[p_];
    if (c == '{') {
      v.kind = JsonValue::Obj;
      ++p_;
      skip_ws();
      if (p_ < t_.size() && t_[p_] == '}') {
        ++p_;
        return v;
      }
      for (;;) {
        skip_ws();
        if (p_ >= t_.size() || t_[p_] != '"') fail("expected a string key");
        std::string key = string_body();
        skip_ws();
        if (p_ >= t_.size() || t_[p_] != ':') fail("expected ':' after a key");
        ++p_;
        skip_ws();
        JsonValue m = value(depth + 1);
        v.obj.emplace_back(std::move(key), std::move(m));
        skip_ws();
        if (p_ < t_.size() && t_[p_] == ',') {
          ++p_;
          continue;
        }
        if (p_ < t_.size() && t_[p_] == '}') {
          ++p_;
          return v;
        }
        fail("expected ',' or '}' in an object");
      }
    }
    if (c == '[') {
      v.kind = JsonValue::Arr;
      ++p_;
      skip_ws();
      if (p_ < t_.size() && t_[p_] == ']') {
        ++p_;
        return v;
      }
      for (;;) {
        skip_ws();
        v.arr.push_back(value(depth + 1));
        skip_ws();
        if (p_ < t_.size() && t_[p_] == ',') {
          ++p_;
          continue;
        }
        if (p_ < t_.size() && t_[p_] == ']') {
          ++p_;
          return v;
        }
        fail("expected ',' or ']' in an array");
      }
    }
    if (c == '"') {
      v.kind = JsonValue::Str;
      v.text = string_body();
      return v;
    }
    if (literal("true")) {
      v.kind = JsonValue::Bool;
      v.b = true;
      return v;
    }
    if (literal("false")) {
      v.kind = JsonValue::Bool;
      return v;
    }
    if (literal("null")) return v;
    if (c == '-' || (c >= '0' && c <= '9')) return number();
    fail(str("unexpected character '", c, "'"));
  }

  JsonValue number() {
    const size_t b = p_;
    auto digits = [&] {
      const size_t s = p_;
      while (p_ < t_.size() && t_[p_] >= '0' && t_[p_] <= '9') ++p_;
      return p_ - s;
    };
    if (t_[p_] == '-') ++p_;
    if (p_ < t_.size() && t_[p_] == '0') {
      ++p_;
    } else if (digits() == 0) {
      fail("bad number");
    }
    bool integral = true;
    if (p_ < t_.size() && t_[p_] == '.') {
      ++p_;
      integral = false;
      if (digits() == 0) fail("bad number (digits expected after '.')");
    }
    if (p_ < t_.size() && (t_[p_] == 'e' || t_[p_] == 'E')) {
      ++p_;
      integral = false;
      if (p_ < t_.size() && (t_[p_] == '+' || t_[p_] == '-')) ++p_;
      if (digits() == 0) fail("bad number (digits expected in the exponent)");
    }
    JsonValue v;
    v.kind = JsonValue::Num;
    v.text = t_.substr(b, p_ - b);
    v.integral = integral;
    return v;
  }

  unsigned hex4() {
    if (p_ + 4 > t_.size()) fail("truncated \\u escape");
    unsigned u = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = t_[p_++];
      u <<= 4;
      if (h >= '0' && h <= '9')
        u |= static_cast<unsigned>(h - '0');
      else if (h >= 'a' && h <= 'f')
        u |= static_cast<unsigned>(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F')
        u |= static_cast<unsigned>(h - 'A' + 10);
      else
        fail("bad hex digit in a \\u escape");
    }
    return u;
  }

  static void put_utf8(std::string& o, unsigned cp) {
    if (cp < 0x80) {
      o += static_cast<char>(cp);
    } else if (cp < 0x800) {
      o += static_cast<char>(0xC0 | (cp >> 6));
      o += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      o += static_cast<char>(0xE0 | (cp >> 12));
      o += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      o += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      o += static_cast<char>(0xF0 | (cp >> 18));
      o += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      o += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      o += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  /// At the opening quote; returns the decoded string, leaves p_ after the closing quote.
  std::string string_body() {
    ++p_;
    std::string o;
    for (;;) {
      if (p_ >= t_.size()) fail("unterminated string");
      const unsigned char c = static_cast<unsigned char>(t_[p_]);
      if (c == '"') {
        ++p_;
        return o;
      }
      if (c < 0x20) fail("control character inside a string");
      if (c != '\\') {
        o += static_cast<char>(c);
        ++p_;
        continue;
      }
      ++p_;
      if (p_ >= t_.size()) fail("unterminated string");
      const char e = t_[p_++];
      switch (e) {
        case '"': o += '"'; break;
        case '\\': o += '\\'; break;
        case '/': o += '/'; break;
        case 'b': o += '\b'; break;
        case 'f': o += '\f'; break;
        case 'n': o += '\n'; break;
        case 'r': o += '\r'; break;
        case 't': o += '\t'; break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xD800 && cp <= 0xDBFF) {  // surrogate pair
            if (p_ + 2 > t_.size() || t_[p_] != '\\' || t_[p_ + 1] != 'u') fail("unpaired surrogate in a \\u escape");
            p_ += 2;
            const unsigned lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("bad low surrogate in a \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            fail("unpaired surrogate in a \\u escape");
          }
          put_utf8(o, cp);
          break;
        }
        default: fail(str("bad escape '\\", e, "'"));
      }
    }
  }
};

}  // namespace

JsonValue parse_json(const std::string& text, const std::string& file, int code) {
  return JsonParser(text, file, code).parse();
}

std::string json_quote(const std::string& s) {
  std::string r = "\"";
  for (const char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c == '"')
      r += "\\\"";
    else if (c == '\\')
      r += "\\\\";
    else if (c == '\n')
      r += "\\n";
    else if (c == '\t')
      r += "\\t";
    else if (c == '\r')
      r += "\\r";
    else if (c < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      r += b;
    } else {
      r += ch;
    }
  }
  return r + "\"";
}

JsonObject::JsonObject(const JsonValue& v, std::string path, const std::string& file, int code)
    : v_(v), path_(std::move(path)), file_(file), code_(code) {
  if (v.kind != JsonValue::Obj)
    bad(path_.empty() ? "(top level)" : path_, str("expected an object, got ", json_kind_name(v.kind)));
  used_.assign(v.obj.size(), 0);
}

void JsonObject::bad(const std::string& f, const std::string& msg) const {
  throw Error(code_, str(file_, ": ", f, ": ", msg));
}

const JsonValue* JsonObject::find(const std::string& key) {
  const JsonValue* found = nullptr;
  for (size_t i = 0; i < v_.obj.size(); ++i)
    if (v_.obj[i].first == key) {
      if (found) bad(field(key), "appears more than once");
      found = &v_.obj[i].second;
      used_[i] = 1;
    }
  return found;
}

const JsonValue& JsonObject::get(const std::string& key) {
  const JsonValue* v = find(key);
  if (!v) bad(field(key), "missing");
  return *v;
}

std::string JsonObject::text(const std::string& key) {
  const JsonValue& v = get(key);
  if (v.kind != JsonValue::Str) bad(field(key), str("expected a string, got ", json_kind_name(v.kind)));
  return v.text;
}

bool JsonObject::boolean(const std::string& key) {
  const JsonValue& v = get(key);
  if (v.kind != JsonValue::Bool) bad(field(key), str("expected true or false, got ", json_kind_name(v.kind)));
  return v.b;
}

const JsonValue& JsonObject::array(const std::string& key, const char* what) {
  const JsonValue& v = get(key);
  if (v.kind != JsonValue::Arr) bad(field(key), str("expected ", what));
  return v;
}

std::vector<int64_t> JsonObject::int_array(const std::string& key, int64_t lo, int64_t hi) {
  const JsonValue& a = array(key, "an array of integers");
  std::vector<int64_t> out;
  for (const JsonValue& e : a.arr) {
    if (e.kind != JsonValue::Num || !e.integral) bad(field(key), "expected an array of integers");
    out.push_back(as_i64(e, str(field(key), "[", out.size(), "]"), lo, hi));
  }
  return out;
}

std::vector<std::string> JsonObject::string_array(const std::string& key, const char* what) {
  const JsonValue& a = array(key, what);
  std::vector<std::string> out;
  for (const JsonValue& e : a.arr) {
    if (e.kind != JsonValue::Str) bad(field(key), str("expected ", what));
    out.push_back(e.text);
  }
  return out;
}

void JsonObject::finish() const {
  for (size_t i = 0; i < v_.obj.size(); ++i)
    if (!used_[i]) bad(field(v_.obj[i].first), "unknown field");
}

int64_t JsonObject::as_i64(const JsonValue& v, const std::string& f, int64_t lo, int64_t hi) const {
  if (v.kind != JsonValue::Num || !v.integral)
    bad(f, str("expected an integer, got ", v.kind == JsonValue::Num ? v.text : json_kind_name(v.kind)));
  errno = 0;
  char* end = nullptr;
  const long long x = std::strtoll(v.text.c_str(), &end, 10);
  if (errno == ERANGE || x < lo || x > hi) bad(f, str("expected an integer in [", lo, ", ", hi, "], got ", v.text));
  return x;
}

JsonValue JsonValue::integer(int64_t v) {
  JsonValue j;
  j.kind = Num;
  j.text = std::to_string(v);
  j.integral = true;
  return j;
}
JsonValue JsonValue::string(const std::string& v) {
  JsonValue j;
  j.kind = Str;
  j.text = v;
  return j;
}
JsonValue JsonValue::boolean(bool v) {
  JsonValue j;
  j.kind = Bool;
  j.b = v;
  return j;
}
JsonValue JsonValue::array() {
  JsonValue j;
  j.kind = Arr;
  return j;
}
JsonValue JsonValue::object() {
  JsonValue j;
  j.kind = Obj;
  return j;
}
JsonValue& JsonValue::add(const std::string& key, JsonValue v) {
  obj.emplace_back(key, std::move(v));
  return *this;
}
JsonValue& JsonValue::push(JsonValue v) {
  arr.push_back(std::move(v));
  return *this;
}

namespace {

/// Printed on one line inside a multi-line array: scalars, arrays of scalars,
/// objects of those.
bool flat(const JsonValue& v) {
  if (v.scalar()) return true;
  if (v.kind == JsonValue::Arr) {
    for (const JsonValue& e : v.arr)
      if (!e.scalar()) return false;
    return true;
  }
  for (const auto& kv : v.obj)
    if (!(kv.second.scalar() || (kv.second.kind == JsonValue::Arr && flat(kv.second)))) return false;
  return true;
}

void print_inline(const JsonValue& v, std::string& out) {
  switch (v.kind) {
    case JsonValue::Null: out += "null"; return;
    case JsonValue::Num: out += v.text; return;
    case JsonValue::Str: out += json_quote(v.text); return;
    case JsonValue::Bool: out += v.b ? "true" : "false"; return;
    case JsonValue::Arr:
      out += "[";
      for (size_t k = 0; k < v.arr.size(); ++k) {
        if (k) out += ", ";
        print_inline(v.arr[k], out);
      }
      out += "]";
      return;
    case JsonValue::Obj:
      out += "{";
      for (size_t k = 0; k < v.obj.size(); ++k) {
        if (k) out += ", ";
        out += json_quote(v.obj[k].first) + ": ";
        print_inline(v.obj[k].second, out);
      }
      out += "}";
      return;
  }
}

void print_pretty(const JsonValue& v, int depth, std::string& out) {
  const std::string pad(static_cast<size_t>(2 * (depth + 1)), ' '), end(static_cast<size_t>(2 * depth), ' ');
  if (v.kind == JsonValue::Arr) {
    if (v.arr.empty()) return print_inline(v, out);
    if (flat(v)) {  // scalars: one line unless long (e.g. several warnings)
      std::string line;
      print_inline(v, line);
      if (line.size() <= 100) {
        out += line;
        return;
      }
    }
    out += "[\n";
    for (size_t k = 0; k < v.arr.size(); ++k) {
      out += pad;
      if (flat(v.arr[k]))
        print_inline(v.arr[k], out);
      else
        print_pretty(v.arr[k], depth + 1, out);
      out += k + 1 < v.arr.size() ? ",\n" : "\n";
    }
    out += end + "]";
    return;
  }
  if (v.kind == JsonValue::Obj) {
    bool scalars = true;  // an object of scalars only (e.g. per-type counts): one line
    for (const auto& kv : v.obj) scalars = scalars && kv.second.scalar();
    if (scalars) return print_inline(v, out);
    out += "{\n";
    for (size_t k = 0; k < v.obj.size(); ++k) {
      out += pad + json_quote(v.obj[k].first) + ": ";
      print_pretty(v.obj[k].second, depth + 1, out);
      out += k + 1 < v.obj.size() ? ",\n" : "\n";
    }
    out += end + "}";
    return;
  }
  print_inline(v, out);
}

}  // namespace

std::string json_inline(const JsonValue& v) {
  std::string out;
  print_inline(v, out);
  return out;
}

std::string json_pretty(const JsonValue& v) {
  std::string out;
  print_pretty(v, 0, out);
  return out;
}

}  // namespace dsonas
