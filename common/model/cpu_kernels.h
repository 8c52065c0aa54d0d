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

// ---------------------------------------------------------------------------------------------------------------
// Kernels on nn.Linear-layout weights [out, in] (the Llama family), streamed once per call without packing or
// transposed copies.

// One product of GemmNtAvx512: y[m, n] (op)= x[m, k] @ w[n, k]^T (+ bias[n] when not null).
struct GemmNtOutput {
  enum class Op {
    kStore,       // y = x @ w^T + bias
    kAccumulate,  // y = y + (x @ w^T + bias): a residual connection
    kGatedSilu,   // y = silu(x @ w^T + bias) * (x @ w2^T + bias2): a SiLU-gated MLP's first half
  };
  const float* w = nullptr;  // [n, k] row-major with leading dimension ldw
  int64_t ldw = 0;
  const float* bias = nullptr;
  const float* w2 = nullptr;  // kGatedSilu only: [n, k], leading dimension ldw
  const float* bias2 = nullptr;
  float* y = nullptr;  // [m, n] with leading dimension ldy
  int64_t ldy = 0;
  int64_t n = 0;
  Op op = Op::kStore;
};

// Every product of outputs[0, count) on the same x[m, k] (leading dimension ldx), in one parallel region split over
// output columns. Requires CpuHasAvx512(). Each weight row is read from memory once per block of input rows that
// fits in L2 (all m rows when m is small), each output is a dot product whose summation order does not depend on m
// or on which rows share a tile: a row's result is bitwise the same in any batch.
void GemmNtAvx512(const float* x, int64_t ldx, int64_t m, int64_t k, const GemmNtOutput* outputs, int count);

// y[r, :] = weight * (x[r, :] * rsqrt(mean(x[r, :]^2) + eps)) for `rows` rows of n with leading dimensions ldx, ldy
// (Llama's RMSNorm in float32; y may equal x).
void RmsNormRows(const float* x, int64_t ldx, const float* weight, float eps, int64_t rows, int64_t n, float* y,
                 int64_t ldy);

// g[r, :] = silu(g[r, :]) * u[r, :] for `rows` rows of n (leading dimensions ldg, ldu).
void SiluMulRows(float* g, int64_t ldg, const float* u, int64_t ldu, int64_t rows, int64_t n);

// Grouped-query attention of one new query per (row, query head) over the first `slots` slots of a KV cache:
// query head h reads key/value head h / (heads / kv_heads); the last slot (slots - 1, the query's own) is always
// attended, other slots where `allowed` says so. Strides as in DecodeAttentionArgs, with heads of the cache being
// key/value heads. Parallel over (row, key/value head): each key and value is read once for its group of queries.
struct GroupedDecodeAttentionArgs {
  const float* q;  // row r, query head h: q + r * q_row_stride + h * head_dim
  int64_t q_row_stride;
  const float* keys_t;  // row r, kv head g, dim d, slot j: keys_t + r * k_row + g * k_head + d * k_dim + j
  int64_t k_row, k_head, k_dim;
  const float* values;  // values + r * v_row + g * v_head + j * v_slot + d
  int64_t v_row, v_head, v_slot;
  const bool* allowed;  // allowed[r * allowed_row + j]
  int64_t allowed_row;
  float* out;  // row r, query head h: out + r * out_row_stride + h * head_dim
  int64_t out_row_stride;
  int64_t rows, heads, kv_heads, head_dim, slots;
  float scale;
};
void GroupedDecodeAttention(const GroupedDecodeAttentionArgs& args);

// Asks the kernel to back [ptr, ptr + bytes) with transparent huge pages (madvise MADV_HUGEPAGE; a no-op where
// unsupported). Call it on big long-lived buffers before their first touch: on VMs where a page fault costs
// ~15 us, first-touching 150 MB of 4 KB pages takes ~0.6 s, against ~20 ms with 2 MB pages.
void AdviseHugePages(void* ptr, int64_t bytes);

// dst[c, r] = src[r, c] for a rows x cols matrix (blocked, parallel).
void Transpose(const float* src, int64_t rows, int64_t cols, float* dst);

}  // namespace rlhf::model::internal

#endif  // RLHF_COMMON_MODEL_CPU_KERNELS_H_
