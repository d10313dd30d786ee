#include "runtime/data/dataset_cache.h"

#include <nlohmann/json.hpp>

#include <filesystem>

#include "runtime/io/safetensors.h"
#include "runtime/io/sha256.h"

namespace peftrun {

namespace {

namespace fs = std::filesystem;
constexpr const char* kCacheFormat = "peftrun-dataset-cache-1";

std::string payload_digest(const TokenizedCorpus& c) {
  Sha256 h;
  h.update(c.tokens.data(), c.tokens.size() * sizeof(std::int32_t));
  h.update(c.trained.data(), c.trained.size());
  h.update(c.doc_offsets.data(), c.doc_offsets.size() * sizeof(std::uint64_t));
  return h.finish_hex();
}

// Why `c` is not a well-formed corpus, or "".
std::string structure_problem(const TokenizedCorpus& c, std::int32_t vocab_size) {
  if (c.trained.size() != c.tokens.size()) return "tokens and trained differ in length";
  if (c.doc_offsets.empty() || c.doc_offsets.front() != 0 ||
      c.doc_offsets.back() != c.tokens.size()) {
    return "doc_offsets do not span the tokens";
  }
  for (std::size_t d = 1; d < c.doc_offsets.size(); ++d) {
    if (c.doc_offsets[d] < c.doc_offsets[d - 1]) return "doc_offsets decrease";
  }
  for (std::int32_t t : c.tokens) {
    if (t < 0 || t >= vocab_size)
      return "token id " + std::to_string(t) + " outside the vocabulary";
  }
  for (std::uint8_t f : c.trained) {
    if (f > 1) return "trained flags other than 0/1";
  }
  return "";
}

}  // namespace

std::string DatasetCacheKey::path_for(const std::string& source) const {
  return source + ".peftrun-cache/" + sha256_hex(options).substr(0, 32) + ".safetensors";
}

std::optional<TokenizedCorpus> load_dataset_cache(const std::string& path,
                                                  const DatasetCacheKey& key,
                                                  std::int32_t vocab_size, CorpusStats& stats,
                                                  std::string& why) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    why = "no cache yet";
    return std::nullopt;
  }
  try {
    const SafetensorsReader r(path);
    const auto& meta = r.metadata();
    const auto get = [&](const char* k) {
      const auto it = meta.find(k);
      return it == meta.end() ? std::string() : it->second;
    };
    if (get("format") != kCacheFormat) {
      why = "stale: written by another cache format";
      return std::nullopt;
    }
    if (get("key") != key.full()) {
      why = get("key").rfind(key.options, 0) == 0 ? "stale: the source file changed"
                                                  : "stale: the tokenizer or options changed";
      return std::nullopt;
    }
    TokenizedCorpus c;
    const auto count = [&](const char* name, TensorDType dtype) -> std::size_t {
      const TensorInfo& info = r.info(name);
      if (info.dtype != dtype || info.shape.size() != 1) {
        throw std::runtime_error(std::string("tensor '") + name + "' has the wrong dtype or rank");
      }
      return static_cast<std::size_t>(info.numel());
    };
    c.tokens.resize(count("tokens", TensorDType::kI32));
    c.trained.resize(count("trained", TensorDType::kU8));
    c.doc_offsets.resize(count("doc_offsets", TensorDType::kI64));
    r.read_tensor_into("tokens", c.tokens.data(), c.tokens.size() * sizeof(std::int32_t));
    r.read_tensor_into("trained", c.trained.data(), c.trained.size());
    r.read_tensor_into("doc_offsets", c.doc_offsets.data(),
                       c.doc_offsets.size() * sizeof(std::uint64_t));
    if (payload_digest(c) != get("payload_sha256")) {
      why = "corrupt: its contents do not match their recorded digest";
      return std::nullopt;
    }
    const std::string problem = structure_problem(c, vocab_size);
    if (!problem.empty()) {
      why = "corrupt: " + problem;
      return std::nullopt;
    }
    const nlohmann::json s = nlohmann::json::parse(get("stats"));
    stats.lines = s.at("lines").get<std::uint64_t>();
    stats.bad_lines = s.at("bad_lines").get<std::uint64_t>();
    stats.no_target = s.at("no_target").get<std::uint64_t>();
    stats.first_bad = s.at("first_bad").get<std::string>();
    return c;
  } catch (const std::exception& e) {
    why = std::string("corrupt: ") + e.what();
    return std::nullopt;
  }
}

void store_dataset_cache(const std::string& path, const DatasetCacheKey& key,
                         const TokenizedCorpus& corpus, const CorpusStats& stats) {
  fs::create_directories(fs::path(path).parent_path());
  SafetensorsWriter w;
  w.add_i32("tokens", {static_cast<std::int64_t>(corpus.tokens.size())}, corpus.tokens);
  w.add("trained", TensorDType::kU8, {static_cast<std::int64_t>(corpus.trained.size())},
        corpus.trained.data(), corpus.trained.size());
  w.add("doc_offsets", TensorDType::kI64, {static_cast<std::int64_t>(corpus.doc_offsets.size())},
        corpus.doc_offsets.data(), corpus.doc_offsets.size() * sizeof(std::uint64_t));
  w.set_metadata("format", kCacheFormat);
  w.set_metadata("key", key.full());
  w.set_metadata("payload_sha256", payload_digest(corpus));
  w.set_metadata("stats", nlohmann::json{{"lines", stats.lines},
                                         {"bad_lines", stats.bad_lines},
                                         {"no_target", stats.no_target},
                                         {"first_bad", stats.first_bad}}
                              .dump());
  w.write(path);
}

}  // namespace peftrun
