#include <cstddef>
#include <cstdint>

#include "kernels/dropout.h"

namespace peftrun::cpu {

void dropout_keep_mask(std::uint64_t key, float p, std::size_t n, std::uint8_t* keep) {
  for (std::size_t i = 0; i < n; ++i) keep[i] = dropout_keep(key, i, p);
}

}  // namespace peftrun::cpu
