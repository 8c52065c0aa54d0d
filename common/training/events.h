// Progress of a training stage, shared by SFT and reward-model training.
#ifndef RLHF_COMMON_TRAINING_EVENTS_H_
#define RLHF_COMMON_TRAINING_EVENTS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "absl/status/status.h"

namespace rlhf::training {

struct TrainingProgress {
  int32_t epoch = 0;  // 1-based; 0 before the first epoch
  int64_t step = 0;   // optimiser steps done
  int64_t total_steps = 0;
  // "<split>/<name>": train/loss, train/lr, train/grad_norm, train/examples_per_second, val/loss, val/accuracy...
  std::map<std::string, double> metrics;
  std::string checkpoint_path;  // written at this point; empty when none
};

// Receives progress; a non-OK return (e.g. CANCELLED when the caller went away) stops training after the current
// step, and the trainer returns that status.
using ProgressSink = std::function<absl::Status(const TrainingProgress&)>;

}  // namespace rlhf::training

#endif  // RLHF_COMMON_TRAINING_EVENTS_H_
