// Input: a TrainerCall (fuzz_inputs.proto, binary): a TrainSft, TrainRewardModel or PpoStep request through the
// checks and conversion its handler runs before it takes the trainer (SftJobFromProto, RewardJobFromProto,
// PpoJobFromProto in services/ppo_trainer/ppo_trainer_service_impl.h). The answer is a job or INVALID_ARGUMENT;
// the job's options pass the training library's own validation. (The jobs do not run: training is the engine's,
// and the data it reads is fuzzed by the jsonl target.)
#include <cstddef>
#include <cstdint>

#include "common/training/optimizer.h"
#include "common/training/ppo_learner.h"
#include "fuzz_inputs.pb.h"
#include "services/ppo_trainer/ppo_trainer_service_impl.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using rlhf::fuzz::ExpectOkOr;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rlhf::fuzz::TrainerCall call;
  if (!call.ParseFromArray(data, static_cast<int>(size))) return 0;
  const rlhf::trainer::StageDefaults defaults;
  const auto allowed = {absl::StatusCode::kInvalidArgument};
  switch (call.call_case()) {
    case rlhf::fuzz::TrainerCall::kTrainSft: {
      auto job = rlhf::trainer::SftJobFromProto(call.train_sft(), defaults);
      ExpectOkOr(job.status(), "TrainSft's checks", allowed);
      if (job.ok()) {
        ExpectOkOr(rlhf::training::ValidateOptimizerOptions(job->options.optimizer), "an accepted SFT optimizer", {});
      }
      break;
    }
    case rlhf::fuzz::TrainerCall::kTrainRewardModel: {
      auto job = rlhf::trainer::RewardJobFromProto(call.train_reward_model(), defaults);
      ExpectOkOr(job.status(), "TrainRewardModel's checks", allowed);
      if (job.ok()) {
        ExpectOkOr(rlhf::training::ValidateOptimizerOptions(job->options.optimizer), "an accepted RM optimizer", {});
      }
      break;
    }
    case rlhf::fuzz::TrainerCall::kPpoStep: {
      auto job = rlhf::trainer::PpoJobFromProto(call.ppo_step(), defaults);
      ExpectOkOr(job.status(), "PpoStep's checks", allowed);
      if (job.ok()) ExpectOkOr(rlhf::training::ValidatePpoOptions(job->options), "accepted PPO options", {});
      break;
    }
    case rlhf::fuzz::TrainerCall::CALL_NOT_SET:
      break;
  }
  return 0;
}
