#include "services/reference_logprob/reference_engine.h"

#include "absl/strings/str_cat.h"
#include "common/model/causal_lm.h"
#include "common/model/token_ids.h"
#include "common/util/status_macros.h"

namespace rlhf::reference {

absl::StatusOr<std::unique_ptr<ReferenceEngine>> ReferenceEngine::Create(const ReferenceEngineOptions& options) {
  std::unique_ptr<ReferenceEngine> engine(new ReferenceEngine(options));
  ASSIGN_OR_RETURN(engine->store_, serving::ModelStore::Load(options.model));
  engine->batcher_.Start([e = engine.get()](Batcher::Jobs live) { e->RunBatch(std::move(live)); });
  return engine;
}

ReferenceEngine::~ReferenceEngine() { Shutdown(); }

void ReferenceEngine::Shutdown() { batcher_.Shutdown(); }

absl::Status ReferenceEngine::Validate(const LogProbsRequest& request) const {
  const model::ModelConfig& config = store_->config();
  if (request.sequences.empty()) return absl::InvalidArgumentError("sequences is empty");
  if (static_cast<int64_t>(request.sequences.size()) > options_.max_sequences) {
    return absl::InvalidArgumentError(absl::StrCat("sequences has ", request.sequences.size(),
                                                   " entries, more than the limit ", options_.max_sequences));
  }
  if (!(request.temperature >= model::kMinTemperature) || request.temperature > 100) {
    return absl::InvalidArgumentError(
        absl::StrCat("temperature=", request.temperature, " is outside [", model::kMinTemperature, ", 100]"));
  }
  for (size_t i = 0; i < request.sequences.size(); ++i) {
    const model::ScoreRequest& seq = request.sequences[i];
    if (seq.prompt.empty())
      return absl::InvalidArgumentError(absl::StrCat("sequences[", i, "].prompt_token_ids is empty"));
    const int64_t length = static_cast<int64_t>(seq.prompt.size() + seq.response.size());
    RETURN_IF_ERROR(model::CheckSequenceLength(length, config.max_position_embeddings,
                                               absl::StrCat("sequences[", i, "]")));
    RETURN_IF_ERROR(model::CheckTokenIds(seq.prompt, config.vocab_size,
                                         absl::StrCat("sequences[", i, "].prompt_token_ids")));
    RETURN_IF_ERROR(model::CheckTokenIds(seq.response, config.vocab_size,
                                         absl::StrCat("sequences[", i, "].response_token_ids")));
  }
  return absl::OkStatus();
}

void ReferenceEngine::Submit(LogProbsRequest request, Callback done) {
  if (absl::Status status = Validate(request); !status.ok()) {
    done(status);
    return;
  }
  const size_t rows = request.sequences.size();
  std::string group = absl::StrCat(request.temperature);
  batcher_.Submit(std::move(request), std::move(done), rows, std::move(group));
}

void ReferenceEngine::RunBatch(Batcher::Jobs live) {
  const absl::Time start = absl::Now();
  const auto served = store_->Current();
  std::vector<model::ScoreRequest> rows;
  int64_t tokens = 0;
  for (const auto& job : live) {
    for (const auto& seq : job->request.sequences) {
      rows.push_back(seq);
      tokens += static_cast<int64_t>(seq.response.size());
    }
  }
  model::ScoreOptions options;
  options.temperature = live.front()->request.temperature;
  auto logprobs = model::ScoreLogProbs(*served->model, rows, options);
  const absl::Duration compute = absl::Now() - start;
  size_t row = 0;
  for (auto& job : live) {
    if (!logprobs.ok()) {
      job->done(logprobs.status());
      continue;
    }
    LogProbsResult result;
    result.model_name = served->name;
    result.model_version = served->version;
    for (size_t i = 0; i < job->request.sequences.size(); ++i) result.logprobs.push_back(std::move((*logprobs)[row++]));
    job->done(std::move(result));
  }
  if (batch_observer_) batch_observer_(static_cast<int64_t>(rows.size()), tokens, compute);
}

}  // namespace rlhf::reference
