#include "common/model/cpu_kernels.h"

// GCC 12 warns about the `_mm512_undefined_ps()` inside its own unmasked AVX-512 intrinsics (GCC bug 105593,
// fixed in GCC 13) once they are inlined into target("avx512f") functions.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <ATen/Parallel.h>
#include <omp.h>

// This file is compiled with -fopenmp (and without the torch precompiled header): at::parallel_for is a header
// template that runs serially in translation units built without OpenMP, so the kernels use OpenMP directly.

// Row kernels compiled for AVX-512 / AVX2 / baseline and picked at load time by the CPU.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define RLHF_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define RLHF_VECTOR_CLONES
#endif

namespace rlhf::model::internal {
namespace {

// ---------------------------------------------------------------------------------------------------------------
// SmallGemm: register tiles of kRows x (16 * kVecs) outputs; for each k one row of the weight strip is loaded
// (kVecs vectors) and each of the kRows inputs is broadcast into kVecs FMAs. A strip of weights [k, 64] is read
// from memory once and stays in L2 while the row tiles reuse it; at 1-2 rows strips are 128 wide (longer runs of
// each weight row from DRAM). Measured on the target machine (AMD EPYC, AVX-512, 1 thread, GPT-2-small block
// weights): 16 rows 25 ms against OpenBLAS sgemm's 48 ms (its AVX2 kernels, packing every call); 512 rows about
// half OpenBLAS's time too. With 2 threads, GPT-2-small decoding went from 247 to 385 tokens/s at batch 16.
constexpr int kRows = 6;
constexpr int kVecs = 4;
constexpr int kStripCols = 16 * kVecs;
constexpr int kPrefetchRows = 8;

template <int R, int V>
__attribute__((target("avx512f"), always_inline)) inline void GemmTile(const float* x, int64_t ldx, const float* w,
                                                                        int64_t ldw, int64_t k, const float* bias,
                                                                        float* y, int64_t ldy, __mmask16 last) {
  __m512 acc[R][V];
  for (int j = 0; j < V; ++j) {
    const __mmask16 mask = j == V - 1 ? last : static_cast<__mmask16>(0xFFFF);
    const __m512 b = bias != nullptr ? _mm512_maskz_loadu_ps(mask, bias + 16 * j) : _mm512_setzero_ps();
    for (int r = 0; r < R; ++r) acc[r][j] = b;
  }
  for (int64_t kk = 0; kk < k; ++kk) {
    const float* wr = w + kk * ldw;
    __m512 wv[V];
    for (int j = 0; j < V; ++j) {
      _mm_prefetch(reinterpret_cast<const char*>(wr + kPrefetchRows * ldw + 16 * j), _MM_HINT_T0);
      wv[j] = j == V - 1 ? _mm512_maskz_loadu_ps(last, wr + 16 * j) : _mm512_loadu_ps(wr + 16 * j);
    }
    for (int r = 0; r < R; ++r) {
      const __m512 xb = _mm512_set1_ps(x[r * ldx + kk]);
      for (int j = 0; j < V; ++j) acc[r][j] = _mm512_fmadd_ps(xb, wv[j], acc[r][j]);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int j = 0; j < V; ++j) {
      if (j == V - 1) {
        _mm512_mask_storeu_ps(y + r * ldy + 16 * j, last, acc[r][j]);
      } else {
        _mm512_storeu_ps(y + r * ldy + 16 * j, acc[r][j]);
      }
    }
  }
}

// All rows of one column strip starting at column c0.
template <int V>
__attribute__((target("avx512f"))) void GemmStrip(const float* x, int64_t ldx, const float* w, int64_t ldw,
                                                   const float* bias, float* y, int64_t ldy, int64_t m, int64_t k,
                                                   int64_t c0, __mmask16 last) {
  const float* b = bias != nullptr ? bias + c0 : nullptr;
  int64_t r = 0;
  for (; r + kRows <= m; r += kRows) GemmTile<kRows, V>(x + r * ldx, ldx, w + c0, ldw, k, b, y + r * ldy + c0, ldy, last);
  const float* xr = x + r * ldx;
  float* yr = y + r * ldy + c0;
  switch (m - r) {
    case 1:
      GemmTile<1, V>(xr, ldx, w + c0, ldw, k, b, yr, ldy, last);
      break;
    case 2:
      GemmTile<2, V>(xr, ldx, w + c0, ldw, k, b, yr, ldy, last);
      break;
    case 3:
      GemmTile<3, V>(xr, ldx, w + c0, ldw, k, b, yr, ldy, last);
      break;
    case 4:
      GemmTile<4, V>(xr, ldx, w + c0, ldw, k, b, yr, ldy, last);
      break;
    case 5:
      GemmTile<5, V>(xr, ldx, w + c0, ldw, k, b, yr, ldy, last);
      break;
    default:
      break;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Row kernels.

// Sum over n floats with 16 independent lanes (vectorisable without -ffast-math).
inline float LaneSum(const float* a, int64_t n) {
  float acc[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int l = 0; l < 16; ++l) acc[l] += a[i + l];
  }
  float s = 0;
  for (; i < n; ++i) s += a[i];
  for (int l = 0; l < 16; ++l) s += acc[l];
  return s;
}

inline float LaneSquares(const float* a, int64_t n) {
  float acc[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    for (int l = 0; l < 16; ++l) acc[l] += a[i + l] * a[i + l];
  }
  float s = 0;
  for (; i < n; ++i) s += a[i] * a[i];
  for (int l = 0; l < 16; ++l) s += acc[l];
  return s;
}

RLHF_VECTOR_CLONES
void LayerNormRow(const float* __restrict x, const float* __restrict w, const float* __restrict b, float eps,
                  int64_t n, float* __restrict y) {
  const float mean = LaneSum(x, n) / static_cast<float>(n);
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] - mean;
  const float var = LaneSquares(y, n) / static_cast<float>(n);
  const float rstd = 1.0f / std::sqrt(var + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = y[i] * rstd * w[i] + b[i];
}

RLHF_VECTOR_CLONES
void AttendHead(const float* __restrict q, const float* __restrict keys_t, int64_t k_dim,
                const float* __restrict values, int64_t v_slot, const bool* __restrict allowed, int64_t slots,
                int64_t head_dim, float scale, float* __restrict scores, float* __restrict out) {
  for (int64_t j = 0; j < slots; ++j) scores[j] = 0;
  for (int64_t d = 0; d < head_dim; ++d) {
    const float qd = q[d] * scale;
    const float* __restrict kd = keys_t + d * k_dim;
    for (int64_t j = 0; j < slots; ++j) scores[j] += qd * kd[j];
  }
  float max_score = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < slots; ++j) {
    if (allowed[j]) max_score = std::max(max_score, scores[j]);
  }
  float total = 0;
  for (int64_t j = 0; j < slots; ++j) {
    const float p = allowed[j] ? std::exp(scores[j] - max_score) : 0.0f;
    scores[j] = p;
    total += p;
  }
  for (int64_t d = 0; d < head_dim; ++d) out[d] = 0;
  for (int64_t j = 0; j < slots; ++j) {
    const float p = scores[j];
    if (p == 0) continue;
    const float* __restrict v = values + j * v_slot;
    for (int64_t d = 0; d < head_dim; ++d) out[d] += p * v[d];
  }
  const float inv = 1.0f / total;
  for (int64_t d = 0; d < head_dim; ++d) out[d] *= inv;
}

// ---------------------------------------------------------------------------------------------------------------
// GemmNt: y = x @ w^T on [out, in] weights. A tile is R input rows x C weight rows (R * C <= 16): for each 16 floats
// of k it loads R input vectors and C weight vectors and does R * C FMAs into 16-lane accumulators, which are summed
// across lanes at the end by one shuffle tree for all 16 accumulators at once (about 3 instructions each instead of
// 8 for a lone horizontal sum). At 1 row, tiles are 1 x 16 weight rows (16 streams, one output vector); from 4 rows
// on 4 x 4, whose weight rows stay in L1/L2 while the row tiles reuse them.

// Sums of the 4 accumulators' lanes per 128-bit lane: lane L of the result is [a_L, b_L, c_L, d_L], each the sum
// of that accumulator's 4 floats in 128-bit lane L.
__attribute__((target("avx512f"), always_inline)) inline __m512 LaneSums4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));  // [a0+a2 b0+b2 a1+a3 b1+b3]
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  return _mm512_add_ps(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                       _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
}

// result[i] = the sum of the 16 floats of acc[i], added in the same order for every i.
__attribute__((target("avx512f"), always_inline)) inline __m512 HorizontalSums16(const __m512* acc) {
  const __m512 v0 = LaneSums4(acc[0], acc[1], acc[2], acc[3]);
  const __m512 v1 = LaneSums4(acc[4], acc[5], acc[6], acc[7]);
  const __m512 v2 = LaneSums4(acc[8], acc[9], acc[10], acc[11]);
  const __m512 v3 = LaneSums4(acc[12], acc[13], acc[14], acc[15]);
  const __m512 s01 = _mm512_add_ps(_mm512_shuffle_f32x4(v0, v1, _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_f32x4(v0, v1, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 s23 = _mm512_add_ps(_mm512_shuffle_f32x4(v2, v3, _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_f32x4(v2, v3, _MM_SHUFFLE(3, 2, 3, 2)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(s01, s23, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(s01, s23, _MM_SHUFFLE(3, 1, 3, 1)));
}

// exp(x) for float lanes (Cephes' expf: range reduction by ln 2 in two parts, degree-6 polynomial; ~1 ulp).
__attribute__((target("avx512f"), always_inline)) inline __m512 Exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.7f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

// silu(g) * u = g / (1 + exp(-g)) * u.
__attribute__((target("avx512f"), always_inline)) inline __m512 SiluMul16(__m512 g, __m512 u) {
  const __m512 e = Exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
  return _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), e)), u);
}

// The sums of one tile: result[r * C + c] = x[r, :] . w[c, :] over k. When `prefetch` is not null, the C weight
// rows at prefetch + c * ldw (the next tile's) are prefetched along the way.
template <int R, int C>
__attribute__((target("avx512f"), always_inline)) inline __m512 NtTile(const float* x, int64_t ldx, const float* w,
                                                                      int64_t ldw, int64_t k,
                                                                      const float* prefetch) {
  static_assert(R * C <= 16, "a tile has at most 16 accumulators");
  __m512 acc[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_ps();
  int64_t kk = 0;
  for (; kk + 16 <= k; kk += 16) {
    if (prefetch != nullptr) {
#pragma GCC unroll 16
      for (int c = 0; c < C; ++c) _mm_prefetch(reinterpret_cast<const char*>(prefetch + c * ldw + kk), _MM_HINT_T1);
    }
    __m512 xv[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) xv[r] = _mm512_loadu_ps(x + r * ldx + kk);
#pragma GCC unroll 16
    for (int c = 0; c < C; ++c) {
      const __m512 wv = _mm512_loadu_ps(w + c * ldw + kk);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r * C + c] = _mm512_fmadd_ps(xv[r], wv, acc[r * C + c]);
    }
  }
  if (kk < k) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (k - kk)) - 1);
    __m512 xv[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) xv[r] = _mm512_maskz_loadu_ps(mask, x + r * ldx + kk);
#pragma GCC unroll 16
    for (int c = 0; c < C; ++c) {
      const __m512 wv = _mm512_maskz_loadu_ps(mask, w + c * ldw + kk);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r * C + c] = _mm512_fmadd_ps(xv[r], wv, acc[r * C + c]);
    }
  }
  return HorizontalSums16(acc);
}

// One tile of one output: rows [row0, row0 + R), weight rows [c0, c0 + C), storing columns whose bit is set in
// `columns` (bit c: column c0 + c).
template <int R, int C>
__attribute__((target("avx512f"))) void NtTileStore(const float* x, int64_t ldx, int64_t k, const GemmNtOutput& o,
                                                     int64_t row0, int64_t c0, __mmask16 columns,
                                                     const float* prefetch, const float* prefetch2) {
  alignas(64) float sums[16];
  alignas(64) float sums2[16];
  const float* xr = x + row0 * ldx;
  _mm512_store_ps(sums, NtTile<R, C>(xr, ldx, o.w + c0 * o.ldw, o.ldw, k, prefetch));
  const bool gated = o.op == GemmNtOutput::Op::kGatedSilu;
  if (gated) _mm512_store_ps(sums2, NtTile<R, C>(xr, ldx, o.w2 + c0 * o.ldw, o.ldw, k, prefetch2));
  const __m512 bias = o.bias != nullptr ? _mm512_maskz_loadu_ps(columns, o.bias + c0) : _mm512_setzero_ps();
  const __m512 bias2 =
      gated && o.bias2 != nullptr ? _mm512_maskz_loadu_ps(columns, o.bias2 + c0) : _mm512_setzero_ps();
  for (int r = 0; r < R; ++r) {
    float* y = o.y + (row0 + r) * o.ldy + c0;
    __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(columns, sums + r * C), bias);
    if (o.op == GemmNtOutput::Op::kAccumulate) {
      v = _mm512_add_ps(_mm512_maskz_loadu_ps(columns, y), v);
    } else if (gated) {
      v = SiluMul16(v, _mm512_add_ps(_mm512_maskz_loadu_ps(columns, sums2 + r * C), bias2));
    }
    _mm512_mask_storeu_ps(y, columns, v);
  }
}

using NtTileFn = void (*)(const float*, int64_t, int64_t, const GemmNtOutput&, int64_t, int64_t, __mmask16,
                          const float*, const float*);

// The tile function for r rows (1..4) and c weight rows (a power of two, r * c <= 16).
NtTileFn NtTileFor(int r, int c) {
#define RLHF_NT_TILES(R) \
  switch (c) {           \
    case 1:              \
      return &NtTileStore<R, 1>; \
    case 2:              \
      return &NtTileStore<R, 2>; \
    case 4:              \
      return &NtTileStore<R, 4>; \
    default:             \
      break;             \
  }
  switch (r) {
    case 1:
      RLHF_NT_TILES(1)
      if (c == 8) return &NtTileStore<1, 8>;
      return &NtTileStore<1, 16>;
    case 2:
      RLHF_NT_TILES(2)
      return &NtTileStore<2, 8>;
    case 3:
      RLHF_NT_TILES(3)
      break;
    default:
      RLHF_NT_TILES(4)
      break;
  }
#undef RLHF_NT_TILES
  return nullptr;
}

}  // namespace

void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  // at::get_num_threads: the count at::set_num_threads set, whichever thread calls (OpenMP's own per-thread
  // default would ignore it in threads other than the one that set it).
  const int64_t threads = omp_in_parallel() ? 1 : at::get_num_threads();
  const int64_t chunks = std::min<int64_t>(threads, (n + std::max<int64_t>(grain, 1) - 1) / std::max<int64_t>(grain, 1));
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
#pragma omp parallel num_threads(chunks)
  {
    const int64_t team = omp_get_num_threads();
    const int64_t per = (n + team - 1) / team;
    const int64_t begin = omp_get_thread_num() * per;
    const int64_t end = std::min(n, begin + per);
    if (begin < end) fn(begin, end);
  }
}

bool CpuHasAvx512() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
#else
  return false;
#endif
}

void SmallGemmAvx512(const float* x, int64_t ldx, const float* w, int64_t ldw, const float* bias, float* y,
                     int64_t ldy, int64_t m, int64_t k, int64_t n) {
  if (m <= 0 || n <= 0) return;
  // At 1-2 rows the kernel is bound by memory: wider strips read longer runs of each weight row.
  const bool wide = m <= 2;
  const int64_t strip_cols = wide ? 2 * kStripCols : kStripCols;
  const int64_t full = n / strip_cols;
  const int64_t tails = (n - full * strip_cols + 15) / 16;
  // Enough multiply-adds per task that forking threads pays off.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 17) / std::max<int64_t>(1, m * k * strip_cols));
  ParallelFor(full + tails, grain, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      if (item < full && wide) {
        GemmStrip<2 * kVecs>(x, ldx, w, ldw, bias, y, ldy, m, k, item * strip_cols, static_cast<__mmask16>(0xFFFF));
      } else if (item < full) {
        GemmStrip<kVecs>(x, ldx, w, ldw, bias, y, ldy, m, k, item * strip_cols, static_cast<__mmask16>(0xFFFF));
      } else {
        const int64_t c0 = full * strip_cols + (item - full) * 16;
        const int64_t cols = std::min<int64_t>(16, n - c0);
        GemmStrip<1>(x, ldx, w, ldw, bias, y, ldy, m, k, c0, static_cast<__mmask16>((1u << cols) - 1));
      }
    }
  });
}

void LayerNormRows(const float* x, const float* weight, const float* bias, float eps, int64_t rows, int64_t n,
                   float* y) {
  for (int64_t r = 0; r < rows; ++r) LayerNormRow(x + r * n, weight, bias, eps, n, y + r * n);
}

void DecodeAttention(const DecodeAttentionArgs& a) {
  const int64_t work_per_head = a.slots * a.head_dim;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, work_per_head));
  ParallelFor(a.rows * a.heads, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(a.slots);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t r = i / a.heads, h = i % a.heads;
      AttendHead(a.q + r * a.q_row_stride + h * a.head_dim, a.keys_t + r * a.k_row + h * a.k_head, a.k_dim,
                 a.values + r * a.v_row + h * a.v_head, a.v_slot, a.allowed + r * a.allowed_row, a.slots,
                 a.head_dim, a.scale, scores.data(), a.out + r * a.out_row_stride + h * a.head_dim);
    }
  });
}

void GemmNtAvx512(const float* x, int64_t ldx, int64_t m, int64_t k, const GemmNtOutput* outputs, int count) {
  constexpr int kMaxOutputs = 4;
  if (m <= 0 || count <= 0) return;
  if (count > kMaxOutputs) {  // callers pass q/k/v at most; split longer lists
    GemmNtAvx512(x, ldx, m, k, outputs, kMaxOutputs);
    GemmNtAvx512(x, ldx, m, k, outputs + kMaxOutputs, count - kMaxOutputs);
    return;
  }
  // Rows per tile and the widest tile of weight rows: 1 x 16, 2 x 8, then 4 x 4.
  const int tile_rows = m >= 4 ? 4 : m >= 2 ? 2 : 1;
  int widths[kMaxOutputs];
  int64_t first_item[kMaxOutputs + 1];
  first_item[0] = 0;
  for (int i = 0; i < count; ++i) {
    int c = 16 / tile_rows;
    while (c > 1 && c > outputs[i].n) c /= 2;
    widths[i] = c;
    first_item[i + 1] = first_item[i] + (outputs[i].n + c - 1) / c;
  }
  const int64_t items = first_item[count];
  // Input rows per block: as many as fit in ~128 KB (a fraction of any AVX-512 CPU's L2), so that each weight tile,
  // read once per block, is reused by every row of the block from L1/L2.
  const int64_t block_rows =
      std::max<int64_t>(tile_rows, (int64_t{128} * 1024 / (4 * std::max<int64_t>(k, 1))) / tile_rows * tile_rows);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 17) / std::max<int64_t>(1, m * k * (16 / tile_rows)));
  ParallelFor(items, grain, [&](int64_t begin, int64_t end) {
    // Where item `i` is: output, first weight row of the tile (the last tile of an output ends at its last row and
    // stores only the columns no earlier tile stored) and the columns it stores.
    struct Tile {
      int out;
      int64_t c0;
      __mmask16 columns;
    };
    auto tile_of = [&](int64_t item) {
      int o = 0;
      while (item >= first_item[o + 1]) ++o;
      const int c = widths[o];
      const int64_t from = (item - first_item[o]) * c;
      const int64_t c0 = std::max<int64_t>(0, std::min<int64_t>(from, outputs[o].n - c));
      const unsigned all = (1u << c) - 1;
      const unsigned skip = (1u << (from - c0)) - 1;
      const unsigned fit = outputs[o].n >= c ? all : (1u << outputs[o].n) - 1;
      return Tile{o, c0, static_cast<__mmask16>(all & ~skip & fit)};
    };
    for (int64_t m0 = 0; m0 < m; m0 += block_rows) {
      const int64_t m1 = std::min(m, m0 + block_rows);
      for (int64_t item = begin; item < end; ++item) {
        const Tile t = tile_of(item);
        const GemmNtOutput& o = outputs[t.out];
        const float* prefetch = nullptr;
        const float* prefetch2 = nullptr;
        if (item + 1 < end) {
          const Tile next = tile_of(item + 1);
          prefetch = outputs[next.out].w + next.c0 * outputs[next.out].ldw;
          if (outputs[next.out].w2 != nullptr) prefetch2 = outputs[next.out].w2 + next.c0 * outputs[next.out].ldw;
        }
        for (int64_t r0 = m0; r0 < m1; r0 += tile_rows) {
          const int rows = static_cast<int>(std::min<int64_t>(tile_rows, m1 - r0));
          NtTileFor(rows, widths[t.out])(x, ldx, k, o, r0, t.c0, t.columns, prefetch, prefetch2);
          prefetch = prefetch2 = nullptr;  // the first row tile brings the next weight tile in
        }
      }
    }
  });
}

namespace {

RLHF_VECTOR_CLONES
void RmsNormRow(const float* x, const float* __restrict w, float eps, int64_t n, float* y) {
  const float mean_square = LaneSquares(x, n) / static_cast<float>(n);
  const float rstd = 1.0f / std::sqrt(mean_square + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = w[i] * (x[i] * rstd);
}

RLHF_VECTOR_CLONES
void SiluMulRow(float* __restrict g, const float* __restrict u, int64_t n) {
  for (int64_t i = 0; i < n; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

__attribute__((target("avx512f"))) void SiluMulRowAvx512(float* g, const float* u, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(g + i, mask, SiluMul16(_mm512_maskz_loadu_ps(mask, g + i), _mm512_maskz_loadu_ps(mask, u + i)));
  }
}

// s[j] = exp(s[j]) for n floats (0 where s[j] is -inf); returns their sum. Exp16 instead of n scalar expf calls,
// which took about a tenth of a SmolLM2-shaped decode step at batch 16.
__attribute__((target("avx512f"))) float ExpInPlaceAvx512(float* s, int64_t n) {
  __m512 total = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 mask = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 x = _mm512_maskz_loadu_ps(mask, s + i);
    const __mmask16 live = _mm512_mask_cmp_ps_mask(mask, x, _mm512_set1_ps(-std::numeric_limits<float>::infinity()),
                                                   _CMP_NEQ_OQ);
    const __m512 p = _mm512_maskz_mov_ps(live, Exp16(x));
    _mm512_mask_storeu_ps(s + i, mask, p);
    total = _mm512_add_ps(total, p);
  }
  return _mm512_reduce_add_ps(total);
}

// The `group` query heads at q (head_dim apart) over one key/value head; scores [group, slots] is scratch.
// `avx512`: the softmax's exponentials by ExpInPlaceAvx512.
RLHF_VECTOR_CLONES
void AttendGroup(const float* __restrict q, int64_t group, int64_t head_dim, const float* __restrict keys_t,
                 int64_t k_dim, const float* __restrict values, int64_t v_slot, const bool* __restrict allowed,
                 int64_t slots, float scale, bool avx512, float* __restrict scores, float* __restrict out) {
  for (int64_t i = 0; i < group * slots; ++i) scores[i] = 0;
  for (int64_t d = 0; d < head_dim; ++d) {
    const float* __restrict kd = keys_t + d * k_dim;
    for (int64_t g = 0; g < group; ++g) {
      const float qd = q[g * head_dim + d] * scale;
      float* __restrict s = scores + g * slots;
      for (int64_t j = 0; j < slots; ++j) s[j] += qd * kd[j];
    }
  }
  for (int64_t g = 0; g < group; ++g) {
    float* __restrict s = scores + g * slots;
    float max_score = s[slots - 1];  // the query's own slot is always attended
    for (int64_t j = 0; j + 1 < slots; ++j) {
      if (allowed[j]) max_score = std::max(max_score, s[j]);
    }
    for (int64_t j = 0; j < slots; ++j) {
      s[j] = allowed[j] || j == slots - 1 ? s[j] - max_score : -std::numeric_limits<float>::infinity();
    }
    float total = 0;
    if (avx512) {
      total = ExpInPlaceAvx512(s, slots);
    } else {
      for (int64_t j = 0; j < slots; ++j) {
        s[j] = std::exp(s[j]);  // exp(-inf) = 0
        total += s[j];
      }
    }
    const float inv = 1.0f / total;
    for (int64_t j = 0; j < slots; ++j) s[j] *= inv;
  }
  for (int64_t i = 0; i < group * head_dim; ++i) out[i] = 0;
  for (int64_t j = 0; j < slots; ++j) {
    const float* __restrict v = values + j * v_slot;
    for (int64_t g = 0; g < group; ++g) {
      const float p = scores[g * slots + j];
      if (p == 0) continue;
      float* __restrict o = out + g * head_dim;
      for (int64_t d = 0; d < head_dim; ++d) o[d] += p * v[d];
    }
  }
}

}  // namespace

void RmsNormRows(const float* x, int64_t ldx, const float* weight, float eps, int64_t rows, int64_t n, float* y,
                 int64_t ldy) {
  for (int64_t r = 0; r < rows; ++r) RmsNormRow(x + r * ldx, weight, eps, n, y + r * ldy);
}

void SiluMulRows(float* g, int64_t ldg, const float* u, int64_t ldu, int64_t rows, int64_t n) {
  const bool avx512 = CpuHasAvx512();
  ParallelFor(rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, n)), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      if (avx512) {
        SiluMulRowAvx512(g + r * ldg, u + r * ldu, n);
      } else {
        SiluMulRow(g + r * ldg, u + r * ldu, n);
      }
    }
  });
}

void GroupedDecodeAttention(const GroupedDecodeAttentionArgs& a) {
  const int64_t group = a.heads / a.kv_heads;
  const int64_t work = group * a.slots * a.head_dim;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, work));
  const bool avx512 = CpuHasAvx512();
  ParallelFor(a.rows * a.kv_heads, grain, [&](int64_t begin, int64_t end) {
    // Grows to the longest cache seen by this thread; no allocation in the steady state.
    thread_local std::vector<float> scores;
    if (static_cast<int64_t>(scores.size()) < group * a.slots) scores.resize(group * a.slots);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t r = i / a.kv_heads, g = i % a.kv_heads;
      AttendGroup(a.q + r * a.q_row_stride + g * group * a.head_dim, group, a.head_dim,
                  a.keys_t + r * a.k_row + g * a.k_head, a.k_dim, a.values + r * a.v_row + g * a.v_head, a.v_slot,
                  a.allowed + r * a.allowed_row, a.slots, a.scale, avx512, scores.data(),
                  a.out + r * a.out_row_stride + g * group * a.head_dim);
    }
  });
}

void AdviseHugePages(void* ptr, int64_t bytes) {
#ifdef MADV_HUGEPAGE
  static const uintptr_t kPage = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(ptr) + kPage - 1) & ~(kPage - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(ptr) + static_cast<uintptr_t>(bytes)) & ~(kPage - 1);
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // advisory only
#else
  (void)ptr;
  (void)bytes;
#endif
}

void Transpose(const float* src, int64_t rows, int64_t cols, float* dst) {
  constexpr int64_t kBlock = 64;
  const int64_t row_blocks = (rows + kBlock - 1) / kBlock;
  ParallelFor(row_blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t rb = begin; rb < end; ++rb) {
      const int64_t r0 = rb * kBlock, r1 = std::min(rows, r0 + kBlock);
      for (int64_t c0 = 0; c0 < cols; c0 += kBlock) {
        const int64_t c1 = std::min(cols, c0 + kBlock);
        for (int64_t r = r0; r < r1; ++r) {
          for (int64_t c = c0; c < c1; ++c) dst[c * rows + r] = src[r * cols + c];
        }
      }
    }
  });
}

}  // namespace rlhf::model::internal
