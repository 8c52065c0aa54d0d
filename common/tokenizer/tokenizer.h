// The tokenizer interface shared by the model core and the services, and the factory that picks the tokenizer of a
// model directory.
#ifndef RLHF_COMMON_TOKENIZER_TOKENIZER_H_
#define RLHF_COMMON_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace rlhf::tokenizer {

// Values of Tokenizer::Kind().
inline constexpr char kGpt2BpeKind[] = "gpt2-bpe";
inline constexpr char kByteKind[] = "byte";
inline constexpr char kWordKind[] = "word";
inline constexpr char kHfBpeKind[] = "hf-bpe";

// Maps text (UTF-8 bytes) to token ids in [0, VocabSize()) and back.
//
// Thread safety: implementations are immutable after construction; every method is const and may be called from
// many threads at once without external locking.
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Encodes `text`. Occurrences of the tokenizer's special tokens (e.g. "<|endoftext|>") become their single id.
  // Any byte string is accepted, including invalid UTF-8 (see each implementation for how such bytes are encoded);
  // an error means an internal failure (e.g. the regex engine ran out of resources), not bad input.
  virtual absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const = 0;

  // Like Encode, but special-token strings in `text` are encoded as ordinary text. Use it for untrusted text (user
  // prompts) that must not be able to inject an end-of-text token.
  virtual absl::StatusOr<std::vector<int32_t>> EncodeOrdinary(absl::string_view text) const = 0;

  // Decodes `ids` to the bytes they stand for (special tokens decode to their text). The result is the exact byte
  // concatenation of the tokens, so it is not always valid UTF-8 (a multi-byte character may be split across a
  // slice of ids); use ReplaceInvalidUtf8 where valid UTF-8 is required (protobuf `string` fields).
  // InvalidArgument when an id is outside [0, VocabSize()), naming its index and value: "ids[3]=70000 ...".
  virtual absl::StatusOr<std::string> Decode(absl::Span<const int32_t> ids) const = 0;

  // Number of ids: every id this tokenizer produces or accepts is in [0, VocabSize()).
  virtual int32_t VocabSize() const = 0;

  // The end-of-text id, if the vocabulary has one.
  virtual std::optional<int32_t> EosId() const = 0;

  // The padding id, if the vocabulary has one (GPT-2's has none: callers usually pad with EosId() and a mask).
  virtual std::optional<int32_t> PadId() const = 0;

  // The beginning-of-text id, if the vocabulary has one (the word tokenizer's <bos>; GPT-2 and byte: none).
  virtual std::optional<int32_t> BosId() const { return std::nullopt; }

  // What kind of tokenizer this is: kGpt2BpeKind ("gpt2-bpe"), kByteKind ("byte"), kWordKind ("word") or
  // kHfBpeKind ("hf-bpe").
  virtual std::string Kind() const = 0;

  // The ids Hugging Face's `encode(text, add_special_tokens=True)` puts before / after the ids of one text (the
  // tokenizer.json post-processor's single-sequence template: e.g. {<|begin_of_text|>} before for Llama 3 files with
  // a TemplateProcessing post-processor). Empty for tokenizers without a post-processor. Encode and EncodeOrdinary
  // never add them: a caller that wants add_special_tokens=True prepends / appends them itself.
  virtual std::vector<int32_t> TextPrefixIds() const { return {}; }
  virtual std::vector<int32_t> TextSuffixIds() const { return {}; }

  // Whether encoding a text with special tokens starts it with BosId() (TextPrefixIds() begins with it).
  bool AddsBosToText() const {
    const std::optional<int32_t> bos = BosId();
    const std::vector<int32_t> prefix = TextPrefixIds();
    return bos.has_value() && !prefix.empty() && prefix.front() == *bos;
  }
};

// Loads the tokenizer of a model directory:
//   - `encoder.json` and `vocab.bpe` -> GPT-2 byte-level BPE (LoadGpt2Tokenizer);
//   - otherwise `tokenizer.json` with `"type": "byte"` -> ByteTokenizer (see byte_tokenizer.h for the format), or
//     with `"type": "word"` -> WordTokenizer (word_tokenizer.h), or a Hugging Face tokenizer.json (one with a
//     "model" object) -> HfBpeTokenizer (hf_bpe_tokenizer.h), with `tokenizer_config.json` when present.
// NotFound, naming the directory and the files looked for, when neither is there; InvalidArgument naming the file
// when a file is there but malformed.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir);

// The files of a model folder that make up its tokenizer and chat template, whichever kind it is: tokenizer.json,
// tokenizer_config.json, chat_template.jinja, chat_template.json, encoder.json, vocab.bpe. Copy those present when
// copying a checkpoint, so that the copy tokenizes and renders chats as the original does.
const std::vector<std::string>& TokenizerFileNames();

// Copies the TokenizerFileNames() present in `from_dir` into `to_dir` (each atomically; `to_dir` must exist).
absl::Status CopyTokenizerFiles(const std::string& from_dir, const std::string& to_dir);

// Loads GPT-2's byte-level BPE from its vocabulary (`encoder.json`) and merges (`vocab.bpe`) files.
// NotFound when a file is missing; InvalidArgument naming the file (and line) when one is malformed.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadGpt2Tokenizer(const std::string& encoder_json_path,
                                                             const std::string& vocab_bpe_path);

// Returns `bytes` with each maximal invalid UTF-8 subsequence replaced by U+FFFD, as Python's
// bytes.decode("utf-8", errors="replace") does. Valid UTF-8 is returned unchanged.
std::string ReplaceInvalidUtf8(absl::string_view bytes);

}  // namespace rlhf::tokenizer

#endif  // RLHF_COMMON_TOKENIZER_TOKENIZER_H_
