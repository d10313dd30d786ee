// The flash attention kernels (kernels/attention_blocks.h), run in the CPU block emulator against
// the CPU twin: the cases of tests/gpu/attention_cases.h, every storage dtype, and thread orders
// that expose missing barriers (kernels/emulated/block_emulator.h). On a GPU machine
// tests/gpu/attention_parity_test.cpp runs the same cases on the device.
#include <gtest/gtest.h>

#include <string>
#include <tuple>

#include "tests/gpu/attention_cases.h"
#include "tests/support/emulated_env.h"

namespace peftrun::gpu_testing {
namespace {

using emu::Schedule;

class EmulatedAttention : public ::testing::TestWithParam<std::tuple<AttentionCase, Schedule>> {};

TEST_P(EmulatedAttention, MatchesCpuTwin) {
  const auto& [c, schedule] = GetParam();
  emu::EmuEnv env(schedule);
  check_attention_all_dtypes(env, c);
}

std::string case_name(const ::testing::TestParamInfo<std::tuple<AttentionCase, Schedule>>& info) {
  const Schedule s = std::get<1>(info.param);
  return std::string(std::get<0>(info.param).name) + (s == Schedule::kInOrder    ? ""
                                                      : s == Schedule::kReversed ? "_Reversed"
                                                                                 : "_Shuffled");
}

INSTANTIATE_TEST_SUITE_P(Cases, EmulatedAttention,
                         ::testing::Combine(::testing::ValuesIn(all_attention_cases()),
                                            ::testing::Values(Schedule::kInOrder)),
                         case_name);

// Other thread orders on shapes that cross tiles, pack documents and share kv heads.
INSTANTIATE_TEST_SUITE_P(
    Orders, EmulatedAttention,
    ::testing::Combine(::testing::Values(attention_cases::kTinyConfig, attention_cases::kPacked,
                                         attention_cases::kHd256, attention_cases::kWindowPacked),
                       ::testing::Values(Schedule::kReversed, Schedule::kShuffled)),
    case_name);

TEST(EmulatedAttentionRefusals, BadShapesAndWorkspace) {
  emu::EmuEnv env;
  check_attention_refusals(env);
}

}  // namespace
}  // namespace peftrun::gpu_testing
