#include "launch/merge_command.h"

#include <iostream>
#include <string>
#include <vector>

#include "configs/config.h"
#include "kernels/gemm.h"
#include "launch/world.h"
#include "runtime/model/merge.h"

namespace peftrun {

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

struct MergeArgs {
  std::string config_path;
  std::vector<std::string> overrides;
  MergeOptions options;
};

bool usage_error(const std::string& message) {
  std::cerr << "peftrun merge: " << message << " (see peftrun --help)\n";
  return false;
}

bool parse_merge_args(int argc, char** argv, MergeArgs& args) {
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](std::string& out) {
      if (i + 1 >= argc) return usage_error(a + " needs a value");
      out = argv[++i];
      return true;
    };
    if (a == "--set") {
      std::string kv;
      if (!value(kv)) return false;
      args.overrides.push_back(kv);
    } else if (a.rfind("--set=", 0) == 0) {
      args.overrides.push_back(a.substr(6));
    } else if (a == "--adapter") {
      if (!value(args.options.adapter_dir)) return false;
    } else if (a == "--out") {
      if (!value(args.options.out_dir)) return false;
    } else if (a == "--dtype") {
      std::string d;
      if (!value(d)) return false;
      if (d == "fp16" || d == "float16") {
        args.options.dtype = TensorDType::kF16;
      } else if (d == "bf16" || d == "bfloat16") {
        args.options.dtype = TensorDType::kBF16;
      } else {
        return usage_error("--dtype '" + d + "': expected fp16 or bf16");
      }
    } else if (a == "--max-shard-size") {
      std::string s;
      if (!value(s)) return false;
      try {
        args.options.max_shard_bytes = parse_byte_size(s);
      } catch (const std::invalid_argument& e) {
        return usage_error(std::string("--max-shard-size ") + e.what());
      }
    } else if (a == "--force") {
      args.options.force = true;
    } else if (a.size() > 1 && a[0] == '-') {
      return usage_error("unknown option '" + a + "'");
    } else {
      positional.push_back(a);
    }
  }
  if (positional.size() != 1) {
    return usage_error("expected exactly one CONFIG.yaml, got " +
                       std::to_string(positional.size()));
  }
  args.config_path = positional[0];
  if (args.options.out_dir.empty()) return usage_error("--out DIR is required");
  return true;
}

}  // namespace

int run_merge_command(int argc, char** argv) {
  MergeArgs args;
  if (!parse_merge_args(argc, argv, args)) return kExitUsage;
  try {
    if (discover_world().world_size > 1) {
      std::cerr << "peftrun merge: runs as one process; start it without mpirun\n";
      return kExitUsage;
    }
  } catch (const std::exception& e) {
    std::cerr << "peftrun merge: error: " << e.what() << "\n";
    return kExitUsage;
  }
  const ConfigLoadResult loaded = load_config_file(args.config_path, args.overrides);
  if (!loaded.ok()) {
    for (const auto& e : loaded.errors) std::cerr << e.format() << "\n";
    std::cerr << "peftrun merge: " << loaded.errors.size() << " problem"
              << (loaded.errors.size() == 1 ? "" : "s") << " in the config; nothing was written\n";
    return kExitUsage;
  }
  try {
    cpu::set_blas_threads(loaded.config.runtime.threads);
    merge_adapter(loaded.config, args.options, std::cout);
    return kExitOk;
  } catch (const MergeRefused& e) {
    std::cerr << "peftrun merge: " << e.what() << "\n";
    return kExitUsage;
  } catch (const std::exception& e) {
    std::cerr << "peftrun merge: error: " << e.what() << "\n";
    return kExitFailure;
  }
}

}  // namespace peftrun
