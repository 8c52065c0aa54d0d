#include "common/labeling/judge_labeler.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/runtime/status_util.h"
#include "rlhf/v1/reward.grpc.pb.h"

namespace rlhf::labeling {

struct JudgeLabeler::Impl {
  JudgeLabelerOptions options;
  std::unique_ptr<v1::RewardScoringService::Stub> stub;
  std::string model;  // the judge's model id, as it last answered
};

JudgeLabeler::JudgeLabeler(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
JudgeLabeler::~JudgeLabeler() = default;

absl::StatusOr<std::unique_ptr<JudgeLabeler>> JudgeLabeler::Create(const JudgeLabelerOptions& options) {
  if (options.client.target.empty()) {
    return absl::InvalidArgumentError("labeler.judge.reward_service_address is required");
  }
  if (!(options.noise_rate >= 0 && options.noise_rate <= 0.5)) {
    return absl::InvalidArgumentError(
        absl::StrCat("labeler.judge.noise_rate must be in [0, 0.5], got ", options.noise_rate));
  }
  if (options.max_items_per_call <= 0) return absl::InvalidArgumentError("max_items_per_call must be > 0");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = runtime::MakeChannel(options.client);
  if (!channel.ok()) return channel.status();
  impl->stub = v1::RewardScoringService::NewStub(*channel);
  return std::unique_ptr<JudgeLabeler>(new JudgeLabeler(std::move(impl)));
}

Judgement JudgementFromScores(const std::vector<float>& scores, double noise_rate, uint64_t seed, int32_t round,
                              int64_t task_index, const std::string& labeler_id) {
  Judgement j;
  j.labeler_id = labeler_id;
  std::mt19937_64 rng(seed ^ (0x9e3779b97f4a7c15ULL * static_cast<uint64_t>(round + 1)) ^
                      (0xbf58476d1ce4e5b9ULL * static_cast<uint64_t>(task_index + 1)));
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  const int32_t k = static_cast<int32_t>(scores.size());
  for (int32_t a = 0; a < k; ++a) {
    for (int32_t b = a + 1; b < k; ++b) {
      if (scores[a] == scores[b]) continue;
      int32_t better = scores[a] > scores[b] ? a : b, worse = better == a ? b : a;
      if (noise_rate > 0 && coin(rng) < noise_rate) std::swap(better, worse);
      j.preferences.push_back({better, worse});
    }
  }
  if (noise_rate == 0) {
    for (int32_t a = 0; a < k; ++a) {
      int32_t rank = 1;
      for (int32_t b = 0; b < k; ++b) rank += scores[b] > scores[a];
      j.ranks.push_back(rank);
    }
  }
  return j;
}

absl::StatusOr<std::vector<std::optional<Judgement>>> JudgeLabeler::Judge(const std::vector<RankingTask>& tasks,
                                                                          const LabelingOptions& options) {
  for (size_t i = 0; i < tasks.size(); ++i) {
    if (tasks[i].responses.size() < 2) {
      return absl::InvalidArgumentError(absl::StrCat("tasks[", i, "] has fewer than 2 responses"));
    }
  }
  // Score every (prompt, response) in calls of at most max_items_per_call items.
  std::vector<std::pair<size_t, size_t>> items;
  for (size_t i = 0; i < tasks.size(); ++i) {
    for (size_t r = 0; r < tasks[i].responses.size(); ++r) items.push_back({i, r});
  }
  std::vector<std::vector<float>> scores(tasks.size());
  for (size_t i = 0; i < tasks.size(); ++i) scores[i].resize(tasks[i].responses.size());
  const size_t per_call = static_cast<size_t>(impl_->options.max_items_per_call);
  int64_t done_tasks = 0;
  for (size_t start = 0; start < items.size(); start += per_call) {
    if (options.cancelled && options.cancelled()) return absl::CancelledError("labeling was cancelled");
    v1::ScoreRequest request;
    const size_t end = std::min(items.size(), start + per_call);
    for (size_t n = start; n < end; ++n) {
      v1::ScoreItem* item = request.add_items();
      const RankingTask& task = tasks[items[n].first];
      if (task.messages.empty()) {
        item->mutable_prompt()->set_text(task.prompt);
      } else {
        for (const auto& [role, content] : task.messages) {
          v1::ChatMessage* m = item->mutable_prompt()->mutable_messages()->add_messages();
          m->set_role(role);
          m->set_content(content);
        }
      }
      item->mutable_response()->set_text(tasks[items[n].first].responses[items[n].second]);
    }
    v1::ScoreResponse response;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(std::min(options.deadline, absl::Now() + impl_->options.call_timeout)));
    grpc::Status status = impl_->stub->Score(&context, request, &response);
    if (!status.ok()) {
      absl::Status s = runtime::FromGrpcStatus(status);
      return absl::Status(s.code(), absl::StrCat("judge reward service at ", impl_->options.client.target, ": ",
                                                 s.message()));
    }
    if (response.scores_size() != static_cast<int>(end - start)) {
      return absl::InternalError(absl::StrCat("judge at ", impl_->options.client.target, " returned ",
                                              response.scores_size(), " scores for ", end - start, " items"));
    }
    impl_->model = absl::StrCat(response.model_id().name(), " v", response.model_id().version());
    for (size_t n = start; n < end; ++n) scores[items[n].first][items[n].second] = response.scores(n - start);
    if (end == items.size() || items[end].first != items[end - 1].first) {
      done_tasks = static_cast<int64_t>(items[end - 1].first) + 1;
    } else {
      done_tasks = static_cast<int64_t>(items[end - 1].first);
    }
    if (options.progress) options.progress(done_tasks, static_cast<int64_t>(tasks.size()));
  }
  std::vector<std::optional<Judgement>> out;
  const std::string id = impl_->model.empty() ? "judge" : absl::StrCat("judge:", impl_->model);
  for (size_t i = 0; i < tasks.size(); ++i) {
    out.push_back(JudgementFromScores(scores[i], impl_->options.noise_rate, impl_->options.seed, options.round,
                                      static_cast<int64_t>(i), id));
  }
  return out;
}

std::string JudgeLabeler::Describe() const {
  return absl::StrFormat("judge(%s%s, noise=%g)", impl_->options.client.target,
                         impl_->model.empty() ? "" : " " + impl_->model, impl_->options.noise_rate);
}

}  // namespace rlhf::labeling
