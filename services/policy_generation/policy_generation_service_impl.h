// rlhf.v1.PolicyGenerationService: validates requests, converts protobuf <-> engine types, calls the engine,
// records metrics. The engine (generation_engine.h) owns the model and the batching.
#ifndef RLHF_SERVICES_POLICY_GENERATION_POLICY_GENERATION_SERVICE_IMPL_H_
#define RLHF_SERVICES_POLICY_GENERATION_POLICY_GENERATION_SERVICE_IMPL_H_

#include <memory>

#include "common/runtime/worker_thread.h"
#include "common/serving/engine_metrics.h"
#include "common/serving/weights_transfer.h"
#include "rlhf/v1/generation.grpc.pb.h"
#include "services/policy_generation/generation_engine.h"

namespace rlhf::generation {

namespace v1 = ::rlhf::v1;

// Generate's request as the engine takes it (which validates it further in Submit): text prompts are tokenized
// with the store's tokenizer (InvalidArgument naming the prompt when the model has none, or a prompt has neither
// text nor token ids), and unset sampling fields get their defaults. A plain function, so that the fuzz target
// (tests/fuzz/generation_fuzzer.cc) runs what the handler runs.
absl::StatusOr<GenerationRequest> GenerationRequestFromProto(const v1::GenerateRequest& proto,
                                                             const serving::ModelStore& store);

// UpdateWeights after the stream's last message: checks it (sizes, digest: assembler.Finish) and swaps the store to
// its weights with the header's target version, recording the sender's model id as metadata.
absl::StatusOr<serving::ModelStore::SwapResult> SwapFromWeightsStream(serving::WeightsAssembler& assembler,
                                                                      serving::ModelStore& store);

class PolicyGenerationServiceImpl final : public v1::PolicyGenerationService::CallbackService {
 public:
  // `engine` must outlive the service. `max_weights_bytes` bounds an UpdateWeights payload.
  PolicyGenerationServiceImpl(GenerationEngine* engine, serving::EngineMetrics* metrics, int64_t max_weights_bytes);

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* context, const v1::GenerateRequest* request,
                                     v1::GenerateResponse* response) override;
  grpc::ServerReadReactor<v1::WeightsChunk>* UpdateWeights(grpc::CallbackServerContext* context,
                                                           v1::UpdateWeightsResponse* response) override;
  grpc::ServerUnaryReactor* UpdateWeightsFromCheckpoint(grpc::CallbackServerContext* context,
                                                        const v1::UpdateWeightsFromCheckpointRequest* request,
                                                        v1::UpdateWeightsResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context, const v1::GetModelInfoRequest* request,
                                         v1::ModelInfo* response) override;

 private:
  class UpdateWeightsReactor;
  void FillSwapResponse(const serving::ModelStore::SwapResult& swap, v1::UpdateWeightsResponse* response);

  GenerationEngine* engine_;
  serving::EngineMetrics* metrics_;
  int64_t max_weights_bytes_;
  runtime::WorkerThread loader_;  // weight swaps run here, never on a gRPC thread
};

}  // namespace rlhf::generation

#endif  // RLHF_SERVICES_POLICY_GENERATION_POLICY_GENERATION_SERVICE_IMPL_H_
