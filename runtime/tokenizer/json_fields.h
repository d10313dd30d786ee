// Reading tokenizer.json / tokenizer_config.json fields with errors that say where: every
// accessor takes `where` ("/m/tokenizer.json: pre_tokenizer.pretokenizers[1]") and throws
// std::runtime_error("<where>.<key>: expected <type>, got <json>") on a missing or mistyped key.
#pragma once

#include <nlohmann/json.hpp>

#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/tokenizer/regex.h"

namespace peftrun::tok {

using Json = nlohmann::json;

[[noreturn]] inline void json_fail(const std::string& where, const std::string& message) {
  throw std::runtime_error(where + ": " + message);
}

inline std::string json_excerpt(const Json& v) {
  std::string s = v.dump();
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

inline const Json& json_field(const Json& obj, const char* key, const std::string& where) {
  if (!obj.is_object()) json_fail(where, "expected an object, got " + json_excerpt(obj));
  const auto it = obj.find(key);
  if (it == obj.end()) json_fail(where, std::string("missing key '") + key + "'");
  return *it;
}

inline std::string json_string(const Json& obj, const char* key, const std::string& where) {
  const Json& v = json_field(obj, key, where);
  if (!v.is_string()) {
    json_fail(where + "." + key, "expected a string, got " + json_excerpt(v));
  }
  return v.get<std::string>();
}

// Absent or null keys give `fallback`.
inline bool json_bool_or(const Json& obj, const char* key, bool fallback,
                         const std::string& where) {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) {
    json_fail(where + "." + key, "expected true or false, got " + json_excerpt(*it));
  }
  return it->get<bool>();
}

inline std::string json_string_or(const Json& obj, const char* key, const std::string& fallback,
                                  const std::string& where) {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_string()) {
    json_fail(where + "." + key, "expected a string, got " + json_excerpt(*it));
  }
  return it->get<std::string>();
}

inline const Json& json_array(const Json& obj, const char* key, const std::string& where) {
  const Json& v = json_field(obj, key, where);
  if (!v.is_array()) json_fail(where + "." + key, "expected a list, got " + json_excerpt(v));
  return v;
}

// A "Sequence" component's list `key`, each entry parsed by `parse(entry, where)`; null
// entries (what the parsers return for JSON null) are left out.
template <class Parse>
auto json_sequence(const Json& spec, const char* key, const std::string& where, Parse parse) {
  const Json& list = json_array(spec, key, where);
  std::vector<decltype(parse(list[0], where))> steps;
  for (std::size_t i = 0; i < list.size(); ++i) {
    auto step = parse(list[i], where + "." + key + "[" + std::to_string(i) + "]");
    if (step) steps.push_back(std::move(step));
  }
  return steps;
}

// The "type" of a component ({"type": "ByteLevel", ...}).
inline std::string json_type(const Json& obj, const std::string& where) {
  return json_string(obj, "type", where);
}

// A Split / Replace pattern: {"String": "literal"} or {"Regex": "pattern"}.
inline Regex json_pattern(const Json& obj, const char* key, const std::string& where) {
  const Json& p = json_field(obj, key, where);
  const std::string at = where + "." + key;
  if (p.is_object() && p.contains("String") && p["String"].is_string()) {
    return Regex::literal(p["String"].get<std::string>(), at);
  }
  if (p.is_object() && p.contains("Regex") && p["Regex"].is_string()) {
    return Regex::pattern(p["Regex"].get<std::string>(), at);
  }
  json_fail(at, "expected {\"String\": ...} or {\"Regex\": ...}, got " + json_excerpt(p));
}

}  // namespace peftrun::tok
