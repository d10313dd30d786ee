// Flash attention on the GPU: the kernels of attention_blocks.h and attention_tc_blocks.h,
// chosen by attention_launch.h and launched by CudaLauncher.
#include "kernels/attention.h"
#include "kernels/attention_launch.h"
#include "kernels/cuda_launch.cuh"

namespace peftrun::cuda {

void attention_forward(const void* q, const void* k, const void* v, const std::int32_t* segment,
                       int window, float scale, float softcap, void* out, float* lse, int B,
                       int T_len, int H, int KV, int hd, DType dtype, Stream stream) {
  blocks::launch_attention_forward(CudaLauncher(stream), q, k, v, segment, window, scale, softcap,
                                   out, lse, B, T_len, H, KV, hd, dtype);
}

void attention_backward(const void* dout, const void* q, const void* k, const void* v,
                        const void* out, const float* lse, const std::int32_t* segment, int window,
                        float scale, float softcap, void* dq, void* dk, void* dv, void* workspace,
                        std::size_t workspace_bytes, int B, int T_len, int H, int KV, int hd,
                        DType dtype, Stream stream) {
  blocks::launch_attention_backward(CudaLauncher(stream), dout, q, k, v, out, lse, segment, window,
                                    scale, softcap, dq, dk, dv, workspace, workspace_bytes, B,
                                    T_len, H, KV, hd, dtype);
}

}  // namespace peftrun::cuda
