#include "services/orchestrator/orchestrator_service_impl.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/runtime/finished_reactors.h"
#include "common/runtime/queued_writer.h"
#include "common/runtime/status_util.h"

namespace rlhf::orchestrator {

grpc::ServerUnaryReactor* OrchestratorServiceImpl::StartRun(grpc::CallbackServerContext* context,
                                                            const v1::StartRunRequest* request, v1::Run* response) {
  absl::StatusOr<v1::Run> run = manager_->StartRun(*request);
  if (!run.ok()) return runtime::FinishUnary(context, runtime::ToGrpcStatus(run.status()));
  *response = *std::move(run);
  return runtime::FinishUnary(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* OrchestratorServiceImpl::GetRun(grpc::CallbackServerContext* context,
                                                          const v1::GetRunRequest* request, v1::Run* response) {
  absl::StatusOr<v1::Run> run = manager_->GetRun(request->run_id());
  if (!run.ok()) return runtime::FinishUnary(context, runtime::ToGrpcStatus(run.status()));
  *response = *std::move(run);
  return runtime::FinishUnary(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* OrchestratorServiceImpl::ListRuns(grpc::CallbackServerContext* context,
                                                            const v1::ListRunsRequest* request,
                                                            v1::ListRunsResponse* response) {
  if (request->page_size() < 0) {
    return runtime::FinishUnary(context, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "page_size must be >= 0"));
  }
  size_t start = 0;
  if (!request->page_token().empty() && !absl::SimpleAtoi(request->page_token(), &start)) {
    return runtime::FinishUnary(context, grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "page_token is not valid"));
  }
  const size_t page = request->page_size() > 0 ? static_cast<size_t>(request->page_size()) : 50;
  std::vector<v1::Run> runs = manager_->ListRuns(request->state());
  for (size_t i = start; i < runs.size() && i < start + page; ++i) *response->add_runs() = runs[i];
  if (start + page < runs.size()) response->set_next_page_token(absl::StrCat(start + page));
  return runtime::FinishUnary(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* OrchestratorServiceImpl::CancelRun(grpc::CallbackServerContext* context,
                                                             const v1::CancelRunRequest* request, v1::Run* response) {
  absl::StatusOr<v1::Run> run = manager_->CancelRun(request->run_id(), request->reason());
  if (!run.ok()) return runtime::FinishUnary(context, runtime::ToGrpcStatus(run.status()));
  *response = *std::move(run);
  return runtime::FinishUnary(context, grpc::Status::OK);
}

grpc::ServerWriteReactor<v1::RunEvent>* OrchestratorServiceImpl::WatchRun(grpc::CallbackServerContext* /*context*/,
                                                                          const v1::WatchRunRequest* request) {
  if (request->run_id().empty()) {
    return runtime::FinishWriter<v1::RunEvent>(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "run_id is required"));
  }
  auto [reactor, writer] = runtime::QueuedWriter<v1::RunEvent>::Create();
  RunManager::Watcher watcher;
  watcher.on_event = [writer = writer](const v1::RunEvent& event) mutable { return writer.Push(event); };
  watcher.on_done = [writer = writer]() mutable { writer.Close(grpc::Status::OK); };
  absl::Status status = manager_->Watch(request->run_id(), request->include_history(), std::move(watcher));
  if (!status.ok()) writer.Close(runtime::ToGrpcStatus(status));
  return reactor;
}

}  // namespace rlhf::orchestrator
