#include "services/policy_generation/generation_engine.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/model/causal_lm.h"
#include "common/model/token_ids.h"
#include "common/util/status_macros.h"

namespace rlhf::generation {

std::string BatchGroupKey(const GenerationRequest& r) {
  return absl::StrCat(r.temperature, "|", r.top_k, "|", r.top_p, "|", r.max_new_tokens, "|", r.ignore_eos, "|",
                      absl::StrJoin(r.stop_token_ids, ","), "|", absl::StrJoin(r.stop_strings, "\x1f"));
}

absl::StatusOr<std::unique_ptr<GenerationEngine>> GenerationEngine::Create(const GenerationEngineOptions& options) {
  std::unique_ptr<GenerationEngine> engine(new GenerationEngine(options));
  ASSIGN_OR_RETURN(engine->store_, serving::ModelStore::Load(options.model));
  engine->batcher_.Start([e = engine.get()](Batcher::Jobs live) { e->RunBatch(std::move(live)); });
  return engine;
}

GenerationEngine::~GenerationEngine() { Shutdown(); }

void GenerationEngine::Shutdown() { batcher_.Shutdown(); }

absl::Status GenerationEngine::Validate(const GenerationRequest& r) const {
  const model::ModelConfig& config = store_->config();
  if (r.prompts.empty()) return absl::InvalidArgumentError("prompts is empty");
  if (static_cast<int64_t>(r.prompts.size()) > options_.max_prompts) {
    return absl::InvalidArgumentError(
        absl::StrCat("prompts has ", r.prompts.size(), " entries, more than the limit ", options_.max_prompts));
  }
  if (r.num_samples < 1 || r.num_samples > options_.max_samples) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_samples=", r.num_samples, " is outside [1, ", options_.max_samples, "]"));
  }
  if (!(r.temperature >= 0) || r.temperature > 100 || (r.temperature > 0 && r.temperature < model::kMinTemperature)) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.temperature=", r.temperature, " is outside [0, 100] or ",
                                                   "in (0, ", model::kMinTemperature, ")"));
  }
  if (r.top_k < 0) return absl::InvalidArgumentError(absl::StrCat("sampling.top_k=", r.top_k, " is negative"));
  if (!(r.top_p > 0) || r.top_p > 1) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.top_p=", r.top_p, " is outside (0, 1]"));
  }
  const int64_t max_new = std::min(options_.max_new_tokens, config.max_position_embeddings - 1);
  if (r.max_new_tokens < 1 || r.max_new_tokens > max_new) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.max_new_tokens=", r.max_new_tokens, " is outside [1, ", max_new, "]"));
  }
  RETURN_IF_ERROR(model::CheckTokenIds(r.stop_token_ids, config.vocab_size, "sampling.stop_token_ids"));
  for (size_t i = 0; i < r.stop_strings.size(); ++i) {
    if (r.stop_strings[i].empty()) return absl::InvalidArgumentError(absl::StrCat("sampling.stop[", i, "] is empty"));
  }
  if (!r.stop_strings.empty() && store_->tokenizer() == nullptr) {
    return absl::InvalidArgumentError(
        "sampling.stop: this model has no tokenizer, so stop strings cannot be matched; "
        "use stop_token_ids");
  }
  for (size_t p = 0; p < r.prompts.size(); ++p) {
    const auto& prompt = r.prompts[p];
    if (prompt.empty()) return absl::InvalidArgumentError(absl::StrCat("prompts[", p, "] is empty"));
    if (static_cast<int64_t>(prompt.size()) > options_.max_prompt_tokens) {
      return absl::InvalidArgumentError(absl::StrCat("prompts[", p, "] has ", prompt.size(),
                                                     " tokens, more than the limit ", options_.max_prompt_tokens));
    }
    if (static_cast<int64_t>(prompt.size()) + r.max_new_tokens > config.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat("prompts[", p, "] has ", prompt.size(),
                                                     " tokens; with max_new_tokens=", r.max_new_tokens,
                                                     " that exceeds the model's max_position_embeddings=",
                                                     config.max_position_embeddings));
    }
    RETURN_IF_ERROR(model::CheckTokenIds(prompt, config.vocab_size, absl::StrCat("prompts[", p, "].token_ids")));

  }
  if (r.min_model_version.has_value()) {
    const int64_t served = store_->Current()->version;
    if (*r.min_model_version > served) {
      return absl::FailedPreconditionError(
          absl::StrCat("min_model_version=", *r.min_model_version, " is above the served version ", served));
    }
  }
  return absl::OkStatus();
}

void GenerationEngine::Submit(GenerationRequest request, Callback done) {
  if (absl::Status status = Validate(request); !status.ok()) {
    done(status);
    return;
  }
  if (!request.seed.has_value()) request.seed = std::random_device{}() * 0x100000001ull + std::random_device{}();
  const size_t rows = request.prompts.size() * static_cast<size_t>(request.num_samples);
  std::string group = BatchGroupKey(request);
  batcher_.Submit(std::move(request), std::move(done), rows, std::move(group));
}

void GenerationEngine::RunBatch(Batcher::Jobs live) {
  const absl::Time start = absl::Now();
  // One model version for the whole batch: a swap during it takes effect for the next batch.
  const std::shared_ptr<const serving::ServedModel> served = store_->Current();
  const GenerationRequest& first = live.front()->request;
  model::SamplingOptions options;
  options.max_new_tokens = first.max_new_tokens;
  options.temperature = first.temperature;
  options.top_k = first.top_k;
  options.top_p = first.top_p;
  const tokenizer::Tokenizer* tokenizer = store_->tokenizer();
  if (!first.ignore_eos) {
    // The model's EOS list (e.g. Llama 3's <|end_of_text|> and <|eot_id|>), the tokenizer's end of text and the
    // chat template's end of turn (e.g. <|im_end|>): a reply ends with its turn.
    options.eos_token_ids = store_->config().eos_token_ids;
    std::vector<std::optional<int64_t>> more = {store_->prompt_codec().end_of_turn_id};
    if (tokenizer != nullptr) more.push_back(tokenizer->EosId());
    for (const std::optional<int64_t>& id : more) {
      if (id.has_value() &&
          std::find(options.eos_token_ids.begin(), options.eos_token_ids.end(), *id) == options.eos_token_ids.end()) {
        options.eos_token_ids.push_back(*id);
      }
    }
  }
  for (int64_t id : first.stop_token_ids) options.eos_token_ids.push_back(id);
  options.stop_strings = first.stop_strings;
  if (!options.stop_strings.empty()) {
    options.decode = [tokenizer](const std::vector<int64_t>& ids) {
      std::vector<int32_t> narrow(ids.begin(), ids.end());
      auto text = tokenizer->Decode(narrow);
      return text.ok() ? *text : std::string();
    };
  }
  // Rows: each job's prompts x samples, each with its own seed, so a row's output does not depend on the batch.
  std::vector<std::vector<int64_t>> prompts;
  std::vector<size_t> job_of_row;
  for (size_t j = 0; j < live.size(); ++j) {
    const GenerationRequest& r = live[j]->request;
    job_of_row.insert(job_of_row.end(), r.prompts.size() * static_cast<size_t>(r.num_samples), j);
  }
  // A request whose caller cancelled or whose deadline passed leaves the batch at the next step.
  options.abandoned = [&live, &job_of_row](int64_t row) {
    const GenerationRequest& r = live[job_of_row[static_cast<size_t>(row)]]->request;
    return !runtime::WorkExpired(r.deadline, r.cancelled).ok();
  };
  for (const auto& job : live) {
    const GenerationRequest& r = job->request;
    for (size_t p = 0; p < r.prompts.size(); ++p) {
      for (int64_t s = 0; s < r.num_samples; ++s) {
        prompts.push_back(r.prompts[p]);
        options.row_seeds.push_back(model::RowSeed(*r.seed, static_cast<int64_t>(p) * r.num_samples + s));
      }
    }
  }
  // One sampler per served version, kept across batches so that its KV cache is reused.
  if (sampler_ == nullptr || sampler_model_ != served) {
    auto sampler = model::Sampler::Create(served->model.get());
    if (!sampler.ok()) {
      for (auto& job : live) job->done(sampler.status());
      return;
    }
    sampler_ = *std::move(sampler);
    sampler_model_ = served;
  }
  absl::StatusOr<std::vector<model::GeneratedSequence>> sequences = sampler_->Generate(prompts, options);
  const absl::Duration compute = absl::Now() - start;
  if (!sequences.ok()) {
    for (auto& job : live) job->done(sequences.status());
    return;
  }
  int64_t batch_tokens = 0;
  size_t row = 0;
  for (auto& job : live) {
    const GenerationRequest& r = job->request;
    if (absl::Status why = runtime::WorkExpired(r.deadline, r.cancelled); !why.ok()) {
      row += r.prompts.size() * static_cast<size_t>(r.num_samples);
      job->done(why);
      continue;
    }
    GenerationResult result;
    result.model_name = served->name;
    result.model_version = served->version;
    result.queue_time = start - job->enqueued;
    result.compute_time = compute;
    result.samples.resize(r.prompts.size());
    for (size_t p = 0; p < r.prompts.size(); ++p) {
      result.prompt_tokens += static_cast<int64_t>(r.prompts[p].size());
      for (int64_t s = 0; s < r.num_samples; ++s, ++row) {
        model::GeneratedSequence& seq = (*sequences)[row];
        GeneratedSample sample;
        sample.tokens = std::move(seq.tokens);
        sample.logprobs = std::move(seq.logprobs);
        sample.finish_reason = seq.finish_reason;
        if (tokenizer != nullptr) {
          std::vector<int32_t> narrow(sample.tokens.begin(), sample.tokens.end());
          auto text = tokenizer->Decode(narrow);
          if (text.ok()) sample.text = tokenizer::ReplaceInvalidUtf8(*text);
          if (sample.finish_reason == model::FinishReason::kStopSequence) {
            // The text ends just before the earliest stop string; tokens and log-probs keep everything sampled.
            size_t cut = std::string::npos;
            for (const auto& stop : r.stop_strings) {
              const size_t at = sample.text.find(stop);
              if (at != std::string::npos && (cut == std::string::npos || at < cut)) {
                cut = at;
                sample.stop_string = stop;
              }
            }
            if (cut != std::string::npos) sample.text.resize(cut);
          }
        }
        result.generated_tokens += static_cast<int64_t>(sample.tokens.size());
        result.samples[p].push_back(std::move(sample));
      }
    }
    batch_tokens += result.generated_tokens;
    job->done(std::move(result));
  }
  if (batch_observer_) batch_observer_(static_cast<int64_t>(prompts.size()), batch_tokens, compute);
}

}  // namespace rlhf::generation
