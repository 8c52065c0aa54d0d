// Prometheus metrics every model-serving engine reports, built once on the server's registry:
//   rlhf_<engine>_rows_total               counter: rows (samples, sequences) processed
//   rlhf_<engine>_tokens_total             counter: tokens generated or scored
//   rlhf_<engine>_batch_rows               histogram: rows per engine batch
//   rlhf_<engine>_queue_depth              gauge: requests waiting for the engine
//   rlhf_<engine>_seconds_per_token        histogram: a batch's compute time per token
//   rlhf_model_version{service}            gauge: version of the served weights
//   rlhf_weight_updates_total{service,outcome="ok"|"refused"}  counter
#ifndef RLHF_COMMON_SERVING_ENGINE_METRICS_H_
#define RLHF_COMMON_SERVING_ENGINE_METRICS_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace rlhf::serving {

struct EngineMetrics {
  // `engine`: metric-name part ("generation", "reference", "reward"); `service`: label value ("policy-generation").
  EngineMetrics(prometheus::Registry& registry, const std::string& engine, const std::string& service);

  // Records one engine batch.
  void ObserveBatch(int64_t rows, int64_t tokens, absl::Duration compute);

  prometheus::Counter& rows;
  prometheus::Counter& tokens;
  prometheus::Histogram& batch_rows;
  prometheus::Gauge& queue_depth;
  prometheus::Histogram& seconds_per_token;
  prometheus::Gauge& model_version;
  prometheus::Counter& weight_updates_ok;
  prometheus::Counter& weight_updates_refused;
};

}  // namespace rlhf::serving

#endif  // RLHF_COMMON_SERVING_ENGINE_METRICS_H_
