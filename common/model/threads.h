// Process-wide CPU threading of LibTorch. LibTorch-free header.
#ifndef RLHF_COMMON_MODEL_THREADS_H_
#define RLHF_COMMON_MODEL_THREADS_H_

#include "absl/status/status.h"

namespace rlhf::model {

// Sets the number of threads LibTorch's intra-op parallelism (at::set_num_threads: OpenMP in Debian's build) uses
// for one operator, which OpenBLAS (OpenMP build) shares. Process-wide: affects every model and thread. Call it
// once at start-up, before the first forward pass. `threads` >= 1 (InvalidArgument otherwise); typically the
// number of cores the process may use.
absl::Status SetIntraOpThreads(int threads);

// The current intra-op thread count.
int IntraOpThreads();

}  // namespace rlhf::model

#endif  // RLHF_COMMON_MODEL_THREADS_H_
