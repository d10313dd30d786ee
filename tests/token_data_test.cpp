// Tests for runtime/data: the token-file format (round trip and every rejected corruption) and
// the stateless sample -> window mapping of BatchLoader.
#include <stdlib.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <numeric>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cross_entropy.h"
#include "runtime/data/batch_loader.h"
#include "runtime/data/token_file.h"

namespace peftrun {
namespace {

namespace fs = std::filesystem;

class TokenFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "peftrun_tok_XXXXXX").string();
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    dir_ = templ;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

std::vector<std::uint8_t> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void write_all(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

void put_le(std::vector<std::uint8_t>& b, std::size_t at, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) b[at + i] = static_cast<std::uint8_t>(v >> (8 * i));
}

void expect_error(const std::function<void()>& fn, std::initializer_list<std::string> needles) {
  try {
    fn();
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    for (const auto& n : needles) {
      EXPECT_NE(msg.find(n), std::string::npos) << "message lacks \"" << n << "\": " << msg;
    }
    return;
  }
  ADD_FAILURE() << "no std::runtime_error thrown";
}

// A valid 1-byte-per-token file with tokens 0..9, for the corruption tests to damage.
std::vector<std::uint8_t> valid_file_bytes(const std::string& p) {
  std::vector<std::int32_t> t(10);
  std::iota(t.begin(), t.end(), 0);
  write_token_file(p, t, 256);
  return read_all(p);
}

// Writes `bytes` and expects TokenFile::load to fail naming the file and each needle.
void expect_load_error(const std::string& p, const std::vector<std::uint8_t>& bytes,
                       std::initializer_list<std::string> needles) {
  write_all(p, bytes);
  expect_error([&] { TokenFile::load(p); }, {"token file '" + p + "'"});
  expect_error([&] { TokenFile::load(p); }, needles);
}

// --- token file -------------------------------------------------------------------------------

TEST_F(TokenFileTest, RoundTripAllWidths) {
  struct Case {
    std::uint32_t vocab;
    std::uint32_t bpt;
  };
  for (const Case c :
       {Case{256, 1}, Case{257, 2}, Case{65536, 2}, Case{65537, 4}, Case{2147483648u, 4}}) {
    SCOPED_TRACE(c.vocab);
    std::vector<std::int32_t> t = {0, 1, 2, 255, 17, 0};
    t.push_back(static_cast<std::int32_t>(std::min<std::uint64_t>(c.vocab - 1, INT32_MAX)));
    const std::string p = path("rt.tok");
    write_token_file(p, t, c.vocab);
    EXPECT_EQ(fs::file_size(p), kTokenFileHeaderBytes + t.size() * c.bpt);
    const TokenFile f = TokenFile::load(p);
    EXPECT_EQ(f.path, p);
    EXPECT_EQ(f.vocab_size, c.vocab);
    EXPECT_EQ(f.bytes_per_token, c.bpt);
    EXPECT_EQ(f.tokens, t);
  }
}

TEST_F(TokenFileTest, HeaderLayoutIsAsDocumented) {
  // Pins the byte layout documented in docs/DATA.md (which scripts/text_to_tokens.py also
  // writes), so a code change cannot silently make existing token files unreadable.
  const std::string p = path("layout.tok");
  write_token_file(p, std::vector<std::int32_t>{65, 66, 300}, 1000);
  const std::vector<std::uint8_t> want = {
      'P',  'E',  'F', 'T', 'T',  'O',  'K', '1',  // magic
      1,    0,    0,   0,                          // version
      2,    0,    0,   0,                          // bytes_per_token
      0xE8, 0x03, 0,   0,                          // vocab_size 1000
      0,    0,    0,   0,                          // reserved
      3,    0,    0,   0,   0,    0,    0,   0,    // num_tokens
      65,   0,    66,  0,   0x2C, 0x01,            // tokens, little-endian u16
  };
  EXPECT_EQ(read_all(p), want);
}

TEST_F(TokenFileTest, EmptyTokenFileRoundTrips) {
  const std::string p = path("empty.tok");
  write_token_file(p, std::vector<std::int32_t>{}, 256);
  EXPECT_TRUE(TokenFile::load(p).tokens.empty());
}

TEST_F(TokenFileTest, WriteRejectsOutOfRangeTokensAndBadVocab) {
  const std::string p = path("bad.tok");
  EXPECT_THROW(write_token_file(p, std::vector<std::int32_t>{1, 256}, 256), std::invalid_argument);
  EXPECT_THROW(write_token_file(p, std::vector<std::int32_t>{-1}, 256), std::invalid_argument);
  EXPECT_THROW(write_token_file(p, std::vector<std::int32_t>{}, 0), std::invalid_argument);
  EXPECT_FALSE(fs::exists(p));
}

TEST_F(TokenFileTest, WriteToMissingDirectoryThrows) {
  const std::string p = path("nope/x.tok");
  expect_error([&] { write_token_file(p, std::vector<std::int32_t>{1}, 256); },
               {p, "No such file or directory"});
}

TEST_F(TokenFileTest, MissingFile) {
  const std::string p = path("absent.tok");
  expect_error([&] { TokenFile::load(p); }, {p, "No such file or directory"});
}

TEST_F(TokenFileTest, BadMagic) {
  const std::string p = path("magic.tok");
  std::vector<std::uint8_t> b = valid_file_bytes(p);
  b[7] = '2';
  expect_load_error(p, b, {"bad magic"});
  expect_load_error(p, {'P', 'E', 'F'}, {"bad magic"});  // shorter than the magic itself
}

TEST_F(TokenFileTest, TruncatedHeader) {
  const std::string p = path("head.tok");
  std::vector<std::uint8_t> b = valid_file_bytes(p);
  b.resize(20);
  expect_load_error(p, b, {"truncated header", "20 bytes"});
}

TEST_F(TokenFileTest, UnsupportedVersion) {
  const std::string p = path("version.tok");
  std::vector<std::uint8_t> b = valid_file_bytes(p);
  put_le(b, 8, 2, 4);
  expect_load_error(p, b, {"unsupported version 2"});
}

TEST_F(TokenFileTest, BadBytesPerToken) {
  const std::string p = path("bpt.tok");
  std::vector<std::uint8_t> b = valid_file_bytes(p);
  for (std::uint32_t bad : {0u, 3u, 8u}) {
    SCOPED_TRACE(bad);
    put_le(b, 12, bad, 4);
    expect_load_error(p, b, {"bad bytes_per_token " + std::to_string(bad)});
  }
}

TEST_F(TokenFileTest, BadVocabSize) {
  const std::string p = path("vocab.tok");
  std::vector<std::uint8_t> b = valid_file_bytes(p);
  put_le(b, 16, 0, 4);
  expect_load_error(p, b, {"bad vocab_size 0"});
  put_le(b, 16, 0x80000001u, 4);
  expect_load_error(p, b, {"bad vocab_size 2147483649"});
}

TEST_F(TokenFileTest, ReservedFieldMustBeZero) {
  const std::string p = path("reserved.tok");
  std::vector<std::uint8_t> b = valid_file_bytes(p);
  put_le(b, 20, 1, 4);
  expect_load_error(p, b, {"reserved header field is 1"});
}

TEST_F(TokenFileTest, TruncatedBody) {
  const std::string p = path("trunc.tok");
  std::vector<std::uint8_t> b = valid_file_bytes(p);
  b.pop_back();
  expect_load_error(p, b, {"size mismatch", "10 tokens", "9 bytes"});
}

TEST_F(TokenFileTest, TrailingBytes) {
  const std::string p = path("trail.tok");
  std::vector<std::uint8_t> b = valid_file_bytes(p);
  b.push_back(0);
  expect_load_error(p, b, {"size mismatch", "11 bytes"});
}

TEST_F(TokenFileTest, HugeNumTokensDoesNotOverflow) {
  const std::string p = path("huge.tok");
  std::vector<std::uint8_t> b = valid_file_bytes(p);
  put_le(b, 12, 4, 4);                      // 4 bytes per token...
  put_le(b, 24, 0x4000000000000003ull, 8);  // ...times this wraps to 12 in 64 bits
  b.resize(kTokenFileHeaderBytes + 12);
  expect_load_error(p, b, {"size mismatch"});
}

TEST_F(TokenFileTest, TokenOutOfVocab) {
  const std::string p = path("oov.tok");
  std::vector<std::int32_t> t(8, 3);
  write_token_file(p, t, 1000);  // 2 bytes per token
  std::vector<std::uint8_t> b = read_all(p);
  put_le(b, 16, 500, 4);                             // shrink vocab_size to 500
  put_le(b, kTokenFileHeaderBytes + 5 * 2, 777, 2);  // token 5 -> 777
  expect_load_error(p, b, {"token 5", "byte offset 42", "value 777", ">= vocab_size 500"});
}

TEST_F(TokenFileTest, CheckVocabFits) {
  TokenFile f;
  f.path = "data/x.tok";
  f.vocab_size = 32000;
  EXPECT_NO_THROW(check_vocab_fits(f, 32000));
  EXPECT_NO_THROW(check_vocab_fits(f, 32001));
  expect_error([&] { check_vocab_fits(f, 256); }, {"data/x.tok", "32000", "256"});
}

TEST_F(TokenFileTest, ShippedCorpusLoads) {
  for (const char* name : {"train.tok", "eval.tok"}) {
    SCOPED_TRACE(name);
    const TokenFile f = TokenFile::load(std::string(PEFTRUN_SOURCE_DIR) + "/data/tiny/" + name);
    EXPECT_EQ(f.vocab_size, 256u);
    EXPECT_EQ(f.bytes_per_token, 1u);
    EXPECT_GT(f.tokens.size(), 30000u);
    EXPECT_NO_THROW(check_vocab_fits(f, 256));
    // Byte-level English text: every byte is printable ASCII or a newline.
    for (const std::int32_t t : f.tokens) {
      ASSERT_TRUE(t == '\n' || (t >= 32 && t < 127)) << t;
    }
    // Enough for the default config (seq_len 128, micro-batch 8, 8 eval batches).
    EXPECT_GE(BatchLoader(f, 128, 1).num_windows(), 64u);
  }
}

// --- batch loader ---------------------------------------------------------------------------

// Tokens 0..n-1 (vocab n), so a token's value is its position in the stream.
TokenFile iota_file(std::int32_t n) {
  TokenFile f;
  f.path = "iota.tok";
  f.vocab_size = static_cast<std::uint32_t>(n);
  f.bytes_per_token = 4;
  f.tokens.resize(static_cast<std::size_t>(n));
  std::iota(f.tokens.begin(), f.tokens.end(), 0);
  return f;
}

TEST(BatchLoaderTest, NumWindows) {
  EXPECT_EQ(BatchLoader(iota_file(9), 4, 0).num_windows(), 2u);   // 0..4, 4..8
  EXPECT_EQ(BatchLoader(iota_file(10), 4, 0).num_windows(), 2u);  // token 9 unused
  EXPECT_EQ(BatchLoader(iota_file(5), 4, 0).num_windows(), 1u);   // exactly one window
  EXPECT_EQ(BatchLoader(iota_file(101), 1, 0).num_windows(), 100u);
}

TEST(BatchLoaderTest, TooShortFile) {
  expect_error([] { BatchLoader(iota_file(4), 4, 0); },
               {"iota.tok", "4 tokens", "seq_len + 1 = 5", "seq_len 4"});
  TokenFile empty = iota_file(1);
  empty.tokens.clear();
  expect_error([&] { BatchLoader(empty, 1, 0); }, {"iota.tok", "0 tokens"});
  EXPECT_THROW(BatchLoader(iota_file(10), 0, 0), std::invalid_argument);
}

TEST(BatchLoaderTest, InputsAndTargetsShiftedByOne) {
  constexpr int L = 8, B = 5;
  BatchLoader loader(iota_file(L * 20 + 1), L, 7);
  std::vector<std::int32_t> in(B * L), tgt(B * L), pos(B * L);
  loader.fill_batch(3, B, in.data(), tgt.data(), pos.data());
  for (int r = 0; r < B; ++r) {
    const auto w = static_cast<std::int32_t>(loader.window_of(3 + static_cast<std::uint64_t>(r)));
    for (int t = 0; t < L; ++t) {
      EXPECT_EQ(in[r * L + t], w * L + t);
      EXPECT_EQ(tgt[r * L + t], w * L + t + 1);
      EXPECT_EQ(pos[r * L + t], t);
    }
  }
  // positions are optional.
  loader.fill_batch(0, B, in.data(), tgt.data(), nullptr);
}

TEST(BatchLoaderTest, EachEpochIsAPermutation) {
  BatchLoader loader(iota_file(4 * 37 + 3), 4, 99);
  const std::uint64_t n = loader.num_windows();
  ASSERT_EQ(n, 37u);
  for (std::uint64_t e = 0; e < 4; ++e) {
    std::vector<std::uint64_t> seen;
    for (std::uint64_t i = 0; i < n; ++i) {
      EXPECT_EQ(loader.epoch_of(e * n + i), e);
      seen.push_back(loader.window_of(e * n + i));
    }
    std::sort(seen.begin(), seen.end());
    std::vector<std::uint64_t> all(n);
    std::iota(all.begin(), all.end(), std::uint64_t{0});
    EXPECT_EQ(seen, all) << "epoch " << e;
  }
}

TEST(BatchLoaderTest, DifferentAcrossEpochsAndSeeds) {
  const auto a0 = window_permutation(50, 1, 0);
  const auto a1 = window_permutation(50, 1, 1);
  const auto b0 = window_permutation(50, 2, 0);
  EXPECT_NE(a0, a1);
  EXPECT_NE(a0, b0);
  EXPECT_NE(a1, b0);
  std::vector<std::uint64_t> identity(50);
  std::iota(identity.begin(), identity.end(), std::uint64_t{0});
  EXPECT_NE(a0, identity);
}

TEST(BatchLoaderTest, GoldenPermutation) {
  // Reference values from an independent Python implementation of the algorithm in
  // docs/DATA.md: they pin the mapping across compilers, platforms and future refactors (a
  // change would silently alter which data a resumed run sees).
  EXPECT_EQ(window_permutation(10, 1234, 0),
            (std::vector<std::uint64_t>{9, 5, 7, 0, 1, 6, 2, 3, 8, 4}));
  EXPECT_EQ(window_permutation(10, 1234, 1),
            (std::vector<std::uint64_t>{8, 1, 3, 4, 6, 5, 2, 0, 7, 9}));
  EXPECT_EQ(window_permutation(10, 42, 0),
            (std::vector<std::uint64_t>{2, 8, 9, 7, 1, 4, 6, 0, 5, 3}));
  EXPECT_EQ(window_permutation(7, 0, 5), (std::vector<std::uint64_t>{5, 2, 6, 4, 1, 0, 3}));
  EXPECT_EQ(window_permutation(1, 5, 5), (std::vector<std::uint64_t>{0}));
  EXPECT_TRUE(window_permutation(0, 5, 5).empty());
}

TEST(BatchLoaderTest, PermutationLooksUniform) {
  // Each window should land in slot 0 about equally often across epochs (a biased shuffle, e.g.
  // the classic swap-with-any-index bug, fails this by a wide margin).
  constexpr std::uint64_t kN = 5, kEpochs = 5000;
  std::vector<int> count(kN, 0);
  for (std::uint64_t e = 0; e < kEpochs; ++e) ++count[window_permutation(kN, 3, e)[0]];
  for (std::uint64_t w = 0; w < kN; ++w) {
    EXPECT_NEAR(count[w], static_cast<double>(kEpochs / kN), 120.0) << "window " << w;
  }
}

TEST(BatchLoaderTest, DeterministicAndStateless) {
  constexpr int L = 4, B = 6;
  const TokenFile f = iota_file(L * 23 + 1);
  BatchLoader a(f, L, 5), b(f, L, 5);
  std::vector<std::int32_t> ia(B * L), ta(B * L), ib(B * L), tb(B * L);
  // a walks batches in order over several epochs; b (a "resumed" run) jumps straight to each
  // batch in reverse order. Same samples -> same data.
  std::vector<std::vector<std::int32_t>> forward;
  for (std::uint64_t s = 0; s < 100; s += B) {
    a.fill_batch(s, B, ia.data(), ta.data(), nullptr);
    forward.push_back(ia);
  }
  for (std::uint64_t k = forward.size(); k-- > 0;) {
    b.fill_batch(k * B, B, ib.data(), tb.data(), nullptr);
    EXPECT_EQ(ib, forward[k]) << "batch " << k;
  }
  // A different seed gives a different order.
  BatchLoader c(f, L, 6);
  c.fill_batch(0, B, ib.data(), tb.data(), nullptr);
  EXPECT_NE(ib, forward[0]);
}

TEST(BatchLoaderTest, BatchStraddlesEpochBoundary) {
  constexpr int L = 2;
  BatchLoader loader(iota_file(L * 5 + 1), L, 11);  // 5 windows
  const auto p0 = window_permutation(5, 11, 0);
  const auto p1 = window_permutation(5, 11, 1);
  std::vector<std::int32_t> in(4 * L), tgt(4 * L);
  loader.fill_batch(3, 4, in.data(), tgt.data(), nullptr);  // samples 3, 4 | 5, 6
  const std::uint64_t want[] = {p0[3], p0[4], p1[0], p1[1]};
  for (int r = 0; r < 4; ++r) EXPECT_EQ(in[r * L], static_cast<std::int32_t>(want[r] * L));
}

TEST(BatchLoaderTest, EvalWalksWindowsInFileOrder) {
  constexpr int L = 3, B = 4;
  const BatchLoader loader(iota_file(L * 10 + 1), L, 1);  // 10 windows
  ASSERT_EQ(loader.num_eval_batches(B), 3);               // 4 + 4 + 2
  EXPECT_EQ(loader.num_eval_batches(1), 10);
  EXPECT_EQ(loader.num_eval_batches(10), 1);
  EXPECT_EQ(loader.num_eval_batches(64), 1);
  std::vector<std::int32_t> in(B * L), tgt(B * L), pos(B * L);
  for (int b = 0; b < 3; ++b) {
    const int real = loader.fill_eval_batch(b, B, in.data(), tgt.data(), pos.data());
    EXPECT_EQ(real, b < 2 ? B : 2);
    for (int r = 0; r < B; ++r) {
      const int w = b * B + r;
      for (int t = 0; t < L; ++t) {
        EXPECT_EQ(pos[r * L + t], t);
        if (w < 10) {
          EXPECT_EQ(in[r * L + t], w * L + t);
          EXPECT_EQ(tgt[r * L + t], w * L + t + 1);
        } else {  // padding row: ignored by the loss
          EXPECT_EQ(in[r * L + t], 0);
          EXPECT_EQ(tgt[r * L + t], cpu::kIgnoreIndex);
        }
      }
    }
  }
  EXPECT_THROW(loader.fill_eval_batch(3, B, in.data(), tgt.data(), pos.data()), std::out_of_range);
  EXPECT_THROW(loader.fill_eval_batch(-1, B, in.data(), tgt.data(), pos.data()), std::out_of_range);
}

TEST_F(TokenFileTest, LoaderFromFileEndToEnd) {
  const std::string p = path("e2e.tok");
  std::vector<std::int32_t> t(200);
  for (std::size_t i = 0; i < t.size(); ++i) t[i] = static_cast<std::int32_t>((i * 7) % 256);
  write_token_file(p, t, 256);
  BatchLoader loader(TokenFile::load(p), 16, 3);
  EXPECT_EQ(loader.num_windows(), 12u);
  EXPECT_EQ(loader.path(), p);
  std::vector<std::int32_t> in(2 * 16), tgt(2 * 16);
  loader.fill_batch(0, 2, in.data(), tgt.data(), nullptr);
  const auto w = static_cast<std::size_t>(loader.window_of(0));
  EXPECT_EQ(in[0], t[w * 16]);
  EXPECT_EQ(tgt[15], t[w * 16 + 16]);
}

}  // namespace
}  // namespace peftrun
