// Run configurations: reading a config file (protobuf JSON or text format), the defaults (those of
// orchestrator.proto, and for the built-in task the settings known to work, DESIGN.md), and validation with errors
// that name the field ("config.ppo.hparams.clip_range: must be > 0").
#ifndef RLHF_SERVICES_ORCHESTRATOR_RUN_CONFIG_H_
#define RLHF_SERVICES_ORCHESTRATOR_RUN_CONFIG_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/model_config.h"
#include "rlhf/v1/orchestrator.pb.h"

namespace rlhf::orchestrator {

namespace v1 = ::rlhf::v1;

inline constexpr char kBuiltinTaskName[] = "instructions";

// Reads `path`: protobuf JSON when it ends in ".json", else protobuf text format. InvalidArgument naming the file
// and the parser's complaint; NotFound when missing.
absl::StatusOr<v1::RunConfig> ReadRunConfig(const std::string& path);

// The config `rlhf run` uses without a file: the built-in task end to end.
v1::RunConfig DefaultRunConfig();

// Fills every unset field with its documented default (for the built-in task, the settings known to work).
v1::RunConfig WithDefaults(const v1::RunConfig& config);

// The architecture `model.config` describes: its model_type (empty: gpt2) with that type's defaults for what the
// message does not carry (RoPE, norms, biases, q/k norm) and for shape fields left 0 (key/value heads = heads,
// head_dim = n_embd / n_head, the family's MLP width); vocab_size is left for the tokenizer to set (1 here).
// InvalidArgument "config.model.config: ..." naming the field.
absl::StatusOr<model::ModelConfig> ModelArchitecture(const v1::ModelConfig& config);

// Checks a config after WithDefaults. InvalidArgument naming the field ("config.<path>: <reason>").
absl::Status ValidateRunConfig(const v1::RunConfig& config);

// The files and folders a config names, with their field names ("config.task.sft_data_path"), for the caller to
// check or rewrite in place: task data files, the labeler's dataset, the base model folder. Empty ones are left out.
std::vector<std::pair<std::string, std::string*>> ConfigPaths(v1::RunConfig* config);

// How `requested` differs from `run`, the config of an existing run, in what defines the run (everything but the
// service addresses, which a resumed run may change): the first difference, e.g. "config.ppo.iterations: 12 in the
// run, 8 requested"; empty when there is none. Both after WithDefaults.
std::string RunConfigDifference(const v1::RunConfig& run, const v1::RunConfig& requested);

}  // namespace rlhf::orchestrator

#endif  // RLHF_SERVICES_ORCHESTRATOR_RUN_CONFIG_H_
