// The key table: one entry per config key with its parser, printer and range rule, plus the
// cross-field rules and the "did you mean" logic that searches the same table.
#include "configs/config_schema.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <system_error>
#include <type_traits>
#include <utility>

namespace peftrun::config_detail {
namespace {

namespace fs = std::filesystem;

constexpr double kInf = std::numeric_limits<double>::infinity();

std::string lowercase(std::string_view text);
std::string prefix_match(std::string_view typed, const std::vector<std::string>& candidates);

// ---------------------------------------------------------------------------------------------
// Reading values. Numbers and booleans must be plain (unquoted) scalars: `r: "8"` is a string in
// YAML, and silently converting it would hide a quoting mistake the user probably did not intend.
// ---------------------------------------------------------------------------------------------

// yaml-cpp tags untagged plain scalars "?" and quoted or block scalars "!".
bool is_plain(const YAML::Node& node) {
  return node.Tag() == "?";
}

std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Scalar:
      return is_plain(node) ? "'" + node.Scalar() + "'" : "the string \"" + node.Scalar() + "\"";
    default:
      return "nothing";
  }
}

ValueProblem got(const YAML::Node& node, const std::string& expected) {
  if (!node.IsDefined() || node.IsNull()) {
    return {node.Mark(), "no value given, expected " + expected};
  }
  return {node.Mark(), "got " + describe(node) + ", expected " + expected};
}

bool plain_scalar(const YAML::Node& node, const std::string& expected,
                  std::vector<ValueProblem>& problems, std::string& text) {
  if (!node.IsScalar() || !is_plain(node)) {
    problems.push_back(got(node, expected));
    return false;
  }
  text = node.Scalar();
  return true;
}

// YAML allows a leading '+'; std::from_chars does not.
std::string_view strip_plus(std::string_view text) {
  if (text.size() > 1 && text[0] == '+' && text[1] != '-') text.remove_prefix(1);
  return text;
}

template <class T>
bool read_integer(const YAML::Node& node, std::vector<ValueProblem>& problems, T& out) {
  const std::string expected = std::is_signed_v<T> ? "an integer" : "a non-negative integer";
  std::string text;
  if (!plain_scalar(node, expected, problems, text)) return false;
  const std::string_view digits = strip_plus(text);
  T value{};
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec == std::errc::result_out_of_range) {
    problems.push_back({node.Mark(), "got '" + text + "', expected " + expected + " between " +
                                         std::to_string(std::numeric_limits<T>::min()) + " and " +
                                         std::to_string(std::numeric_limits<T>::max())});
    return false;
  }
  if (ec != std::errc() || end != digits.data() + digits.size()) {
    problems.push_back(got(node, expected));
    return false;
  }
  out = value;
  return true;
}

bool read_number(const YAML::Node& node, std::vector<ValueProblem>& problems, double& out) {
  std::string text;
  if (!plain_scalar(node, "a number", problems, text)) return false;
  const std::string_view digits = strip_plus(text);
  double value = 0.0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec != std::errc() || end != digits.data() + digits.size()) {
    problems.push_back(got(node, "a number"));
    return false;
  }
  if (!std::isfinite(value)) {
    problems.push_back(got(node, "a finite number"));
    return false;
  }
  out = value;
  return true;
}

// Only true/false: YAML 1.1's yes/no/on/off are a classic source of surprises (`no` -> false).
bool read_bool(const YAML::Node& node, std::vector<ValueProblem>& problems, bool& out) {
  std::string text;
  if (!plain_scalar(node, "true or false", problems, text)) return false;
  if (text != "true" && text != "false") {
    problems.push_back(got(node, "true or false"));
    return false;
  }
  out = text == "true";
  return true;
}

// Strings accept plain or quoted scalars; an empty value (`eval:`) means the empty string, which is
// how optional paths are switched off.
bool read_string(const YAML::Node& node, std::vector<ValueProblem>& problems, std::string& out) {
  if (node.IsNull()) {
    out.clear();
    return true;
  }
  if (!node.IsScalar()) {
    problems.push_back(got(node, "a string"));
    return false;
  }
  out = node.Scalar();
  return true;
}

std::string resolve_path(const std::string& base_dir, const std::string& text) {
  fs::path path(text);
  if (path.is_relative() && !base_dir.empty()) path = fs::path(base_dir) / path;
  // Absolute paths make the printed config valid from any working directory.
  std::error_code ec;
  fs::path absolute = fs::absolute(path, ec);
  if (ec) absolute = path;
  return absolute.lexically_normal().string();
}

// ---------------------------------------------------------------------------------------------
// Writing values.
// ---------------------------------------------------------------------------------------------

std::string format_number(double value) {
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

bool looks_like_non_string(const std::string& text) {
  std::string lower;
  for (char ch : text) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  static const std::vector<std::string> keywords = {"true", "false", "yes", "no", "on",
                                                    "off",  "null",  "y",   "n",  "~"};
  if (std::find(keywords.begin(), keywords.end(), lower) != keywords.end()) return true;
  double ignored = 0.0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), ignored);
  return ec == std::errc() && end == text.data() + text.size();
}

// Plain when that is unambiguous for any YAML reader, double-quoted otherwise.
std::string yaml_string(const std::string& text) {
  auto safe_char = [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '.' || ch == '/' ||
           ch == '-' || ch == '+';
  };
  const bool plain = !text.empty() && text[0] != '-' && text[0] != '+' &&
                     std::all_of(text.begin(), text.end(), safe_char) &&
                     !looks_like_non_string(text);
  if (plain) return text;
  std::string quoted = "\"";
  for (char ch : text) {
    const auto byte = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      quoted += '\\';
      quoted += ch;
    } else if (byte < 0x20 || byte == 0x7f) {
      static const char* hex = "0123456789abcdef";
      quoted += "\\x";
      quoted += hex[byte >> 4];
      quoted += hex[byte & 0xf];
    } else {
      quoted += ch;
    }
  }
  return quoted + "\"";
}

std::string join(const std::vector<std::string>& items, const std::string& separator) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) out += (i ? separator : "") + items[i];
  return out;
}

// "[a, b]". Appends rather than chaining operator+ on a literal, which trips GCC 12's
// -Wrestrict false positive.
std::string flow_list(const std::vector<std::string>& items) {
  std::string out = "[";
  out += join(items, ", ");
  out += "]";
  return out;
}

// ---------------------------------------------------------------------------------------------
// Ranges: one rule object both checks a value and says what was expected.
// ---------------------------------------------------------------------------------------------

struct Range {
  double lo = -kInf;
  double hi = kInf;
  bool lo_inclusive = true;
  bool hi_inclusive = true;

  bool contains(double v) const {
    return (lo_inclusive ? v >= lo : v > lo) && (hi_inclusive ? v <= hi : v < hi);
  }
  std::string describe() const {
    if (hi == kInf) return (lo_inclusive ? ">= " : "> ") + format_number(lo);
    return std::string("in ") + (lo_inclusive ? "[" : "(") + format_number(lo) + ", " +
           format_number(hi) + (hi_inclusive ? "]" : ")");
  }
};

Range greater_than(double lo) {
  return {lo, kInf, false, true};
}
Range at_least(double lo) {
  return {lo, kInf, true, true};
}
Range zero_to_one_exclusive() {
  return {0.0, 1.0, true, false};
}
Range zero_to_one() {
  return {0.0, 1.0, true, true};
}

std::string range_problem(const std::string& value_text, double value, const Range& range,
                          const char* kind) {
  if (range.contains(value)) return "";
  return value_text + " is out of range, expected " + kind + " " + range.describe();
}

// ---------------------------------------------------------------------------------------------
// Key builders. `get` is a generic lambda `[](auto& c) -> auto& { return c.adapter.r; }`, so
// one accessor serves both reading (Config&) and writing/checking (const Config&).
// ---------------------------------------------------------------------------------------------

KeySpec new_spec(std::string path) {
  KeySpec spec;
  const auto dot = path.rfind('.');
  spec.section = dot == std::string::npos ? "" : path.substr(0, dot);
  spec.name = dot == std::string::npos ? path : path.substr(dot + 1);
  spec.path = std::move(path);
  spec.check = [](const Config&) { return std::string(); };
  return spec;
}

template <class Get>
KeySpec int_key(std::string path, Get get, Range range) {
  KeySpec spec = new_spec(std::move(path));
  spec.read = [get](const YAML::Node& v, Config& c, const ReadContext&,
                    std::vector<ValueProblem>& problems) {
    int value = 0;
    if (read_integer(v, problems, value)) get(c) = value;
  };
  spec.write = [get](const Config& c) { return std::to_string(get(c)); };
  spec.check = [get, range](const Config& c) {
    return range_problem(std::to_string(get(c)), get(c), range, "an integer");
  };
  return spec;
}

template <class Get>
KeySpec uint64_key(std::string path, Get get) {
  KeySpec spec = new_spec(std::move(path));
  spec.read = [get](const YAML::Node& v, Config& c, const ReadContext&,
                    std::vector<ValueProblem>& problems) {
    std::uint64_t value = 0;
    if (read_integer(v, problems, value)) get(c) = value;
  };
  spec.write = [get](const Config& c) { return std::to_string(get(c)); };
  return spec;
}

template <class Get>
KeySpec double_key(std::string path, Get get, Range range) {
  KeySpec spec = new_spec(std::move(path));
  spec.read = [get](const YAML::Node& v, Config& c, const ReadContext&,
                    std::vector<ValueProblem>& problems) {
    double value = 0.0;
    if (read_number(v, problems, value)) get(c) = value;
  };
  spec.write = [get](const Config& c) { return format_double(get(c)); };
  spec.check = [get, range](const Config& c) {
    return range_problem(format_number(get(c)), get(c), range, "a number");
  };
  return spec;
}

// A list of finite numbers > 0 (longrope's factors), or [].
template <class Get>
KeySpec positive_list_key(std::string path, Get get) {
  KeySpec spec = new_spec(std::move(path));
  spec.read = [get](const YAML::Node& v, Config& c, const ReadContext&,
                    std::vector<ValueProblem>& problems) {
    if (!v.IsSequence()) {
      problems.push_back(got(v, "a list of numbers > 0"));
      return;
    }
    std::vector<double> values;
    for (const YAML::Node& item : v) {
      double value = 0.0;
      if (!read_number(item, problems, value)) return;
      if (!(value > 0) || !std::isfinite(value)) {
        problems.push_back(got(item, "a finite number > 0"));
        return;
      }
      values.push_back(value);
    }
    get(c) = std::move(values);
  };
  spec.write = [get](const Config& c) {
    std::vector<std::string> items;
    for (const double x : get(c)) items.push_back(format_double(x));
    return flow_list(items);
  };
  return spec;
}

template <class Get>
KeySpec bool_key(std::string path, Get get) {
  KeySpec spec = new_spec(std::move(path));
  spec.read = [get](const YAML::Node& v, Config& c, const ReadContext&,
                    std::vector<ValueProblem>& problems) {
    bool value = false;
    if (read_bool(v, problems, value)) get(c) = value;
  };
  spec.write = [get](const Config& c) { return std::string(get(c) ? "true" : "false"); };
  return spec;
}

template <class Get>
KeySpec string_key(std::string path, Get get, bool required) {
  KeySpec spec = new_spec(std::move(path));
  spec.read = [get](const YAML::Node& v, Config& c, const ReadContext&,
                    std::vector<ValueProblem>& problems) {
    std::string value;
    if (read_string(v, problems, value)) get(c) = value;
  };
  spec.write = [get](const Config& c) { return yaml_string(get(c)); };
  if (required) {
    spec.check = [get](const Config& c) {
      return get(c).empty() ? std::string("is empty, expected a non-empty string") : std::string();
    };
  }
  return spec;
}

// kTokenFile: data.train/eval (a token file or a JSONL file, per data.format);
// kTokenizer: a folder holding tokenizer.json, or the file itself.
enum class PathKind { kTokenFile, kCheckpointDir, kTokenizer };

std::string expected_path_kind(PathKind kind, const Config& c, const std::string& key) {
  switch (kind) {
    case PathKind::kTokenFile: {
      const DataFormat f = key == "data.eval" ? c.data.effective_eval_format() : c.data.format;
      return f == DataFormat::kTokens ? "a token file" : "a JSONL file";
    }
    case PathKind::kCheckpointDir:
      return "a checkpoint folder";
    case PathKind::kTokenizer:
      return "a folder with tokenizer.json, or a tokenizer.json file";
  }
  return "";
}

// An input path: resolved against the config's folder when read, and checked for existence.
template <class Get>
KeySpec path_key(std::string path, Get get, PathKind kind, bool required) {
  KeySpec spec = new_spec(std::move(path));
  spec.read = [get](const YAML::Node& v, Config& c, const ReadContext& context,
                    std::vector<ValueProblem>& problems) {
    std::string value;
    if (!read_string(v, problems, value)) return;
    get(c) = value.empty() ? value : resolve_path(context.base_dir, value);
  };
  spec.write = [get](const Config& c) { return yaml_string(get(c)); };
  const std::string key = spec.path;
  spec.check = [get, kind, required, key](const Config& c) -> std::string {
    const std::string& value = get(c);
    const std::string expected = expected_path_kind(kind, c, key);
    if (value.empty()) {
      return required ? std::string("missing, expected the path of ") + expected : "";
    }
    std::error_code ec;
    const fs::file_status status = fs::status(value, ec);
    if (!fs::exists(status)) return "'" + value + "' does not exist, expected " + expected;
    if (kind == PathKind::kTokenFile && fs::is_directory(status)) {
      return "'" + value + "' is a directory, expected " + expected;
    }
    if (kind == PathKind::kTokenizer && fs::is_directory(status) &&
        !fs::exists(fs::path(value) / "tokenizer.json", ec)) {
      return "'" + value + "' has no tokenizer.json, expected " + expected;
    }
    if (kind == PathKind::kCheckpointDir && !fs::is_directory(status)) {
      return "'" + value + "' is not a directory, expected " + expected;
    }
    return "";
  };
  return spec;
}

// Words users reach for that are not close in spelling to the value they mean ("gpu" is one
// letter from "cpu" but means "cuda").
using ValueAliases = std::vector<std::pair<std::string, std::string>>;

template <class E, class Get>
KeySpec enum_key(std::string path, Get get, std::vector<E> values, ValueAliases aliases = {}) {
  KeySpec spec = new_spec(std::move(path));
  spec.read = [get, values, aliases](const YAML::Node& v, Config& c, const ReadContext&,
                                     std::vector<ValueProblem>& problems) {
    std::vector<std::string> names;
    for (E e : values) names.push_back(to_string(e));
    const std::string expected = "one of " + join(names, ", ");
    if (!v.IsScalar()) {
      problems.push_back(got(v, expected));
      return;
    }
    for (E e : values) {
      if (v.Scalar() == to_string(e)) {
        get(c) = e;
        return;
      }
    }
    std::string message = "unknown value '" + v.Scalar() + "', expected " + expected;
    std::string hint;
    for (const auto& [alias, meant] : aliases) {
      if (alias == lowercase(v.Scalar())) hint = meant;
    }
    if (hint.empty()) hint = closest_name(v.Scalar(), names);
    if (hint.empty()) hint = prefix_match(v.Scalar(), names);
    if (!hint.empty()) message += "; did you mean '" + hint + "'?";
    problems.push_back({v.Mark(), message});
  };
  spec.write = [get](const Config& c) { return std::string(to_string(get(c))); };
  return spec;
}

// adapter.target_modules: a list of known module names, or "all-linear". Stored in layer order
// (known_target_modules()) so that equivalent lists give identical configs. Which names the
// model has (q_proj or qkv_proj...) is checked once the model is known (a cross-check);
// "all-linear" stores every known name, and the loader keeps the model's own.
KeySpec target_modules_key() {
  KeySpec spec = new_spec("adapter.target_modules");
  spec.read = [](const YAML::Node& v, Config& c, const ReadContext&,
                 std::vector<ValueProblem>& problems) {
    const std::vector<std::string>& all = known_target_modules();
    const std::string names = join(all, ", ");
    if (v.IsScalar() && v.Scalar() == "all-linear") {
      c.adapter.target_modules = all;
      return;
    }
    if (!v.IsSequence()) {
      problems.push_back(got(v, "a list of module names (" + names + ") or 'all-linear'"));
      return;
    }
    if (v.size() == 0) {
      problems.push_back({v.Mark(), "got an empty list, expected at least one of " + names});
      return;
    }
    std::vector<bool> chosen(all.size(), false);
    bool ok = true;
    for (const YAML::Node& item : v) {
      if (!item.IsScalar()) {
        problems.push_back(got(item, "a module name"));
        ok = false;
        continue;
      }
      const auto found = std::find(all.begin(), all.end(), item.Scalar());
      if (found == all.end()) {
        std::string message = "unknown module '" + item.Scalar() + "', expected one of " + names;
        const std::string hint = closest_name(item.Scalar(), all);
        if (!hint.empty()) message += "; did you mean '" + hint + "'?";
        problems.push_back({item.Mark(), message});
        ok = false;
        continue;
      }
      const auto index = static_cast<std::size_t>(found - all.begin());
      if (chosen[index]) {
        problems.push_back(
            {item.Mark(), "'" + item.Scalar() + "' is listed twice, expected each module once"});
        ok = false;
      }
      chosen[index] = true;
    }
    if (!ok) return;
    c.adapter.target_modules.clear();
    for (std::size_t i = 0; i < all.size(); ++i) {
      if (chosen[i]) c.adapter.target_modules.push_back(all[i]);
    }
  };
  spec.write = [](const Config& c) { return flow_list(c.adapter.target_modules); };
  return spec;
}

// model.layer_types: a list of full_attention / sliding_attention, one per layer (checked
// against n_layers among the cross-checks), or [] for "the same in every layer".
KeySpec layer_types_key() {
  KeySpec spec = new_spec("model.layer_types");
  spec.read = [](const YAML::Node& v, Config& c, const ReadContext&,
                 std::vector<ValueProblem>& problems) {
    const std::vector<std::string> kinds = {"full_attention", "sliding_attention"};
    if (!v.IsSequence()) {
      problems.push_back(got(v, "a list of full_attention / sliding_attention, one per layer"));
      return;
    }
    std::vector<std::string> types;
    for (const YAML::Node& item : v) {
      if (!item.IsScalar() || std::find(kinds.begin(), kinds.end(), item.Scalar()) == kinds.end()) {
        problems.push_back(got(item, "full_attention or sliding_attention"));
        return;
      }
      types.push_back(item.Scalar());
    }
    c.model.layer_types = std::move(types);
  };
  spec.write = [](const Config& c) { return flow_list(c.model.layer_types); };
  return spec;
}

// model.no_rope_layers: a list of 1 (the layer applies RoPE) / 0 (NoPE), one per layer (checked
// against n_layers below), or [].
KeySpec no_rope_layers_key() {
  KeySpec spec = new_spec("model.no_rope_layers");
  spec.read = [](const YAML::Node& v, Config& c, const ReadContext&,
                 std::vector<ValueProblem>& problems) {
    if (!v.IsSequence()) {
      problems.push_back(got(v, "a list of 1 (RoPE) / 0 (no RoPE), one per layer"));
      return;
    }
    std::vector<int> flags;
    for (const YAML::Node& item : v) {
      if (!item.IsScalar() || (item.Scalar() != "0" && item.Scalar() != "1")) {
        problems.push_back(got(item, "1 (the layer applies RoPE) or 0 (it does not)"));
        return;
      }
      flags.push_back(item.Scalar() == "1" ? 1 : 0);
    }
    c.model.no_rope_layers = std::move(flags);
  };
  spec.write = [](const Config& c) {
    std::vector<std::string> items;
    for (const int f : c.model.no_rope_layers) items.push_back(std::to_string(f));
    return flow_list(items);
  };
  return spec;
}

// optim.betas: the YAML face of OptimConfig::beta1/beta2.
KeySpec betas_key() {
  KeySpec spec = new_spec("optim.betas");
  spec.read = [](const YAML::Node& v, Config& c, const ReadContext&,
                 std::vector<ValueProblem>& problems) {
    const std::string expected = "a list of two numbers [beta1, beta2]";
    if (!v.IsSequence()) {
      problems.push_back(got(v, expected));
      return;
    }
    if (v.size() != 2) {
      problems.push_back(
          {v.Mark(), "got " + std::to_string(v.size()) + " value(s), expected " + expected});
      return;
    }
    double betas[2] = {0.0, 0.0};
    const bool ok0 = read_number(v[0], problems, betas[0]);
    const bool ok1 = read_number(v[1], problems, betas[1]);
    if (!ok0 || !ok1) return;
    c.optim.beta1 = betas[0];
    c.optim.beta2 = betas[1];
  };
  spec.write = [](const Config& c) {
    return flow_list({format_double(c.optim.beta1), format_double(c.optim.beta2)});
  };
  spec.check = [](const Config& c) -> std::string {
    const double betas[2] = {c.optim.beta1, c.optim.beta2};
    for (int i = 0; i < 2; ++i) {
      const std::string problem =
          range_problem("beta" + std::to_string(i + 1) + " = " + format_number(betas[i]), betas[i],
                        zero_to_one_exclusive(), "a number");
      if (!problem.empty()) return problem;
    }
    return "";
  };
  return spec;
}

std::vector<KeySpec> build_schema() {
  std::vector<KeySpec> keys;
  // model
  keys.push_back(path_key(
      "model.path", [](auto& c) -> auto& { return c.model.path; }, PathKind::kCheckpointDir,
      false));
  keys.push_back(int_key(
      "model.dim", [](auto& c) -> auto& { return c.model.dim; }, greater_than(0)));
  keys.push_back(int_key(
      "model.n_layers", [](auto& c) -> auto& { return c.model.n_layers; }, greater_than(0)));
  keys.push_back(int_key(
      "model.n_heads", [](auto& c) -> auto& { return c.model.n_heads; }, greater_than(0)));
  keys.push_back(int_key(
      "model.n_kv_heads", [](auto& c) -> auto& { return c.model.n_kv_heads; }, greater_than(0)));
  keys.push_back(int_key(
      "model.head_dim", [](auto& c) -> auto& { return c.model.explicit_head_dim; }, at_least(0)));
  keys.push_back(int_key(
      "model.ffn_dim", [](auto& c) -> auto& { return c.model.ffn_dim; }, greater_than(0)));
  keys.push_back(int_key(
      "model.vocab_size", [](auto& c) -> auto& { return c.model.vocab_size; }, greater_than(0)));
  keys.push_back(int_key(
      "model.max_seq_len", [](auto& c) -> auto& { return c.model.max_seq_len; }, greater_than(0)));
  keys.push_back(double_key(
      "model.rope_theta", [](auto& c) -> auto& { return c.model.rope_theta; }, greater_than(0)));
  keys.push_back(enum_key(
      "model.rope_scaling", [](auto& c) -> auto& { return c.model.rope_scaling; },
      std::vector<RopeScaling>{RopeScaling::kNone, RopeScaling::kLinear, RopeScaling::kDynamic,
                               RopeScaling::kLlama3, RopeScaling::kYarn, RopeScaling::kLongrope},
      ValueAliases{{"default", "none"}, {"null", "none"}}));
  keys.push_back(double_key(
      "model.rope_factor", [](auto& c) -> auto& { return c.model.rope_factor; }, greater_than(0)));
  keys.push_back(double_key(
      "model.rope_low_freq_factor", [](auto& c) -> auto& { return c.model.rope_low_freq_factor; },
      greater_than(0)));
  keys.push_back(double_key(
      "model.rope_high_freq_factor", [](auto& c) -> auto& { return c.model.rope_high_freq_factor; },
      greater_than(0)));
  keys.push_back(int_key(
      "model.rope_original_max_seq_len",
      [](auto& c) -> auto& { return c.model.rope_original_max_seq_len; }, at_least(0)));
  keys.push_back(double_key(
      "model.rope_beta_fast", [](auto& c) -> auto& { return c.model.rope_beta_fast; },
      greater_than(0)));
  keys.push_back(double_key(
      "model.rope_beta_slow", [](auto& c) -> auto& { return c.model.rope_beta_slow; },
      greater_than(0)));
  keys.push_back(double_key(
      "model.rope_attention_factor", [](auto& c) -> auto& { return c.model.rope_attention_factor; },
      at_least(0)));
  keys.push_back(bool_key(
      "model.rope_truncate", [](auto& c) -> auto& { return c.model.rope_truncate; }));
  keys.push_back(double_key(
      "model.partial_rotary_factor", [](auto& c) -> auto& { return c.model.partial_rotary_factor; },
      Range{0, 1, false, true}));
  keys.push_back(positive_list_key(
      "model.rope_short_factor", [](auto& c) -> auto& { return c.model.rope_short_factor; }));
  keys.push_back(positive_list_key(
      "model.rope_long_factor", [](auto& c) -> auto& { return c.model.rope_long_factor; }));
  keys.push_back(bool_key(
      "model.tie_embeddings", [](auto& c) -> auto& { return c.model.tie_embeddings; }));
  keys.push_back(bool_key(
      "model.qk_norm", [](auto& c) -> auto& { return c.model.qk_norm; }));
  keys.push_back(bool_key(
      "model.qk_norm_full_width", [](auto& c) -> auto& { return c.model.qk_norm_full_width; }));
  keys.push_back(enum_key(
      "model.mlp_activation", [](auto& c) -> auto& { return c.model.mlp_activation; },
      std::vector<MlpActivation>{MlpActivation::kSilu, MlpActivation::kGeluTanh},
      ValueAliases{{"gelu_pytorch_tanh", "gelu_tanh"}}));
  keys.push_back(bool_key(
      "model.norm_one_plus_weight", [](auto& c) -> auto& { return c.model.norm_one_plus_weight; }));
  keys.push_back(bool_key(
      "model.scale_embeddings", [](auto& c) -> auto& { return c.model.scale_embeddings; }));
  keys.push_back(bool_key(
      "model.sandwich_norms", [](auto& c) -> auto& { return c.model.sandwich_norms; }));
  keys.push_back(bool_key(
      "model.input_norms", [](auto& c) -> auto& { return c.model.input_norms; }));
  keys.push_back(bool_key(
      "model.fused_projections", [](auto& c) -> auto& { return c.model.fused_projections; }));
  keys.push_back(double_key(
      "model.query_pre_attn_scalar", [](auto& c) -> auto& { return c.model.query_pre_attn_scalar; },
      at_least(0)));
  keys.push_back(double_key(
      "model.rope_local_theta", [](auto& c) -> auto& { return c.model.rope_local_theta; },
      at_least(0)));
  keys.push_back(double_key(
      "model.attn_logit_softcapping",
      [](auto& c) -> auto& { return c.model.attn_logit_softcapping; }, at_least(0)));
  keys.push_back(double_key(
      "model.final_logit_softcapping",
      [](auto& c) -> auto& { return c.model.final_logit_softcapping; }, at_least(0)));
  keys.push_back(double_key(
      "model.embedding_multiplier", [](auto& c) -> auto& { return c.model.embedding_multiplier; },
      greater_than(0)));
  keys.push_back(double_key(
      "model.residual_multiplier", [](auto& c) -> auto& { return c.model.residual_multiplier; },
      greater_than(0)));
  keys.push_back(double_key(
      "model.attention_multiplier", [](auto& c) -> auto& { return c.model.attention_multiplier; },
      at_least(0)));
  keys.push_back(double_key(
      "model.logits_scaling", [](auto& c) -> auto& { return c.model.logits_scaling; },
      greater_than(0)));
  keys.push_back(int_key(
      "model.sliding_window", [](auto& c) -> auto& { return c.model.sliding_window; },
      at_least(0)));
  keys.push_back(layer_types_key());
  keys.push_back(no_rope_layers_key());
  keys.push_back(double_key(
      "model.norm_eps", [](auto& c) -> auto& { return c.model.norm_eps; }, greater_than(0)));
  keys.push_back(double_key(
      "model.init_std", [](auto& c) -> auto& { return c.model.init_std; }, greater_than(0)));
  // adapter
  keys.push_back(enum_key(
      "adapter.type", [](auto& c) -> auto& { return c.adapter.type; },
      std::vector<AdapterType>{AdapterType::kLora, AdapterType::kDora, AdapterType::kAdaLora}));
  keys.push_back(int_key(
      "adapter.r", [](auto& c) -> auto& { return c.adapter.r; }, greater_than(0)));
  keys.push_back(double_key(
      "adapter.alpha", [](auto& c) -> auto& { return c.adapter.alpha; }, greater_than(0)));
  keys.push_back(double_key(
      "adapter.dropout", [](auto& c) -> auto& { return c.adapter.dropout; },
      zero_to_one_exclusive()));
  keys.push_back(target_modules_key());
  keys.push_back(bool_key(
      "adapter.use_rslora", [](auto& c) -> auto& { return c.adapter.use_rslora; }));
  keys.push_back(path_key(
      "adapter.init_from", [](auto& c) -> auto& { return c.adapter.init_from; },
      PathKind::kCheckpointDir, false));
  keys.push_back(int_key(
      "adapter.init_r", [](auto& c) -> auto& { return c.adapter.init_r; }, greater_than(0)));
  keys.push_back(int_key(
      "adapter.target_r", [](auto& c) -> auto& { return c.adapter.target_r; }, greater_than(0)));
  keys.push_back(int_key(
      "adapter.tinit", [](auto& c) -> auto& { return c.adapter.tinit; }, at_least(0)));
  keys.push_back(int_key(
      "adapter.tfinal", [](auto& c) -> auto& { return c.adapter.tfinal; }, at_least(0)));
  keys.push_back(int_key(
      "adapter.deltaT", [](auto& c) -> auto& { return c.adapter.deltaT; }, greater_than(0)));
  keys.push_back(double_key(
      "adapter.beta1", [](auto& c) -> auto& { return c.adapter.beta1; }, zero_to_one_exclusive()));
  keys.push_back(double_key(
      "adapter.beta2", [](auto& c) -> auto& { return c.adapter.beta2; }, zero_to_one_exclusive()));
  keys.push_back(double_key(
      "adapter.orth_reg_weight", [](auto& c) -> auto& { return c.adapter.orth_reg_weight; },
      at_least(0)));
  keys.push_back(int_key(
      "adapter.total_step", [](auto& c) -> auto& { return c.adapter.total_step; }, at_least(0)));
  // data
  keys.push_back(path_key(
      "data.train", [](auto& c) -> auto& { return c.data.train; }, PathKind::kTokenFile, true));
  keys.push_back(path_key(
      "data.eval", [](auto& c) -> auto& { return c.data.eval; }, PathKind::kTokenFile, false));
  keys.push_back(int_key(
      "data.seq_len", [](auto& c) -> auto& { return c.data.seq_len; }, greater_than(0)));
  keys.push_back(int_key(
      "data.eval_batches", [](auto& c) -> auto& { return c.data.eval_batches; }, greater_than(0)));
  const std::vector<DataFormat> formats = {DataFormat::kTokens, DataFormat::kText,
                                           DataFormat::kPromptCompletion, DataFormat::kChat};
  keys.push_back(enum_key(
      "data.format", [](auto& c) -> auto& { return c.data.format; }, formats,
      ValueAliases{{"jsonl", "text"},
                   {"completion", "prompt_completion"},
                   {"messages", "chat"},
                   {"tok", "tokens"}}));
  std::vector<DataFormat> eval_formats = formats;
  eval_formats.insert(eval_formats.begin(), DataFormat::kSame);
  keys.push_back(enum_key(
      "data.eval_format", [](auto& c) -> auto& { return c.data.eval_format; }, eval_formats));
  keys.push_back(path_key(
      "data.tokenizer", [](auto& c) -> auto& { return c.data.tokenizer; }, PathKind::kTokenizer,
      false));
  keys.push_back(bool_key(
      "data.packing", [](auto& c) -> auto& { return c.data.packing; }));
  keys.push_back(bool_key(
      "data.skip_bad_lines", [](auto& c) -> auto& { return c.data.skip_bad_lines; }));
  keys.push_back(enum_key(
      "data.chat_template", [](auto& c) -> auto& { return c.data.chat_template; },
      std::vector<ChatTemplate>{ChatTemplate::kAuto, ChatTemplate::kChatml, ChatTemplate::kLlama3,
                                ChatTemplate::kLlama2, ChatTemplate::kMistral,
                                ChatTemplate::kGemma},
      ValueAliases{{"qwen2", "chatml"},
                   {"qwen", "chatml"},
                   {"smollm", "chatml"},
                   {"llama-3", "llama3"},
                   {"llama-2", "llama2"}}));
  keys.push_back(bool_key(
      "data.append_eos", [](auto& c) -> auto& { return c.data.append_eos; }));
  // train
  keys.push_back(int_key(
      "train.steps", [](auto& c) -> auto& { return c.train.steps; }, greater_than(0)));
  keys.push_back(double_key(
      "train.epochs", [](auto& c) -> auto& { return c.train.epochs; }, at_least(0)));
  keys.push_back(int_key(
      "train.micro_batch_size", [](auto& c) -> auto& { return c.train.micro_batch_size; },
      greater_than(0)));
  keys.push_back(int_key(
      "train.grad_accum", [](auto& c) -> auto& { return c.train.grad_accum; }, greater_than(0)));
  keys.push_back(uint64_key(
      "train.seed", [](auto& c) -> auto& { return c.train.seed; }));
  keys.push_back(int_key(
      "train.eval_every", [](auto& c) -> auto& { return c.train.eval_every; }, at_least(0)));
  keys.push_back(int_key(
      "train.log_every", [](auto& c) -> auto& { return c.train.log_every; }, greater_than(0)));
  // optim
  keys.push_back(double_key(
      "optim.lr", [](auto& c) -> auto& { return c.optim.lr; }, at_least(0)));
  keys.push_back(betas_key());
  keys.push_back(double_key(
      "optim.eps", [](auto& c) -> auto& { return c.optim.eps; }, greater_than(0)));
  keys.push_back(double_key(
      "optim.weight_decay", [](auto& c) -> auto& { return c.optim.weight_decay; }, at_least(0)));
  keys.push_back(enum_key(
      "optim.schedule", [](auto& c) -> auto& { return c.optim.schedule; },
      std::vector<LrSchedule>{LrSchedule::kConstant, LrSchedule::kLinear, LrSchedule::kCosine}));
  {
    KeySpec warmup = int_key(
        "optim.warmup_steps", [](auto& c) -> auto& { return c.optim.warmup_steps; }, at_least(0));
    // transformers 5 reads a warmup_steps below 1 as a fraction of the steps: say where that
    // fraction goes here instead of only "expected an integer".
    warmup.read = [read_int = warmup.read](const YAML::Node& v, Config& c, const ReadContext& ctx,
                                           std::vector<ValueProblem>& problems) {
      const std::size_t before = problems.size();
      read_int(v, c, ctx, problems);
      if (problems.size() == before || !v.IsScalar()) return;
      char* end = nullptr;
      const double x = std::strtod(v.Scalar().c_str(), &end);
      if (end != v.Scalar().c_str() && *end == '\0' && x > 0 && x < 1) {
        problems.back().message += " (a fraction of train.steps is optim.warmup_ratio)";
      }
    };
    keys.push_back(warmup);
  }
  keys.push_back(double_key(
      "optim.warmup_ratio", [](auto& c) -> auto& { return c.optim.warmup_ratio; }, zero_to_one()));
  keys.push_back(double_key(
      "optim.max_grad_norm", [](auto& c) -> auto& { return c.optim.max_grad_norm; }, at_least(0)));
  keys.push_back(double_key(
      "optim.min_lr_ratio", [](auto& c) -> auto& { return c.optim.min_lr_ratio; }, zero_to_one()));
  // checkpoint
  keys.push_back(int_key(
      "checkpoint.every_steps", [](auto& c) -> auto& { return c.checkpoint.every_steps; },
      at_least(0)));
  keys.push_back(int_key(
      "checkpoint.keep_last", [](auto& c) -> auto& { return c.checkpoint.keep_last; },
      at_least(1)));
  // runtime
  keys.push_back(enum_key(
      "runtime.device", [](auto& c) -> auto& { return c.runtime.device; },
      std::vector<DeviceKind>{DeviceKind::kAuto, DeviceKind::kCpu, DeviceKind::kCuda},
      ValueAliases{{"gpu", "cuda"}}));
  keys.push_back(enum_key(
      "runtime.compute_dtype", [](auto& c) -> auto& { return c.runtime.compute_dtype; },
      std::vector<ComputeDtype>{ComputeDtype::kAuto, ComputeDtype::kFp32, ComputeDtype::kFp16,
                                ComputeDtype::kBf16},
      ValueAliases{{"float32", "fp32"},
                   {"float", "fp32"},
                   {"float16", "fp16"},
                   {"half", "fp16"},
                   {"bfloat16", "bf16"}}));
  keys.push_back(int_key(
      "runtime.threads", [](auto& c) -> auto& { return c.runtime.threads; }, at_least(0)));
  keys.push_back(bool_key(
      "runtime.shard_base", [](auto& c) -> auto& { return c.runtime.shard_base; }));
  keys.push_back(bool_key(
      "runtime.gradient_checkpointing",
      [](auto& c) -> auto& { return c.runtime.gradient_checkpointing; }));
  // comm
  keys.push_back(double_key(
      "comm.timeout_s", [](auto& c) -> auto& { return c.comm.timeout_s; }, greater_than(0)));
  keys.push_back(double_key(
      "comm.bucket_mb", [](auto& c) -> auto& { return c.comm.bucket_mb; }, greater_than(0)));
  // top level
  keys.push_back(string_key(
      "output_dir", [](auto& c) -> auto& { return c.output_dir; }, true));
  return keys;
}

std::vector<CrossCheck> build_cross_checks() {
  std::vector<CrossCheck> checks;
  checks.push_back(
      {"model.dim", {"model.n_heads", "model.head_dim"}, [](const Config& c) -> std::string {
         const ModelConfig& m = c.model;
         if (m.n_heads <= 0 || m.explicit_head_dim > 0) return "";
         if (m.dim % m.n_heads != 0) {
           return std::to_string(m.dim) + " is not divisible by model.n_heads (" +
                  std::to_string(m.n_heads) +
                  "), expected a multiple of n_heads (or an explicit "
                  "model.head_dim)";
         }
         if (m.head_dim() % 2 != 0) {
           return "head_dim = dim / n_heads = " + std::to_string(m.dim) + " / " +
                  std::to_string(m.n_heads) + " = " + std::to_string(m.head_dim()) +
                  " is odd, expected an even head_dim (RoPE rotates pairs of "
                  "channels)";
         }
         return "";
       }});
  checks.push_back({"model.partial_rotary_factor",
                    {"model.dim", "model.n_heads", "model.head_dim"},
                    [](const Config& c) -> std::string {
                      const ModelConfig& m = c.model;
                      // (A whole odd head is model.head_dim's / model.dim's problem.)
                      if (m.n_heads <= 0 || m.partial_rotary_factor == 1.0) return "";
                      const int r = m.rotary_dim();
                      if (r >= 2 && r % 2 == 0) return "";
                      return "rotates int(head_dim " + std::to_string(m.head_dim()) + " * " +
                             format_number(m.partial_rotary_factor) + ") = " + std::to_string(r) +
                             " channels, expected an even number >= 2 (RoPE rotates pairs)";
                    }});
  checks.push_back({"model.head_dim", {}, [](const Config& c) -> std::string {
                      const int hd = c.model.explicit_head_dim;
                      if (hd <= 0 || (hd % 2 == 0 && hd <= 256)) return "";
                      return std::to_string(hd) +
                             " is not an even number up to 256, expected one (RoPE rotates "
                             "pairs of channels; the kernels take heads up to 256 wide)";
                    }});
  checks.push_back(
      {"model.layer_types",
       {"model.n_layers", "model.sliding_window"},
       [](const Config& c) -> std::string {
         const ModelConfig& m = c.model;
         if (m.layer_types.empty()) return "";
         if (static_cast<int>(m.layer_types.size()) != m.n_layers) {
           return "has " + std::to_string(m.layer_types.size()) +
                  " entries, expected one per layer (model.n_layers " + std::to_string(m.n_layers) +
                  ") or []";
         }
         const bool slides = std::find(m.layer_types.begin(), m.layer_types.end(),
                                       "sliding_attention") != m.layer_types.end();
         if (slides && m.sliding_window == 0) {
           return "names sliding_attention layers but model.sliding_window is 0, expected a "
                  "window > 0 or only full_attention";
         }
         return "";
       }});
  checks.push_back(
      {"adapter.target_modules", {"model.fused_projections"}, [](const Config& c) -> std::string {
         const bool fused = c.model.fused_projections;
         const std::vector<std::string>& have =
             fused ? fused_target_modules() : all_target_modules();
         for (const std::string& name : c.adapter.target_modules) {
           if (std::find(have.begin(), have.end(), name) != have.end()) continue;
           if (fused) {
             return "names '" + name +
                    "', which this model does not have: with model.fused_projections (Phi-3) "
                    "q/k/v are one module qkv_proj and gate/up one module gate_up_proj; expected "
                    "some of " +
                    join(have, ", ") + " or 'all-linear'";
           }
           return "names '" + name +
                  "', a module only models with model.fused_projections (Phi-3) have; expected "
                  "some of " +
                  join(have, ", ") + " or 'all-linear'";
         }
         return "";
       }});
  checks.push_back({"model.no_rope_layers", {"model.n_layers"}, [](const Config& c) -> std::string {
                      const ModelConfig& m = c.model;
                      if (m.no_rope_layers.empty() ||
                          static_cast<int>(m.no_rope_layers.size()) == m.n_layers) {
                        return "";
                      }
                      return "has " + std::to_string(m.no_rope_layers.size()) +
                             " entries, expected one per layer (model.n_layers " +
                             std::to_string(m.n_layers) + ") or []";
                    }});
  checks.push_back({"model.n_kv_heads", {"model.n_heads"}, [](const Config& c) -> std::string {
                      const ModelConfig& m = c.model;
                      if (m.n_kv_heads <= 0) return "";
                      if (m.n_kv_heads > m.n_heads) {
                        return std::to_string(m.n_kv_heads) + " is more than model.n_heads (" +
                               std::to_string(m.n_heads) + "), expected a divisor of n_heads";
                      }
                      if (m.n_heads % m.n_kv_heads != 0) {
                        return "model.n_heads (" + std::to_string(m.n_heads) +
                               ") is not divisible by " + std::to_string(m.n_kv_heads) +
                               ", expected a divisor of n_heads (each KV head serves a whole "
                               "group of query heads)";
                      }
                      return "";
                    }});
  // A RoPE parameter the chosen variant does not read is a mistake (a forgotten
  // model.rope_scaling, most likely), not something to ignore silently.
  checks.push_back(
      {"model.rope_factor", {"model.rope_scaling"}, [](const Config& c) -> std::string {
         const ModelConfig& m = c.model;
         if (m.rope_scaling != RopeScaling::kNone || m.rope_factor == 1.0) return "";
         return "is " + format_number(m.rope_factor) +
                " but model.rope_scaling is none, expected 1 or a rope_scaling of "
                "linear, dynamic or llama3";
       }});
  // Each variant's own parameters, against their defaults: set for a variant that does not
  // read them, they would be silently ignored.
  using RopeField = bool (*)(const ModelConfig&);
  struct VariantKey {
    std::string key;
    RopeField changed;
    std::vector<RopeScaling> readers;
    std::string reader_names;
  };
  const std::vector<RopeScaling> llama3 = {RopeScaling::kLlama3};
  const std::vector<RopeScaling> yarn = {RopeScaling::kYarn};
  const std::vector<VariantKey> variant_keys = {
      {"model.rope_low_freq_factor",
       [](const ModelConfig& m) {
         return m.rope_low_freq_factor != ModelConfig{}.rope_low_freq_factor;
       },
       llama3, "llama3"},
      {"model.rope_high_freq_factor",
       [](const ModelConfig& m) {
         return m.rope_high_freq_factor != ModelConfig{}.rope_high_freq_factor;
       },
       llama3, "llama3"},
      {"model.rope_original_max_seq_len",
       [](const ModelConfig& m) {
         return m.rope_original_max_seq_len != ModelConfig{}.rope_original_max_seq_len;
       },
       {RopeScaling::kLlama3, RopeScaling::kYarn, RopeScaling::kLongrope},
       "llama3, yarn and longrope"},
      {"model.rope_beta_fast",
       [](const ModelConfig& m) { return m.rope_beta_fast != ModelConfig{}.rope_beta_fast; }, yarn,
       "yarn"},
      {"model.rope_beta_slow",
       [](const ModelConfig& m) { return m.rope_beta_slow != ModelConfig{}.rope_beta_slow; }, yarn,
       "yarn"},
      {"model.rope_attention_factor",
       [](const ModelConfig& m) {
         return m.rope_attention_factor != ModelConfig{}.rope_attention_factor;
       },
       {RopeScaling::kYarn, RopeScaling::kLongrope},
       "yarn and longrope"},
      {"model.rope_short_factor",
       [](const ModelConfig& m) { return !m.rope_short_factor.empty(); },
       {RopeScaling::kLongrope},
       "longrope"},
      {"model.rope_long_factor",
       [](const ModelConfig& m) { return !m.rope_long_factor.empty(); },
       {RopeScaling::kLongrope},
       "longrope"},
      {"model.rope_truncate",
       [](const ModelConfig& m) { return m.rope_truncate != ModelConfig{}.rope_truncate; }, yarn,
       "yarn"},
  };
  for (const VariantKey& v : variant_keys) {
    checks.push_back({v.key, {"model.rope_scaling"}, [v](const Config& c) -> std::string {
                        const ModelConfig& m = c.model;
                        for (const RopeScaling r : v.readers) {
                          if (m.rope_scaling == r) return "";
                        }
                        if (!v.changed(m)) return "";
                        return "is only read by model.rope_scaling " + v.reader_names +
                               ", but that is " + to_string(m.rope_scaling) +
                               "; remove it or set model.rope_scaling: " +
                               to_string(v.readers.front());
                      }});
  }
  // longrope divides each frequency by its own factor: one per rotated pair of channels.
  for (const char* key : {"model.rope_short_factor", "model.rope_long_factor"}) {
    const bool is_short = std::string(key) == "model.rope_short_factor";
    checks.push_back({key,
                      {"model.rope_scaling", "model.dim", "model.n_heads", "model.head_dim",
                       "model.partial_rotary_factor"},
                      [is_short](const Config& c) -> std::string {
                        const ModelConfig& m = c.model;
                        if (m.rope_scaling != RopeScaling::kLongrope || m.n_heads <= 0) return "";
                        const std::vector<double>& f =
                            is_short ? m.rope_short_factor : m.rope_long_factor;
                        const std::size_t want = static_cast<std::size_t>(m.rotary_dim() / 2);
                        if (f.size() == want) return "";
                        return "has " + std::to_string(f.size()) +
                               " entries, expected rotary_dim / 2 = " + std::to_string(want) +
                               " (model.rope_scaling longrope divides each " +
                               "frequency by its own factor)";
                      }});
  }
  checks.push_back({"model.rope_high_freq_factor",
                    {"model.rope_low_freq_factor", "model.rope_scaling"},
                    [](const Config& c) -> std::string {
                      const ModelConfig& m = c.model;
                      if (m.rope_scaling != RopeScaling::kLlama3 ||
                          m.rope_high_freq_factor > m.rope_low_freq_factor) {
                        return "";
                      }
                      return format_number(m.rope_high_freq_factor) +
                             " is not above model.rope_low_freq_factor (" +
                             format_number(m.rope_low_freq_factor) +
                             "), expected high > low (llama3 ramps between the two)";
                    }});
  checks.push_back({"data.seq_len", {"model.max_seq_len"}, [](const Config& c) -> std::string {
                      if (c.data.seq_len <= c.model.max_seq_len) return "";
                      return std::to_string(c.data.seq_len) + " is more than model.max_seq_len (" +
                             std::to_string(c.model.max_seq_len) + "), expected at most " +
                             std::to_string(c.model.max_seq_len);
                    }});
  // JSONL formats are tokenized by the model's tokenizer.json: there must be one.
  checks.push_back({"data.format",
                    {"data.eval_format", "data.tokenizer", "model.path"},
                    [](const Config& c) -> std::string {
                      const DataFormat eval = c.data.eval.empty() ? DataFormat::kTokens
                                                                  : c.data.effective_eval_format();
                      const DataFormat f =
                          c.data.format != DataFormat::kTokens ? c.data.format : eval;
                      if (f == DataFormat::kTokens || !c.data.tokenizer.empty()) return "";
                      const std::string what = std::string(to_string(f)) + " data";
                      if (c.model.path.empty()) {
                        return what +
                               " needs a tokenizer, expected data.tokenizer (a folder "
                               "with tokenizer.json) or model.path to be set";
                      }
                      std::error_code ec;
                      if (fs::exists(fs::path(c.model.path) / "tokenizer.json", ec)) return "";
                      return what + " is tokenized with model.path's tokenizer, but '" +
                             c.model.path +
                             "' has no tokenizer.json; expected data.tokenizer to name one";
                    }});
  // AdaLoRA's schedule: PEFT crashes (or silently never masks) on these; we refuse them early.
  checks.push_back(
      {"adapter.target_r", {"adapter.init_r", "adapter.type"}, [](const Config& c) -> std::string {
         const AdapterConfig& a = c.adapter;
         if (a.type != AdapterType::kAdaLora || a.target_r < a.init_r) return "";
         return std::to_string(a.target_r) + " is not below adapter.init_r (" +
                std::to_string(a.init_r) +
                "), expected target_r < init_r (AdaLoRA prunes from init_r down to "
                "target_r)";
       }});
  checks.push_back({"adapter.tinit",
                    {"adapter.tfinal", "adapter.total_step", "train.steps"},
                    [](const Config& c) -> std::string {
                      const AdapterConfig& a = c.adapter;
                      if (a.type != AdapterType::kAdaLora) return "";
                      // With train.epochs the steps are known only at start (resolve_epochs).
                      if (c.train.epochs > 0 && a.total_step <= 0) return "";
                      const int total = a.adalora_total_step(c.train.steps);
                      if (a.tinit < total - a.tfinal) return "";
                      return std::to_string(a.tinit) +
                             " leaves no budget phase: expected tinit < "
                             "total_step - tfinal = " +
                             std::to_string(total) + " - " + std::to_string(a.tfinal) + " = " +
                             std::to_string(total - a.tfinal);
                    }});
  // The CPU backend computes in fp32 only; a 16-bit request there would be silently ignored.
  checks.push_back(
      {"runtime.compute_dtype", {"runtime.device"}, [](const Config& c) -> std::string {
         const ComputeDtype d = c.runtime.compute_dtype;
         if (c.runtime.device != DeviceKind::kCpu || d == ComputeDtype::kAuto ||
             d == ComputeDtype::kFp32) {
           return "";
         }
         return std::string(to_string(d)) +
                " with runtime.device: cpu, expected auto or fp32 (the CPU backend computes in "
                "fp32; fp16 and bf16 apply to cuda)";
       }});
  // warmup == steps is allowed: the whole run warms up, which is odd but well defined.
  checks.push_back({"optim.warmup_steps", {"train.steps"}, [](const Config& c) -> std::string {
                      // With train.epochs the steps are known only at start (resolve_epochs).
                      if (c.train.epochs > 0 || c.optim.warmup_steps <= c.train.steps) return "";
                      return std::to_string(c.optim.warmup_steps) + " is more than train.steps (" +
                             std::to_string(c.train.steps) + "), expected 0.." +
                             std::to_string(c.train.steps);
                    }});
  return checks;
}

// Optimal string alignment distance: insertions, deletions, substitutions and swaps of adjacent
// characters, the four usual typing slips.
std::size_t edit_distance(const std::string& a, const std::string& b) {
  const std::size_t n = a.size();
  const std::size_t m = b.size();
  std::vector<std::vector<std::size_t>> d(n + 1, std::vector<std::size_t>(m + 1, 0));
  for (std::size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (std::size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (std::size_t i = 1; i <= n; ++i) {
    for (std::size_t j = 1; j <= m; ++j) {
      const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[n][m];
}

std::string lowercase(std::string_view text) {
  std::string out;
  for (char ch : text) out += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return out;
}

// A truncated or extended name ("warmup" for "warmup_steps", "optimizer" for "optim"). Needs three
// shared characters so that short names do not match everything.
std::string prefix_match(std::string_view typed, const std::vector<std::string>& candidates) {
  const std::string lower = lowercase(typed);
  for (const std::string& candidate : candidates) {
    const std::string other = lowercase(candidate);
    if ((other.size() >= 3 && lower.starts_with(other)) ||
        (lower.size() >= 3 && other.starts_with(lower))) {
      return candidate;
    }
  }
  return "";
}

// Names from Hugging Face transformers/PEFT configs and other trainers that users carry over.
const std::vector<std::pair<std::string, std::string>>& aliases() {
  static const std::vector<std::pair<std::string, std::string>> table = {
      {"rank", "adapter.r"},
      {"lora_r", "adapter.r"},
      {"lora_alpha", "adapter.alpha"},
      {"lora_dropout", "adapter.dropout"},
      {"peft_type", "adapter.type"},
      {"use_rslora", "adapter.use_rslora"},
      {"learning_rate", "optim.lr"},
      {"lr_scheduler_type", "optim.schedule"},
      {"lr_scheduler", "optim.schedule"},
      {"scheduler", "optim.schedule"},
      {"warmup", "optim.warmup_steps"},
      {"warmup_ratio", "optim.warmup_ratio"},
      {"beta1", "optim.betas"},
      {"beta2", "optim.betas"},
      {"adam_beta1", "optim.betas"},
      {"adam_beta2", "optim.betas"},
      {"adam_epsilon", "optim.eps"},
      {"max_grad_norm", "optim.max_grad_norm"},
      {"max_steps", "train.steps"},
      {"num_train_epochs", "train.epochs"},
      {"epochs", "train.epochs"},
      {"batch_size", "train.micro_batch_size"},
      {"per_device_train_batch_size", "train.micro_batch_size"},
      {"gradient_accumulation_steps", "train.grad_accum"},
      {"logging_steps", "train.log_every"},
      {"eval_steps", "train.eval_every"},
      {"save_steps", "checkpoint.every_steps"},
      {"save_total_limit", "checkpoint.keep_last"},
      {"hidden_size", "model.dim"},
      {"num_hidden_layers", "model.n_layers"},
      {"num_attention_heads", "model.n_heads"},
      {"num_key_value_heads", "model.n_kv_heads"},
      {"intermediate_size", "model.ffn_dim"},
      {"max_position_embeddings", "model.max_seq_len"},
      {"rms_norm_eps", "model.norm_eps"},
      {"tie_word_embeddings", "model.tie_embeddings"},
      {"max_length", "data.seq_len"},
      {"num_threads", "runtime.threads"},
      {"gradient_checkpointing", "runtime.gradient_checkpointing"},
      {"activation_checkpointing", "runtime.gradient_checkpointing"},
      {"optimizer", "optim"},
      {"lora", "adapter"},
      {"training", "train"},
      {"output", "output_dir"},
  };
  return table;
}

}  // namespace

const std::vector<KeySpec>& config_schema() {
  static const std::vector<KeySpec> keys = build_schema();
  return keys;
}

const KeySpec* find_key(std::string_view path) {
  for (const KeySpec& spec : config_schema()) {
    if (spec.path == path) return &spec;
  }
  return nullptr;
}

const std::vector<std::string>& section_names() {
  static const std::vector<std::string> names = {"model", "adapter",    "data",    "train",
                                                 "optim", "checkpoint", "runtime", "comm"};
  return names;
}

bool is_section(std::string_view name) {
  const auto& names = section_names();
  return std::find(names.begin(), names.end(), name) != names.end();
}

const std::vector<CrossCheck>& cross_checks() {
  static const std::vector<CrossCheck> checks = build_cross_checks();
  return checks;
}

std::string closest_name(std::string_view typed, const std::vector<std::string>& candidates) {
  const std::string lower = lowercase(typed);
  // Allow roughly one slip per three characters; more than that and the "hint" is noise.
  const std::size_t limit = typed.size() <= 3 ? 1 : typed.size() <= 6 ? 2 : 3;
  std::string best;
  std::size_t best_distance = limit + 1;
  for (const std::string& candidate : candidates) {
    const std::size_t distance = edit_distance(lower, lowercase(candidate));
    // A distance equal to the candidate's length means nothing matched (e.g. "x" vs "r").
    if (distance < best_distance && distance < candidate.size()) {
      best = candidate;
      best_distance = distance;
    }
  }
  return best;
}

std::string suggest_key(std::string_view typed_path) {
  const std::string typed(typed_path);
  const auto dot = typed.rfind('.');
  const std::string section = dot == std::string::npos ? "" : typed.substr(0, dot);
  const std::string leaf = dot == std::string::npos ? typed : typed.substr(dot + 1);

  // 1. The right name in the wrong section ("adapter.lr" -> "optim.lr", top-level "steps").
  for (const KeySpec& spec : config_schema()) {
    if (spec.name == leaf && spec.path != typed) return spec.path;
  }
  // 2. A well-known name from another tool.
  for (const auto& [alias, path] : aliases()) {
    if (alias == lowercase(leaf) && path != typed) return path;
  }
  // 3. A typo of a name valid where it was written.
  std::vector<std::string> names;
  if (section.empty()) {
    names = section_names();
    for (const KeySpec& spec : config_schema()) {
      if (spec.section.empty()) names.push_back(spec.name);
    }
  } else if (is_section(section)) {
    for (const KeySpec& spec : config_schema()) {
      if (spec.section == section) names.push_back(spec.name);
    }
  }
  const std::string prefix = section.empty() ? "" : section + ".";
  std::string hint = closest_name(leaf, names);
  if (hint.empty()) hint = prefix_match(leaf, names);
  if (!hint.empty()) return prefix + hint;
  // 4. A typo anywhere in the full path ("adaptr.r" -> "adapter.r").
  std::vector<std::string> paths = section_names();
  for (const KeySpec& spec : config_schema()) paths.push_back(spec.path);
  return closest_name(typed, paths);
}

std::string format_double(double value) {
  std::string text = format_number(value);
  if (text.find_first_of(".eEn") == std::string::npos) return text + ".0";  // 'n': inf/nan
  const auto exponent = text.find_first_of("eE");
  if (exponent != std::string::npos && text.find('.') == std::string::npos) {
    text.insert(exponent, ".0");  // "1e-08" reads as a string in YAML 1.1 tools; "1.0e-08" doesn't
  }
  return text;
}

}  // namespace peftrun::config_detail
