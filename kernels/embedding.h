// Token embedding lookup: out[i, :] = table[tokens[i], :] * scale. table: [vocab, dim] (frozen,
// so there is no backward: gradients stop at the embedding output). scale is 1 except for Gemma,
// which multiplies by sqrt(dim) rounded to the compute dtype (as transformers' normalizer). Token
// ids are checked by the data loader against vocab_size before they reach here.
#pragma once

#include <cstdint>

#include "kernels/cuda_memory.h"
#include "kernels/dtype.h"
#include "kernels/half.h"

namespace peftrun::cpu {

template <typename T>
void embedding_forward(const std::int32_t* tokens, const T* table, T* out, int n, int dim, T scale);

}  // namespace peftrun::cpu

// CUDA twin (embedding_cuda.cu, kernels in embedding_blocks.h): the frozen fp16 table [vocab,
// dim] converted into out [n, dim] stored in out_dtype, then (scale != 1) multiplied by scale in
// fp32 and rounded to out_dtype again: the CPU twin run on the table rounded to out_dtype. It also
// takes vocab: an id outside [0, vocab) yields a NaN row instead of an out-of-bounds read.
namespace peftrun::cuda {

void embedding_forward(const std::int32_t* tokens, const half_bits* table, void* out, int n,
                       int dim, int vocab, float scale, DType out_dtype, Stream stream);

}  // namespace peftrun::cuda
