#include "runtime/data/dataset_factory.h"

#include <ostream>

#include "runtime/data/batch_loader.h"
#include "runtime/data/chat_template.h"
#include "runtime/data/dataset_cache.h"
#include "runtime/data/packed_source.h"
#include "runtime/data/token_window_source.h"
#include "runtime/io/sha256.h"

namespace peftrun {

namespace {

std::string ids_text(const std::vector<std::int32_t>& ids) {
  std::string s;
  for (std::int32_t id : ids) {
    if (!s.empty()) s += ',';
    s += std::to_string(id);
  }
  return s;
}

}  // namespace

DatasetOpener::DatasetOpener(const Config& config, std::ostream& log, bool write_cache)
    : config_(config), log_(log), write_cache_(write_cache) {}

DatasetOpener::~DatasetOpener() = default;

std::unique_ptr<DataSource> DatasetOpener::open_train() {
  return open(config_.data.train, config_.data.format);
}

std::unique_ptr<DataSource> DatasetOpener::open_eval() {
  return open(config_.data.eval, config_.data.effective_eval_format());
}

void DatasetOpener::load_tokenizer() {
  if (tokenizer_) return;
  const std::string path =
      config_.data.tokenizer.empty() ? config_.model.path : config_.data.tokenizer;
  if (path.empty()) {
    throw std::runtime_error(
        "data.format: JSONL data needs a tokenizer; set data.tokenizer or "
        "model.path");
  }
  tokenizer_.emplace(Tokenizer::load(path));
  model_tokens_ = read_model_tokens(path, *tokenizer_);
  if (tokenizer_->vocab_size() > config_.model.vocab_size) {
    throw std::runtime_error(
        "tokenizer '" + tokenizer_->source() + "' has " + std::to_string(tokenizer_->vocab_size()) +
        " ids, more than the model's vocab_size " + std::to_string(config_.model.vocab_size) +
        "; its ids would not fit the embedding table");
  }
  log_ << "tokenizer " << tokenizer_->source() << ": " << tokenizer_->vocab_size() << " ids; "
       << model_tokens_.describe(*tokenizer_) << "\n";
}

std::unique_ptr<DataSource> DatasetOpener::open(const std::string& path, DataFormat format) {
  const int T = config_.data.seq_len;
  if (format == DataFormat::kTokens) {
    TokenFile file = TokenFile::load(path);
    check_vocab_fits(file, config_.model.vocab_size);
    return std::make_unique<TokenWindowSource>(BatchLoader(std::move(file), T, config_.train.seed));
  }
  load_tokenizer();
  ChatTemplate tmpl = config_.data.chat_template;
  if (format == DataFormat::kChat && tmpl == ChatTemplate::kAuto) {
    if (model_tokens_.chat_template.empty()) {
      throw std::runtime_error("data.chat_template: auto, but the tokenizer folder of '" +
                               tokenizer_->source() +
                               "' has no chat template; set data.chat_template to chatml, "
                               "llama3, llama2, mistral or gemma");
    }
    tmpl = detect_chat_template(model_tokens_.chat_template);
    if (tmpl == ChatTemplate::kAuto) {
      throw std::runtime_error("data.chat_template: auto does not recognise the chat template in " +
                               model_tokens_.chat_template_source +
                               "; set data.chat_template to the closest of chatml, llama3, "
                               "llama2, mistral or gemma (docs/DATA.md shows what each renders)");
    }
  }
  const FormatContext context{*tokenizer_, model_tokens_, tmpl, config_.data.append_eos};
  DatasetCacheKey key;
  key.options = std::string("peftrun-dataset|format=") + to_string(format) +
                "|chat_template=" + (format == DataFormat::kChat ? to_string(tmpl) : "-") +
                "|append_eos=" + (config_.data.append_eos ? "1" : "0") +
                "|skip_bad_lines=" + (config_.data.skip_bad_lines ? "1" : "0") +
                "|tokenizer=" + model_tokens_.digest + "|prefix=" + ids_text(model_tokens_.prefix) +
                "|suffix=" + ids_text(model_tokens_.suffix) +
                "|eos=" + (model_tokens_.eos_id ? std::to_string(*model_tokens_.eos_id) : "-");
  key.source_digest = sha256_file_hex(path);
  const std::string cache_path = key.path_for(path);

  CorpusStats stats;
  std::string why;
  std::optional<TokenizedCorpus> corpus =
      load_dataset_cache(cache_path, key, tokenizer_->vocab_size(), stats, why);
  if (corpus) {
    log_ << "data " << path << ": tokenized " << to_string(format) << " from cache " << cache_path
         << "\n";
  } else {
    log_ << "data " << path << ": tokenizing " << to_string(format)
         << (format == DataFormat::kChat ? std::string(" (") + to_string(tmpl) + " template)" : "")
         << " (" << why << ")\n";
    stats = CorpusStats{};
    corpus = tokenize_jsonl(path, format, context, config_.data.skip_bad_lines, stats);
    if (write_cache_) {
      try {
        store_dataset_cache(cache_path, key, *corpus, stats);
      } catch (const std::exception& e) {
        log_ << "warning: could not write the dataset cache (" << e.what()
             << "); tokenizing again next run\n";
      }
    }
  }
  log_ << "data " << path << ": " << stats.lines << " lines -> " << corpus->num_docs()
       << " documents, " << corpus->tokens.size() << " tokens";
  if (stats.no_target > 0)
    log_ << "; " << stats.no_target << " without a token to train on dropped";
  if (stats.bad_lines > 0) {
    log_ << "; " << stats.bad_lines << " malformed line(s) skipped (first: " << stats.first_bad
         << ")";
  }
  log_ << "\n";
  return std::make_unique<PackedSource>(std::move(*corpus), T, config_.data.packing,
                                        config_.train.seed, path);
}

}  // namespace peftrun
