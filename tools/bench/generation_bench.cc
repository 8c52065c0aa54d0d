// Generation throughput of the model core, with and without the KV cache, side by side with the peer baseline run
// in the same invocation (decoding in eager PyTorch: ../shared/peer/gpt2_eager.py for GPT-2 shapes,
// ../shared/peer/llama_eager.py for Llama-family shapes), and a check of the targets:
//   - GPT-2-small shape, KV cache: >= 30 tokens/s at batch 1, >= 200 at batch 16 (DESIGN.md);
//   - Llama-family shapes (e.g. --models=smollm2): this machine's own bounds, measured in the same run: memory read
//     bandwidth (a streaming sum over a buffer far larger than the caches, --threads threads) gives the batch-1
//     bound (weight bytes per step / bandwidth); the best time of each of the step's matrix products (OpenBLAS
//     sgemm or our kernel, whichever is faster for that product) gives the batch-16 bound. Targets: batch 1 >= 90%
//     of the bandwidth bound, batch 16 >= 80% of the matmul bound and >= 1.5x the peer.
// A benchmark, not a test: it takes a few minutes (the no-cache rows of GPT-2-small at batch 16 dominate; skip them
// with --no_cache=false).
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/mv.h>
#include <ATen/ops/ones.h>
#include <c10/core/InferenceMode.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/model/causal_lm.h"
#include "common/model/cpu_kernels.h"
#include "common/model/llama.h"
#include "common/model/sampler.h"
#include "common/model/threads.h"
#include "common/util/status_macros.h"

ABSL_FLAG(std::string, models, "small,tiny",
          "comma-separated shapes: small (GPT-2 small: 12 layers, 768 wide, 12 heads, vocab 50257), tiny (GPT-2: 2 "
          "layers, 128 wide, 4 heads, vocab --tiny_vocab), smollm2 (Llama: SmolLM2-135M's 30 layers, 576 wide, 9 "
          "heads, 3 key/value heads, intermediate 1536, vocab 49152, tied)");
ABSL_FLAG(int, tiny_vocab, 64, "vocabulary of the tiny model (64 is the built-in task's)");
ABSL_FLAG(std::string, batches, "1,16", "comma-separated batch sizes");
ABSL_FLAG(int, prompt, 32, "prompt tokens per row");
ABSL_FLAG(int, new_tokens, 64, "sampled tokens per row (no EOS: every row runs to the end)");
ABSL_FLAG(int, threads, 2, "intra-op threads (ours and the peer's)");
ABSL_FLAG(int, repeats, 3,
          "timed runs per KV-cache row, ours and the peer's alike; the best is reported (other processes on the "
          "same cores make single runs vary by 2-5x). No-cache rows run once.");
ABSL_FLAG(bool, no_cache, true, "also time generation without the KV cache (full recomputation each step)");
ABSL_FLAG(bool, peer, true, "run the peer baseline and print ours/peer");
ABSL_FLAG(std::string, python, "/usr/bin/python3", "interpreter for the peer (needs Debian's python3-torch)");
ABSL_FLAG(std::string, peer_script, RLHF_BENCH_DEFAULT_PEER_SCRIPT, "path of gpt2_eager.py");
ABSL_FLAG(std::string, llama_peer_script, RLHF_BENCH_DEFAULT_LLAMA_PEER_SCRIPT, "path of llama_eager.py");
ABSL_FLAG(bool, bounds, true, "Llama-family shapes: measure this machine's bandwidth and matmul bounds");
ABSL_FLAG(int, bandwidth_mib, 1024, "size of the buffer the bandwidth measurement reads (far above the caches)");
ABSL_FLAG(std::string, decode_kernel, "auto", "ModelOptions.decode_kernel: auto, avx512 or blas");
ABSL_FLAG(int, mv_max_batch, 1, "ModelOptions.mv_max_batch (decode_kernel=blas): batches up to this use mv");

namespace rlhf::bench {
namespace {

struct Shape {
  std::string name;
  bool llama;  // the Llama family (else GPT-2)
  int layers, width, heads, vocab;
  int kv_heads = 0, intermediate = 0;  // Llama family
};

model::ModelConfig ConfigOf(const Shape& shape) {
  model::ModelConfig config;
  if (shape.llama) {
    config = *model::ModelConfig::ForModelType("llama");
    config.SetShape(shape.layers, shape.width, shape.heads, shape.kv_heads, 0, shape.intermediate);
    config.tie_word_embeddings = true;
  } else {
    config.SetShape(shape.layers, shape.width, shape.heads);
  }
  config.vocab_size = shape.vocab;
  config.max_position_embeddings = 1024;
  return config;
}

double Seconds(const std::function<void()>& fn) {
  const auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

struct Key {
  std::string model;
  int batch;
  bool cache;
  bool operator<(const Key& o) const {
    return std::tie(model, batch, cache) < std::tie(o.model, o.batch, o.cache);
  }
};

absl::StatusOr<double> TimeOurs(model::Sampler& sampler, const Shape& shape, int batch, bool cache) {
  std::mt19937_64 rng(batch);
  std::vector<std::vector<int64_t>> prompts(batch);
  for (auto& p : prompts) {
    for (int i = 0; i < absl::GetFlag(FLAGS_prompt); ++i) p.push_back(static_cast<int64_t>(rng() % shape.vocab));
  }
  model::SamplingOptions options;
  options.temperature = 1.0;
  options.seed = 1;
  auto run = [&]() { return cache ? sampler.Generate(prompts, options) : sampler.GenerateWithoutCache(prompts, options); };
  // Warm-up to the steady state of a serving process: KV cache and weight copies allocated, threads started. The
  // cached run warms up at full length (its cache is sized by it); the uncached one allocates per step anyway.
  options.max_new_tokens = cache ? absl::GetFlag(FLAGS_new_tokens) : 2;
  RETURN_IF_ERROR(run().status());
  options.max_new_tokens = absl::GetFlag(FLAGS_new_tokens);
  double best = 0;
  const int repeats = cache ? std::max(1, absl::GetFlag(FLAGS_repeats)) : 1;  // no-cache rows take minutes
  for (int i = 0; i < repeats; ++i) {
    const absl::Time start = absl::Now();
    ASSIGN_OR_RETURN(auto out, run());
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    int64_t tokens = 0;
    for (const auto& seq : out) tokens += static_cast<int64_t>(seq.tokens.size());
    best = std::max(best, static_cast<double>(tokens) / seconds);
  }
  return best;
}

std::string LoadAverage() {
  std::string text;
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    char buffer[128] = {0};
    if (std::fgets(buffer, sizeof(buffer), f) != nullptr) text = buffer;
    std::fclose(f);
  }
  const size_t end = text.find(' ', text.find(' ', text.find(' ') + 1) + 1);
  return end == std::string::npos ? text : text.substr(0, end);
}

// Runs the peer once for a shape and returns tokens/s by (batch, cache).
absl::StatusOr<std::map<std::pair<int, bool>, double>> RunPeerOnce(const Shape& shape, bool no_cache) {
  const std::string common = absl::StrCat(
      " --layers ", shape.layers, " --width ", shape.width, " --heads ", shape.heads, " --vocab ", shape.vocab,
      " --batch ", absl::GetFlag(FLAGS_batches), " --prompt ", absl::GetFlag(FLAGS_prompt), " --new ",
      absl::GetFlag(FLAGS_new_tokens), " --threads ", absl::GetFlag(FLAGS_threads));
  const std::string command =
      shape.llama ? absl::StrCat(absl::GetFlag(FLAGS_python), " ", absl::GetFlag(FLAGS_llama_peer_script), common,
                                 " --kv_heads ", shape.kv_heads, " --inter ", shape.intermediate, " 2>&1")
                  : absl::StrCat(absl::GetFlag(FLAGS_python), " ", absl::GetFlag(FLAGS_peer_script), common,
                                 no_cache ? "" : " --no-recompute", " 2>&1");
  std::fprintf(stderr, "peer: %s\n", command.c_str());
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return absl::UnavailableError(absl::StrCat("cannot run: ", command));
  std::string output;
  char buffer[4096];
  while (size_t n = std::fread(buffer, 1, sizeof(buffer), pipe)) output.append(buffer, n);
  const int rc = ::pclose(pipe);
  if (rc != 0) {
    return absl::UnavailableError(absl::StrCat("peer exited with status ", rc, ": ", output));
  }
  std::fprintf(stderr, "%s", output.c_str());
  std::map<std::pair<int, bool>, double> result;
  static const std::regex kLine(R"(batch\s+(\d+) kv_cache (True|False)\s+new \d+:\s+([0-9.]+) tokens/s)");
  for (std::sregex_iterator it(output.begin(), output.end(), kLine), end; it != end; ++it) {
    result[{std::stoi((*it)[1]), (*it)[2] == "True"}] = std::stod((*it)[3]);
  }
  return result;
}

// The peer's best of --repeats runs (its slow no-cache rows once, like ours).
absl::StatusOr<std::map<std::pair<int, bool>, double>> RunPeer(const Shape& shape) {
  std::map<std::pair<int, bool>, double> best;
  for (int i = 0; i < std::max(1, absl::GetFlag(FLAGS_repeats)); ++i) {
    ASSIGN_OR_RETURN(auto rates, RunPeerOnce(shape, i == 0 && absl::GetFlag(FLAGS_no_cache) && !shape.llama));
    for (const auto& [key, rate] : rates) best[key] = std::max(best[key], rate);
  }
  return best;
}

// ---------------------------------------------------------------------------------------------------------------
// This machine's bounds (Llama-family shapes).

std::string CpuModel() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (absl::StartsWith(line, "model name")) return line.substr(line.find(':') + 2);
  }
  return "unknown CPU";
}

__attribute__((target("avx512f"))) float SumAvx512(const float* p, int64_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i + 64 <= n; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
    a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
  }
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  float total = 0;
  for (float v : lanes) total += v;
  return total;
}

__attribute__((target("avx2"))) float SumAvx2(const float* p, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  float total = 0;
  for (float v : lanes) total += v;
  return total;
}

// Runs fn(thread, begin, end) on `threads` threads over [0, n) in equal contiguous parts.
void OnThreads(int threads, int64_t n, const std::function<void(int, int64_t, int64_t)>& fn) {
  std::vector<std::thread> pool;
  const int64_t part = (n / threads) / 64 * 64;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back(fn, t, t * part, t + 1 == threads ? n : (t + 1) * part);
  }
  for (std::thread& th : pool) th.join();
}

// Memory read bandwidth in bytes/s: `threads` threads sum their parts of a buffer of `bytes`; best of `repeats`.
double MeasureReadBandwidth(int threads, int64_t bytes, int repeats) {
  const int64_t n = bytes / 4 / 64 * 64;
  float* buffer = static_cast<float*>(std::aligned_alloc(64, n * 4));
  if (buffer == nullptr) return 0;
  model::internal::AdviseHugePages(buffer, n * 4);
  OnThreads(threads, n, [&](int, int64_t begin, int64_t end) { std::fill(buffer + begin, buffer + end, 1.0f); });
  const bool avx512 = model::internal::CpuHasAvx512();
  std::vector<float> sums(threads);
  double best = 0;
  for (int i = 0; i < repeats; ++i) {
    const double seconds = Seconds([&] {
      OnThreads(threads, n, [&](int t, int64_t begin, int64_t end) {
        sums[t] = avx512 ? SumAvx512(buffer + begin, end - begin) : SumAvx2(buffer + begin, end - begin);
      });
    });
    float total = 0;
    for (float v : sums) total += v;
    if (total != static_cast<float>(n) && total < 1e6f) std::fprintf(stderr, "bandwidth: unexpected sum %g\n", total);
    best = std::max(best, static_cast<double>(n) * 4 / seconds);
  }
  std::free(buffer);
  return best;
}

// The decode step's matrix products, grouped as the step runs them.
enum Group { kQkv, kO, kMlpIn, kDown, kHead, kGroups };
constexpr const char* kGroupNames[kGroups] = {"q/k/v", "o", "gate/up", "down", "lm_head"};

// Seconds per step of each group of products, per kernel (best of the repeats); infinity where not run.
struct ProductTimes {
  double blas[kGroups];
  double ours[kGroups];
  double Blas() const { return Sum(blas); }
  double Ours() const { return Sum(ours); }
  // Each group by its faster kernel.
  double Best() const {
    double total = 0;
    for (int g = 0; g < kGroups; ++g) total += std::min(blas[g], ours[g]);
    return total;
  }
  static double Sum(const double* t) {
    double total = 0;
    for (int g = 0; g < kGroups; ++g) total += t[g];
    return total;
  }
};

// Times every matrix product of one step of `model` (all layers, then the LM head) on `rows` input rows (the LM
// head on `head_rows`), with OpenBLAS (sgemm through at::mm; at one row also gemv through at::mv, whichever is
// faster) and with our kernel (as the decode step calls it: q/k/v in one call, gate/up fused with the SiLU gate).
ProductTimes TimeStepProducts(const model::CausalLm& model, int64_t rows, int64_t head_rows, int repeats) {
  c10::InferenceMode inference;
  const model::ModelConfig& c = model.config();
  const auto state = model.StateDict();
  auto weight = [&](int64_t layer, const char* name) {
    return state.at(absl::StrCat("model.layers.", layer, ".", name, ".weight"));
  };
  const at::Tensor& head = state.count("lm_head.weight") ? state.at("lm_head.weight") : state.at("model.embed_tokens.weight");
  const int64_t e = c.hidden_size, qn = c.num_attention_heads * c.head_dim, kvn = c.num_key_value_heads * c.head_dim;
  const int64_t inter = c.intermediate_size;
  at::Tensor in = at::full({rows, std::max({e, qn, inter})}, 0.01f);
  at::Tensor h = in.narrow(1, 0, e).contiguous(), attn = in.narrow(1, 0, qn).contiguous();
  at::Tensor act = in.narrow(1, 0, inter).contiguous(), h_head = h.narrow(0, 0, head_rows);
  at::Tensor q = at::empty({rows, qn}), k = at::empty({rows, kvn}), v = at::empty({rows, kvn});
  at::Tensor x = at::full({rows, e}, 0.01f), g = at::empty({rows, inter}), u = at::empty({rows, inter});
  at::Tensor logits = at::empty({head_rows, c.vocab_size});
  using Op = model::internal::GemmNtOutput::Op;
  auto product = [](const at::Tensor& w, at::Tensor& y, Op op = Op::kStore) {
    model::internal::GemmNtOutput o;
    o.w = w.data_ptr<float>();
    o.ldw = w.stride(0);
    o.y = y.data_ptr<float>();
    o.ldy = y.stride(0);
    o.n = w.size(0);
    o.op = op;
    return o;
  };
  auto ours = [&](const at::Tensor& input, std::vector<model::internal::GemmNtOutput> outputs) {
    model::internal::GemmNtAvx512(input.data_ptr<float>(), input.stride(0), input.size(0), input.size(1),
                                  outputs.data(), static_cast<int>(outputs.size()));
  };
  auto blas = [&](bool use_mv, const at::Tensor& input, const at::Tensor& w, at::Tensor& y) {
    if (use_mv) {
      at::Tensor row = y.select(0, 0);
      at::mv_out(row, w, input.select(0, 0));
    } else {
      at::mm_out(y, input, w.t());
    }
  };
  // The groups of one step by one kernel (0: ours, 1: sgemm, 2: gemv), each group's time added to t.
  auto step = [&](int kernel, double* t) {
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const at::Tensor wq = weight(l, "self_attn.q_proj"), wk = weight(l, "self_attn.k_proj");
      const at::Tensor wv = weight(l, "self_attn.v_proj"), wo = weight(l, "self_attn.o_proj");
      const at::Tensor wg = weight(l, "mlp.gate_proj"), wu = weight(l, "mlp.up_proj");
      const at::Tensor wd = weight(l, "mlp.down_proj");
      if (kernel == 0) {
        t[kQkv] += Seconds([&] { ours(h, {product(wq, q), product(wk, k), product(wv, v)}); });
        t[kO] += Seconds([&] { ours(attn, {product(wo, x, Op::kAccumulate)}); });
        t[kMlpIn] += Seconds([&] {
          model::internal::GemmNtOutput o = product(wg, g, Op::kGatedSilu);
          o.w2 = wu.data_ptr<float>();
          ours(h, {o});
        });
        t[kDown] += Seconds([&] { ours(act, {product(wd, x, Op::kAccumulate)}); });
      } else {
        const bool mv = kernel == 2;
        t[kQkv] += Seconds([&] {
          blas(mv, h, wq, q);
          blas(mv, h, wk, k);
          blas(mv, h, wv, v);
        });
        t[kO] += Seconds([&] { blas(mv, attn, wo, x); });
        t[kMlpIn] += Seconds([&] {
          blas(mv, h, wg, g);
          blas(mv, h, wu, u);
        });
        t[kDown] += Seconds([&] { blas(mv, act, wd, x); });
      }
    }
    t[kHead] += Seconds([&] {
      if (kernel == 0) {
        ours(h_head, {product(head, logits)});
      } else {
        blas(kernel == 2 && head_rows == 1, h_head, head, logits);
      }
    });
  };
  ProductTimes out;
  std::fill(out.blas, out.blas + kGroups, std::numeric_limits<double>::infinity());
  std::fill(out.ours, out.ours + kGroups, std::numeric_limits<double>::infinity());
  std::vector<int> kernels = {1};
  if (rows == 1) kernels.push_back(2);
  if (model::internal::CpuHasAvx512()) kernels.push_back(0);
  for (int i = 0; i <= repeats; ++i) {  // the first round warms up
    for (int kernel : kernels) {  // interleaved, so that load from other processes hits each alike
      double t[kGroups] = {0};
      step(kernel, t);
      if (i == 0) continue;
      double* best = kernel == 0 ? out.ours : out.blas;
      for (int gi = 0; gi < kGroups; ++gi) best[gi] = std::min(best[gi], t[gi]);
    }
  }
  return out;
}

// Bytes of weights one decode step reads: every layer's matrices and norms, the final norm and the LM head (the
// embedding rows a step looks up are negligible; a tied head is the embedding, read once).
double WeightBytesPerStep(const model::ModelConfig& c) {
  const double qn = static_cast<double>(c.num_attention_heads * c.head_dim);
  const double kvn = static_cast<double>(c.num_key_value_heads * c.head_dim);
  const double e = static_cast<double>(c.hidden_size), inter = static_cast<double>(c.intermediate_size);
  const double layer = e * qn * 2 + e * kvn * 2 + 3 * e * inter + 2 * e;
  return 4 * (static_cast<double>(c.num_hidden_layers) * layer + e + static_cast<double>(c.vocab_size) * e);
}

// Our decode steps alone (no sampling): a prefill of --prompt tokens, then --new_tokens - 1 one-token steps.
struct StepTimes {
  double prefill_seconds = std::numeric_limits<double>::infinity();
  double step_seconds = std::numeric_limits<double>::infinity();  // per step
};
absl::StatusOr<StepTimes> TimeDecodeSteps(const model::CausalLm& model, int batch) {
  const int prompt = absl::GetFlag(FLAGS_prompt), steps = absl::GetFlag(FLAGS_new_tokens) - 1;
  at::Tensor ids = at::full({batch, prompt}, 7, at::kLong), mask = at::ones({batch, prompt}, at::kLong);
  at::Tensor positions = at::empty({batch, prompt}, at::kLong);
  for (int r = 0; r < batch; ++r) {
    for (int i = 0; i < prompt; ++i) positions[r][i] = i;
  }
  at::Tensor step_ids = at::full({batch, 1}, 11, at::kLong), step_mask = at::ones({batch, 1}, at::kLong);
  at::Tensor step_pos = at::empty({batch, 1}, at::kLong);
  model::KvCache cache;
  StepTimes best;
  for (int i = 0; i <= std::max(1, absl::GetFlag(FLAGS_repeats)); ++i) {  // the first round warms up
    RETURN_IF_ERROR(model.ResetKvCache(batch, prompt + steps + 1, &cache));
    absl::Status status;
    const double prefill = Seconds([&] { status = model.Extend(ids, positions, mask, &cache).status(); });
    RETURN_IF_ERROR(status);
    const double decode = Seconds([&] {
      for (int s = 0; s < steps && status.ok(); ++s) {
        step_pos.fill_(prompt + s);
        status = model.Extend(step_ids, step_pos, step_mask, &cache).status();
      }
    });
    RETURN_IF_ERROR(status);
    if (i == 0) continue;
    best.prefill_seconds = std::min(best.prefill_seconds, prefill);
    best.step_seconds = std::min(best.step_seconds, decode / std::max(1, steps));
  }
  return best;
}

struct LlamaResult {
  std::string kernel;  // the matrix kernel of the decode steps / of the prefill
  StepTimes steps;
  ProductTimes step_products;     // at `batch` rows
  ProductTimes prefill_products;  // at batch * prompt rows (LM head at batch rows)
};

int Main() {
  const int threads = absl::GetFlag(FLAGS_threads);
  if (absl::Status s = model::SetIntraOpThreads(threads); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 2;
  }
  std::vector<int> batches;
  for (absl::string_view b : absl::StrSplit(absl::GetFlag(FLAGS_batches), ',')) {
    int v = 0;
    if (!absl::SimpleAtoi(b, &v) || v <= 0) {
      std::fprintf(stderr, "bad --batches entry '%s'\n", std::string(b).c_str());
      return 2;
    }
    batches.push_back(v);
  }
  if (absl::GetFlag(FLAGS_new_tokens) < 2 || absl::GetFlag(FLAGS_prompt) < 1) {
    std::fprintf(stderr, "--new_tokens must be >= 2 and --prompt >= 1\n");
    return 2;
  }
  std::vector<Shape> shapes;
  for (absl::string_view m : absl::StrSplit(absl::GetFlag(FLAGS_models), ',')) {
    if (m == "small") {
      shapes.push_back({"gpt2-small", false, 12, 768, 12, 50257});
    } else if (m == "tiny") {
      shapes.push_back({"tiny", false, 2, 128, 4, absl::GetFlag(FLAGS_tiny_vocab)});
    } else if (m == "smollm2") {
      shapes.push_back({"smollm2", true, 30, 576, 9, 49152, 3, 1536});
    } else {
      std::fprintf(stderr, "unknown model '%s' (small, tiny, smollm2)\n", std::string(m).c_str());
      return 2;
    }
  }
  model::ModelOptions options;
  options.init_seed = 0;
  options.mv_max_batch = absl::GetFlag(FLAGS_mv_max_batch);
  const std::string kernel_flag = absl::GetFlag(FLAGS_decode_kernel);
  if (kernel_flag == "avx512") {
    options.decode_kernel = model::DecodeKernel::kAvx512;
  } else if (kernel_flag == "blas") {
    options.decode_kernel = model::DecodeKernel::kBlas;
  } else if (kernel_flag != "auto") {
    std::fprintf(stderr, "unknown --decode_kernel '%s' (auto, avx512, blas)\n", kernel_flag.c_str());
    return 2;
  }
  const bool no_cache = absl::GetFlag(FLAGS_no_cache);
  const int repeats = std::max(1, absl::GetFlag(FLAGS_repeats));
  const bool any_llama = std::any_of(shapes.begin(), shapes.end(), [](const Shape& s) { return s.llama; });
  const bool bounds = absl::GetFlag(FLAGS_bounds) && any_llama;

  const std::string load_before = LoadAverage();
  double bandwidth = 0;
  if (bounds) {
    bandwidth = MeasureReadBandwidth(threads, int64_t{absl::GetFlag(FLAGS_bandwidth_mib)} << 20, 2 * repeats + 1);
    std::fprintf(stderr, "memory read bandwidth: %.1f GB/s\n", bandwidth / 1e9);
  }
  std::map<Key, double> ours;
  std::map<Key, double> peer;
  std::map<std::pair<std::string, int>, LlamaResult> llama;
  for (const Shape& shape : shapes) {
    auto model = model::CreateModel(ConfigOf(shape), options);
    if (!model.ok()) {
      std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
      return 1;
    }
    auto sampler = model::Sampler::Create(model->get());
    for (int batch : batches) {
      for (bool cache : {true, false}) {
        if (!cache && (!no_cache || shape.llama)) continue;  // the Llama peer has no uncached mode
        auto rate = TimeOurs(**sampler, shape, batch, cache);
        if (!rate.ok()) {
          std::fprintf(stderr, "%s\n", rate.status().ToString().c_str());
          return 1;
        }
        std::fprintf(stderr, "ours: %s batch %d kv_cache %d: %.1f tokens/s\n", shape.name.c_str(), batch, cache,
                     *rate);
        ours[{shape.name, batch, cache}] = *rate;
      }
      if (!shape.llama) continue;
      LlamaResult& r = llama[{shape.name, batch}];
      const auto& lm = dynamic_cast<const model::LlamaModel&>(**model);
      r.kernel = absl::StrCat(lm.MatrixKernelFor(batch), " / ",
                              lm.MatrixKernelFor(int64_t{batch} * absl::GetFlag(FLAGS_prompt)));
      auto steps = TimeDecodeSteps(**model, batch);
      if (!steps.ok()) {
        std::fprintf(stderr, "%s\n", steps.status().ToString().c_str());
        return 1;
      }
      r.steps = *steps;
      std::fprintf(stderr, "ours: %s batch %d: prefill %.3f s, %.2f ms a step (%.1f tokens/s)\n",
                   shape.name.c_str(), batch, r.steps.prefill_seconds, 1e3 * r.steps.step_seconds,
                   batch / r.steps.step_seconds);
      if (bounds) {
        r.step_products = TimeStepProducts(**model, batch, batch, repeats);
        r.prefill_products =
            TimeStepProducts(**model, int64_t{batch} * absl::GetFlag(FLAGS_prompt), batch, std::min(repeats, 2));
        std::fprintf(stderr, "products at %d rows: blas %.2f ms, ours %.2f ms, best %.2f ms\n", batch,
                     1e3 * r.step_products.Blas(), 1e3 * r.step_products.Ours(), 1e3 * r.step_products.Best());
      }
    }
    model->reset();  // free our weights before the peer allocates its own
    if (absl::GetFlag(FLAGS_peer)) {
      auto rates = RunPeer(shape);
      if (!rates.ok()) {
        std::fprintf(stderr, "peer failed (ratios omitted): %s\n", rates.status().ToString().c_str());
      } else {
        for (const auto& [k, v] : *rates) peer[{shape.name, k.first, k.second}] = v;
      }
    }
  }

  std::printf("\nGeneration throughput: prompt %d, %d new tokens, temperature 1, %d intra-op threads, best of %d\n",
              absl::GetFlag(FLAGS_prompt), absl::GetFlag(FLAGS_new_tokens), threads, repeats);
  std::printf("CPU: %s (AVX-512F: %s); decode kernel option: %s\n", CpuModel().c_str(),
              model::internal::CpuHasAvx512() ? "yes" : "no", kernel_flag.c_str());
  std::printf("load average (1/5/15 min) before: %s, after: %s\n", load_before.c_str(), LoadAverage().c_str());
  std::printf("%-11s %5s %8s %12s %12s %10s %14s\n", "model", "batch", "kv_cache", "ours tok/s", "peer tok/s",
              "ours/peer", "target");
  bool all_pass = true;
  for (const auto& [key, rate] : ours) {
    auto p = peer.find(key);
    const std::string peer_rate = p == peer.end() ? "-" : absl::StrFormat("%.1f", p->second);
    const std::string ratio = p == peer.end() ? "-" : absl::StrFormat("%.2fx", rate / p->second);
    std::string target = "";
    if (key.model == "gpt2-small" && key.cache && (key.batch == 1 || key.batch == 16)) {
      const double want = key.batch == 1 ? 30 : 200;
      const bool pass = rate >= want;
      all_pass = all_pass && pass;
      target = absl::StrFormat(">=%.0f %s", want, pass ? "PASS" : "MISS");
    }
    if (llama.count({key.model, key.batch}) && key.batch == 16 && p != peer.end()) {
      const bool pass = rate >= 1.5 * p->second;
      all_pass = all_pass && pass;
      target = absl::StrFormat(">=1.5x peer %s", pass ? "met" : "NOT met");
    }
    std::printf("%-11s %5d %8s %12.1f %12s %10s %14s\n", key.model.c_str(), key.batch, key.cache ? "yes" : "no",
                rate, peer_rate.c_str(), ratio.c_str(), target.c_str());
  }

  // Llama-family shapes: our decode steps and whole runs against this machine's bounds.
  const int new_tokens = absl::GetFlag(FLAGS_new_tokens);
  for (const Shape& shape : shapes) {
    if (!shape.llama) continue;
    const model::ModelConfig config = ConfigOf(shape);
    const double bytes = WeightBytesPerStep(config);
    std::printf("\n%s: %d layers x %d wide, %d heads / %d key-value heads, intermediate %d, vocab %d, tied\n",
                shape.name.c_str(), shape.layers, shape.width, shape.heads, shape.kv_heads, shape.intermediate,
                shape.vocab);
    if (bounds) {
      std::printf("memory read bandwidth %.1f GB/s (%d threads, %d MiB buffer); weights read per step %.1f MB -> "
                  "%.2f ms a step at best\n",
                  bandwidth / 1e9, threads, absl::GetFlag(FLAGS_bandwidth_mib), bytes / 1e6, 1e3 * bytes / bandwidth);
    }
    std::printf("%5s %13s %11s %11s %11s %11s %11s %10s %10s %16s\n", "batch", "kernel", "step ms", "steps tok/s",
                "run tok/s", "bw bound", "mm bound", "steps/bw", "steps/mm", "target");
    for (int batch : batches) {
      const LlamaResult& r = llama.at({shape.name, batch});
      const double steps_rate = batch / r.steps.step_seconds;
      const double run_rate = ours.at({shape.name, batch, true});
      std::string bw_bound = "-", mm_bound = "-", bw_fraction = "-", mm_fraction = "-", target;
      if (bounds) {
        const double bw_rate = batch * bandwidth / bytes;
        const double mm_rate = batch / r.step_products.Best();
        bw_bound = absl::StrFormat("%.1f", bw_rate);
        mm_bound = absl::StrFormat("%.1f", mm_rate);
        bw_fraction = absl::StrFormat("%.0f%%", 100 * steps_rate / bw_rate);
        mm_fraction = absl::StrFormat("%.0f%%", 100 * steps_rate / mm_rate);
        if (batch == 1) {
          const bool pass = steps_rate >= 0.9 * bw_rate;
          all_pass = all_pass && pass;
          target = absl::StrFormat(">=90%% bw %s", pass ? "met" : "NOT met");
        } else if (batch == 16) {
          const bool pass = steps_rate >= 0.8 * mm_rate;
          all_pass = all_pass && pass;
          target = absl::StrFormat(">=80%% mm %s", pass ? "met" : "NOT met");
        }
      }
      std::printf("%5d %13s %11.2f %11.1f %11.1f %11s %11s %10s %10s %16s\n", batch, r.kernel.c_str(),
                  1e3 * r.steps.step_seconds, steps_rate, run_rate, bw_bound.c_str(), mm_bound.c_str(),
                  bw_fraction.c_str(), mm_fraction.c_str(), target.c_str());
    }
    if (!bounds) continue;
    // Where the time goes: the products by kernel, and the whole run against a bound for the whole run.
    std::printf("matrix products per step, ms (OpenBLAS | ours | best of both):\n");
    std::printf("%5s %9s", "batch", "rows");
    for (const char* name : kGroupNames) std::printf(" %22s", name);
    std::printf(" %22s\n", "total");
    for (int batch : batches) {
      const LlamaResult& r = llama.at({shape.name, batch});
      for (const auto& [rows, t] : {std::make_pair(int64_t{batch}, &r.step_products),
                                    std::make_pair(int64_t{batch} * absl::GetFlag(FLAGS_prompt),
                                                   &r.prefill_products)}) {
        std::printf("%5d %9lld", batch, static_cast<long long>(rows));
        for (int g = 0; g < kGroups; ++g) {
          std::printf(" %22s", absl::StrFormat("%.2f|%.2f|%.2f", 1e3 * t->blas[g], 1e3 * t->ours[g],
                                               1e3 * std::min(t->blas[g], t->ours[g]))
                                   .c_str());
        }
        std::printf(" %22s\n",
                    absl::StrFormat("%.2f|%.2f|%.2f", 1e3 * t->Blas(), 1e3 * t->Ours(), 1e3 * t->Best()).c_str());
      }
    }
    std::printf("whole runs (prefill + %d steps + sampling) against a bound for the whole run (prefill at its best "
                "products, steps at the per-step bound):\n", new_tokens - 1);
    std::printf("%5s %11s %11s %11s %11s %11s\n", "batch", "prefill s", "run tok/s", "run bound", "fraction",
                "steps part");
    for (int batch : batches) {
      const LlamaResult& r = llama.at({shape.name, batch});
      const double step_bound =
          batch == 1 ? bytes / bandwidth : std::max(bytes / bandwidth, r.step_products.Best());
      const double prefill_bound = std::max(bytes / bandwidth, r.prefill_products.Best());
      const double run_bound = batch * new_tokens / (prefill_bound + (new_tokens - 1) * step_bound);
      const double run_rate = ours.at({shape.name, batch, true});
      const double run_seconds = batch * new_tokens / run_rate;
      std::printf("%5d %11.3f %11.1f %11.1f %10.0f%% %10.0f%%\n", batch, r.steps.prefill_seconds, run_rate, run_bound,
                  100 * run_rate / run_bound, 100 * (new_tokens - 1) * r.steps.step_seconds / run_seconds);
    }
  }
  return all_pass ? 0 : 3;
}

}  // namespace
}  // namespace rlhf::bench

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Generation tokens/s of the model core with and without the KV cache, against the peer baseline, and for\n"
      "Llama-family shapes against this machine's bandwidth and matrix-product bounds.\n"
      "Exit status 0 when the targets are met, 3 when one is missed.\n"
      "Usage: rlhf-bench-generation [--models=small,tiny,smollm2] [--batches=1,16] [--no_cache=false] "
      "[--peer=false]");
  absl::FlagsUsageConfig usage;  // --help lists this file's flags (the binary's name differs from the file's)
  usage.contains_help_flags = [](absl::string_view path) { return absl::StrContains(path, "generation_bench"); };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  absl::ParseCommandLine(argc, argv);
  return rlhf::bench::Main();
}
