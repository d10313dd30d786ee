// DoRA's non-matmul kernels (kernels/dora_blocks.h) and the small kernels around cuda::gemm
// (kernels/gemm_blocks.h) run in the CPU block emulator: the cases of tests/gpu/dora_cases.h and
// tests/gpu/gemm_helper_cases.h in every storage dtype, and the kernels with shared memory and
// barriers (the row norms' tree sum, the column pass's shared tile) also under reversed and
// shuffled thread orders. On a GPU machine tests/gpu/dora_parity_test.cpp and
// gemm_parity_test.cpp run the same cases on the device.
#include <gtest/gtest.h>

#include "tests/gpu/dora_cases.h"
#include "tests/gpu/gemm_helper_cases.h"
#include "tests/support/emulated_env.h"

namespace peftrun::gpu_testing {
namespace {

TEST(EmulatedDoraRowSqNorms, EveryWeightTypeMatchesTheCpu) {
  emu::EmuEnv env;
  for (const RowSqCase& c : kRowSqCases) {
    for (const DType t : kAllDTypes) check_dora_row_sq_norms(env, c, t);
  }
}

TEST(EmulatedDoraRowSqNorms, ReversedAndShuffledThreadOrders) {
  for (const emu::Schedule order : {emu::Schedule::kReversed, emu::Schedule::kShuffled}) {
    emu::EmuEnv env(order);
    for (const RowSqCase& c : kRowSqCases) check_dora_row_sq_norms(env, c, DType::kBF16);
  }
}

TEST(EmulatedDoraNormRows, RankRIdentityMatchesTheCpuNorm) {
  emu::EmuEnv env;
  for (const NormCase& c : kNormCases) {
    for (const DType t : kAllDTypes) check_dora_norm_rows(env, c, t);
  }
}

TEST(EmulatedDoraNormRows, ReversedAndShuffledThreadOrders) {
  for (const emu::Schedule order : {emu::Schedule::kReversed, emu::Schedule::kShuffled}) {
    emu::EmuEnv env(order);
    check_dora_norm_rows(env, kNormCases[2], DType::kF16);
  }
}

TEST(EmulatedDoraFactors, MatchTheFormulas) {
  emu::EmuEnv env;
  for (const int out : {1, 300}) check_dora_factors(env, out);
}

TEST(EmulatedDoraDyVColumns, SplitPartialsAndDygMatchTheCpu) {
  emu::EmuEnv env;
  for (const ColumnsCase& c : kColumnsCases) {
    for (const DType t : kAllDTypes) check_dora_dy_v_columns(env, c, t);
  }
}

TEST(EmulatedDoraDyVColumns, ReversedAndShuffledThreadOrders) {
  for (const emu::Schedule order : {emu::Schedule::kReversed, emu::Schedule::kShuffled}) {
    emu::EmuEnv env(order);
    for (const ColumnsCase& c : kColumnsCases) check_dora_dy_v_columns(env, c, DType::kF32);
  }
}

TEST(EmulatedDoraGradRows, IncrementsMatchTheRowFormula) {
  emu::EmuEnv env;
  for (const GradRowsCase& c : kGradRowsCases) check_dora_grad_rows(env, c);
}

TEST(EmulatedDoraBackwardRows, DmAndDbMatchTheCpuTwinsDefinition) {
  emu::EmuEnv env;
  for (const DoraBackwardCase& c : kDoraBackwardCases) {
    for (const DType t : kAllDTypes) check_dora_backward_rows(env, c, t);
  }
}

TEST(EmulatedDoraBackwardRows, ReversedAndShuffledThreadOrders) {
  for (const emu::Schedule order : {emu::Schedule::kReversed, emu::Schedule::kShuffled}) {
    emu::EmuEnv env(order);
    check_dora_backward_rows(env, kDoraBackwardCases[1], DType::kF32);
  }
}

TEST(EmulatedGemmScaleColumns, PaddedStridesEveryType) {
  emu::EmuEnv env;
  for (const StridedCase& c : kStridedCases) {
    for (const DType t : kAllDTypes) check_scale_columns(env, c, t);
  }
}

TEST(EmulatedGemmEmptyProduct, BetaCPlusBiasEveryModeAndType) {
  emu::EmuEnv env;
  for (const StridedCase& c : kStridedCases) {
    for (const EmptyProductMode& mode : kEmptyProductModes) {
      for (const DType t : kAllDTypes) check_empty_product(env, c, mode, t);
    }
  }
}

}  // namespace
}  // namespace peftrun::gpu_testing
