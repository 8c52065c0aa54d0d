// The records of the three InstructGPT datasets and of the pretraining mix, with the checks every reader and writer
// of this folder applies to them.
//
// On disk (JSON Lines, one record a line; see jsonl_reader.h and jsonl_writer.h):
//   SFT demonstration   {"prompt": "...", "response": "..."}
//   comparison, ranked  {"prompt": "...", "responses": [{"text": "...", "rank": 1}, ...]}   rank 1 is best
//   comparison, pair    {"prompt": "...", "chosen": "...", "rejected": "..."}  -> ranks 1 and 2
//   PPO prompt          {"prompt": "..."}
//   pretraining text    {"text": "..."}, or a plain .txt file of documents separated by blank lines
// Chat prompts: "messages": [{"role": "system"|"user"|"assistant"|..., "content": "..."}, ...] in place of "prompt",
// rendered with the model's chat template where the prompt is encoded. An SFT record may give its response as the
// conversation's last message, when that one is the assistant's: {"messages": [..., {"role": "assistant", ...}]}.
#ifndef RLHF_COMMON_DATA_RECORDS_H_
#define RLHF_COMMON_DATA_RECORDS_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace rlhf::data {

// One message of a chat prompt.
struct ChatTurn {
  std::string role;     // non-empty
  std::string content;  // UTF-8, may be empty
};
inline bool operator==(const ChatTurn& a, const ChatTurn& b) { return a.role == b.role && a.content == b.content; }

// The one-text form of a conversation that records keep in `prompt` (to show, split by and compare prompts):
// "<role>: <content>" per message, joined by newlines.
std::string ChatPromptText(const std::vector<ChatTurn>& messages);

// A demonstration for supervised fine-tuning; the loss falls on the response tokens only.
struct SftExample {
  std::string prompt;    // UTF-8, non-empty; ChatPromptText(messages) for a chat prompt
  std::string response;  // UTF-8, non-empty (a demonstration of nothing teaches nothing)
  // Non-empty for a chat prompt: the conversation the response answers (as the assistant's next turn).
  std::vector<ChatTurn> messages;
};

// One of the K responses a labeler ranked for a prompt.
struct RankedResponse {
  // UTF-8; may be empty: a policy sample that stopped at once is a real sample, and the reward model must learn to
  // rank it.
  std::string text;
  // >= 1; 1 is best. Equal ranks are ties: no training pair is formed between them. Ranks need not be contiguous
  // (1, 1, 3 and 1, 1, 2 mean the same).
  int rank = 0;
};

// A prompt with K ranked responses; the reward model trains on every pair of differently ranked responses
// (ComparisonPairs), all pairs of one prompt in one batch.
// Valid when: the prompt is non-empty; 2 <= K <= the reader's limit (kMaxResponsesPerComparison by default);
// every rank >= 1; not all ranks equal (no pair at all); and no text appears twice with different ranks
// (a contradiction). Every string is UTF-8.
struct Comparison {
  std::string prompt;  // ChatPromptText(messages) for a chat prompt
  std::vector<RankedResponse> responses;
  std::vector<ChatTurn> messages;  // non-empty for a chat prompt; responses are the assistant's next turn
};

// A prompt for PPO rollouts.
struct PromptRecord {
  std::string prompt;  // UTF-8, non-empty; ChatPromptText(messages) for a chat prompt
  std::vector<ChatTurn> messages;  // non-empty for a chat prompt
};

// A document of the pretraining mix (PPO-ptx).
struct PretrainingText {
  std::string text;  // UTF-8, non-empty
};

// K for a comparison: at least a pair, at most 9 by default (InstructGPT samples 4..9; pairwise data has 2).
inline constexpr size_t kMinResponsesPerComparison = 2;
inline constexpr size_t kMaxResponsesPerComparison = 9;

inline bool operator==(const SftExample& a, const SftExample& b) {
  return a.prompt == b.prompt && a.response == b.response && a.messages == b.messages;
}
inline bool operator==(const RankedResponse& a, const RankedResponse& b) {
  return a.text == b.text && a.rank == b.rank;
}
inline bool operator==(const Comparison& a, const Comparison& b) {
  return a.prompt == b.prompt && a.responses == b.responses && a.messages == b.messages;
}
inline bool operator==(const PromptRecord& a, const PromptRecord& b) {
  return a.prompt == b.prompt && a.messages == b.messages;
}
inline bool operator==(const PretrainingText& a, const PretrainingText& b) { return a.text == b.text; }

// A training pair of a comparison: indices into Comparison::responses; `winner` has the strictly better (lower)
// rank.
struct ComparisonPair {
  size_t winner = 0;
  size_t loser = 0;
};
inline bool operator==(const ComparisonPair& a, const ComparisonPair& b) {
  return a.winner == b.winner && a.loser == b.loser;
}

// All pairs of responses with strictly different ranks: C(K, 2) minus the tied pairs (K=4 with one tie: 5).
// Order is deterministic: by the lower index i, then the higher index j, of each pair {i, j}. Ranks are not
// validated here (see ValidateComparison); an all-tie comparison yields no pair.
std::vector<ComparisonPair> ComparisonPairs(const Comparison& comparison);

// Content checks shared by readers and writers. OK or InvalidArgument whose message names the field and the reason,
// without a file location (the reader adds "path:line: "), e.g. `field "prompt" is empty` or
// `responses[0] and responses[2] have the same text but different ranks (1 and 3)`.
absl::Status ValidateSftExample(const SftExample& example);
// `max_responses` bounds K; writers pass no limit (the limit is a reading policy, see ReadOptions).
absl::Status ValidateComparison(const Comparison& comparison, size_t max_responses = kMaxResponsesPerComparison);
absl::Status ValidatePromptRecord(const PromptRecord& record);
absl::Status ValidatePretrainingText(const PretrainingText& text);

// The byte offset of the first byte of `text` that is not part of well-formed UTF-8 (Unicode 15 §3.9, table 3-7:
// no overlong forms, no surrogates, nothing above U+10FFFF), or std::string::npos when all of it is well formed.
size_t FindInvalidUtf8(absl::string_view text);

}  // namespace rlhf::data

#endif  // RLHF_COMMON_DATA_RECORDS_H_
