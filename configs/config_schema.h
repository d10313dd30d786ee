// Internal to configs/: the table of every config key. The loader, `--set` overrides, unknown-key
// suggestions and config_to_yaml all walk this one table, so they can never disagree about which
// keys exist, what type they have or which values are allowed.
#pragma once

#include <yaml-cpp/yaml.h>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "configs/config.h"

namespace peftrun::config_detail {

// A problem found while reading one value; `mark` points into the YAML being read (it may be
// null, in which case the loader uses the key's position).
struct ValueProblem {
  YAML::Mark mark;
  std::string message;  // "got X, expected Y"
};

struct ReadContext {
  std::string base_dir;  // relative input paths resolve against this; "" = working directory
};

struct KeySpec {
  std::string path;     // dotted, e.g. "adapter.r"
  std::string section;  // "adapter"; "" for top-level keys such as output_dir
  std::string name;     // "r"
  // Parses `value` into `config`. On any problem it leaves `config` untouched and appends to
  // `problems`, so a bad value never half-applies.
  std::function<void(const YAML::Node& value, Config& config, const ReadContext& context,
                     std::vector<ValueProblem>& problems)>
      read;
  // The current value as YAML text that `read` accepts back unchanged.
  std::function<std::string(const Config& config)> write;
  // Checks the final value on its own: "" when allowed, else "what was wrong, what was expected".
  std::function<std::string(const Config& config)> check;
};

// A rule that relates several keys; it runs after every source has been applied.
struct CrossCheck {
  std::string key;  // the key the error is reported against
  std::vector<std::string>
      uses;  // other keys it reads (the error falls back to where they were set)
  std::function<std::string(const Config& config)> check;  // "" when fine
};

// Every key, in the order config_to_yaml prints them (sections in file order, then top-level keys).
const std::vector<KeySpec>& config_schema();
// nullptr when `path` is not a key.
const KeySpec* find_key(std::string_view path);
// "model", "adapter", ..., in file order.
const std::vector<std::string>& section_names();
bool is_section(std::string_view name);
const std::vector<CrossCheck>& cross_checks();

// The best guess for a mistyped key path ("adapter.rank" -> "adapter.r", "adapter.lr" ->
// "optim.lr"), or "" when nothing is close enough to be a useful hint.
std::string suggest_key(std::string_view typed_path);
// The candidate closest to `typed` by edit distance (case-insensitive), or "" when none is close.
std::string closest_name(std::string_view typed, const std::vector<std::string>& candidates);

// Shortest text that parses back to exactly `value`, always with a '.' or exponent so YAML tools
// read it as a float ("16.0", "1.0e-08").
std::string format_double(double value);

}  // namespace peftrun::config_detail
