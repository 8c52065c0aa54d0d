#include "common/serving/model_service_flags.h"

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/model/threads.h"

ABSL_FLAG(std::string, model, "",
          "Model folder in Hugging Face form (config.json, model.safetensors or shards, tokenizer files) of any "
          "supported family: gpt2, llama, qwen2, qwen3, mistral");
ABSL_FLAG(std::string, path_roots, "",
          "Comma-separated folders whose checkpoints requests may load (UpdateWeightsFromCheckpoint, ReloadModel); "
          "a path outside them, symlinks resolved, is refused with PERMISSION_DENIED. Empty: none");
ABSL_FLAG(std::string, model_name, "", "Name reported in responses; empty means the model folder's name");
ABSL_FLAG(std::string, device, "cpu", "LibTorch device: cpu, cuda, cuda:1 ...");
ABSL_FLAG(int, intra_op_threads, 0, "LibTorch intra-op threads; 0 keeps LibTorch's default (one per core)");
ABSL_FLAG(int, max_batch_rows, 0, "Rows the engine processes together; 0 means the service's default");
ABSL_FLAG(absl::Duration, max_batch_wait, absl::Milliseconds(5),
          "How long a request waits for others to join its batch");
ABSL_FLAG(int, max_queued_requests, 256, "Requests waiting at most; more get RESOURCE_EXHAUSTED");

namespace rlhf::serving {

absl::StatusOr<ModelServiceOptions> ModelServiceOptionsFromFlags(size_t default_batch_rows) {
  ModelServiceOptions options;
  options.model.model_dir = absl::GetFlag(FLAGS_model);
  if (options.model.model_dir.empty()) return absl::InvalidArgumentError("--model is required");
  options.model.model_name = absl::GetFlag(FLAGS_model_name);
  options.model.device = absl::GetFlag(FLAGS_device);
  absl::StatusOr<util::PathRoots> roots = util::PathRoots::FromList(absl::GetFlag(FLAGS_path_roots), "--path_roots");
  if (!roots.ok()) return roots.status();
  options.model.path_roots = *std::move(roots);
  const int threads = absl::GetFlag(FLAGS_intra_op_threads);
  if (threads < 0) return absl::InvalidArgumentError(absl::StrCat("--intra_op_threads=", threads, " is negative"));
  if (threads > 0) {
    if (absl::Status status = model::SetIntraOpThreads(threads); !status.ok()) return status;
  }
  const int rows = absl::GetFlag(FLAGS_max_batch_rows);
  if (rows < 0) return absl::InvalidArgumentError(absl::StrCat("--max_batch_rows=", rows, " is negative"));
  options.queue.max_batch_rows = rows == 0 ? default_batch_rows : static_cast<size_t>(rows);
  options.queue.max_wait = absl::GetFlag(FLAGS_max_batch_wait);
  if (options.queue.max_wait < absl::ZeroDuration()) return absl::InvalidArgumentError("--max_batch_wait is negative");
  const int queued = absl::GetFlag(FLAGS_max_queued_requests);
  if (queued < 1) return absl::InvalidArgumentError(absl::StrCat("--max_queued_requests=", queued, " is below 1"));
  options.queue.max_queued = static_cast<size_t>(queued);
  return options;
}

}  // namespace rlhf::serving
