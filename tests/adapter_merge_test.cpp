// Merging an adapter into its base weight (runtime/adapters/adapter_merge.h): for LoRA, rsLoRA,
// DoRA and AdaLoRA the merged layer x W'^T + b must compute what the adapted layer's own forward
// kernel computes (run in double as the reference), so the merge is checked against the very
// code that trained the adapter, not against a second copy of the formula.
#include <gtest/gtest.h>

#include "tests/support/gradcheck.h"
#include "tests/support/synthetic_hf_checkpoint.h"

#include <algorithm>
#include <cmath>
#include <ostream>
#include <string>
#include <vector>

#include "kernels/adalora.h"
#include "kernels/dora.h"
#include "kernels/lora_linear.h"
#include "runtime/adapters/adapter_layout.h"
#include "runtime/adapters/adapter_merge.h"

namespace peftrun {
namespace {

using testing_support::randn;
using testing_support::Vec;

// Any LLaMA shape with GQA (k/v narrower than q) and an MLP wider than the model will do.
ModelConfig small_model() {
  return testing_support::small_qwen2_shape();
}

struct Case {
  std::string name;
  AdapterType type;
  bool rslora;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.name;
}

class AdapterMerge : public ::testing::TestWithParam<Case> {};

// The adapted layer's output from its forward kernel (double, no dropout): y [n, out].
Vec adapted_output(const AdapterLayout& layout, const AdaptedModule& mod, const Vec& params,
                   const Vec& W, const Vec& bias, const Vec& x, int n) {
  const int out = mod.shape.out, in = mod.shape.in, r = mod.r;
  Vec y(std::size_t(n) * out), xa(std::size_t(n) * r);
  cpu::LoraLinearArgs<double> lora;
  lora.n = n;
  lora.in = in;
  lora.out = out;
  lora.r = r;
  lora.scale = layout.scale();
  lora.W = W.data();
  lora.bias = bias.data();
  lora.A = params.data() + mod.a;
  lora.B = params.data() + mod.b;
  lora.xa = xa.data();
  if (layout.type() == AdapterType::kLora) {
    cpu::lora_linear_forward(lora, x.data(), y.data());
  } else if (layout.type() == AdapterType::kDora) {
    Vec w_sq(out), norm(out), norm_work(cpu::dora_norm_workspace(out, r));
    cpu::row_sq_norms(W.data(), out, in, w_sq.data());
    cpu::dora_weight_norm(W.data(), w_sq.data(), lora.A, lora.B, out, in, r, lora.scale,
                          norm.data(), norm_work.data());
    Vec z(std::size_t(n) * out), work(cpu::dora_linear_workspace(n, out, r));
    cpu::DoraLinearArgs<double> d;
    d.lora = lora;
    d.magnitude = params.data() + mod.m;
    d.weight_norm = norm.data();
    d.z = z.data();
    d.work = work.data();
    cpu::dora_linear_forward(d, x.data(), y.data());
  } else {
    Vec work(cpu::adalora_linear_workspace(n, in, r));
    cpu::AdaLoraLinearArgs<double> a;
    a.lora = lora;
    a.E = params.data() + mod.e;
    a.work = work.data();
    cpu::adalora_linear_forward(a, x.data(), y.data());
  }
  return y;
}

TEST_P(AdapterMerge, MergedLinearComputesTheAdaptedLayer) {
  const Case c = GetParam();
  const ModelConfig model = small_model();
  AdapterConfig ac;
  ac.type = c.type;
  ac.r = 4;
  ac.init_r = 5;
  ac.alpha = 12;
  ac.use_rslora = c.rslora;
  ac.target_modules = all_target_modules();
  const AdapterLayout layout = AdapterLayout::plan(model, ac);

  // A trained-looking adapter: B and E far from their zero init, DoRA magnitudes off the norms,
  // one AdaLoRA triplet pruned (E = 0).
  Vec params = randn(layout.total(), 11, 0.3);
  for (const AdaptedModule& mod : layout.modules()) {
    if (mod.m != kNoTensor) {
      for (int j = 0; j < mod.shape.out; ++j) params[mod.m + j] = 2.0 + 0.5 * std::sin(j + 1.0);
    }
    if (mod.e != kNoTensor) params[mod.e + 1] = 0.0;
  }
  const std::vector<float> params_f(params.begin(), params.end());

  const int n = 7;
  std::vector<float> scratch;
  for (const AdaptedModule& mod : layout.modules()) {
    const int out = mod.shape.out, in = mod.shape.in;
    // Float-representable inputs so the double reference sees exactly what the merge sees.
    auto as_float = [](Vec v) {
      for (double& e : v) e = static_cast<float>(e);
      return v;
    };
    const Vec W = as_float(randn(std::size_t(out) * in, 100 + mod.layer * 8 + int(mod.proj),
                                 1.0 / std::sqrt(double(in))));
    const Vec bias = as_float(randn(out, 300 + int(mod.proj), 0.2));
    const Vec x = randn(std::size_t(n) * in, 500 + int(mod.proj));
    Vec p = params;
    for (std::size_t i = 0; i < p.size(); ++i) p[i] = params_f[i];
    const Vec want = adapted_output(layout, mod, p, W, bias, x, n);

    std::vector<float> merged(W.begin(), W.end());
    merge_adapter_into_weight(layout, mod, params_f.data(), merged.data(), scratch);
    double err = 0, ref = 0;
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < out; ++j) {
        double y = bias[j];
        for (int k = 0; k < in; ++k) {
          y += x[std::size_t(i) * in + k] * merged[std::size_t(j) * in + k];
        }
        const double w = want[std::size_t(i) * out + j];
        err = std::max(err, std::abs(y - w));
        ref = std::max(ref, std::abs(w));
      }
    }
    // fp32 merge against a double forward: a few ulps of the largest output.
    EXPECT_LT(err, 1e-5 * ref) << c.name << " " << hf_module_name(mod.layer, mod.proj);
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, AdapterMerge,
                         ::testing::Values(Case{"lora", AdapterType::kLora, false},
                                           Case{"rslora", AdapterType::kLora, true},
                                           Case{"dora", AdapterType::kDora, false},
                                           Case{"adalora", AdapterType::kAdaLora, false}),
                         [](const auto& p) { return p.param.name; });

// A freshly initialised adapter (B = 0, E = 0, m = ||W||_row) merges to the base itself.
TEST(AdapterMergeInit, FreshAdaptersMergeToTheBase) {
  const ModelConfig model = small_model();
  for (AdapterType type : {AdapterType::kLora, AdapterType::kDora, AdapterType::kAdaLora}) {
    AdapterConfig ac;
    ac.type = type;
    ac.target_modules = {"q_proj", "down_proj"};
    const AdapterLayout layout = AdapterLayout::plan(model, ac);
    std::vector<float> params(layout.total());
    layout.init_params(params.data(), 3);
    std::vector<float> scratch;
    for (const AdaptedModule& mod : layout.modules()) {
      const int out = mod.shape.out, in = mod.shape.in;
      const Vec Wd = randn(std::size_t(out) * in, 9, 0.5);
      const std::vector<float> W(Wd.begin(), Wd.end());
      if (mod.m != kNoTensor) {
        for (int j = 0; j < out; ++j) {
          double sq = 0;
          for (int k = 0; k < in; ++k) sq += double(W[j * in + k]) * W[j * in + k];
          params[mod.m + j] = static_cast<float>(std::sqrt(sq));
        }
      }
      std::vector<float> merged = W;
      merge_adapter_into_weight(layout, mod, params.data(), merged.data(), scratch);
      for (std::size_t i = 0; i < W.size(); ++i) {
        ASSERT_NEAR(merged[i], W[i], 1e-6f * std::abs(W[i])) << to_string(type) << " at " << i;
      }
    }
  }
}

}  // namespace
}  // namespace peftrun
