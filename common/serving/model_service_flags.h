// Flags every model-serving binary shares (--model, --device, batching), read into options structs.
#ifndef RLHF_COMMON_SERVING_MODEL_SERVICE_FLAGS_H_
#define RLHF_COMMON_SERVING_MODEL_SERVICE_FLAGS_H_

#include <cstddef>

#include "absl/status/statusor.h"
#include "common/runtime/batch_queue.h"
#include "common/serving/model_store.h"

namespace rlhf::serving {

struct ModelServiceOptions {
  ModelStoreOptions model;
  runtime::BatchQueueOptions queue;
};

// Reads --model, --model_name, --device, --max_batch_rows (0: `default_batch_rows`), --max_batch_wait and
// --max_queued_requests, and applies --intra_op_threads. InvalidArgument naming the flag for a bad value.
absl::StatusOr<ModelServiceOptions> ModelServiceOptionsFromFlags(size_t default_batch_rows);

}  // namespace rlhf::serving

#endif  // RLHF_COMMON_SERVING_MODEL_SERVICE_FLAGS_H_
