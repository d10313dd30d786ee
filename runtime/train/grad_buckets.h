// Gradient buckets: the flat gradient buffer cut into contiguous ranges of whole layers, so each
// range's all-reduce can start as soon as backward (which runs from the last layer down) has
// finished its lowest layer on the step's last micro-batch, overlapping communication with the
// backward of the layers below.
#pragma once

#include <cstddef>
#include <vector>

#include "runtime/adapters/adapter_layout.h"

namespace peftrun {

struct GradBucket {
  std::size_t begin = 0, end = 0;  // element range [begin, end) of the flat buffer
  int lowest_layer = 0;            // ready once this layer's backward is done
  int highest_layer = 0;
};

// Buckets in the order they become ready (top layers first). Layers are grouped from the top
// until a bucket holds at least `bucket_bytes` of fp32 gradients; the ranges tile [0, total)
// exactly (alignment padding included), so reducing every bucket reduces the whole buffer.
std::vector<GradBucket> plan_grad_buckets(const AdapterLayout& layout, int n_layers,
                                          std::size_t bucket_bytes);

}  // namespace peftrun
