// Small printers for the config types, and config_to_yaml (driven by the key table).
#include <cmath>
#include <string>

#include "configs/config.h"
#include "configs/config_schema.h"

namespace peftrun {

const char* to_string(AdapterType t) {
  switch (t) {
    case AdapterType::kLora:
      return "lora";
    case AdapterType::kDora:
      return "dora";
    case AdapterType::kAdaLora:
      return "adalora";
  }
  return "?";
}

const char* to_string(LrSchedule s) {
  switch (s) {
    case LrSchedule::kConstant:
      return "constant";
    case LrSchedule::kLinear:
      return "linear";
    case LrSchedule::kCosine:
      return "cosine";
  }
  return "?";
}

const char* to_string(DeviceKind d) {
  switch (d) {
    case DeviceKind::kAuto:
      return "auto";
    case DeviceKind::kCpu:
      return "cpu";
    case DeviceKind::kCuda:
      return "cuda";
  }
  return "?";
}

const char* to_string(ComputeDtype d) {
  switch (d) {
    case ComputeDtype::kAuto:
      return "auto";
    case ComputeDtype::kFp32:
      return "fp32";
    case ComputeDtype::kFp16:
      return "fp16";
    case ComputeDtype::kBf16:
      return "bf16";
  }
  return "?";
}

const char* to_string(DataFormat f) {
  switch (f) {
    case DataFormat::kSame:
      return "same";
    case DataFormat::kTokens:
      return "tokens";
    case DataFormat::kText:
      return "text";
    case DataFormat::kPromptCompletion:
      return "prompt_completion";
    case DataFormat::kChat:
      return "chat";
  }
  return "?";
}

const char* to_string(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::kAuto:
      return "auto";
    case ChatTemplate::kChatml:
      return "chatml";
    case ChatTemplate::kLlama3:
      return "llama3";
    case ChatTemplate::kLlama2:
      return "llama2";
    case ChatTemplate::kMistral:
      return "mistral";
    case ChatTemplate::kGemma:
      return "gemma";
  }
  return "?";
}

const char* to_string(RopeScaling s) {
  switch (s) {
    case RopeScaling::kNone:
      return "none";
    case RopeScaling::kLinear:
      return "linear";
    case RopeScaling::kDynamic:
      return "dynamic";
    case RopeScaling::kLlama3:
      return "llama3";
    case RopeScaling::kYarn:
      return "yarn";
    case RopeScaling::kLongrope:
      return "longrope";
  }
  return "?";
}

const char* to_string(MlpActivation a) {
  switch (a) {
    case MlpActivation::kSilu:
      return "silu";
    case MlpActivation::kGeluTanh:
      return "gelu_tanh";
  }
  return "?";
}

double AdapterConfig::scaling() const {
  const double rank = static_cast<double>(r);
  return use_rslora ? alpha / std::sqrt(rank) : alpha / rank;
}

std::string ConfigError::format() const {
  std::string out = file + ":" + std::to_string(line) + ":" + std::to_string(column) + ": ";
  // Syntax errors and unreadable files are about no key in particular.
  if (!key.empty()) out += key + ": ";
  return out + message;
}

std::string config_to_yaml(const Config& config) {
  using config_detail::KeySpec;
  std::string out =
      "# peftrun config, fully resolved: every key with its value, input paths absolute.\n";
  for (const std::string& section : config_detail::section_names()) {
    out += section + ":\n";
    for (const KeySpec& spec : config_detail::config_schema()) {
      if (spec.section != section) continue;
      // Derived keys are comments: written as keys they would conflict with their source on
      // reload. train.epochs becomes steps only when the data is open (resolve_epochs).
      if (spec.path == "optim.warmup_steps" && config.optim.warmup_ratio > 0) {
        out += "  # warmup_steps: " +
               (config.train.epochs > 0 ? std::string("from warmup_ratio at start")
                                        : spec.write(config) + " (from warmup_ratio)") +
               "\n";
        continue;
      }
      if (spec.path == "train.steps" && config.train.epochs > 0) {
        out += "  # steps: from epochs and the training data's rows at start\n";
        continue;
      }
      out += "  " + spec.name + ": " + spec.write(config) + "\n";
    }
  }
  for (const KeySpec& spec : config_detail::config_schema()) {
    if (spec.section.empty()) out += spec.name + ": " + spec.write(config) + "\n";
  }
  return out;
}

}  // namespace peftrun
