// AdaLoRA's CUDA kernels (kernels/adalora_blocks.h) run in the CPU block emulator against the
// CPU: the cases of tests/gpu/adalora_cases.h, the reducing kernels also in reversed and
// shuffled thread orders. On a GPU machine tests/gpu/adalora_parity_test.cpp runs the same
// cases on the device.
#include <gtest/gtest.h>

#include "tests/gpu/adalora_cases.h"
#include "tests/support/emulated_env.h"

namespace peftrun::gpu_testing {
namespace {

TEST(EmulatedAdaLoraImportance, EmasAreBitIdenticalToTheCpu) {
  emu::EmuEnv env;
  for (const std::size_t n : {std::size_t(1), std::size_t(257), std::size_t(100003)}) {
    check_adalora_importance(env, n);
  }
}

TEST(EmulatedAdaLoraTripletScores, ModuleAtUnalignedOffsets) {
  emu::EmuEnv env;
  check_adalora_triplet_scores(env, 1, 1, 1);
  check_adalora_triplet_scores(env, 12, 127, 65);
  check_adalora_triplet_scores(env, 4, 300, 1000);  // rows of A and B longer than the block
}

TEST(EmulatedAdaLoraTripletScores, ReversedAndShuffledThreadOrders) {
  emu::EmuEnv reversed(emu::Schedule::kReversed), shuffled(emu::Schedule::kShuffled);
  check_adalora_triplet_scores(reversed, 12, 127, 65);
  check_adalora_triplet_scores(shuffled, 4, 300, 1000);
}

TEST(EmulatedAdaLoraEChain, MatchesTheFormulasInDouble) {
  emu::EmuEnv env;
  for (const EChainShape& s : kEChainShapes) check_adalora_e_chain(env, s.r, s.in);
}

TEST(EmulatedAdaLoraEChain, ReversedAndShuffledThreadOrders) {
  emu::EmuEnv reversed(emu::Schedule::kReversed), shuffled(emu::Schedule::kShuffled);
  check_adalora_e_chain(reversed, 12, 128);
  check_adalora_e_chain(shuffled, 5, 1000);
}

}  // namespace
}  // namespace peftrun::gpu_testing
