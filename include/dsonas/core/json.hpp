// json.hpp — the one JSON module of dsonas: the reader (architecture files, the
// `space` attribute of model files, ImageNet manifests) and the writer of the files
// built as a tree (architecture files).
//
// parse_json(): a recursive-descent parser for RFC 8259 JSON into a JsonValue tree
// (objects keep their member order and may repeat a key; numbers keep the literal
// as written), nesting limited to 64 levels.  JsonObject: a strict reader of one
// object — typed getters that name the field on error, a repeated field refused
// when it is looked up, and finish() refusing any member that was not read.  Every
// error is one line "FILE: FIELD: message" (syntax errors: "FILE: line L, column C:
// message") thrown as dsonas::Error with the caller's exit code (2 for files a user
// passes, 3 for attributes of checkpoints).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "dsonas/core/error.hpp"

namespace dsonas {

struct JsonValue {
  enum Kind { Null, Bool, Num, Str, Arr, Obj } kind = Null;
  bool b = false;
  std::string text;  // Num: the literal as written; Str: the decoded string
  bool integral = false;
  std::vector<JsonValue> arr;
  std::vector<std::pair<std::string, JsonValue>> obj;

  // building a tree to write
  static JsonValue integer(int64_t v);
  static JsonValue string(const std::string& v);
  static JsonValue boolean(bool v);
  static JsonValue array();
  static JsonValue object();
  JsonValue& add(const std::string& key, JsonValue v);  ///< an object's next member
  JsonValue& push(JsonValue v);                         ///< an array's next element
  bool scalar() const { return kind != Arr && kind != Obj; }
};

/// The tree as text on one line: `{"a": 1, "b": [1, 2]}`.
std::string json_inline(const JsonValue& v);
/// The tree as indented text (2 spaces a level, no final newline): an object is
/// one line when all its members are scalars, else one member a line; an array is
/// one line when it holds only scalars and fits in 100 characters, else one
/// element a line, elements made of scalars and scalar arrays on one line each.
std::string json_pretty(const JsonValue& v);

/// "null", "a boolean", "a number", "a string", "an array", "an object".
const char* json_kind_name(JsonValue::Kind k);

/// Parses `text` (one JSON value, surrounding white space allowed); errors name
/// `file`, the line and the column, with exit code `code`.
JsonValue parse_json(const std::string& text, const std::string& file, int code = kExitUsage);

/// `s` as a JSON string literal (quotes, backslashes and control characters escaped).
std::string json_quote(const std::string& s);

class JsonObject {
 public:
  /// `path`: the object's field path in messages ("" = top level).
  JsonObject(const JsonValue& v, std::string path, const std::string& file, int code = kExitUsage);

  [[noreturn]] void bad(const std::string& field, const std::string& msg) const;
  std::string field(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  const std::string& path() const { return path_; }
  const std::string& file() const { return file_; }
  int code() const { return code_; }
  const JsonValue& value() const { return v_; }

  /// The member `key` (exactly once); marks it read.
  const JsonValue& get(const std::string& key);
  /// Null if absent; marks it read when present.
  const JsonValue* find(const std::string& key);
  int64_t i64(const std::string& key, int64_t lo, int64_t hi) { return as_i64(get(key), field(key), lo, hi); }
  std::string text(const std::string& key);
  bool boolean(const std::string& key);
  const JsonValue& array(const std::string& key, const char* what);
  std::vector<int64_t> int_array(const std::string& key, int64_t lo, int64_t hi);
  std::vector<std::string> string_array(const std::string& key, const char* what);
  JsonObject object(const std::string& key) { return JsonObject(get(key), field(key), file_, code_); }
  /// Refuses any member that was not read ("unknown field").
  void finish() const;

  int64_t as_i64(const JsonValue& v, const std::string& f, int64_t lo, int64_t hi) const;

 private:
  const JsonValue& v_;
  std::string path_;
  std::string file_;
  int code_;
  std::vector<uint8_t> used_;
};

}  // namespace dsonas
