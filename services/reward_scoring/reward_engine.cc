#include "services/reward_scoring/reward_engine.h"

#include <ATen/ops/zeros.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/model/causal_lm.h"
#include "common/model/token_ids.h"
#include "common/model/torch_boundary.h"
#include "common/runtime/logging.h"
#include "common/util/file_util.h"
#include "common/util/status_macros.h"

namespace rlhf::reward {
namespace {

constexpr char kWeightsFile[] = "model.safetensors";
constexpr char kConfigFile[] = "config.json";
// Reloads waiting for the loader thread at most; more get RESOURCE_EXHAUSTED.
constexpr size_t kMaxQueuedReloads = 4;

std::string LastComponent(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The absolute path of an existing `path` with symlinks resolved; NotFound naming `what` when it does not exist.
absl::StatusOr<std::string> RealPath(const std::string& path, absl::string_view what) {
  char resolved[PATH_MAX];
  if (::realpath(path.c_str(), resolved) == nullptr) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) return absl::NotFoundError(absl::StrCat(what, " ", path, " does not exist"));
    return util::ErrnoStatus(absl::StrCat("cannot resolve ", what), path, err);
  }
  return std::string(resolved);
}

// mtime (ns) and size of a regular file; nullopt when it is not one.
std::optional<std::pair<int64_t, int64_t>> FileStamp(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  return std::make_pair(static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
                        static_cast<int64_t>(st.st_size));
}

CheckpointFingerprint Fingerprint(const std::string& dir) {
  CheckpointFingerprint fp;
  if (auto weights = FileStamp(absl::StrCat(dir, "/", kWeightsFile))) {
    fp.weights_mtime_ns = weights->first;
    fp.weights_size = weights->second;
  }
  if (auto config = FileStamp(absl::StrCat(dir, "/", kConfigFile))) {
    fp.config_mtime_ns = config->first;
    fp.config_size = config->second;
  }
  return fp;
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// FAILED_PRECONDITION naming the difference when `dir` carries a tokenizer other than the served one. A checkpoint
// without tokenizer files keeps the served tokenizer.
absl::Status CheckSameTokenizer(const serving::ModelStore& store, const std::string& dir) {
  auto loaded = tokenizer::LoadTokenizer(dir);
  if (!loaded.ok()) {
    if (loaded.status().code() == absl::StatusCode::kNotFound) return absl::OkStatus();
    return loaded.status();
  }
  const tokenizer::Tokenizer& update = **loaded;
  const tokenizer::Tokenizer* served = store.tokenizer();
  auto differs = [&](absl::string_view what, auto here, auto there) {
    return absl::FailedPreconditionError(
        absl::StrCat("tokenizer differs: ", what, " is ", here, " here, ", there, " in ", dir));
  };
  if (served == nullptr) return differs("kind", "none", update.Kind());
  if (served->Kind() != update.Kind()) return differs("kind", served->Kind(), update.Kind());
  if (served->VocabSize() != update.VocabSize()) return differs("vocab_size", served->VocabSize(), update.VocabSize());
  if (served->EosId() != update.EosId()) {
    return differs("eos id", served->EosId().value_or(-1), update.EosId().value_or(-1));
  }
  if (served->PadId() != update.PadId()) {
    return differs("pad id", served->PadId().value_or(-1), update.PadId().value_or(-1));
  }
  // Same kind and sizes but other merges or vocabulary: the encoding of a probe text tells.
  constexpr absl::string_view kProbe = "Hello, world! It's 2024: caf\xc3\xa9 <|endoftext|>\n\tOK?";
  auto a = served->Encode(kProbe);
  auto b = update.Encode(kProbe);
  if (!a.ok() || !b.ok() || *a != *b) return differs("the encoding of a probe text", "one thing", "another");
  return absl::OkStatus();
}

// Rewards of `count` rows in one forward pass: right-padded, the reward head at each row's last token.
absl::StatusOr<std::vector<float>> ForwardRewards(const model::CausalLm& model, const ScorePair* const* rows,
                                                  size_t count) {
  return model::TorchBoundary("reward forward", [&]() -> absl::StatusOr<std::vector<float>> {
    c10::InferenceMode inference;
    int64_t longest = 0;
    for (size_t i = 0; i < count; ++i) {
      longest = std::max(longest, static_cast<int64_t>(rows[i]->prompt.size() + rows[i]->response.size()));
    }
    const int64_t b = static_cast<int64_t>(count);
    at::Tensor ids = at::zeros({b, longest}, at::kLong);  // padding id 0, masked out
    at::Tensor mask = at::zeros({b, longest}, at::kLong);
    int64_t* id = ids.data_ptr<int64_t>();
    int64_t* m = mask.data_ptr<int64_t>();
    for (size_t i = 0; i < count; ++i) {
      int64_t* row_ids = id + static_cast<int64_t>(i) * longest;
      int64_t* row_mask = m + static_cast<int64_t>(i) * longest;
      const auto& prompt = rows[i]->prompt;
      const auto& response = rows[i]->response;
      std::copy(prompt.begin(), prompt.end(), row_ids);
      std::copy(response.begin(), response.end(), row_ids + prompt.size());
      std::fill(row_mask, row_mask + prompt.size() + response.size(), int64_t{1});
    }
    model::ForwardOptions options;
    options.logits = false;
    options.rewards = true;
    ASSIGN_OR_RETURN(model::ForwardOutput out, model.Forward(ids, mask, options));
    at::Tensor rewards = out.rewards.to(at::kCPU).to(at::kFloat).contiguous();
    const float* r = rewards.data_ptr<float>();
    for (size_t i = 0; i < count; ++i) {
      if (!std::isfinite(r[i])) {  // finite weights and inputs cannot give this; never hand it to a caller
        return absl::InternalError(absl::StrCat("the reward model produced a non-finite score (", r[i], ")"));
      }
    }
    return std::vector<float>(r, r + count);
  });
}

}  // namespace

float NormalizationBias(const serving::ServedModel& served) {
  c10::InferenceMode inference;
  for (const model::NamedTensor& param : served.model->NamedParameters()) {
    if (param.name == "score.bias") {
      try {
        return param.tensor.to(at::kCPU).to(at::kFloat).reshape({-1})[0].item<float>();
      } catch (const c10::Error&) {
        return 0;
      }
    }
  }
  return 0;
}

absl::StatusOr<std::vector<CheckpointCandidate>> ListCheckpoints(const std::string& dir) {
  ASSIGN_OR_RETURN(const std::string root, RealPath(dir, "watched folder"));
  DIR* handle = ::opendir(root.c_str());
  if (handle == nullptr) return util::ErrnoStatus("cannot list", root, errno);
  std::vector<CheckpointCandidate> found;
  std::vector<std::string> names;
  while (const dirent* entry = ::readdir(handle)) {
    const std::string name = entry->d_name;
    if (name.empty() || name[0] == '.') continue;  // ".", "..", and checkpoints still being written (".tmp-*")
    names.push_back(name);
  }
  ::closedir(handle);
  for (const std::string& name : names) {
    const std::string path = absl::StrCat(root, "/", name);
    if (!IsDirectory(path) || !FileStamp(absl::StrCat(path, "/", kWeightsFile)).has_value()) continue;
    found.push_back({path, Fingerprint(path)});
  }
  std::sort(found.begin(), found.end(), [](const CheckpointCandidate& a, const CheckpointCandidate& b) {
    return std::tie(a.fingerprint.weights_mtime_ns, a.path) > std::tie(b.fingerprint.weights_mtime_ns, b.path);
  });
  return found;
}

RewardEngine::RewardEngine(const RewardEngineOptions& options) : options_(options), batcher_(options.queue) {
  options_.model.require_reward_head = true;
  // The name stays the same across reloads: the watched folder's, else the --model folder's.
  if (options_.model.model_name.empty()) {
    options_.model.model_name =
        LastComponent(options_.watch_dir.empty() ? options_.model.model_dir : options_.watch_dir);
  }
}

absl::StatusOr<std::unique_ptr<RewardEngine>> RewardEngine::Create(const RewardEngineOptions& options) {
  if (options.queue.max_batch_rows < 1) return absl::InvalidArgumentError("max_batch_rows must be at least 1");
  if (options.max_items < 1) return absl::InvalidArgumentError("max_items must be at least 1");
  if (!options.watch_dir.empty() && options.watch_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("watch_interval must be positive");
  }
  if (options.allow_reload && options.model.path_roots.empty()) {
    return absl::InvalidArgumentError(
        "--allow_reload needs --path_roots: the folders whose checkpoints ReloadModel may load");
  }
  std::unique_ptr<RewardEngine> engine(new RewardEngine(options));
  auto logger = runtime::Logger("reward");
  // The watched folder's newest loadable checkpoint wins; --model serves when there is none.
  if (!engine->options_.watch_dir.empty()) engine->Poll(LoadCause::kStartup);
  if (engine->store() == nullptr && !engine->options_.model.model_dir.empty()) {
    ASSIGN_OR_RETURN(const std::string path, RealPath(engine->options_.model.model_dir, "--model folder"));
    const CheckpointCandidate candidate{path, Fingerprint(path)};
    const ReloadResult result = engine->Load(candidate, LoadCause::kStartup);
    if (result.outcome != ReloadOutcome::kReloaded) {
      return absl::FailedPreconditionError(absl::StrCat("cannot serve ", path, ": ", result.message));
    }
  }
  if (engine->store() == nullptr) {
    logger->warn("no reward model loaded: requests get UNAVAILABLE until {}",
                 !engine->options_.watch_dir.empty()
                     ? absl::StrCat("a checkpoint appears in ", engine->options_.watch_dir)
                 : engine->reload_enabled() ? std::string("ReloadModel names a checkpoint")
                                            : std::string("the server is restarted with --model or --watch"));
  }
  engine->batcher_.Start([e = engine.get()](Batcher::Jobs live) { e->RunBatch(std::move(live)); });
  if (engine->reload_enabled()) engine->loader_ = std::thread([e = engine.get()] { e->LoaderLoop(); });
  return engine;
}

RewardEngine::~RewardEngine() { Shutdown(); }

void RewardEngine::Shutdown() {
  if (shut_down_.exchange(true)) return;
  {
    std::lock_guard<std::mutex> lock(loader_mu_);
    loader_stopping_ = true;
  }
  loader_cv_.notify_all();
  if (loader_.joinable()) loader_.join();
  batcher_.Shutdown();
}

void RewardEngine::set_batch_observer(BatchObserver observer) {
  std::lock_guard<std::mutex> lock(observers_mu_);
  batch_observer_ = std::move(observer);
}

void RewardEngine::set_reload_observer(ReloadObserver observer) {
  std::lock_guard<std::mutex> lock(observers_mu_);
  reload_observer_ = std::move(observer);
}

std::optional<int64_t> RewardEngine::eos_token_id() const {
  const serving::ModelStore* s = store();
  if (s == nullptr) return std::nullopt;
  if (s->tokenizer() != nullptr && s->tokenizer()->EosId().has_value()) return *s->tokenizer()->EosId();
  return s->config().eos_token_id();
}

absl::Status RewardEngine::Validate(const RewardRequest& request) const {
  const serving::ModelStore* s = store();
  if (s == nullptr) {
    return absl::UnavailableError(
        "no reward model is loaded yet; it serves once a checkpoint is loaded (--model, --watch or ReloadModel)");
  }
  const model::ModelConfig& config = s->config();
  if (request.items.empty()) return absl::InvalidArgumentError("items is empty");
  if (static_cast<int64_t>(request.items.size()) > options_.max_items) {
    return absl::InvalidArgumentError(
        absl::StrCat("items has ", request.items.size(), " entries, more than the limit ", options_.max_items));
  }
  for (size_t i = 0; i < request.items.size(); ++i) {
    const ScorePair& item = request.items[i];
    if (item.prompt.empty()) return absl::InvalidArgumentError(absl::StrCat("items[", i, "].prompt is empty"));
    const int64_t length = static_cast<int64_t>(item.prompt.size() + item.response.size());
    RETURN_IF_ERROR(model::CheckSequenceLength(
        length, config.max_position_embeddings, absl::StrCat("items[", i, "]"),
        absl::StrCat(" (prompt ", item.prompt.size(), " + response ", item.response.size(), ")")));
    RETURN_IF_ERROR(
        model::CheckTokenIds(item.prompt, config.vocab_size, absl::StrCat("items[", i, "].prompt.token_ids")));
    RETURN_IF_ERROR(
        model::CheckTokenIds(item.response, config.vocab_size, absl::StrCat("items[", i, "].response.token_ids")));
  }
  if (request.min_model_version.has_value()) {
    // Versions only grow, so a request that passes here is served by a version at least this new.
    const int64_t served = s->Current()->version;
    if (*request.min_model_version > served) {
      return absl::FailedPreconditionError(
          absl::StrCat("min_model_version=", *request.min_model_version, " is above the served version ", served));
    }
  }
  return absl::OkStatus();
}

void RewardEngine::Submit(RewardRequest request, Callback done) {
  if (absl::Status status = Validate(request); !status.ok()) {
    done(status);
    return;
  }
  const size_t rows = request.items.size();
  batcher_.Submit(std::move(request), std::move(done), rows);
}

void RewardEngine::RunBatch(Batcher::Jobs live) {
  const absl::Time start = absl::Now();
  // One model version for the whole batch: a swap during it takes effect for the next batch.
  const std::shared_ptr<const serving::ServedModel> served = store()->Current();
  if (served->version != bias_version_) {
    bias_ = NormalizationBias(*served);
    bias_version_ = served->version;
  }
  std::vector<const ScorePair*> rows;
  int64_t tokens = 0;
  for (const auto& job : live) {
    for (const ScorePair& item : job->request.items) {
      rows.push_back(&item);
      tokens += static_cast<int64_t>(item.prompt.size() + item.response.size());
    }
  }
  // Forward passes of at most max_batch_rows rows (more only when one request is larger than a batch).
  std::vector<float> scores(rows.size());
  absl::Status status;
  const size_t step = std::max<size_t>(1, options_.queue.max_batch_rows);
  for (size_t begin = 0; begin < rows.size() && status.ok(); begin += step) {
    const size_t count = std::min(step, rows.size() - begin);
    absl::StatusOr<std::vector<float>> chunk = ForwardRewards(*served->model, rows.data() + begin, count);
    if (!chunk.ok()) {
      status = chunk.status();
      break;
    }
    std::copy(chunk->begin(), chunk->end(), scores.begin() + static_cast<int64_t>(begin));
  }
  const absl::Duration compute = absl::Now() - start;
  {
    // Recorded before the callers hear back, so that a caller's next look at the metrics includes its batch.
    std::lock_guard<std::mutex> lock(observers_mu_);
    if (batch_observer_ && status.ok()) batch_observer_(static_cast<int64_t>(rows.size()), tokens, compute);
  }
  size_t row = 0;
  for (auto& job : live) {
    const size_t n = job->request.items.size();
    if (!status.ok()) {
      job->done(status);
      continue;
    }
    RewardResult result;
    result.model_name = served->name;
    result.model_version = served->version;
    result.normalization_bias = bias_;
    result.scores.assign(scores.begin() + static_cast<int64_t>(row), scores.begin() + static_cast<int64_t>(row + n));
    for (const ScorePair& item : job->request.items) {
      result.tokens += static_cast<int64_t>(item.prompt.size() + item.response.size());
    }
    row += n;
    job->done(std::move(result));
  }
}

void RewardEngine::Reload(std::string checkpoint_path, ReloadCallback done) {
  if (!reload_enabled()) {
    done(absl::FailedPreconditionError(
        "reloading is disabled on this server; start it with --watch=DIR or --allow_reload to enable ReloadModel"));
    return;
  }
  bool stopping;
  {
    std::lock_guard<std::mutex> lock(loader_mu_);
    stopping = loader_stopping_;
    if (!stopping && reloads_.size() < kMaxQueuedReloads) {
      reloads_.emplace_back(std::move(checkpoint_path), std::move(done));
      loader_cv_.notify_all();
      return;
    }
  }
  if (stopping) {
    done(absl::UnavailableError("the server is shutting down"));
  } else {
    done(absl::ResourceExhaustedError(
        absl::StrCat(kMaxQueuedReloads, " reloads are already waiting; retry when they are done")));
  }
}

void RewardEngine::LoaderLoop() {
  const bool watching = !options_.watch_dir.empty();
  absl::Time next_poll = absl::Now() + options_.watch_interval;
  while (true) {
    std::pair<std::string, ReloadCallback> work;
    std::deque<std::pair<std::string, ReloadCallback>> abandoned;
    bool stopping = false;
    {
      std::unique_lock<std::mutex> lock(loader_mu_);
      while (!loader_stopping_ && reloads_.empty() && !(watching && absl::Now() >= next_poll)) {
        if (watching) {
          loader_cv_.wait_until(lock, absl::ToChronoTime(next_poll));
        } else {
          loader_cv_.wait(lock);
        }
      }
      stopping = loader_stopping_;
      if (stopping) {
        abandoned.swap(reloads_);
      } else if (!reloads_.empty()) {
        work = std::move(reloads_.front());
        reloads_.pop_front();
      }
    }
    if (stopping) {
      for (auto& entry : abandoned) entry.second(absl::UnavailableError("the server is shutting down"));
      return;
    }
    if (work.second != nullptr) {
      absl::StatusOr<ReloadResult> result = ReloadNow(work.first);
      if (result.ok()) Notify(*result);
      work.second(std::move(result));
    } else {
      Poll(LoadCause::kWatcher);
      next_poll = absl::Now() + options_.watch_interval;
    }
  }
}

absl::StatusOr<ReloadResult> RewardEngine::ReloadNow(const std::string& checkpoint_path) {
  CheckpointCandidate candidate;
  if (checkpoint_path.empty()) {
    if (options_.watch_dir.empty()) {
      return absl::InvalidArgumentError(
          "checkpoint_path is empty and this server watches no folder (--watch); name a checkpoint folder");
    }
    absl::StatusOr<std::vector<CheckpointCandidate>> found = ListCheckpoints(options_.watch_dir);
    if (!found.ok()) return found.status();
    if (found->empty()) {
      return absl::NotFoundError(absl::StrCat("no checkpoint in the watched folder ", options_.watch_dir,
                                              " (a checkpoint is a subfolder holding ", kWeightsFile, ")"));
    }
    candidate = found->front();
  } else {
    ASSIGN_OR_RETURN(candidate.path, ResolveReloadPath(checkpoint_path));
    if (!IsDirectory(candidate.path)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint_path ", checkpoint_path, " is not a folder (expected config.json + ", kWeightsFile, " inside)"));
    }
    candidate.fingerprint = Fingerprint(candidate.path);
  }
  return Load(candidate, LoadCause::kRequest);
}

absl::StatusOr<std::string> RewardEngine::ResolveReloadPath(const std::string& checkpoint_path) const {
  // A checkpoint of the watched folder (when it exists), else, with --allow_reload, one under --path_roots.
  if (!options_.watch_dir.empty()) {
    absl::StatusOr<util::PathRoots> watched = util::PathRoots::Create({options_.watch_dir}, "--watch");
    if (watched.ok()) {
      absl::StatusOr<std::string> inside = watched->Resolve(checkpoint_path, "checkpoint_path");
      if (inside.ok() || !options_.allow_reload) return inside;
    } else if (!options_.allow_reload) {
      return watched.status();
    }
  }
  return options_.model.path_roots.Resolve(checkpoint_path, "checkpoint_path");
}

ReloadResult RewardEngine::Load(const CheckpointCandidate& candidate, LoadCause cause) {
  auto logger = runtime::Logger("reward");
  ReloadResult result;
  result.checkpoint_path = candidate.path;
  result.from_watcher = cause == LoadCause::kWatcher;
  const char* by = cause == LoadCause::kWatcher ? "watcher" : cause == LoadCause::kStartup ? "startup" : "request";
  result.model_name = options_.model.model_name;
  serving::ModelStore* s = store_.load(std::memory_order_acquire);
  std::shared_ptr<const serving::ServedModel> previous = s != nullptr ? s->Current() : nullptr;
  if (previous != nullptr) {
    result.model_name = previous->name;
    result.previous_version = previous->version;
    result.version = previous->version;
    result.normalization_bias = NormalizationBias(*previous);
  }
  if (previous != nullptr && served_checkpoint_.has_value() && served_checkpoint_->path == candidate.path &&
      served_checkpoint_->fingerprint == candidate.fingerprint) {
    result.outcome = ReloadOutcome::kAlreadyCurrent;
    result.message = absl::StrCat(candidate.path, " is already served as version ", previous->version);
    return result;
  }
  absl::Status status;
  if (s == nullptr) {
    serving::ModelStoreOptions store_options = options_.model;
    store_options.model_dir = candidate.path;
    absl::StatusOr<std::unique_ptr<serving::ModelStore>> loaded = serving::ModelStore::Load(store_options);
    if (loaded.ok()) {
      owned_store_ = *std::move(loaded);
      store_.store(owned_store_.get(), std::memory_order_release);
      s = owned_store_.get();
    } else {
      status = loaded.status();
    }
  } else {
    status = CheckSameTokenizer(*s, candidate.path);
    if (status.ok()) status = s->SwapFromDirectory(candidate.path, std::nullopt).status();
  }
  if (!status.ok()) {
    result.outcome = ReloadOutcome::kRefused;
    result.message = std::string(status.message());
    refused_[candidate.path] = candidate.fingerprint;
    logger->warn("reload refused checkpoint={} by={} reason=\"{}\" serving_version={}", candidate.path, by,
                 result.message, result.version);
    return result;
  }
  const std::shared_ptr<const serving::ServedModel> current = s->Current();
  served_checkpoint_ = candidate;
  refused_.erase(candidate.path);
  result.outcome = ReloadOutcome::kReloaded;
  result.model_name = current->name;
  result.version = current->version;
  result.normalization_bias = NormalizationBias(*current);
  result.message = absl::StrCat("serving ", candidate.path, " as version ", current->version);
  logger->info("{} checkpoint={} by={} version={} previous_version={} normalization_bias={}",
               previous == nullptr ? "loaded" : "reloaded", candidate.path, by, current->version,
               result.previous_version, result.normalization_bias);
  return result;
}

void RewardEngine::Poll(LoadCause cause) {
  absl::StatusOr<std::vector<CheckpointCandidate>> found = ListCheckpoints(options_.watch_dir);
  if (!found.ok()) {
    if (!watch_dir_missing_logged_) {
      runtime::Logger("reward")->warn("cannot watch {}: {}", options_.watch_dir, std::string(found.status().message()));
      watch_dir_missing_logged_ = true;
    }
    return;
  }
  watch_dir_missing_logged_ = false;
  // The newest checkpoint not known to be broken. Acting only when it changes lets a checkpoint loaded by an
  // explicit ReloadModel keep serving until the trainer writes a new one.
  for (const CheckpointCandidate& candidate : *found) {
    auto refused = refused_.find(candidate.path);
    if (refused != refused_.end() && refused->second == candidate.fingerprint) continue;
    if (last_considered_.has_value() && last_considered_->path == candidate.path &&
        last_considered_->fingerprint == candidate.fingerprint) {
      return;
    }
    last_considered_ = candidate;
    const ReloadResult result = Load(candidate, cause);
    Notify(result);
    if (result.outcome != ReloadOutcome::kRefused) return;
  }
}

void RewardEngine::Notify(const ReloadResult& result) {
  std::lock_guard<std::mutex> lock(observers_mu_);
  if (reload_observer_) reload_observer_(result);
}

}  // namespace rlhf::reward
