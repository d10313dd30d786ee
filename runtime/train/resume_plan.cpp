#include "runtime/train/resume_plan.h"

#include <cstdio>
#include <stdexcept>

#include <yaml-cpp/yaml.h>

namespace peftrun {

namespace {

bool one_of(const std::string& key, std::initializer_list<const char*> keys) {
  for (const char* k : keys) {
    if (key == k) return true;
  }
  return false;
}

// Where and how a run executes, not what it computes: free to differ on resume.
bool operational_key(const std::string& key) {
  return one_of(key, {"output_dir", "runtime.threads", "runtime.device", "runtime.compute_dtype",
                      "runtime.shard_base", "runtime.gradient_checkpointing", "comm.timeout_s",
                      "comm.bucket_mb", "train.log_every", "train.eval_every", "data.eval",
                      "data.eval_batches", "data.eval_format"});
}

// How the global batch is split over micro-batches; plan_resume checks the global batch itself.
bool split_key(const std::string& key) {
  return key == "train.grad_accum" || key == "train.micro_batch_size";
}

bool math_key(const std::string& key) {
  return !operational_key(key) && !split_key(key) && !resume_safe_key(key);
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

std::string split_text(const BatchSplit& b) {
  return std::to_string(b.world_size) + " rank(s) x grad_accum " + std::to_string(b.grad_accum) +
         " x micro_batch_size " + std::to_string(b.micro_batch_size);
}

std::string describe(const BatchSplit& b) {
  return std::to_string(b.global_batch()) + " sequences (" + split_text(b) + ")";
}

int saved_int(const CheckpointHeader& h, const std::string& key) {
  const auto it = h.config.find(key);
  try {
    if (it != h.config.end()) return std::stoi(it->second);
  } catch (const std::exception&) {
  }
  throw std::runtime_error(h.json_path + ": config record has no integer '" + key + "'");
}

}  // namespace

std::map<std::string, std::string> config_fingerprint(const Config& config) {
  std::map<std::string, std::string> out;
  const YAML::Node root = YAML::Load(config_to_yaml(config));
  for (const auto& section : root) {
    const std::string name = section.first.as<std::string>();
    if (!section.second.IsMap()) {
      out[name] = YAML::Dump(section.second);
      continue;
    }
    for (const auto& key : section.second) {
      out[name + "." + key.first.as<std::string>()] = YAML::Dump(key.second);
    }
  }
  // AdaLoRA's schedule length defaults to train.steps: record the length in effect, so that
  // changing train.steps is seen as changing the budget schedule (not a safe key then).
  if (config.adapter.type == AdapterType::kAdaLora) {
    out["adapter.total_step"] =
        std::to_string(config.adapter.adalora_total_step(config.train.steps));
  }
  return out;
}

bool resume_safe_key(const std::string& key) {
  return one_of(
      key, {"train.steps", "optim.lr", "optim.schedule", "optim.warmup_steps", "optim.warmup_ratio",
            "optim.min_lr_ratio", "checkpoint.every_steps", "checkpoint.keep_last"});
}

std::string config_digest(const std::map<std::string, std::string>& fingerprint,
                          std::int64_t global_batch) {
  // FNV-1a over "key=value\n" in key order (std::map): no dependency, and stable by definition.
  std::uint64_t h = 0xcbf29ce484222325ull;
  auto feed = [&](const std::string& s) {
    for (const unsigned char c : s) {
      h ^= c;
      h *= 0x100000001b3ull;
    }
  };
  for (const auto& [key, value] : fingerprint) {
    if (math_key(key)) feed(key + "=" + value + "\n");
  }
  feed("train.global_batch=" + std::to_string(global_batch) + "\n");
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(h));
  return std::string("fnv1a64:") + hex;
}

ResumePlan plan_resume(const CheckpointHeader& ck, const Config& config, int world_size,
                       bool force) {
  ResumePlan plan;
  const std::string& file = ck.json_path;

  // 1. The global batch: same samples per step, whatever the split.
  const BatchSplit saved = ck.batch;
  const std::int64_t global = saved.global_batch();
  const int B = config.train.micro_batch_size;
  const bool accum_set = config.train.grad_accum != saved_int(ck, "train.grad_accum");
  BatchSplit now{world_size, config.train.grad_accum, B};
  if (!accum_set) {
    if (global % (std::int64_t(world_size) * B) != 0) {
      throw std::runtime_error(file + ": cannot keep the checkpoint's global batch of " +
                               describe(saved) + " on " + std::to_string(world_size) +
                               " rank(s) with micro_batch_size " + std::to_string(B) + ": " +
                               std::to_string(global) + " is not a multiple of " +
                               std::to_string(std::int64_t(world_size) * B) +
                               "; use a world size (or train.micro_batch_size) that divides it");
    }
    now.grad_accum = static_cast<int>(global / (std::int64_t(world_size) * B));
  } else if (now.global_batch() != global) {
    throw std::runtime_error(file + ": train.grad_accum " + std::to_string(now.grad_accum) +
                             " gives a global batch of " + describe(now) +
                             ", but the checkpoint was trained with " + describe(saved) +
                             "; leave train.grad_accum as it was (it is adjusted to the world "
                             "size) or set it so the global batch stays the same");
  }
  plan.grad_accum = now.grad_accum;
  plan.bitwise = now.grad_accum == saved.grad_accum && B == saved.micro_batch_size &&
                 world_size == saved.world_size;
  if (!plan.bitwise) {
    plan.notes.push_back("resume: keeping the global batch of " + std::to_string(global) +
                         " sequences as " + split_text(now) + " (checkpoint: " + split_text(saved) +
                         "); the continuation matches to fp32 rounding, not bit for bit");
  }

  // 2. Every other key, by group. A math key the checkpoint's record lacks was added to peftrun
  // after the checkpoint was written; the peftrun that wrote it computed what the key's default
  // computes, so at its default it is no change (a note says so) and the digest, which that
  // peftrun took without it, is compared over the keys the record has.
  std::map<std::string, std::string> current = config_fingerprint(config);
  const std::map<std::string, std::string> defaults = config_fingerprint(Config{});
  std::vector<std::string> newer;
  for (auto it = current.begin(); it != current.end();) {
    const auto d = defaults.find(it->first);
    if (!ck.config.count(it->first) && math_key(it->first) && d != defaults.end() &&
        d->second == it->second) {
      newer.push_back(it->first);
      it = current.erase(it);
    } else {
      ++it;
    }
  }
  if (!newer.empty()) {
    plan.notes.push_back("resume: the checkpoint (written by peftrun " + ck.peftrun_version +
                         ") predates " + join(newer) + "; at their defaults they change nothing");
  }
  std::vector<std::string> unsafe, safe;
  for (const auto& [key, value] : current) {
    const auto it = ck.config.find(key);
    if ((it != ck.config.end() && it->second == value) || operational_key(key) || split_key(key)) {
      continue;
    }
    const std::string change =
        key + " (" + (it == ck.config.end() ? "absent" : it->second) + " -> " + value + ")";
    (resume_safe_key(key) ? safe : unsafe).push_back(change);
  }
  for (const auto& [key, value] : ck.config) {
    if (!current.count(key) && math_key(key)) unsafe.push_back(key + " (" + value + " -> absent)");
  }
  if (!unsafe.empty()) {
    throw std::runtime_error(file + ": the config differs in keys that change the math: " +
                             join(unsafe) + "; resume with the checkpoint's config");
  }
  // The per-key comparison and the digest must agree; a digest that differs anyway means the
  // record itself is inconsistent (a newer peftrun with other keys, or a hand edit).
  const std::string digest = config_digest(current, global);
  if (digest != ck.config_digest) {
    throw std::runtime_error(file + ": config_digest " + ck.config_digest +
                             " differs from this config's " + digest +
                             " although no recorded key differs (written by peftrun " +
                             ck.peftrun_version + ", this is " + PEFTRUN_VERSION + ")");
  }
  if (!safe.empty()) {
    if (!force) {
      throw std::runtime_error(file + ": the config differs in " + join(safe) +
                               "; these are safe to change: add --resume-force to accept them");
    }
    for (const auto& s : safe) plan.notes.push_back("--resume-force: accepting changed " + s);
  }
  return plan;
}

}  // namespace peftrun
