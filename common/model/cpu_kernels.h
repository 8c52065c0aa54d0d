// CPU kernels of the decode step (internal to the model library): a small-batch matrix product that streams the
// weights once without packing them (OpenBLAS packs the whole weight matrix on every call, which dominates at
// 1-32 rows), LayerNorm rows and single-query attention over the KV cache. Raw float pointers, row-major.
#ifndef RLHF_COMMON_MODEL_CPU_KERNELS_H_
#define RLHF_COMMON_MODEL_CPU_KERNELS_H_

#include <cstdint>
#include <functional>

namespace rlhf::model::internal {

// Runs fn(begin, end) over [0, n) split into at most one contiguous range per intra-op thread (the OpenMP team
// that at::set_num_threads sizes), each at least `grain` long; serially inside a parallel region. fn must not
// throw.
void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

// True when this CPU runs the AVX-512 kernel of SmallGemm.
bool CpuHasAvx512();

// y[m, n] = x[m, k] @ w[k, n] (+ bias[n] when not null), with leading dimensions ldx, ldw, ldy. Requires
// CpuHasAvx512(). Parallel over column strips (ParallelFor). Meant for m up to a few dozen rows.
void SmallGemmAvx512(const float* x, int64_t ldx, const float* w, int64_t ldw, const float* bias, float* y,
                     int64_t ldy, int64_t m, int64_t k, int64_t n);

// y[r, :] = LayerNorm(x[r, :]) * weight + bias for `rows` contiguous rows of n.
void LayerNormRows(const float* x, const float* weight, const float* bias, float eps, int64_t rows, int64_t n,
                   float* y);

// Attention of one new query per (row, head) over the first `slots` slots of a KV cache.
//   q:        query of row r, head h at q + r * q_row_stride + h * head_dim (already in the qkv buffer)
//   keys_t:   key of row r, head h, slot j, dim d at keys_t + r * k_row + h * k_head + d * k_dim + j
//             (keys stored transposed, [row, head, head_dim, capacity], so scores vectorise over slots)
//   values:   value at values + r * v_row + h * v_head + j * v_slot + d
//   allowed:  allowed[r * allowed_row + j] says whether slot j may be attended by row r
//   out:      out + r * out_row_stride + h * head_dim, head_dim floats
// Parallel over (row, head).
struct DecodeAttentionArgs {
  const float* q;
  int64_t q_row_stride;
  const float* keys_t;
  int64_t k_row, k_head, k_dim;
  const float* values;
  int64_t v_row, v_head, v_slot;
  const bool* allowed;
  int64_t allowed_row;
  float* out;
  int64_t out_row_stride;
  int64_t rows, heads, head_dim, slots;
  float scale;
};
void DecodeAttention(const DecodeAttentionArgs& args);

// Asks the kernel to back [ptr, ptr + bytes) with transparent huge pages (madvise MADV_HUGEPAGE; a no-op where
// unsupported). Call it on big long-lived buffers before their first touch: on VMs where a page fault costs
// ~15 us, first-touching 150 MB of 4 KB pages takes ~0.6 s, against ~20 ms with 2 MB pages.
void AdviseHugePages(void* ptr, int64_t bytes);

// dst[c, r] = src[r, c] for a rows x cols matrix (blocked, parallel).
void Transpose(const float* src, int64_t rows, int64_t cols, float* dst);

}  // namespace rlhf::model::internal

#endif  // RLHF_COMMON_MODEL_CPU_KERNELS_H_
