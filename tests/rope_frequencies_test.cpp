// RoPE's inverse-frequency tables (kernels/rope_frequencies.h) against the tables transformers
// itself computes (tests/golden/data/rope/inv_freq.json, made by make_rope_golden.py), for plain,
// linear, dynamic, llama3, yarn and longrope RoPE with real models' settings: bit for bit, except
// that torch's vectorised pow (SLEEF, within 1 ulp) and libm's powf may round theta^x apart by 1
// ulp.
#include "kernels/rope_frequencies.h"

#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/rope_math.h"

namespace peftrun {
namespace {

const std::string kTables = PEFTRUN_SOURCE_DIR "/tests/golden/data/rope/inv_freq.json";

nlohmann::json read_tables() {
  std::ifstream in(kTables);
  EXPECT_TRUE(in.good()) << kTables;
  return nlohmann::json::parse(in).at("tables");
}

// transformers' rope_parameters (plus max_position_embeddings) as RopeParams; longrope's short
// or long factors as `long_context` says.
RopeParams params_of(const nlohmann::json& rp, int max_positions, bool long_context = false) {
  RopeParams p;
  p.theta = rp.at("rope_theta").get<double>();
  const std::string type = rp.at("rope_type").get<std::string>();
  p.type = type == "linear"     ? RopeType::kLinear
           : type == "dynamic"  ? RopeType::kDynamic
           : type == "llama3"   ? RopeType::kLlama3
           : type == "yarn"     ? RopeType::kYarn
           : type == "longrope" ? RopeType::kLongrope
                                : RopeType::kDefault;
  p.factor = rp.value("factor", 1.0);
  p.low_freq_factor = rp.value("low_freq_factor", 1.0);
  p.high_freq_factor = rp.value("high_freq_factor", 4.0);
  p.original_max_positions = rp.value("original_max_position_embeddings", max_positions);
  p.max_positions = max_positions;
  p.beta_fast = rp.value("beta_fast", 32.0);
  p.beta_slow = rp.value("beta_slow", 1.0);
  p.attention_factor = rp.value("attention_factor", 0.0);
  p.truncate = rp.value("truncate", true);
  if (p.type == RopeType::kLongrope) {
    // Without a factor, transformers takes max_position_embeddings / original for it.
    p.factor = rp.value("factor", double(max_positions) / p.original_max_positions);
    p.ext_factors = rp.at(long_context ? "long_factor" : "short_factor").get<std::vector<double>>();
  }
  return p;
}

TEST(RopeFrequencies, EqualTransformersTablesBitForBit) {
  const nlohmann::json tables = read_tables();
  ASSERT_GE(tables.size(), 10u);
  int off_by_one = 0, entries = 0;
  for (const nlohmann::json& t : tables) {
    const std::string name = t.at("name").get<std::string>();
    const int head_dim = t.at("head_dim").get<int>();
    const RopeParams p =
        params_of(t.at("rope_parameters"), t.at("max_position_embeddings").get<int>(),
                  t.value("long_context", false));
    const std::vector<float> mine = rope_inverse_frequencies(head_dim, p);
    EXPECT_EQ(std::bit_cast<std::int32_t>(rope_attention_scaling(p)),
              t.at("attention_scaling_bits").get<std::int32_t>())
        << name << ": the cos / sin factor " << rope_attention_scaling(p);
    const auto bits = t.at("inv_freq_bits").get<std::vector<std::int32_t>>();
    ASSERT_EQ(mine.size(), bits.size()) << name;
    for (std::size_t i = 0; i < bits.size(); ++i) {
      // Positive floats: adjacent bit patterns are adjacent values.
      const std::int32_t ulps = std::abs(std::bit_cast<std::int32_t>(mine[i]) - bits[i]);
      EXPECT_LE(ulps, 1) << name << " inv_freq[" << i << "]: " << mine[i] << " vs "
                         << std::bit_cast<float>(bits[i]);
      if (ulps != 0) ++off_by_one;
      ++entries;
    }
  }
  // Known: the same entry (i = 37) of the two theta 1e6, head_dim 128 tables, dynamic's and
  // yarn's (Qwen2's plain RoPE has it too), and entry 20 of Phi-3.5-mini's short longrope table
  // (torch's 10000^(40/96) is 46.41588211, the correctly rounded float 46.41588593). More would
  // mean the formulas, not pow's rounding, differ.
  EXPECT_LE(off_by_one, 3) << "of " << entries << " entries";
}

TEST(RopeFrequencies, Llama3KeepsHighScalesLowAndBlendsBetween) {
  // Llama 3.2 1B: wavelengths below 8192 / 4 are kept, above 8192 / 1 divided by 32.
  RopeParams p{500000.0, RopeType::kLlama3, 32.0, 1.0, 4.0, 8192, 131072};
  const std::vector<float> scaled = rope_inverse_frequencies(64, p);
  const std::vector<float> plain = rope_inverse_frequencies(64, RopeParams{500000.0});
  int kept = 0, divided = 0, blended = 0;
  for (std::size_t i = 0; i < plain.size(); ++i) {
    const double wavelen = 2 * 3.141592653589793 / plain[i];
    if (wavelen < 2048) {
      EXPECT_EQ(scaled[i], plain[i]) << i;
      ++kept;
    } else if (wavelen > 8192) {
      EXPECT_EQ(scaled[i], plain[i] / 32.0f) << i;
      ++divided;
    } else {
      EXPECT_LT(scaled[i], plain[i]) << i;
      EXPECT_GT(scaled[i], plain[i] / 32.0f) << i;
      ++blended;
    }
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(blended, 0);
}

TEST(RopeFrequencies, DefaultIsThePlainFormulaAndLinearDividesIt) {
  const std::vector<float> plain = rope_inverse_frequencies(16, RopeParams{10000.0});
  RopeParams linear{10000.0, RopeType::kLinear, 2.0};
  const std::vector<float> halved = rope_inverse_frequencies(16, linear);
  ASSERT_EQ(plain.size(), 8u);
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(plain[i], rope_inv_freq(i, 16, 10000.0f)) << i;
    EXPECT_EQ(halved[i], plain[i] / 2.0f) << i;
  }
}

TEST(RopeFrequencies, RefusesParametersOutsideTheirRanges) {
  EXPECT_THROW(rope_inverse_frequencies(7, RopeParams{}), std::invalid_argument);
  EXPECT_THROW(rope_inverse_frequencies(8, RopeParams{-1.0}), std::invalid_argument);
  EXPECT_THROW(rope_inverse_frequencies(8, RopeParams{1e4, RopeType::kLinear, 0.0}),
               std::invalid_argument);
  // llama3 with high_freq_factor not above low_freq_factor would divide by zero or less.
  EXPECT_THROW(rope_inverse_frequencies(8, RopeParams{1e4, RopeType::kLlama3, 8.0, 4.0, 4.0, 64}),
               std::invalid_argument);
  EXPECT_THROW(rope_inverse_frequencies(8, RopeParams{1e4, RopeType::kLlama3, 8.0, 1.0, 4.0, 0}),
               std::invalid_argument);
  EXPECT_THROW(rope_inverse_frequencies(8, RopeParams{1e4, RopeType::kDynamic, 2.0}),
               std::invalid_argument);  // dynamic needs max_positions
}

}  // namespace
}  // namespace peftrun
