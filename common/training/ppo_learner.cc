#include "common/training/ppo_learner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <utility>

#include <ATen/ops/from_blob.h>
#include <ATen/ops/gather.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/slice.h>
#include <c10/core/GradMode.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/model/sampler.h"
#include "common/model/token_ids.h"
#include "common/model/torch_boundary.h"
#include "common/rl/lm_losses.h"
#include "common/rl/ppo_math.h"
#include "common/training/batch.h"
#include "common/util/status_macros.h"

namespace rlhf::training {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

// The rollouts as tensors. Response token j of row b sits at sequence position prompt_len[b] + j and is predicted
// by the output at position prompt_len[b] + j - 1, which is gather_positions[b, j].
struct RolloutTensors {
  PackedBatch packed;          // prompt + response, right-padded
  at::Tensor gather_positions;  // [B, Tr] int64 (0 at padding)
  at::Tensor response_tokens;   // [B, Tr] int64 (0 at padding)
  at::Tensor response_mask;     // [B, Tr] float 0/1
  int64_t max_response = 0;
};

at::Tensor FloatMatrix(const std::vector<std::vector<float>>& rows, int64_t width, c10::Device device) {
  std::vector<float> flat(rows.size() * width, 0.0f);
  for (size_t b = 0; b < rows.size(); ++b) std::copy(rows[b].begin(), rows[b].end(), flat.begin() + b * width);
  return at::from_blob(flat.data(), {static_cast<int64_t>(rows.size()), width}, at::TensorOptions().dtype(at::kFloat))
      .clone()
      .to(device);
}

RolloutTensors MakeRolloutTensors(const std::vector<const Rollout*>& rows, c10::Device device) {
  RolloutTensors t;
  std::vector<PromptResponse> pr;
  pr.reserve(rows.size());
  for (const Rollout* r : rows) {
    pr.push_back({r->prompt, r->response});
    t.max_response = std::max<int64_t>(t.max_response, static_cast<int64_t>(r->response.size()));
  }
  std::vector<const PromptResponse*> ptrs;
  for (const PromptResponse& p : pr) ptrs.push_back(&p);
  t.packed = PackPromptResponses(ptrs, device);
  const int64_t b = static_cast<int64_t>(rows.size()), tr = t.max_response;
  std::vector<int64_t> pos(b * tr, 0), tokens(b * tr, 0);
  std::vector<float> mask(b * tr, 0.0f);
  for (int64_t i = 0; i < b; ++i) {
    const int64_t p = static_cast<int64_t>(rows[i]->prompt.size());
    for (int64_t j = 0; j < static_cast<int64_t>(rows[i]->response.size()); ++j) {
      pos[i * tr + j] = p + j - 1;
      tokens[i * tr + j] = rows[i]->response[j];
      mask[i * tr + j] = 1.0f;
    }
  }
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  t.gather_positions = at::from_blob(pos.data(), {b, tr}, i64).clone().to(device);
  t.response_tokens = at::from_blob(tokens.data(), {b, tr}, i64).clone().to(device);
  t.response_mask = at::from_blob(mask.data(), {b, tr}, at::TensorOptions().dtype(at::kFloat)).clone().to(device);
  return t;
}

// Per-response-token log-probs [B, Tr] (and the tempered logits [B, Tr, V] for the entropy) of `t` under `policy`.
struct PolicyOutputs {
  at::Tensor logprobs;
  at::Tensor logits;
};

absl::StatusOr<PolicyOutputs> PolicyLogProbs(const model::CausalLm& policy, const RolloutTensors& t,
                                             double temperature) {
  model::ForwardOptions fo;
  fo.logits = false;
  fo.hidden = true;
  ASSIGN_OR_RETURN(model::ForwardOutput out, policy.Forward(t.packed.ids, t.packed.mask, fo));
  const int64_t e = out.hidden.size(2);
  at::Tensor index = t.gather_positions.unsqueeze(-1).expand({-1, -1, e});
  at::Tensor hidden = out.hidden.gather(1, index);  // [B, Tr, E]
  ASSIGN_OR_RETURN(at::Tensor logits, policy.Logits(hidden));
  if (temperature != 1.0) logits = logits / temperature;
  at::Tensor logprobs = at::log_softmax(logits, -1).gather(-1, t.response_tokens.unsqueeze(-1)).squeeze(-1);
  return PolicyOutputs{logprobs, logits};
}

absl::StatusOr<at::Tensor> Values(const model::CausalLm& value, const RolloutTensors& t) {
  model::ForwardOptions fo;
  fo.logits = false;
  fo.values = true;
  ASSIGN_OR_RETURN(model::ForwardOutput out, value.Forward(t.packed.ids, t.packed.mask, fo));
  return out.values.gather(1, t.gather_positions);  // [B, Tr]
}

at::Tensor Rows(const at::Tensor& x, const std::vector<int64_t>& rows) {
  at::Tensor index = at::from_blob(const_cast<int64_t*>(rows.data()), {static_cast<int64_t>(rows.size())},
                                   at::TensorOptions().dtype(at::kLong))
                         .clone()
                         .to(x.device());
  return x.index_select(0, index);
}

}  // namespace

std::string KlConfigKey(const rl::KlControllerOptions& o) {
  if (o.mode == rl::KlControlMode::kFixed) return absl::StrFormat("fixed:%.17g", o.beta);
  return absl::StrFormat("adaptive:%.17g:%.17g:%.17g", o.adaptive.init_beta, o.adaptive.target_kl, o.adaptive.horizon);
}

absl::Status ValidatePpoOptions(const PpoOptions& o) {
  auto bad = [](const char* field, const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("hparams.", field, " ", why));
  };
  if (!(o.gamma >= 0 && o.gamma <= 1)) return bad("gamma", absl::StrCat("must be in [0, 1], got ", o.gamma));
  if (!(o.gae_lambda >= 0 && o.gae_lambda <= 1)) {
    return bad("gae_lambda", absl::StrCat("must be in [0, 1], got ", o.gae_lambda));
  }
  if (!(o.clip_range > 0)) return bad("clip_range", absl::StrCat("must be > 0, got ", o.clip_range));
  if (!(o.value_clip_range >= 0)) return bad("value_clip_range", absl::StrCat("must be >= 0, got ", o.value_clip_range));
  if (!(o.value_loss_coef >= 0)) return bad("value_loss_coef", absl::StrCat("must be >= 0, got ", o.value_loss_coef));
  if (o.ppo_epochs <= 0) return bad("ppo_epochs", absl::StrCat("must be > 0, got ", o.ppo_epochs));
  if (o.minibatch_size <= 0) return bad("minibatch_size", absl::StrCat("must be > 0, got ", o.minibatch_size));
  if (!(o.sampling_temperature >= model::kMinTemperature) || !std::isfinite(o.sampling_temperature)) {
    return bad("sampling_temperature",
               absl::StrCat("must be finite and >= ", model::kMinTemperature, ", got ", o.sampling_temperature));
  }
  if (!std::isfinite(o.no_stop_token_penalty)) return bad("no_stop_token_penalty", "must be finite");
  if (!(o.policy_ema_decay >= 0 && o.policy_ema_decay < 1)) {
    return bad("policy_ema_decay", absl::StrCat("must be in [0, 1), got ", o.policy_ema_decay));
  }
  RETURN_IF_ERROR(ValidateOptimizerOptions(o.policy_optimizer, "hparams.policy_optimizer"));
  RETURN_IF_ERROR(ValidateOptimizerOptions(o.value_optimizer, "hparams.value_optimizer"));
  ASSIGN_OR_RETURN(auto controller, rl::CreateKlController(o.kl));
  (void)controller;
  return absl::OkStatus();
}

absl::Status InitValueHeadFromRewardHead(model::CausalLm& model) {
  at::Tensor score_w, score_b, value_w, value_b;
  for (const model::NamedTensor& p : model.NamedParameters()) {
    if (p.name == "score.weight") score_w = p.tensor;
    if (p.name == "score.bias") score_b = p.tensor;
    if (p.name == "value_head.weight") value_w = p.tensor;
    if (p.name == "value_head.bias") value_b = p.tensor;
  }
  if (!score_w.defined() || !value_w.defined()) {
    return absl::InvalidArgumentError("InitValueHeadFromRewardHead needs a model with a reward head and a value head");
  }
  return model::TorchBoundary("InitValueHeadFromRewardHead", [&]() -> absl::Status {
    c10::NoGradGuard no_grad;
    value_w.copy_(score_w.reshape(value_w.sizes()));
    if (value_b.defined() && score_b.defined()) value_b.copy_(score_b.reshape(value_b.sizes()));
    return absl::OkStatus();
  });
}

PpoLearner::PpoLearner(std::shared_ptr<model::CausalLm> policy, std::shared_ptr<model::CausalLm> value)
    : policy_(std::move(policy)), value_(std::move(value)) {}

absl::StatusOr<std::unique_ptr<PpoLearner>> PpoLearner::Create(std::shared_ptr<model::CausalLm> policy,
                                                               std::shared_ptr<model::CausalLm> value) {
  if (!policy || !value) return absl::InvalidArgumentError("PpoLearner needs a policy and a value model");
  if (!value->has_value_head()) return absl::InvalidArgumentError("the value model has no value head");
  if (policy.get() == value.get()) return absl::InvalidArgumentError("the policy and the value model must differ");
  if (policy->config().vocab_size != value->config().vocab_size) {
    return absl::InvalidArgumentError("the policy and the value model have different vocabularies");
  }
  return std::unique_ptr<PpoLearner>(new PpoLearner(std::move(policy), std::move(value)));
}

double PpoLearner::beta() const { return kl_controller_ ? kl_controller_->Beta() : state_.kl.beta; }

absl::Status PpoLearner::Prepare(const PpoOptions& options) {
  if (!policy_optimizer_) {
    ASSIGN_OR_RETURN(policy_optimizer_, AdamW::Create(policy_->NamedParameters(), options.policy_optimizer));
    ASSIGN_OR_RETURN(value_optimizer_, AdamW::Create(value_->NamedParameters(), options.value_optimizer));
    if (!pending_tensors_.empty()) {
      std::map<std::string, at::Tensor> policy_state, value_state;
      for (const auto& [name, tensor] : pending_tensors_) {
        if (name.rfind("policy.", 0) == 0) policy_state[name.substr(7)] = tensor;
        if (name.rfind("value.", 0) == 0) value_state[name.substr(6)] = tensor;
      }
      RETURN_IF_ERROR(policy_optimizer_->RestoreState(policy_state, state_.policy_optimizer_steps));
      RETURN_IF_ERROR(value_optimizer_->RestoreState(value_state, state_.value_optimizer_steps));
      pending_tensors_.clear();
    }
  } else {
    RETURN_IF_ERROR(policy_optimizer_->SetOptions(options.policy_optimizer));
    RETURN_IF_ERROR(value_optimizer_->SetOptions(options.value_optimizer));
  }
  const std::string key = KlConfigKey(options.kl);
  if (!kl_controller_ || key != state_.kl_config) {
    ASSIGN_OR_RETURN(kl_controller_, rl::CreateKlController(options.kl));
    if (key == state_.kl_config) RETURN_IF_ERROR(kl_controller_->Restore(state_.kl));  // restored from a checkpoint
    state_.kl_config = key;
  }
  return absl::OkStatus();
}

absl::StatusOr<PpoStepStats> PpoLearner::Step(const std::vector<Rollout>& rollouts, const PpoOptions& options,
                                              const PtxBatch& ptx) {
  const auto start = Clock::now();
  RETURN_IF_ERROR(ValidatePpoOptions(options));
  if (rollouts.empty()) return absl::InvalidArgumentError("rollouts is empty");
  const model::ModelConfig& config = policy_->config();
  for (size_t i = 0; i < rollouts.size(); ++i) {
    const Rollout& r = rollouts[i];
    const std::string at = absl::StrCat("rollouts[", i, "]");
    if (r.prompt.empty()) return absl::InvalidArgumentError(at + ".prompt_token_ids is empty");
    if (r.response.empty()) return absl::InvalidArgumentError(at + ".response_token_ids is empty");
    const int64_t n = static_cast<int64_t>(r.prompt.size() + r.response.size());
    RETURN_IF_ERROR(model::CheckSequenceLength(n, config.max_position_embeddings, at));
    RETURN_IF_ERROR(model::CheckTokenIds(r.prompt, config.vocab_size, at + ".prompt_token_ids"));
    RETURN_IF_ERROR(model::CheckTokenIds(r.response, config.vocab_size, at + ".response_token_ids"));
    if (!r.sampling_logprobs.empty() && r.sampling_logprobs.size() != r.response.size()) {
      return absl::InvalidArgumentError(absl::StrCat(at, ".sampling_logprobs has ", r.sampling_logprobs.size(),
                                                     " entries, the response ", r.response.size(), " tokens"));
    }
    if (r.reference_logprobs.size() != r.response.size() &&
        !(r.reference_logprobs.empty() && options.kl.mode == rl::KlControlMode::kFixed && options.kl.beta == 0)) {
      return absl::InvalidArgumentError(absl::StrCat(at, ".reference_logprobs has ", r.reference_logprobs.size(),
                                                     " entries, the response ", r.response.size(), " tokens"));
    }
    if (!std::isfinite(r.score)) return absl::InvalidArgumentError(at + ".reward_score is not finite");
  }
  for (size_t i = 0; i < ptx.sequences.size(); ++i) {
    if (ptx.sequences[i].size() < 2 ||
        static_cast<int64_t>(ptx.sequences[i].size()) > config.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat("ptx.examples[", i, "] must have 2 to max_position_embeddings (",
                                                     config.max_position_embeddings, ") tokens"));
    }
    RETURN_IF_ERROR(model::CheckTokenIds(ptx.sequences[i], config.vocab_size, absl::StrCat("ptx.examples[", i, "]")));
  }
  if (!(ptx.gamma >= 0) || !std::isfinite(ptx.gamma)) return absl::InvalidArgumentError("ptx.gamma_ptx must be >= 0");
  RETURN_IF_ERROR(Prepare(options));

  return model::TorchBoundary("PpoLearner::Step", [&]() -> absl::StatusOr<PpoStepStats> {
    PpoStepStats stats;
    const int64_t b = static_cast<int64_t>(rollouts.size());
    std::vector<const Rollout*> all;
    for (const Rollout& r : rollouts) all.push_back(&r);
    policy_->SetTraining(false);  // dropout off during PPO (DESIGN.md)
    value_->SetTraining(false);
    const c10::Device device = policy_->device();

    // 1. Rollout statistics under the policy before the step: old log-probs, values, rewards, advantages.
    auto t0 = Clock::now();
    RolloutTensors tensors = MakeRolloutTensors(all, device);
    const int64_t tr = tensors.max_response;
    at::Tensor mask = tensors.response_mask;
    at::Tensor old_logprobs, ref_logprobs, old_values;
    {
      c10::NoGradGuard no_grad;
      std::vector<std::vector<float>> sampling, reference;
      bool recompute = false;
      for (const Rollout& r : rollouts) {
        sampling.push_back(r.sampling_logprobs);
        reference.push_back(r.reference_logprobs.empty() ? std::vector<float>(r.response.size(), 0.0f)
                                                         : r.reference_logprobs);
        recompute = recompute || r.sampling_logprobs.empty();
      }
      old_logprobs = FloatMatrix(sampling, tr, device);
      if (recompute) {
        ASSIGN_OR_RETURN(PolicyOutputs current, PolicyLogProbs(*policy_, tensors, options.sampling_temperature));
        std::vector<int64_t> missing;
        for (int64_t i = 0; i < b; ++i) {
          if (rollouts[i].sampling_logprobs.empty()) missing.push_back(i);
        }
        for (int64_t i : missing) old_logprobs[i].copy_(current.logprobs[i]);
      }
      old_logprobs = old_logprobs * mask;
      ref_logprobs = FloatMatrix(reference, tr, device);
      ASSIGN_OR_RETURN(old_values, Values(*value_, tensors));
      old_values = old_values * mask;
    }
    std::vector<float> scores_v, stops_v;
    for (const Rollout& r : rollouts) {
      scores_v.push_back(static_cast<float>(r.score));
      stops_v.push_back(r.ended_with_stop ? 1.0f : 0.0f);
    }
    at::Tensor scores = at::from_blob(scores_v.data(), {b}, at::TensorOptions().dtype(at::kFloat)).clone().to(device);
    at::Tensor stops = at::from_blob(stops_v.data(), {b}, at::TensorOptions().dtype(at::kFloat)).clone().to(device).gt(0.5);
    stats.kl_beta = kl_controller_->Beta();
    rl::PerTokenRewardsOptions reward_options;
    reward_options.kl_beta = stats.kl_beta;
    reward_options.kl_estimator = rl::KlEstimator::kK1;  // the penalty is the per-token log ratio (InstructGPT eq. 2)
    reward_options.missing_stop_penalty = options.no_stop_token_penalty;
    ASSIGN_OR_RETURN(rl::PerTokenRewardsResult rewards,
                     rl::PerTokenRewards(old_logprobs, ref_logprobs, scores, mask, stops, reward_options));
    ASSIGN_OR_RETURN(rl::GaeResult gae, rl::ComputeGae(rewards.rewards, old_values, mask,
                                                       rl::GaeOptions{options.gamma, options.gae_lambda}));
    ASSIGN_OR_RETURN(at::Tensor kl_tokens, rl::KlPerToken(old_logprobs, ref_logprobs, mask, options.kl_estimator));
    const double mean_kl_penalty = rewards.kl_sum.mean().item<double>();
    stats.mean_kl = kl_tokens.sum(1).mean().item<double>();
    stats.kl_estimator = std::string(rl::KlEstimatorName(options.kl_estimator));
    stats.mean_reward = scores.mean().item<double>();
    stats.mean_total_reward = rewards.rewards.sum(1).mean().item<double>();
    ASSIGN_OR_RETURN(at::Tensor adv_mean, rl::MaskedMean(gae.advantages, mask));
    stats.advantage_mean = adv_mean.item<double>();
    if (mask.sum().item<double>() >= 2) {
      ASSIGN_OR_RETURN(at::Tensor adv_var, rl::MaskedVar(gae.advantages, mask));
      stats.advantage_std = std::sqrt(adv_var.item<double>());
    }
    ASSIGN_OR_RETURN(double ev, rl::ExplainedVariance(old_values, gae.returns, mask));
    stats.explained_variance = ev;
    stats.forward_seconds += std::chrono::duration<double>(Clock::now() - t0).count();

    // 2. Epochs of minibatch updates.
    const int64_t minibatch = std::min<int64_t>(options.minibatch_size, b);
    const int64_t num_minibatches = (b + minibatch - 1) / minibatch;
    double policy_loss_sum = 0, value_loss_sum = 0, ptx_loss_sum = 0, clip_sum = 0, vclip_sum = 0, approx_sum = 0,
           entropy_sum = 0;
    int64_t updates = 0, ptx_updates = 0;
    const double value_clip = options.value_clip_range > 0 ? options.value_clip_range : INFINITY;
    for (int32_t epoch = 0; epoch < options.ppo_epochs; ++epoch) {
      const std::vector<int64_t> order =
          SeededPermutation(b, options.seed * 1000003ULL + static_cast<uint64_t>(state_.steps) * 131ULL + epoch);
      for (int64_t m = 0; m < num_minibatches; ++m) {
        std::vector<int64_t> rows(order.begin() + m * minibatch, order.begin() + std::min(b, (m + 1) * minibatch));
        std::vector<const Rollout*> mb_rollouts;
        for (int64_t i : rows) mb_rollouts.push_back(all[i]);
        t0 = Clock::now();
        RolloutTensors mb = MakeRolloutTensors(mb_rollouts, device);
        const int64_t mtr = mb.max_response;
        at::Tensor mb_mask = mb.response_mask;
        at::Tensor mb_old = Rows(old_logprobs, rows).slice(1, 0, mtr);
        at::Tensor mb_adv = Rows(gae.advantages, rows).slice(1, 0, mtr);
        at::Tensor mb_returns = Rows(gae.returns, rows).slice(1, 0, mtr);
        at::Tensor mb_old_values = Rows(old_values, rows).slice(1, 0, mtr);
        if (options.whiten_advantages && mb_mask.sum().item<double>() >= 2) {
          ASSIGN_OR_RETURN(mb_adv, rl::Whiten(mb_adv, mb_mask));
          mb_adv = mb_adv * mb_mask;
        }
        ASSIGN_OR_RETURN(PolicyOutputs out, PolicyLogProbs(*policy_, mb, options.sampling_temperature));
        ASSIGN_OR_RETURN(rl::PolicyLossResult pl, rl::ClippedPolicyLoss(out.logprobs, mb_old, mb_adv, mb_mask,
                                                                        rl::PolicyLossOptions{options.clip_range}));
        {
          c10::NoGradGuard no_grad;
          ASSIGN_OR_RETURN(at::Tensor entropy, rl::Entropy(out.logits.detach(), mb_mask));
          entropy_sum += entropy.item<double>();
        }
        at::Tensor policy_objective = pl.loss;
        if (!ptx.sequences.empty() && ptx.gamma > 0) {
          const size_t per = (ptx.sequences.size() + num_minibatches - 1) / num_minibatches;
          const size_t begin = std::min(ptx.sequences.size(), static_cast<size_t>(m) * per);
          const size_t end = std::min(ptx.sequences.size(), begin + per);
          if (begin < end) {
            std::vector<PromptResponse> lm;
            for (size_t i = begin; i < end; ++i) {
              lm.push_back({{ptx.sequences[i].front()}, {ptx.sequences[i].begin() + 1, ptx.sequences[i].end()}});
            }
            std::vector<const PromptResponse*> lm_rows;
            for (const PromptResponse& p : lm) lm_rows.push_back(&p);
            PackedBatch packed = PackPromptResponses(lm_rows, device);
            ASSIGN_OR_RETURN(model::ForwardOutput lm_out, policy_->Forward(packed.ids, packed.mask));
            const int64_t t = packed.ids.size(1);
            ASSIGN_OR_RETURN(rl::LmLossResult lm_loss,
                             rl::ResponseNll(lm_out.logits.slice(1, 0, t - 1), packed.ids.slice(1, 1, t),
                                             packed.response_mask.slice(1, 0, t - 1)));
            policy_objective = policy_objective + lm_loss.loss * ptx.gamma;
            ptx_loss_sum += lm_loss.loss.item<double>();
            ++ptx_updates;
          }
        }
        ASSIGN_OR_RETURN(at::Tensor new_values, Values(*value_, mb));
        ASSIGN_OR_RETURN(rl::ValueLossResult vl, rl::ClippedValueLoss(new_values, mb_old_values, mb_returns, mb_mask,
                                                                      rl::ValueLossOptions{value_clip}));
        stats.forward_seconds += Seconds(t0);
        t0 = Clock::now();
        policy_objective.backward();
        (vl.loss * options.value_loss_coef).backward();
        stats.backward_seconds += Seconds(t0);
        t0 = Clock::now();
        ASSIGN_OR_RETURN(OptimizerStep ps, policy_optimizer_->Step());
        ASSIGN_OR_RETURN(OptimizerStep vs, value_optimizer_->Step());
        (void)vs;
        stats.optimizer_seconds += Seconds(t0);
        stats.learning_rate = ps.learning_rate;
        policy_loss_sum += pl.loss.item<double>();
        value_loss_sum += vl.loss.item<double>();
        clip_sum += pl.clip_fraction;
        vclip_sum += vl.clip_fraction;
        approx_sum += pl.approx_kl_k3;
        ++updates;
      }
    }
    stats.policy_loss = policy_loss_sum / updates;
    stats.value_loss = value_loss_sum / updates;
    stats.ptx_loss = ptx_updates > 0 ? ptx_loss_sum / ptx_updates : 0.0;
    stats.clip_fraction = clip_sum / updates;
    stats.value_clip_fraction = vclip_sum / updates;
    stats.approx_kl = approx_sum / updates;
    stats.entropy = entropy_sum / updates;

    // 3. KL controller, EMA, bookkeeping.
    RETURN_IF_ERROR(kl_controller_->Update(mean_kl_penalty, b));
    stats.next_kl_beta = kl_controller_->Beta();
    state_.kl = kl_controller_->State();
    if (options.policy_ema_decay > 0) {
      c10::NoGradGuard no_grad;
      for (const model::NamedTensor& p : policy_->NamedParameters()) {
        auto it = ema_.find(p.name);
        if (it == ema_.end()) {
          ema_[p.name] = p.tensor.detach().clone();
        } else {
          it->second.mul_(options.policy_ema_decay).add_(p.tensor.detach(), 1.0 - options.policy_ema_decay);
        }
      }
      state_.has_ema = true;
    }
    ++state_.steps;
    state_.policy_optimizer_steps = policy_optimizer_->steps();
    state_.value_optimizer_steps = value_optimizer_->steps();
    stats.step = state_.steps;
    stats.num_rollouts = b;
    double tokens = 0, stopped = 0;
    for (const Rollout& r : rollouts) {
      tokens += static_cast<double>(r.response.size());
      stopped += r.ended_with_stop ? 1 : 0;
    }
    stats.mean_response_length = tokens / b;
    stats.stop_token_fraction = stopped / b;
    stats.elapsed_seconds = Seconds(start);
    stats.tokens_per_second = stats.elapsed_seconds > 0 ? tokens * options.ppo_epochs / stats.elapsed_seconds : 0;
    return stats;
  });
}

std::map<std::string, at::Tensor> PpoLearner::StateTensors() const {
  std::map<std::string, at::Tensor> out;
  if (policy_optimizer_) {
    for (auto& [k, v] : policy_optimizer_->StateTensors()) out["policy." + k] = v;
    for (auto& [k, v] : value_optimizer_->StateTensors()) out["value." + k] = v;
  } else {
    out = pending_tensors_;
    for (auto it = out.begin(); it != out.end();) it = it->first.rfind("ema.", 0) == 0 ? out.erase(it) : std::next(it);
  }
  for (const auto& [k, v] : ema_) out["ema." + k] = v;
  return out;
}

PpoLearnerState PpoLearner::State() const { return state_; }

absl::Status PpoLearner::Restore(const std::map<std::string, at::Tensor>& tensors, const PpoLearnerState& state) {
  if (state.steps < 0) return absl::InvalidArgumentError("PPO state has a negative step count");
  std::map<std::string, at::Tensor> ema, optimizer;
  for (const auto& [name, tensor] : tensors) {
    if (name.rfind("ema.", 0) == 0) {
      ema[name.substr(4)] = tensor.to(policy_->device());
    } else {
      optimizer[name] = tensor;
    }
  }
  if (state.has_ema) {
    for (const model::NamedTensor& p : policy_->NamedParameters()) {
      if (!ema.count(p.name)) return absl::InvalidArgumentError(absl::StrCat("PPO state lacks ema.", p.name));
    }
  }
  state_ = state;
  ema_ = std::move(ema);
  pending_tensors_ = std::move(optimizer);
  policy_optimizer_.reset();
  value_optimizer_.reset();
  kl_controller_.reset();
  return absl::OkStatus();
}

}  // namespace rlhf::training
