#include "runtime/train/grad_buckets.h"

#include <algorithm>
#include <limits>

namespace peftrun {

std::vector<GradBucket> plan_grad_buckets(const AdapterLayout& layout, int n_layers,
                                          std::size_t bucket_bytes) {
  // Where each layer's tensors start in the flat buffer (tensors are planned in layer order).
  constexpr std::size_t kNone = std::numeric_limits<std::size_t>::max();
  std::vector<std::size_t> layer_begin(n_layers + 1, kNone);
  for (const AdaptedModule& m : layout.modules()) {
    const std::size_t first = std::min({m.a, m.b, m.m, m.e});
    layer_begin[m.layer] = std::min(layer_begin[m.layer], first);
  }
  layer_begin[n_layers] = layout.total();
  // A layer without adapters starts where the next one does (an empty range).
  for (int l = n_layers - 1; l >= 0; --l) {
    if (layer_begin[l] == kNone) layer_begin[l] = layer_begin[l + 1];
  }
  layer_begin[0] = 0;  // the first bucket also owns any leading padding

  std::vector<GradBucket> buckets;
  int top = n_layers - 1;
  for (int l = n_layers - 1; l >= 0; --l) {
    const std::size_t bytes = (layer_begin[top + 1] - layer_begin[l]) * sizeof(float);
    if (bytes >= bucket_bytes || l == 0) {
      buckets.push_back({layer_begin[l], layer_begin[top + 1], l, top});
      top = l - 1;
    }
  }
  return buckets;
}

}  // namespace peftrun
