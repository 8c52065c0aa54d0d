#include "common/serving/engine_metrics.h"

namespace rlhf::serving {

EngineMetrics::EngineMetrics(prometheus::Registry& registry, const std::string& engine, const std::string& service)
    : rows(prometheus::BuildCounter()
               .Name("rlhf_" + engine + "_rows_total")
               .Help("Rows (samples or sequences) the engine processed")
               .Register(registry)
               .Add({})),
      tokens(prometheus::BuildCounter()
                 .Name("rlhf_" + engine + "_tokens_total")
                 .Help("Tokens the engine generated or scored")
                 .Register(registry)
                 .Add({})),
      batch_rows(prometheus::BuildHistogram()
                     .Name("rlhf_" + engine + "_batch_rows")
                     .Help("Rows per engine batch")
                     .Register(registry)
                     .Add({}, prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128, 256, 512})),
      queue_depth(prometheus::BuildGauge()
                      .Name("rlhf_" + engine + "_queue_depth")
                      .Help("Requests waiting for the engine")
                      .Register(registry)
                      .Add({})),
      seconds_per_token(
          prometheus::BuildHistogram()
              .Name("rlhf_" + engine + "_seconds_per_token")
              .Help("Engine batch compute time divided by the tokens it processed")
              .Register(registry)
              .Add({}, prometheus::Histogram::BucketBoundaries{0.00001, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                               0.01, 0.025, 0.05, 0.1, 0.25})),
      model_version(prometheus::BuildGauge()
                        .Name("rlhf_model_version")
                        .Help("Version of the weights a service serves")
                        .Register(registry)
                        .Add({{"service", service}})),
      weight_updates_ok(prometheus::BuildCounter()
                            .Name("rlhf_weight_updates_total")
                            .Help("Weight updates and reloads, by outcome")
                            .Register(registry)
                            .Add({{"service", service}, {"outcome", "ok"}})),
      weight_updates_refused(prometheus::BuildCounter()
                                 .Name("rlhf_weight_updates_total")
                                 .Help("Weight updates and reloads, by outcome")
                                 .Register(registry)
                                 .Add({{"service", service}, {"outcome", "refused"}})) {}

void EngineMetrics::ObserveBatch(int64_t batch_rows_count, int64_t token_count, absl::Duration compute) {
  rows.Increment(static_cast<double>(batch_rows_count));
  tokens.Increment(static_cast<double>(token_count));
  batch_rows.Observe(static_cast<double>(batch_rows_count));
  if (token_count > 0) seconds_per_token.Observe(absl::ToDoubleSeconds(compute) / static_cast<double>(token_count));
}

}  // namespace rlhf::serving
