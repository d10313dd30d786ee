#include "launch/inspect_command.h"

#include <filesystem>
#include <fstream>
#include <iomanip>
#include <ostream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "runtime/io/safetensors.h"
#include "runtime/train/train_state_io.h"

namespace peftrun {

namespace {

namespace fs = std::filesystem;

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void print_tensors(const fs::path& file, std::ostream& out) {
  const SafetensorsReader r(file.string());
  out << file.filename().string() << ": " << r.tensors().size() << " tensors, "
      << fs::file_size(file) << " bytes\n";
  std::size_t width = 0;
  for (const auto& t : r.tensors()) width = std::max(width, t.name.size());
  for (const auto& t : r.tensors()) {
    out << "  " << std::left << std::setw(int(width)) << t.name << "  " << dtype_name(t.dtype)
        << " " << shape_text(t.shape) << "\n";
  }
}

// The config keys worth a line, in reading order; AdaLoRA's only for AdaLoRA.
void print_config_summary(const std::map<std::string, std::string>& config, std::ostream& out) {
  auto value = [&](const std::string& key) {
    const auto it = config.find(key);
    return it == config.end() ? std::string("?") : it->second;
  };
  // Keys a checkpoint of an older peftrun lacks (it computed their defaults) print nothing.
  auto shown = [&](const std::string& key, const std::string& plain) {
    const auto it = config.find(key);
    return it != config.end() && it->second != plain;
  };
  std::string extras;
  if (shown("model.head_dim", "0")) extras += ", head_dim " + value("model.head_dim");
  if (shown("model.qk_norm", "false")) extras += ", q/k norm";
  if (shown("model.sandwich_norms", "false")) extras += ", sandwich norms";
  if (shown("model.mlp_activation", "silu")) extras += ", MLP " + value("model.mlp_activation");
  if (shown("model.norm_one_plus_weight", "false")) extras += ", norms scale by 1 + weight";
  if (shown("model.scale_embeddings", "false")) extras += ", embeddings x sqrt(dim)";
  if (shown("model.sliding_window", "0")) {
    extras += ", sliding window " + value("model.sliding_window");
    if (shown("model.layer_types", "[]")) extras += " in some layers";
  }
  if (shown("model.attn_logit_softcapping", "0.0")) {
    extras += ", scores capped at " + value("model.attn_logit_softcapping");
  }
  if (shown("model.final_logit_softcapping", "0.0")) {
    extras += ", logits capped at " + value("model.final_logit_softcapping");
  }
  if (shown("model.no_rope_layers", "[]")) extras += ", NoPE in some layers";
  if (shown("model.fused_projections", "false")) extras += ", fused qkv_proj / gate_up_proj";
  if (shown("model.rope_scaling", "none")) {
    extras += ", RoPE " + value("model.rope_scaling") + " x" + value("model.rope_factor");
  }
  out << "config:\n"
      << "  model    path " << value("model.path") << ", " << value("model.n_layers")
      << " layers, dim " << value("model.dim") << ", heads " << value("model.n_heads") << "/"
      << value("model.n_kv_heads") << extras << ", ffn " << value("model.ffn_dim") << ", vocab "
      << value("model.vocab_size") << "\n"
      << "  adapter  " << value("adapter.type") << " r " << value("adapter.r") << ", alpha "
      << value("adapter.alpha") << ", dropout " << value("adapter.dropout") << ", targets "
      << value("adapter.target_modules") << "\n";
  if (value("adapter.type") == "adalora") {
    out << "  adalora  init_r " << value("adapter.init_r") << ", target_r "
        << value("adapter.target_r") << ", tinit " << value("adapter.tinit") << ", tfinal "
        << value("adapter.tfinal") << ", deltaT " << value("adapter.deltaT") << ", total_step "
        << value("adapter.total_step") << "\n";
  }
  out << "  data     " << value("data.train") << ", seq_len " << value("data.seq_len") << "\n"
      << "  train    steps " << value("train.steps") << ", micro_batch_size "
      << value("train.micro_batch_size") << ", grad_accum " << value("train.grad_accum")
      << ", seed " << value("train.seed") << "\n"
      << "  optim    lr " << value("optim.lr") << ", " << value("optim.schedule")
      << ", warmup "
      // A warmup_ratio run records the ratio, not the steps it derived (config_to_yaml).
      << (config.count("optim.warmup_steps") ? value("optim.warmup_steps")
                                             : "ratio " + value("optim.warmup_ratio"))
      << ", weight_decay " << value("optim.weight_decay") << ", max_grad_norm "
      << value("optim.max_grad_norm") << "\n";
}

// adapter_config.json: its summary, and AdaLoRA's kept rank per module from rank_pattern.
void print_adapter_config(const fs::path& file, std::ostream& out) {
  std::ifstream in(file);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
    out << file.filename().string() << ": " << j.at("peft_type").get<std::string>()
        << (j.value("use_dora", false) ? " (DoRA)" : "") << ", r " << j.at("r") << ", lora_alpha "
        << j.at("lora_alpha") << ", target_modules " << j.at("target_modules").dump() << "\n";
    if (j.at("peft_type") != "ADALORA") return;
    const int init_r = j.at("init_r").get<int>();
    const nlohmann::json& pattern = j.at("rank_pattern");
    if (!pattern.is_object() || pattern.empty()) {
      out << "AdaLoRA rank per module: every module at init_r " << init_r
          << " (no budget mask yet)\n";
      return;
    }
    out << "AdaLoRA rank per module (kept of init_r " << init_r << "):\n";
    int total = 0;
    for (const auto& [module, mask] : pattern.items()) {
      int kept = 0;
      for (const auto& bit : mask) kept += bit.get<bool>() ? 1 : 0;
      total += kept;
      out << "  " << module << "  " << kept << "\n";
    }
    out << "  total  " << total << " over " << pattern.size() << " modules\n";
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(file.string() + ": not a readable PEFT adapter config (" + e.what() +
                             ")");
  }
}

}  // namespace

int run_inspect_command(const std::vector<std::string>& args, std::ostream& out,
                        std::ostream& err) {
  if (args.size() != 1 || args[0].empty() || args[0][0] == '-') {
    err << "peftrun inspect: expected exactly one checkpoint or adapter folder\n";
    return 2;
  }
  const fs::path dir = args[0];
  try {
    const bool checkpoint = fs::exists(dir / "trainer_state.json");
    if (!checkpoint && !fs::exists(dir / "adapter_config.json")) {
      err << "peftrun inspect: '" << dir.string()
          << "' is neither a peftrun checkpoint (no trainer_state.json) nor a PEFT adapter "
             "folder (no adapter_config.json)\n";
      return 1;
    }
    if (checkpoint) {
      const CheckpointHeader h = read_checkpoint_header(dir.string());
      verify_checkpoint_files(h);
      const BatchSplit& b = h.batch;
      out << "checkpoint " << dir.string() << "\n"
          << "  step " << h.step << " (" << h.adapter_type << ", " << h.trainable_elements
          << " trainable values), written by peftrun " << h.peftrun_version << "\n"
          << "  global batch " << b.global_batch() << " sequences = " << b.world_size
          << " rank(s) x grad_accum " << b.grad_accum << " x micro_batch_size "
          << b.micro_batch_size << "; next sample " << std::int64_t(h.step) * b.global_batch()
          << "\n"
          << "  config digest " << h.config_digest << "\n"
          << "  files complete: ";
      bool first = true;
      for (const auto& [name, size] : h.files) {
        out << (first ? "" : ", ") << name << " (" << size << " bytes)";
        first = false;
      }
      out << ", trainer_state.json\n";
      if (h.adapter_type == "adalora") {
        out << "  adalora mask " << (h.adalora_fixed ? "fixed" : "not fixed yet")
            << (h.adalora_has_pattern ? "" : ", never applied") << "\n";
      }
      print_config_summary(h.config, out);
    } else {
      if (!fs::exists(dir / "adapter_model.safetensors")) {
        err << "peftrun inspect: '" << dir.string()
            << "' has adapter_config.json but no adapter_model.safetensors\n";
        return 1;
      }
      out << "PEFT adapter " << dir.string() << "\n";
    }
    if (fs::exists(dir / "adapter_config.json"))
      print_adapter_config(dir / "adapter_config.json", out);
    for (const char* file : {"adapter_model.safetensors", "trainer_state.safetensors"}) {
      if (fs::exists(dir / file)) print_tensors(dir / file, out);
    }
    return 0;
  } catch (const std::exception& e) {
    err << "peftrun inspect: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace peftrun
