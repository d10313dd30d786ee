// Tokenizer parity: peftrun's tokenizer.json implementation against ids made by the Hugging
// Face `tokenizers` library (tests/tokenizer/make_fixtures.py, committed fixtures) for every
// supported family, on a multilingual corpus; plus offsets, error messages and the digest.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/io/sha256.h"
#include "runtime/tokenizer/decoder.h"
#include "runtime/tokenizer/regex.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tests/support/run_command.h"
#include "tests/support/scratch_dir.h"

namespace fs = std::filesystem;
using peftrun::Tokenizer;

namespace {

const std::string kFixtures = std::string(PEFTRUN_SOURCE_DIR) + "/tests/tokenizer/fixtures";
const std::vector<std::string> kStyles = {"gpt2",   "smollm",  "llama3", "qwen2",
                                          "llama2", "mistral", "gemma"};

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  return nlohmann::json::parse(in);
}

std::string show(const std::vector<std::int32_t>& ids) {
  std::ostringstream o;
  for (std::size_t i = 0; i < ids.size(); ++i) o << (i ? " " : "") << ids[i];
  return o.str();
}

// Every case of one fixture folder; returns the number of mismatches (each reported).
int check_folder(const std::string& folder) {
  const Tokenizer t = Tokenizer::load(folder);
  const nlohmann::json expected = read_json(folder + "/expected.json");
  EXPECT_EQ(t.vocab_size(), expected["vocab_size"].get<int>()) << folder;
  int failures = 0;
  for (const auto& c : expected["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const auto ids = c["ids"].get<std::vector<std::int32_t>>();
    const auto with_special = c["ids_with_special_tokens"].get<std::vector<std::int32_t>>();
    const std::vector<std::int32_t> got = t.encode_ids(text, false);
    const std::vector<std::int32_t> got_special = t.encode_ids(text, true);
    const std::string decoded = t.decode(ids, false);
    const std::string decoded_skip = t.decode(ids, true);
    bool ok = true;
    if (got != ids) {
      ADD_FAILURE() << folder << ": text '" << text << "'\n  tokenizers: " << show(ids)
                    << "\n  peftrun:    " << show(got);
      ok = false;
    }
    if (got_special != with_special) {
      ADD_FAILURE() << folder << ": with special tokens, text '" << text
                    << "'\n  tokenizers: " << show(with_special)
                    << "\n  peftrun:    " << show(got_special);
      ok = false;
    }
    if (decoded != c["decoded"].get<std::string>()) {
      ADD_FAILURE() << folder << ": decode of '" << text << "': '" << decoded << "' vs '"
                    << c["decoded"].get<std::string>() << "'";
      ok = false;
    }
    if (decoded_skip != c["decoded_skip_special"].get<std::string>()) {
      ADD_FAILURE() << folder << ": decode (skip special) of '" << text << "': '" << decoded_skip
                    << "' vs '" << c["decoded_skip_special"].get<std::string>() << "'";
      ok = false;
    }
    failures += ok ? 0 : 1;
  }
  return failures;
}

class TokenizerParity : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerParity, IdsAndDecodeEqualTheTokenizersLibrary) {
  EXPECT_EQ(check_folder(kFixtures + "/" + GetParam()), 0);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TokenizerParity, ::testing::ValuesIn(kStyles));

// The live check: regenerate the fixtures with the installed `tokenizers` into a temporary
// folder and compare against those (so the committed files are not the only evidence).
TEST(TokenizerParityLive, RegeneratedFixturesMatchWhenTokenizersIsInstalled) {
  const char* env = std::getenv("PEFTRUN_PYTHON");
  const std::string python = env && *env ? env : "python3";
  if (peftrun::testing_support::run_command(python + " -c 'import tokenizers'").exit_code != 0) {
    GTEST_SKIP() << "the Python package 'tokenizers' is not importable by " << python
                 << " (pip install -r tests/tokenizer/requirements.txt)";
  }
  const fs::path out = peftrun::testing_support::test_output_dir("tok", /*create=*/false);
  const auto r = peftrun::testing_support::run_command(
      python + " " + PEFTRUN_SOURCE_DIR + "/tests/tokenizer/make_fixtures.py " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  for (const std::string& style : kStyles) {
    EXPECT_EQ(check_folder((out / style).string()), 0) << style;
  }
}

TEST(TokenizerOffsets, TokensPointAtTheTextTheyCameFrom) {
  // Byte-level: every token's span, decoded alone, is exactly its slice of the input (for text
  // whose tokens do not split characters).
  const Tokenizer t = Tokenizer::load(kFixtures + "/llama3");
  const std::string text = "Hello, world! <|eot_id|> tabs\there 123456";
  const peftrun::Encoding e = t.encode(text, true);
  ASSERT_EQ(e.ids.size(), e.offsets.size());
  EXPECT_EQ(e.offsets[0], (peftrun::tok::ByteSpan{0, 0}));  // <|begin_of_text|> from the template
  std::size_t covered = 0;
  for (std::size_t i = 1; i < e.ids.size(); ++i) {
    const auto [b, end] = e.offsets[i];
    EXPECT_EQ(b, covered) << "token " << i << " does not start where the previous one ended";
    const std::vector<std::int32_t> one = {e.ids[i]};
    EXPECT_EQ(t.decode(one, false), text.substr(b, end - b)) << "token " << i;
    covered = end;
  }
  EXPECT_EQ(covered, text.size());
}

TEST(TokenizerOffsets, NormalisedTextMapsBackToTheOriginal) {
  // SentencePiece-style: spaces become '▁' (3 bytes) and a '▁' is prepended, yet every token's
  // span is in the original text; NFC composes e + U+0301 into one character of two sources.
  const Tokenizer sp = Tokenizer::load(kFixtures + "/llama2");
  const std::string text = "the river and the boats";
  const peftrun::Encoding e = sp.encode(text, false);
  EXPECT_EQ(e.offsets.front().first, 0u);
  EXPECT_EQ(e.offsets.back().second, text.size());
  for (std::size_t i = 1; i < e.offsets.size(); ++i) {
    EXPECT_EQ(e.offsets[i].first, e.offsets[i - 1].second);
  }
  const Tokenizer q = Tokenizer::load(kFixtures + "/qwen2");
  const std::string decomposed = "Cafe\xCC\x81 ok";  // "Cafe" + COMBINING ACUTE
  const peftrun::Encoding n = q.encode(decomposed, false);
  EXPECT_EQ(n.offsets.back().second, decomposed.size());
  for (const auto& [b, end] : n.offsets) EXPECT_LE(end, decomposed.size());
}

TEST(TokenizerErrors, BadFilesNameTheFileAndTheKey) {
  auto expect_error = [](const std::string& json, const std::string& needle) {
    try {
      Tokenizer::from_json(json, "/m/tokenizer.json");
      ADD_FAILURE() << "accepted: " << json;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("/m/tokenizer.json"), std::string::npos) << e.what();
    }
  };
  const std::string model =
      R"("model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})";
  expect_error("{", "not valid JSON");
  expect_error(R"({"model": {"type": "Unigram", "vocab": []}})", "model type 'Unigram'");
  expect_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a c"]}})",
               "merge token 'c' is not in the vocabulary");
  expect_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a a"]}})",
               "merged token 'aa'");
  expect_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "dropout": 0.1}})",
               "dropout");
  expect_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "unk_token": "?"}})",
               "unk_token");
  expect_error(R"({"normalizer": {"type": "Precompiled"}, )" + model + "}",
               "normalizer type 'Precompiled' is not supported");
  expect_error(R"({"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(["},
                   "behavior": "Isolated", "invert": false}, )" +
                   model + "}",
               "cannot compile regex");
  expect_error(R"({"decoder": {"type": "WordPiece"}, )" + model + "}", "decoder type 'WordPiece'");
  expect_error(R"({"added_tokens": [{"id": -1, "content": "x"}], )" + model + "}",
               "added_tokens[0].id");
  const Tokenizer t = Tokenizer::from_json("{" + model + "}", "/m/tokenizer.json");
  EXPECT_EQ(t.encode_ids("abab", false), (std::vector<std::int32_t>{2, 2}));
  EXPECT_THROW(t.encode("bad \xFF utf8", false), std::runtime_error);
}

TEST(TokenizerPieces, RegexTranslationKeepsOnigurumaWhitespace) {
  using peftrun::tok::Regex;
  const Regex re = Regex::pattern(R"(\s+)", "test");
  std::vector<peftrun::tok::ByteSpan> m;
  re.find_all(
      "a\xE1\xA0\x8E"
      "b c",
      m);  // U+180E is not White_Space any more; ' ' is
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0], (peftrun::tok::ByteSpan{5, 6}));
  EXPECT_EQ(Regex::translate(R"([^\s\p{L}]|\S)").find("\\s"), std::string::npos);
}

TEST(TokenizerPieces, LossyUtf8ReplacesMaximalSubparts) {
  using peftrun::tok::utf8_lossy;
  EXPECT_EQ(utf8_lossy("ok"), "ok");
  EXPECT_EQ(utf8_lossy("\xE2\x82"), "\xEF\xBF\xBD");  // truncated 3-byte
  EXPECT_EQ(utf8_lossy("\xFF"
                       "a"),
            "\xEF\xBF\xBD"
            "a");                                                 // not a lead byte
  EXPECT_EQ(utf8_lossy("\xE0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // E0 needs A0..BF next
  EXPECT_EQ(utf8_lossy("\xF0\x9F\x98\x8A"), "\xF0\x9F\x98\x8A");  // a valid emoji
}

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(peftrun::sha256_hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(peftrun::sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(peftrun::sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  peftrun::Sha256 h;  // fed in uneven pieces across block boundaries
  const std::string million(1000000, 'a');
  for (std::size_t i = 0; i < million.size(); i += 7777) h.update(million.substr(i, 7777));
  EXPECT_EQ(h.finish_hex(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

}  // namespace
