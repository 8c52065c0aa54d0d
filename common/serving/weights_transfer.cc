#include "common/serving/weights_transfer.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/util/status_macros.h"
#include "common/util/json_errors.h"

namespace rlhf::serving {
namespace {

struct DTypeName {
  v1::DType dtype;
  const char* name;
  int64_t element_bytes;
};
constexpr DTypeName kDTypes[] = {{v1::DTYPE_F32, "F32", 4},
                                 {v1::DTYPE_F16, "F16", 2},
                                 {v1::DTYPE_BF16, "BF16", 2},
                                 {v1::DTYPE_I64, "I64", 8},
                                 {v1::DTYPE_I32, "I32", 4}};

const DTypeName* FindDType(v1::DType dtype) {
  for (const auto& d : kDTypes) {
    if (d.dtype == dtype) return &d;
  }
  return nullptr;
}

const DTypeName* FindDType(const std::string& name) {
  for (const auto& d : kDTypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

uint64_t ReadLe64(const char* p) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | static_cast<unsigned char>(p[i]);
  return value;
}

void AppendLe64(std::string* out, uint64_t value) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

}  // namespace

std::string Sha256(absl::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &length, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<const char*>(digest), length);
}

absl::Status ChunkSafetensors(absl::string_view safetensors, const v1::WeightsHeader& header_fields,
                              int64_t chunk_bytes, const std::function<absl::Status(v1::WeightsChunk)>& emit) {
  if (chunk_bytes <= 0) return absl::InvalidArgumentError("chunk_size_bytes must be positive");
  if (safetensors.size() < 8) return absl::InvalidArgumentError("weights: safetensors payload is truncated");
  const uint64_t header_length = ReadLe64(safetensors.data());
  if (header_length > safetensors.size() - 8) {
    return absl::InvalidArgumentError("weights: safetensors header length exceeds the payload");
  }
  const absl::string_view data = safetensors.substr(8 + header_length);
  v1::WeightsChunk first;
  v1::WeightsHeader* header = first.mutable_header();
  *header = header_fields;
  header->clear_tensors();
  try {
    const auto json = nlohmann::json::parse(safetensors.substr(8, header_length));
    // Manifest in payload order (by offset), which is also how SerializeSafetensors lays tensors out.
    std::vector<std::pair<uint64_t, std::string>> order;
    for (auto it = json.begin(); it != json.end(); ++it) {
      if (it.key() == "__metadata__") continue;
      order.emplace_back(it.value().at("data_offsets").at(0).get<uint64_t>(), it.key());
    }
    std::sort(order.begin(), order.end());
    for (const auto& [offset, name] : order) {
      const auto& entry = json.at(name);
      const DTypeName* dtype = FindDType(entry.at("dtype").get<std::string>());
      if (dtype == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("weights: tensor ", name, " has dtype ",
                                                       entry.at("dtype").get<std::string>(),
                                                       " which the API cannot carry"));
      }
      v1::TensorSpec* spec = header->add_tensors();
      spec->set_name(name);
      spec->set_dtype(dtype->dtype);
      for (const auto& dim : entry.at("shape")) spec->add_shape(dim.get<int64_t>());
      const uint64_t end = entry.at("data_offsets").at(1).get<uint64_t>();
      spec->set_byte_offset(static_cast<int64_t>(offset));
      spec->set_byte_size(static_cast<int64_t>(end - offset));
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("weights: bad safetensors header: ", util::JsonErrorText(e.what())));
  }
  header->set_total_bytes(static_cast<int64_t>(data.size()));
  header->set_sha256(Sha256(data));
  RETURN_IF_ERROR(emit(std::move(first)));
  for (size_t offset = 0; offset < data.size(); offset += static_cast<size_t>(chunk_bytes)) {
    v1::WeightsChunk chunk;
    chunk.mutable_data()->set_offset(static_cast<int64_t>(offset));
    chunk.mutable_data()->set_data(std::string(data.substr(offset, static_cast<size_t>(chunk_bytes))));
    RETURN_IF_ERROR(emit(std::move(chunk)));
  }
  return absl::OkStatus();
}

absl::Status WeightsAssembler::Add(const v1::WeightsChunk& chunk) {
  const int64_t index = messages_++;
  if (chunk.has_header()) {
    if (has_header_) return absl::InvalidArgumentError(absl::StrCat("chunks[", index, "]: a second header"));
    const v1::WeightsHeader& header = chunk.header();
    if (header.total_bytes() <= 0 || header.total_bytes() > max_total_bytes_) {
      return absl::InvalidArgumentError(absl::StrCat("chunks[0].header.total_bytes=", header.total_bytes(),
                                                     " is outside [1, ", max_total_bytes_, "]"));
    }
    if (header.sha256().size() != 32) {
      return absl::InvalidArgumentError(
          absl::StrCat("chunks[0].header.sha256 has ", header.sha256().size(), " bytes, not 32"));
    }
    if (header.tensors().empty()) return absl::InvalidArgumentError("chunks[0].header.tensors is empty");
    std::set<std::string> names;
    int64_t expected_offset = 0;
    for (int i = 0; i < header.tensors_size(); ++i) {
      const v1::TensorSpec& spec = header.tensors(i);
      const std::string field = absl::StrCat("chunks[0].header.tensors[", i, "]");
      if (spec.name().empty()) return absl::InvalidArgumentError(field + ".name is empty");
      if (!names.insert(spec.name()).second) {
        return absl::InvalidArgumentError(absl::StrCat(field, ".name=", spec.name(), " is repeated"));
      }
      const DTypeName* dtype = FindDType(spec.dtype());
      if (dtype == nullptr) return absl::InvalidArgumentError(field + ".dtype is unspecified or unknown");
      int64_t elements = 1;
      for (int d = 0; d < spec.shape_size(); ++d) {
        if (spec.shape(d) < 0 || (spec.shape(d) > 0 && elements > max_total_bytes_ / spec.shape(d))) {
          return absl::InvalidArgumentError(absl::StrCat(field, ".shape[", d, "]=", spec.shape(d), " is invalid"));
        }
        elements *= spec.shape(d);
      }
      if (spec.byte_size() != elements * dtype->element_bytes) {
        return absl::InvalidArgumentError(absl::StrCat(field, " (", spec.name(), "): byte_size=", spec.byte_size(),
                                                       " does not match its shape and dtype (",
                                                       elements * dtype->element_bytes, ")"));
      }
      if (spec.byte_offset() != expected_offset) {
        return absl::InvalidArgumentError(absl::StrCat(field, " (", spec.name(), "): byte_offset=", spec.byte_offset(),
                                                       ", expected ", expected_offset));
      }
      expected_offset += spec.byte_size();
    }
    if (expected_offset != header.total_bytes()) {
      return absl::InvalidArgumentError(absl::StrCat("chunks[0].header.total_bytes=", header.total_bytes(),
                                                     " differs from the manifest's sum ", expected_offset));
    }
    header_ = header;
    has_header_ = true;
    payload_.reserve(static_cast<size_t>(header.total_bytes()));
    return absl::OkStatus();
  }
  if (!chunk.has_data()) return absl::InvalidArgumentError(absl::StrCat("chunks[", index, "] is empty"));
  if (!has_header_) return absl::InvalidArgumentError("chunks[0] must be the header");
  const v1::WeightsData& data = chunk.data();
  if (data.data().empty()) return absl::InvalidArgumentError(absl::StrCat("chunks[", index, "].data.data is empty"));
  if (data.offset() != received_bytes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunks[", index, "].data.offset=", data.offset(), ", expected ", received_bytes()));
  }
  if (received_bytes() + static_cast<int64_t>(data.data().size()) > header_.total_bytes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunks[", index, "]: more bytes than header.total_bytes=", header_.total_bytes()));
  }
  payload_.append(data.data());
  return absl::OkStatus();
}

absl::StatusOr<std::string> WeightsAssembler::Finish() {
  if (!has_header_) return absl::InvalidArgumentError("the weights stream was empty: no header");
  if (received_bytes() != header_.total_bytes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the weights stream ended after ", received_bytes(), " of ", header_.total_bytes(), " bytes"));
  }
  if (Sha256(payload_) != header_.sha256()) {
    return absl::DataLossError("weights payload does not match header.sha256: corrupted in transfer");
  }
  nlohmann::json json = nlohmann::json::object();
  for (const v1::TensorSpec& spec : header_.tensors()) {
    nlohmann::json entry;
    entry["dtype"] = FindDType(spec.dtype())->name;
    entry["shape"] = std::vector<int64_t>(spec.shape().begin(), spec.shape().end());
    entry["data_offsets"] = {spec.byte_offset(), spec.byte_offset() + spec.byte_size()};
    json[spec.name()] = std::move(entry);
  }
  std::string header = json.dump();
  while (header.size() % 8 != 0) header.push_back(' ');
  std::string file;
  file.reserve(8 + header.size() + payload_.size());
  AppendLe64(&file, header.size());
  file += header;
  file += payload_;
  payload_.clear();
  payload_.shrink_to_fit();
  return file;
}

absl::StatusOr<v1::UpdateWeightsResponse> PushWeights(v1::PolicyGenerationService::StubInterface& stub,
                                                      absl::string_view safetensors,
                                                      const v1::WeightsHeader& header_fields, int64_t chunk_bytes,
                                                      absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  v1::UpdateWeightsResponse response;
  std::unique_ptr<grpc::ClientWriterInterface<v1::WeightsChunk>> writer = stub.UpdateWeights(&context, &response);
  const absl::Status chunked =
      ChunkSafetensors(safetensors, header_fields, chunk_bytes, [&](v1::WeightsChunk chunk) -> absl::Status {
        // A failed write means the server already answered: Finish below reports its status.
        if (!writer->Write(chunk)) return absl::CancelledError("stream closed by the server");
        return absl::OkStatus();
      });
  if (!chunked.ok() && chunked.code() != absl::StatusCode::kCancelled) {
    context.TryCancel();
    (void)writer->Finish();
    return chunked;
  }
  writer->WritesDone();
  const grpc::Status status = writer->Finish();
  if (!status.ok()) return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
  return response;
}

}  // namespace rlhf::serving
