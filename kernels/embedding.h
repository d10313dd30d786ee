// Token embedding lookup: out[i, :] = table[tokens[i], :]. table: [vocab, dim] (frozen, so there
// is no backward: gradients stop at the embedding output). Token ids are checked by the data
// loader against vocab_size before they reach here.
#pragma once

#include <cstdint>

namespace peftrun::cpu {

template <typename T>
void embedding_forward(const std::int32_t* tokens, const T* table, T* out, int n, int dim);

}  // namespace peftrun::cpu
