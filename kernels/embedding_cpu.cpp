#include "kernels/embedding.h"

#include <cstddef>
#include <cstring>

namespace peftrun::cpu {

template <typename T>
void embedding_forward(const std::int32_t* tokens, const T* table, T* out, int n, int dim,
                       T scale) {
  const std::size_t row_bytes = static_cast<std::size_t>(dim) * sizeof(T);
  for (int i = 0; i < n; ++i) {
    // table: [vocab, dim] -> out: [n, dim]; ids were validated by the data loader.
    T* row = out + static_cast<std::size_t>(i) * dim;
    std::memcpy(row, table + static_cast<std::size_t>(tokens[i]) * dim, row_bytes);
    if (scale != T(1)) {
      for (int d = 0; d < dim; ++d) row[d] *= scale;
    }
  }
}

template void embedding_forward<float>(const std::int32_t*, const float*, float*, int, int, float);
template void embedding_forward<double>(const std::int32_t*, const double*, double*, int, int,
                                        double);

}  // namespace peftrun::cpu
