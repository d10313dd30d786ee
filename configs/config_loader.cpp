// Loading a config: parse the YAML, apply `--set` overrides, then validate the final values.
//
// Every key's last writer wins, and only the final value is validated: a bad value in the file that
// an override replaces is not an error (that is how a user fixes a shared config for one run).
// Problems that are not about a value (syntax, unknown keys, a section that is not a map) are
// always reported.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "configs/config.h"
#include "configs/config_schema.h"
#include "configs/hf_model_config.h"

namespace peftrun {
namespace {

namespace fs = std::filesystem;
using config_detail::KeySpec;
using config_detail::ReadContext;
using config_detail::ValueProblem;

constexpr const char* kOverrideFile = "--set";

struct Where {
  std::string file;
  int line = 0;
  int column = 0;
};

// The text being read: turns yaml-cpp marks (0-based, relative to that text) into FILE:LINE:COL.
struct Source {
  std::string file;
  int override_index = 0;  // 1-based index of a --set override; 0 for the config file
  int column_offset = 0;   // where the value starts inside the override string

  Where at(const YAML::Mark& mark) const {
    const bool known = !mark.is_null() && mark.line >= 0 && mark.column >= 0;
    if (override_index > 0) {
      return {file, override_index, known ? column_offset + mark.column + 1 : 1};
    }
    if (!known) return {file, 0, 0};
    return {file, mark.line + 1, mark.column + 1};
  }
};

ConfigError make_error(const Where& where, std::string key, std::string message) {
  ConfigError error;
  error.file = where.file;
  error.line = where.line;
  error.column = where.column;
  error.key = std::move(key);
  error.message = std::move(message);
  return error;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + items[i];
  return out;
}

std::string describe_kind(const YAML::Node& node) {
  if (node.IsSequence()) return "a list";
  if (node.IsMap()) return "a map";
  if (node.IsScalar()) return "'" + node.Scalar() + "'";
  return "nothing";
}

// The names that are valid where `section` is written ("" = top level).
std::vector<std::string> names_in(const std::string& section) {
  std::vector<std::string> names;
  if (section.empty()) names = config_detail::section_names();
  for (const KeySpec& spec : config_detail::config_schema()) {
    if (spec.section == section) names.push_back(spec.name);
  }
  return names;
}

std::string trim(const std::string& text) {
  const auto first = text.find_first_not_of(" \t");
  if (first == std::string::npos) return "";
  const auto last = text.find_last_not_of(" \t");
  return text.substr(first, last - first + 1);
}

class Loader {
 public:
  Loader(std::string file, std::string base_dir)
      : file_(std::move(file)), base_dir_(std::move(base_dir)) {
    config_.source_file = file_;
  }

  bool syntax_error() const { return syntax_error_; }

  void apply_file_text(const std::string& text) {
    const Source source{file_, 0, 0};
    YAML::Node root;
    try {
      root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      // Nothing after a syntax error can be trusted, so loading stops here.
      errors_.push_back(make_error(source.at(e.mark), "", "YAML syntax error: " + e.msg));
      syntax_error_ = true;
      return;
    }
    apply_top(root, source, ReadContext{base_dir_});
  }

  void apply_override(int index, const std::string& text) {
    Source source{kOverrideFile, index, 0};
    const auto equals = text.find('=');
    if (equals == std::string::npos) {
      errors_.push_back(make_error(source.at(YAML::Mark::null_mark()), "",
                                   "missing '=' in '" + text + "', expected key.path=value"));
      return;
    }
    const std::string key = trim(text.substr(0, equals));
    if (key.empty()) {
      errors_.push_back(
          make_error(source.at(YAML::Mark::null_mark()), "",
                     "missing key before '=' in '" + text + "', expected key.path=value"));
      return;
    }
    source.column_offset = static_cast<int>(equals) + 1;
    YAML::Node value;
    try {
      value = YAML::Load(text.substr(equals + 1));
    } catch (const YAML::Exception& e) {
      errors_.push_back(make_error(source.at(e.mark), key, "invalid YAML value: " + e.msg));
      return;
    }
    // A path typed on the command line is relative to where the command runs, like any other
    // command-line argument, not to the config file's folder.
    const ReadContext context{""};
    const YAML::Mark no_key = YAML::Mark::null_mark();
    if (config_detail::is_section(key)) {
      apply_section(key, value, no_key, source, context);
    } else if (const KeySpec* spec = config_detail::find_key(key)) {
      apply_key(*spec, value, no_key, source, context);
    } else {
      report_unknown(key, source.at(no_key));
    }
  }

  ConfigLoadResult finish() {
    ConfigLoadResult result;
    if (!syntax_error_) apply_checkpoint_shape();
    if (!syntax_error_) resolve_target_modules();
    if (!syntax_error_) check_run_length_keys();
    if (!syntax_error_) apply_warmup_ratio();
    result.config = config_;
    result.errors = errors_;
    if (!syntax_error_) validate(result.errors);
    std::stable_sort(result.errors.begin(), result.errors.end(),
                     [this](const ConfigError& a, const ConfigError& b) {
                       const int rank_a = a.file == file_ ? 0 : 1;
                       const int rank_b = b.file == file_ ? 0 : 1;
                       if (rank_a != rank_b) return rank_a < rank_b;
                       if (a.line != b.line) return a.line < b.line;
                       return a.column < b.column;
                     });
    return result;
  }

 private:
  void apply_top(const YAML::Node& root, const Source& source, const ReadContext& context) {
    if (root.IsNull()) return;  // an empty file: every key keeps its default
    if (!root.IsMap()) {
      errors_.push_back(make_error(source.at(root.Mark()), "",
                                   "got " + describe_kind(root) +
                                       " at the top level, expected a map "
                                       "of sections (" +
                                       join(names_in("")) + ")"));
      // Every key is then unset for the same reason; reporting each as missing would be noise.
      for (const std::string& section : config_detail::section_names()) {
        broken_sections_.insert(section);
      }
      broken_sections_.insert("");
      return;
    }
    std::map<std::string, int> seen;
    for (const auto& entry : root) {
      const YAML::Node& key = entry.first;
      if (!key.IsScalar()) {
        errors_.push_back(make_error(source.at(key.Mark()), "",
                                     "got " + describe_kind(key) + " as a key, expected a name"));
        continue;
      }
      const std::string name = key.Scalar();
      if (!first_time(seen, name, key.Mark(), source)) continue;
      const KeySpec* spec = config_detail::find_key(name);
      if (config_detail::is_section(name)) {
        apply_section(name, entry.second, key.Mark(), source, context);
      } else if (spec != nullptr && spec->section.empty()) {
        apply_key(*spec, entry.second, key.Mark(), source, context);
      } else if (spec != nullptr) {
        errors_.push_back(make_error(source.at(key.Mark()), name,
                                     "dotted keys are only for --set, expected it nested as '" +
                                         spec->section + ":' then '" + spec->name + ":'"));
      } else {
        report_unknown(name, source.at(key.Mark()));
      }
    }
  }

  void apply_section(const std::string& section, const YAML::Node& value,
                     const YAML::Mark& key_mark, const Source& source, const ReadContext& context) {
    origin_[section] = source.at(key_mark);
    if (value.IsNull()) return;  // `adapter:` with nothing under it: all defaults
    if (!value.IsMap()) {
      const YAML::Mark mark = value.Mark().is_null() ? key_mark : value.Mark();
      errors_.push_back(make_error(source.at(mark), section,
                                   "got " + describe_kind(value) + ", expected a map of " +
                                       section + " keys (" + join(names_in(section)) + ")"));
      broken_sections_.insert(section);
      return;
    }
    std::map<std::string, int> seen;
    for (const auto& entry : value) {
      const YAML::Node& key = entry.first;
      if (!key.IsScalar()) {
        errors_.push_back(make_error(source.at(key.Mark()), section,
                                     "got " + describe_kind(key) + " as a key, expected a name"));
        continue;
      }
      const std::string path = section + "." + key.Scalar();
      if (!first_time(seen, path, key.Mark(), source)) continue;
      if (const KeySpec* spec = config_detail::find_key(path)) {
        apply_key(*spec, entry.second, key.Mark(), source, context);
      } else {
        report_unknown(path, source.at(key.Mark()));
      }
    }
  }

  void apply_key(const KeySpec& spec, const YAML::Node& value, const YAML::Mark& key_mark,
                 const Source& source, const ReadContext& context) {
    std::vector<ValueProblem> problems;
    spec.read(value, config_, context, problems);
    // An empty value's mark points at whatever follows the key; the key itself is clearer.
    const YAML::Mark value_mark =
        value.IsNull() || value.Mark().is_null() ? key_mark : value.Mark();
    origin_[spec.path] = source.at(value_mark);
    // This value replaces any earlier one, and the earlier one's problems with it.
    std::vector<ConfigError>& errors = key_errors_[spec.path];
    errors.clear();
    for (const ValueProblem& problem : problems) {
      const bool usable = !value.IsNull() && !problem.mark.is_null();
      errors.push_back(
          make_error(source.at(usable ? problem.mark : value_mark), spec.path, problem.message));
    }
  }

  // yaml-cpp keeps both copies of a repeated key; which one "wins" is then a silent surprise.
  bool first_time(std::map<std::string, int>& seen, const std::string& path, const YAML::Mark& mark,
                  const Source& source) {
    const Where where = source.at(mark);
    const auto [it, inserted] = seen.emplace(path, where.line);
    if (!inserted) {
      errors_.push_back(make_error(where, path,
                                   "given twice (first on line " + std::to_string(it->second) +
                                       "), expected each key once"));
    }
    return inserted;
  }

  void report_unknown(const std::string& path, const Where& where) {
    const std::string hint = config_detail::suggest_key(path);
    std::string message = "unknown key '" + path + "'";
    if (!hint.empty()) {
      message += "; did you mean '" + hint + "'?";
    } else {
      const auto dot = path.rfind('.');
      std::string section = dot == std::string::npos ? "" : path.substr(0, dot);
      if (!config_detail::is_section(section)) section.clear();
      message += ", expected one of " + join(names_in(section));
    }
    errors_.push_back(make_error(where, path, message));
  }

  // Where to point at for a problem about `keys`: where the first of them was last written, else
  // its section, else the top of the file.
  Where locate(const std::vector<std::string>& keys) const {
    for (const std::string& key : keys) {
      if (const auto it = origin_.find(key); it != origin_.end()) return it->second;
    }
    const KeySpec* spec = config_detail::find_key(keys.front());
    if (spec != nullptr) {
      if (const auto it = origin_.find(spec->section); it != origin_.end()) return it->second;
    }
    return {file_, 0, 0};
  }

  // The key's value was read and passes its own check.
  bool valid(const std::string& path) const {
    return !has_errors(path) && config_detail::find_key(path)->check(config_).empty();
  }

  bool has_errors(const std::string& path) const {
    const auto it = key_errors_.find(path);
    return it != key_errors_.end() && !it->second.empty();
  }

  // Two keys that say one thing two ways (train.steps / train.epochs, optim.warmup_steps /
  // optim.warmup_ratio), both written: the later source wins, a --set over the file and a later
  // --set over an earlier one, so `--set train.epochs=2` works on a file that sets steps.
  // Written in the same place they are an error, reported at `key`. Returns whether `key` (the
  // plain one) wins; false also when it was not written at all.
  bool plain_key_wins(const std::string& key, const std::string& derived_from,
                      const std::string& what) {
    const auto plain = origin_.find(key);
    if (plain == origin_.end()) return false;
    const auto other = origin_.find(derived_from);
    // Position of a source: 0 for the file, i for the i-th --set.
    const auto position = [](const Where& w) { return w.file == kOverrideFile ? w.line : 0; };
    const int p = position(plain->second);
    const int o = other == origin_.end() ? 0 : position(other->second);
    if (p != o) return p > o;
    key_errors_[key].push_back(
        make_error(plain->second, key,
                   "set together with " + derived_from + " (" + what +
                       "), expected only one of them (a --set of either overrides the other)"));
    return false;
  }

  static std::string number_text(double v) {
    std::ostringstream s;
    s << v;
    return s.str();
  }

  // train.epochs and train.steps are two ways to say how long to train.
  void check_run_length_keys() {
    if (config_.train.epochs <= 0) return;
    if (plain_key_wins("train.steps", "train.epochs", number_text(config_.train.epochs))) {
      config_.train.epochs = 0;
    } else {
      config_.train.steps = TrainConfig{}.steps;  // overridden: as if never written
    }
  }

  // optim.warmup_ratio > 0 sets warmup_steps to ceil(ratio * train.steps), the product in
  // double as transformers computes it (so 0.07 of 100 steps is 8, as there). Before
  // validation, so warmup_steps <= train.steps judges the resolved value.
  void apply_warmup_ratio() {
    const double ratio = config_.optim.warmup_ratio;
    if (ratio <= 0 || !valid("optim.warmup_ratio") || !valid("train.steps")) return;
    if (plain_key_wins("optim.warmup_steps", "optim.warmup_ratio", number_text(ratio))) {
      config_.optim.warmup_ratio = 0;
      return;
    }
    if (has_errors("optim.warmup_steps")) return;
    if (config_.train.epochs > 0) {
      // The steps come at start (resolve_epochs); until then warmup_steps is as if never
      // written.
      config_.optim.warmup_steps = OptimConfig{}.warmup_steps;
      return;
    }
    config_.optim.warmup_steps =
        static_cast<int>(std::ceil(static_cast<double>(config_.train.steps) * ratio));
  }

  // A checkpoint's config.json decides the model's shape (hf_model_config.h). This runs after
  // every source is applied, so `--set model.path=...` counts, and before validation, so rules
  // such as data.seq_len <= model.max_seq_len judge the checkpoint's values.
  void apply_checkpoint_shape() {
    const std::string& dir = config_.model.path;
    const KeySpec* path_spec = config_detail::find_key("model.path");
    if (dir.empty() || has_errors("model.path") || !path_spec->check(config_).empty()) return;
    // A folder without config.json keeps the YAML shape here; load_hf_checkpoint refuses it
    // when training starts, so no run ever uses a shape its checkpoint did not state.
    std::error_code ec;
    if (!fs::exists(fs::path(dir) / "config.json", ec)) return;
    const HfModelConfig hf = read_hf_model_config(dir);
    if (!hf.ok()) {
      errors_.insert(errors_.end(), hf.errors.begin(), hf.errors.end());
      // The shape is unknown; rules that read it would report the YAML defaults' consequences.
      suppressed_.insert(hf_shape_keys().begin(), hf_shape_keys().end());
      suppressed_.insert("data.seq_len");
      return;
    }
    Config checkpoint = config_;
    copy_hf_shape(hf.shape, checkpoint.model);
    for (const HfShapeSource& source : hf.sources) {
      const KeySpec* spec = config_detail::find_key(source.yaml_key);
      const auto written = origin_.find(source.yaml_key);
      // Keys written in the YAML or with --set may restate the checkpoint, never contradict it:
      // a silently ignored `dim: 128` would leave the user believing they changed something.
      if (written != origin_.end() && !has_errors(source.yaml_key)) {
        const std::string mine = spec->write(config_);
        const std::string theirs = spec->write(checkpoint);
        if (mine != theirs) {
          key_errors_[source.yaml_key].push_back(
              make_error(written->second, source.yaml_key,
                         mine + " disagrees with " + hf.file + " " + source.json_key + " " +
                             theirs + (source.line == 0 ? " (its default when absent)" : "") +
                             "; remove it or make it match"));
          continue;
        }
      }
      // Later rules about this key (e.g. data.seq_len vs max_seq_len) then point into config.json.
      if (source.line > 0) origin_[source.yaml_key] = {hf.file, source.line, source.column};
    }
    copy_hf_shape(checkpoint.model, config_.model);
  }

  // adapter.target_modules once the model is known: "all-linear" (every known name) keeps the
  // model's own modules, and a model with fused projections that the YAML gives no targets
  // gets PEFT's default for Phi-3, qkv_proj (q_proj, v_proj is no module of it). A list naming
  // modules the model does not have is left for the cross-check to report.
  void resolve_target_modules() {
    std::vector<std::string>& targets = config_.adapter.target_modules;
    const bool fused = config_.model.fused_projections;
    if (targets == known_target_modules()) {
      targets = fused ? fused_target_modules() : all_target_modules();
    } else if (fused && !origin_.count("adapter.target_modules")) {
      targets = {"qkv_proj"};
    }
  }

  void validate(std::vector<ConfigError>& out) const {
    // Keys already reported: rules that read them would only echo.
    std::set<std::string> failed(suppressed_.begin(), suppressed_.end());
    for (const auto& [path, errors] : key_errors_) {
      if (errors.empty()) continue;
      failed.insert(path);
      out.insert(out.end(), errors.begin(), errors.end());
    }
    for (const KeySpec& spec : config_detail::config_schema()) {
      if (failed.count(spec.path)) continue;
      // `data: 5` is already reported; "data.train: missing" on top of it would be noise.
      if (broken_sections_.count(spec.section) && !origin_.count(spec.path)) continue;
      const std::string message = spec.check(config_);
      if (message.empty()) continue;
      out.push_back(make_error(locate({spec.path}), spec.path, message));
      failed.insert(spec.path);
    }
    for (const config_detail::CrossCheck& rule : config_detail::cross_checks()) {
      std::vector<std::string> keys = {rule.key};
      keys.insert(keys.end(), rule.uses.begin(), rule.uses.end());
      if (std::any_of(keys.begin(), keys.end(),
                      [&](const std::string& key) { return failed.count(key) > 0; })) {
        continue;
      }
      const std::string message = rule.check(config_);
      if (!message.empty()) out.push_back(make_error(locate(keys), rule.key, message));
    }
  }

  Config config_;
  std::string file_;
  std::string base_dir_;
  bool syntax_error_ = false;
  std::map<std::string, Where> origin_;  // key or section -> where its current value was written
  std::map<std::string, std::vector<ConfigError>> key_errors_;  // problems of each current value
  std::vector<ConfigError> errors_;  // problems not tied to one value (syntax, unknown keys, ...)
  std::set<std::string> broken_sections_;
  std::set<std::string> suppressed_;  // keys whose value is unknown (a broken config.json)
};

ConfigLoadResult internal_error(const std::string& file, const char* what) {
  ConfigLoadResult result;
  result.config.source_file = file;
  result.errors.push_back(
      make_error({file, 0, 0}, "", std::string("internal error while loading: ") + what));
  return result;
}

}  // namespace

ConfigLoadResult load_config_text(const std::string& yaml_text, const std::string& file_name,
                                  const std::string& base_dir,
                                  const std::vector<std::string>& overrides) {
  try {
    Loader loader(file_name, base_dir);
    loader.apply_file_text(yaml_text);
    if (!loader.syntax_error()) {
      for (std::size_t i = 0; i < overrides.size(); ++i) {
        loader.apply_override(static_cast<int>(i) + 1, overrides[i]);
      }
    }
    return loader.finish();
  } catch (const std::exception& e) {
    // The loader reports bad input as errors; this is only for bugs and exhaustion, which must
    // still not escape a function documented as non-throwing.
    return internal_error(file_name, e.what());
  }
}

ConfigLoadResult load_config_file(const std::string& path,
                                  const std::vector<std::string>& overrides) {
  try {
    auto fail = [&](const std::string& message) {
      ConfigLoadResult result;
      result.config.source_file = path;
      result.errors.push_back(make_error({path, 0, 0}, "", message));
      return result;
    };
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
      return fail("cannot read config file '" + path +
                  "': it is a directory, expected a YAML file");
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      const int error = errno;
      return fail("cannot read config file '" + path + "': " + std::strerror(error));
    }
    std::ostringstream text;
    text << in.rdbuf();
    if (in.bad()) return fail("cannot read config file '" + path + "': read failed");
    return load_config_text(text.str(), path, fs::path(path).parent_path().string(), overrides);
  } catch (const std::exception& e) {
    return internal_error(path, e.what());
  }
}

Config resolve_epochs(const Config& config, std::uint64_t rows_per_epoch,
                      std::uint64_t global_batch) {
  const double epochs = config.train.epochs;
  if (epochs <= 0) return config;
  std::ostringstream what;
  what << "train.epochs " << epochs << " of " << rows_per_epoch << " rows at a global batch of "
       << global_batch << " sequences";
  if (rows_per_epoch == 0 || global_batch == 0) {
    throw std::runtime_error(what.str() + ": no step to take");
  }
  const double steps =
      std::ceil(epochs * static_cast<double>(rows_per_epoch) / static_cast<double>(global_batch));
  if (steps > static_cast<double>(std::numeric_limits<int>::max())) {
    throw std::runtime_error(what.str() + " are more steps than train.steps can hold");
  }
  Config resolved = config;
  resolved.train.epochs = 0;
  resolved.train.steps = std::max(1, static_cast<int>(steps));
  what << " = " << resolved.train.steps << " steps";
  // The whole config once more through the loader, now with its steps: warmup_ratio applies
  // and every rule that reads train.steps runs. Its paths are already absolute.
  ConfigLoadResult again = load_config_text(config_to_yaml(resolved), what.str(), "");
  if (!again.ok()) {
    std::string message = what.str() + ":";
    for (const ConfigError& e : again.errors) {
      message += "\n  " + (e.key.empty() ? "" : e.key + ": ") + e.message;
    }
    throw std::runtime_error(message);
  }
  again.config.source_file = config.source_file;
  return again.config;
}

}  // namespace peftrun
