// Rows from tokenized documents: chunking and best-fit packing, the row contents (positions
// restarting per document, -100 on untrained targets and padding), the stateless sample order,
// packing boundaries checked through the model (a token's logits do not change when another
// document of its pack changes), and the dataset cache (hit, stale, corrupt).
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <sstream>

#include "kernels/cross_entropy.h"
#include "runtime/adapters/adapter_layout.h"
#include "runtime/data/dataset_cache.h"
#include "runtime/data/dataset_factory.h"
#include "runtime/data/packed_rows.h"
#include "runtime/data/packed_source.h"
#include "runtime/model/base_weights.h"
#include "runtime/model/transformer.h"
#include "tests/support/scratch_dir.h"

namespace peftrun {
namespace {

using testing_support::ScratchDir;

// Documents of the given lengths; token values encode (document, position) so rows can be
// checked by value; `untrained` positions of every document are not trained.
TokenizedCorpus make_corpus(const std::vector<int>& lengths, std::vector<int> untrained = {}) {
  TokenizedCorpus c;
  for (std::size_t d = 0; d < lengths.size(); ++d) {
    TokenizedExample ex;
    for (int k = 0; k < lengths[d]; ++k) {
      ex.ids.push_back(static_cast<std::int32_t>(100 * d + k) % 997);
      ex.trained.push_back(std::find(untrained.begin(), untrained.end(), k) == untrained.end() ? 1
                                                                                               : 0);
    }
    c.add(ex);
  }
  return c;
}

struct Rows {
  std::vector<std::int32_t> inputs, targets, positions, segments;
  explicit Rows(std::size_t n) : inputs(n), targets(n), positions(n), segments(n) {}
  BatchBuffers buffers() {
    return {inputs.data(), targets.data(), positions.data(), segments.data()};
  }
};

TEST(PackedRows, EveryPredictionOnceInRowsThatFit) {
  const int L = 8;
  const TokenizedCorpus c = make_corpus({3, 9, 20, 5, 2, 8, 1, 4});
  for (bool packing : {true, false}) {
    const PackedRows rows = plan_rows(c, L, packing);
    // Each target token (position >= 1 of its document) is predicted exactly once.
    std::map<std::uint64_t, int> predicted;
    for (std::uint64_t r = 0; r < rows.num_rows(); ++r) {
      std::uint64_t used = 0;
      for (std::uint64_t k = rows.row_offsets[r]; k < rows.row_offsets[r + 1]; ++k) {
        used += rows.chunks[k].length;
        for (std::uint32_t j = 0; j < rows.chunks[k].length; ++j) {
          ++predicted[rows.chunks[k].first + j + 1];
        }
      }
      EXPECT_LE(used, std::uint64_t(L));
      if (!packing) {
        EXPECT_EQ(rows.row_offsets[r + 1] - rows.row_offsets[r], 1u);
      }
    }
    std::uint64_t expected = 0;
    for (std::size_t d = 0; d < c.num_docs(); ++d) {
      for (std::uint64_t t = c.doc_offsets[d] + 1; t < c.doc_offsets[d + 1]; ++t) {
        EXPECT_EQ(predicted[t], 1) << "token " << t;
        ++expected;
      }
    }
    EXPECT_EQ(predicted.size(), expected);  // the 1-token document predicts nothing
  }
  // 2 + 8 + 19 + 4 + 1 + 7 + 3 = 44 predictions: best fit needs ceil(44 / 8) = 6 rows here.
  EXPECT_EQ(plan_rows(c, L, true).num_rows(), 6u);
  EXPECT_EQ(plan_rows(c, L, false).num_rows(), 9u);  // the 19 are 3 chunks, the 0 none
}

TEST(PackedRows, ChunksWithoutTrainedTargetsAreDropped) {
  // A long prompt (untrained tokens 0..11) and a short completion: the first chunk of 8
  // predictions has only prompt targets and is not worth a row.
  const TokenizedCorpus c = make_corpus({16}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  const PackedRows rows = plan_rows(c, 8, false);
  ASSERT_EQ(rows.num_rows(), 1u);
  EXPECT_EQ(rows.chunks[0].first, 8u);
  EXPECT_EQ(rows.chunks[0].length, 7u);
}

TEST(PackedSource, RowsRestartPositionsAndMaskUntrainedTargets) {
  const int L = 8;
  // Two documents that share one packed row; token 1 of each is untrained (a "prompt").
  const TokenizedCorpus c = make_corpus({4, 5}, {1});
  PackedSource packed(c, L, true, 7, "mem");
  ASSERT_EQ(packed.num_rows(), 1u);
  Rows out(L);
  ASSERT_EQ(packed.fill_eval_batch(0, 1, out.buffers()), 1);
  // Longest first: document 1 (4 predictions) then document 0 (3), then one padding slot.
  const std::vector<std::int32_t> pos = {0, 1, 2, 3, 0, 1, 2, 0};
  const std::vector<std::int32_t> seg = {0, 0, 0, 0, 1, 1, 1, -1};
  const std::int32_t X = cpu::kIgnoreIndex;
  const std::vector<std::int32_t> in = {100, 101, 102, 103, 0, 1, 2, 0};
  const std::vector<std::int32_t> tgt = {X, 102, 103, 104, X, 2, 3, X};
  EXPECT_EQ(out.positions, pos);
  EXPECT_EQ(out.segments, seg);
  EXPECT_EQ(out.inputs, in);
  EXPECT_EQ(out.targets, tgt);

  PackedSource padded(c, L, false, 7, "mem");
  ASSERT_EQ(padded.num_rows(), 2u);
  Rows two(2 * L);
  ASSERT_EQ(padded.fill_eval_batch(0, 2, two.buffers()), 2);
  EXPECT_EQ(std::vector<std::int32_t>(two.targets.begin(), two.targets.begin() + L),
            (std::vector<std::int32_t>{X, 2, 3, X, X, X, X, X}));
  // A partial last eval batch is padded with rows that train nothing.
  Rows three(3 * L);
  EXPECT_EQ(padded.fill_eval_batch(0, 3, three.buffers()), 2);
  for (int i = 2 * L; i < 3 * L; ++i) EXPECT_EQ(three.targets[i], X);
}

TEST(PackedSource, SampleOrderIsAPureFunctionOfSeedAndIndex) {
  const TokenizedCorpus c = make_corpus({5, 9, 3, 7, 2, 6, 8, 4, 5, 3, 9, 7});
  PackedSource a(c, 6, true, 42, "a"), b(c, 6, true, 42, "b"), other(c, 6, true, 43, "c");
  const std::uint64_t n = a.num_rows();
  ASSERT_GT(n, 3u);
  // A batch of 2n samples (two epochs) equals the same samples fetched one by one, in any
  // order, from another source: no hidden loader state.
  Rows whole(2 * n * 6), single(6);
  a.fill_batch(0, static_cast<int>(2 * n), whole.buffers());
  for (std::uint64_t i = 2 * n; i-- > 0;) {
    b.fill_batch(i, 1, single.buffers());
    EXPECT_TRUE(
        std::equal(single.inputs.begin(), single.inputs.end(), whole.inputs.begin() + i * 6))
        << "sample " << i;
  }
  // Each epoch visits every row once; another seed gives another order.
  std::set<std::vector<std::int32_t>> epoch0;
  for (std::uint64_t i = 0; i < n; ++i) {
    epoch0.insert(std::vector<std::int32_t>(whole.inputs.begin() + i * 6,
                                            whole.inputs.begin() + (i + 1) * 6));
  }
  EXPECT_EQ(epoch0.size(), n);
  Rows o(n * 6);
  other.fill_batch(0, static_cast<int>(n), o.buffers());
  EXPECT_FALSE(std::equal(o.inputs.begin(), o.inputs.end(), whole.inputs.begin()));
}

// The model with segments: a token's logits depend only on its own document, whatever is
// packed next to it; and a document packed behind another gives the logits it gives alone.
TEST(PackedSource, PackedDocumentsDoNotSeeEachOther) {
  ModelConfig m;
  m.dim = 32;
  m.n_layers = 2;
  m.n_heads = 4;
  m.n_kv_heads = 2;
  m.ffn_dim = 48;
  m.vocab_size = 997;
  m.max_seq_len = 16;
  AdapterConfig a;
  a.target_modules = all_target_modules();
  const BaseWeights base = BaseWeights::random(m, 5);
  const AdapterLayout layout = AdapterLayout::plan(m, a);
  std::vector<float> params(layout.total());
  layout.init_params(params.data(), 3);
  const int L = 16, V = m.vocab_size;
  Transformer<float> model(base, layout, a, 1, L);
  auto logits_of = [&](const TokenizedCorpus& c, bool packing, int row, bool segments) {
    PackedSource s(c, L, packing, 1, "mem");
    Rows out(L);
    s.fill_eval_batch(row, 1, out.buffers());
    const Batch b{1,
                  L,
                  out.inputs.data(),
                  out.targets.data(),
                  out.positions.data(),
                  segments ? out.segments.data() : nullptr};
    std::vector<float> logits(std::size_t(L) * V);
    model.eval_micro_batch(b, params.data(), logits.data());
    return logits;
  };
  // Document 0 has 7 predictions (placed first: longest), document 1 has 5.
  TokenizedCorpus c = make_corpus({8, 6});
  const std::vector<float> before = logits_of(c, true, 0, true);
  for (std::uint64_t t = c.doc_offsets[1]; t < c.doc_offsets[2]; ++t) {
    c.tokens[t] = (c.tokens[t] * 7 + 3) % V;  // a different second document
  }
  const std::vector<float> after = logits_of(c, true, 0, true);
  // Document 0 fills slots 0..6: bit-identical logits.
  EXPECT_TRUE(std::equal(before.begin(), before.begin() + 7 * V, after.begin()));
  // Slots 7..11 (document 1) did change, so the comparison above is not vacuous ...
  EXPECT_FALSE(std::equal(before.begin() + 7 * V, before.begin() + 12 * V, after.begin() + 7 * V));
  // ... and without segment ids document 1 would see document 0.
  const std::vector<float> no_segments = logits_of(c, true, 0, false);
  EXPECT_FALSE(
      std::equal(after.begin() + 7 * V, after.begin() + 12 * V, no_segments.begin() + 7 * V));
  // Document 1 packed behind document 0 = document 1 alone in its own row (positions restart).
  const std::vector<float> alone = logits_of(c, false, 1, true);
  for (int i = 0; i < 5 * V; ++i) {
    ASSERT_NEAR(after[7 * V + i], alone[i], 1e-4f) << "logit " << i;
  }
}

// --- cache ------------------------------------------------------------------------------------

Config jsonl_config(const std::string& train, const std::string& tokenizer) {
  Config cfg;
  cfg.data.train = train;
  cfg.data.format = DataFormat::kText;
  cfg.data.tokenizer = tokenizer;
  cfg.data.seq_len = 16;
  cfg.model.vocab_size = 1024;
  return cfg;
}

std::vector<std::int32_t> all_rows(DataSource& s, int L) {
  Rows out(std::size_t(s.num_rows()) * L);
  s.fill_eval_batch(0, static_cast<int>(s.num_rows()), out.buffers());
  return out.targets;
}

TEST(DatasetCache, HitStaleAndCorruptCachesAreHandled) {
  ScratchDir d("dataset_cache");
  std::string lines;
  for (int i = 0; i < 20; ++i)
    lines += "{\"text\": \"Document " + std::to_string(i) + " here.\"}\n";
  const std::string train = d.write("train.jsonl", lines);
  const std::string tok = std::string(PEFTRUN_SOURCE_DIR) + "/tests/tokenizer/fixtures/llama3";
  const Config cfg = jsonl_config(train, tok);
  auto open = [&](std::string& log_text) {
    std::ostringstream log;
    auto s = DatasetOpener(cfg, log, true).open_train();
    log_text = log.str();
    return s;
  };
  std::string log;
  const std::vector<std::int32_t> fresh = all_rows(*open(log), 16);
  EXPECT_NE(log.find("tokenizing text (no cache yet)"), std::string::npos) << log;
  const auto cache_dir = std::filesystem::path(train + ".peftrun-cache");
  ASSERT_TRUE(std::filesystem::is_directory(cache_dir));
  std::string cache_file;
  for (const auto& e : std::filesystem::directory_iterator(cache_dir)) cache_file = e.path();
  ASSERT_FALSE(cache_file.empty());

  EXPECT_EQ(all_rows(*open(log), 16), fresh);  // hit: same rows
  EXPECT_NE(log.find("from cache"), std::string::npos) << log;

  // Flip one byte of the cached tokens: detected by the payload digest and rebuilt.
  {
    std::fstream f(cache_file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-5, std::ios::end);
    char byte = 0;
    f.read(&byte, 1);
    f.seekp(-5, std::ios::end);
    byte = static_cast<char>(byte ^ 0x11);
    f.write(&byte, 1);
  }
  EXPECT_EQ(all_rows(*open(log), 16), fresh);
  EXPECT_NE(log.find("corrupt"), std::string::npos) << log;
  // Truncated: not even a safetensors file any more.
  std::filesystem::resize_file(cache_file, 20);
  EXPECT_EQ(all_rows(*open(log), 16), fresh);
  EXPECT_NE(log.find("corrupt"), std::string::npos) << log;
  EXPECT_EQ(all_rows(*open(log), 16), fresh);
  EXPECT_NE(log.find("from cache"), std::string::npos) << log;

  // The source changes: the cache is stale, the new text is what trains.
  d.write("train.jsonl", lines + "{\"text\": \"One more document.\"}\n");
  const std::vector<std::int32_t> changed = all_rows(*open(log), 16);
  EXPECT_NE(log.find("stale: the source file changed"), std::string::npos) << log;
  EXPECT_NE(changed, fresh);
  // Another tokenizer or format option: another cache file, both kept.
  Config other = cfg;
  other.data.append_eos = false;
  std::ostringstream other_log;
  DatasetOpener(other, other_log, true).open_train();
  EXPECT_NE(other_log.str().find("no cache yet"), std::string::npos) << other_log.str();
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(cache_dir)) files += e.is_regular_file();
  EXPECT_EQ(files, 2);
  // A rank that may not write caches still gets the data.
  std::filesystem::remove_all(cache_dir);
  std::ostringstream quiet;
  EXPECT_EQ(all_rows(*DatasetOpener(cfg, quiet, false).open_train(), 16), changed);
  EXPECT_FALSE(std::filesystem::exists(cache_dir));
}

TEST(DatasetOpener, RefusesATokenizerLargerThanTheModel) {
  ScratchDir d("opener_vocab");
  const std::string train = d.write("train.jsonl", "{\"text\": \"hello\"}\n");
  Config cfg =
      jsonl_config(train, std::string(PEFTRUN_SOURCE_DIR) + "/tests/tokenizer/fixtures/qwen2");
  cfg.model.vocab_size = 256;
  std::ostringstream log;
  try {
    DatasetOpener(cfg, log, false).open_train();
    FAIL() << "accepted a tokenizer with more ids than the model";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("1002 ids, more than the model's vocab_size 256"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace peftrun
