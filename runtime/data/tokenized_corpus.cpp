#include "runtime/data/tokenized_corpus.h"

#include <algorithm>

#include "runtime/data/jsonl_reader.h"

namespace peftrun {

void TokenizedCorpus::add(const TokenizedExample& ex) {
  tokens.insert(tokens.end(), ex.ids.begin(), ex.ids.end());
  trained.insert(trained.end(), ex.trained.begin(), ex.trained.end());
  doc_offsets.push_back(tokens.size());
}

TokenizedCorpus tokenize_jsonl(const std::string& path, DataFormat format,
                               const FormatContext& context, bool skip_bad_lines,
                               CorpusStats& stats) {
  TokenizedCorpus corpus;
  JsonlReader reader(path);
  nlohmann::json value;
  auto bad = [&](const DataLineError& e) {
    if (!skip_bad_lines) throw e;
    if (stats.bad_lines++ == 0) stats.first_bad = e.what();
  };
  for (;;) {
    try {
      if (!reader.next(value)) break;
    } catch (const DataLineError& e) {
      ++stats.lines;
      bad(e);
      continue;
    }
    ++stats.lines;
    TokenizedExample ex;
    try {
      ex = tokenize_example(value, format, context);
    } catch (const std::invalid_argument& e) {
      bad(DataLineError(path, reader.line(), e.what()));
      continue;
    }
    // Token 0 is never a target: a document needs a trained token after it.
    if (ex.ids.size() < 2 ||
        std::find(ex.trained.begin() + 1, ex.trained.end(), 1) == ex.trained.end()) {
      ++stats.no_target;
      continue;
    }
    corpus.add(ex);
  }
  return corpus;
}

}  // namespace peftrun
