#include "server/formats/onnx_model.h"

#include <algorithm>
#include <climits>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "server/formats/onnx_graph_index.h"
#include "server/formats/onnx_output_heads.h"
#include "server/formats/onnx_sparse.h"
#include "server/formats/onnx_tensor_data.h"
#include "server/storage/allocator_tuning.h"

namespace bonsai::formats {
namespace {

// sparse_initializer exists from IR version 6 (ONNX 1.6) on.
constexpr int64_t kSparseInitializerIrVersion = 6;

uint64_t DenseBytes(const TensorInfo& info, const onnx::TensorProto& proto) {
  const size_t width = tensor::DTypeSize(info.dtype);
  return width > 0 ? info.params * width : proto.raw_data().size();
}

// Drops the initializers in `removed` from `graph`, keeping the others'
// order.
void RemoveInitializers(onnx::GraphProto& graph,
                        const absl::flat_hash_set<const onnx::TensorProto*>& removed) {
  auto* initializers = graph.mutable_initializer();
  int kept = 0;
  for (int i = 0; i < initializers->size(); ++i) {
    if (removed.contains(&initializers->Get(i))) continue;
    if (i != kept) initializers->SwapElements(i, kept);
    ++kept;
  }
  initializers->DeleteSubrange(kept, initializers->size() - kept);
}

}  // namespace

absl::StatusOr<std::unique_ptr<onnx::ModelProto>> ParseOnnxProto(std::string_view bytes) {
  if (bytes.size() > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the ONNX model is ", bytes.size(), " bytes, above protobuf's 2 GiB message limit; "
        "upload the weights as safetensors (safetensors.torch.save_file) instead"));
  }
  google::protobuf::io::ArrayInputStream stream(bytes.data(), static_cast<int>(bytes.size()));
  google::protobuf::io::CodedInputStream coded(&stream);
  coded.SetTotalBytesLimit(INT_MAX);
  auto proto = std::make_unique<onnx::ModelProto>();
  if (!proto->ParseFromCodedStream(&coded) || !coded.ConsumedEntireMessage()) {
    return absl::InvalidArgumentError("the bytes are not a valid ONNX ModelProto");
  }
  if (!proto->has_graph()) {
    return absl::InvalidArgumentError("the ONNX ModelProto has no graph");
  }
  return proto;
}

absl::StatusOr<std::string> SerializeOnnxDeterministic(const onnx::ModelProto& proto) {
  const size_t size = proto.ByteSizeLong();
  if (size > static_cast<size_t>(INT_MAX)) {
    return absl::InvalidArgumentError(
        "the ONNX model would exceed protobuf's 2 GiB message limit; use safetensors");
  }
  std::string out;
  out.reserve(size);
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    proto.SerializeWithCachedSizes(&coded);
    if (coded.HadError()) return absl::InternalError("serializing the ONNX model failed");
  }
  return out;
}

absl::StatusOr<std::unique_ptr<OnnxModel>> OnnxModel::Create(
    std::unique_ptr<onnx::ModelProto> proto) {
  std::unique_ptr<OnnxModel> model(new OnnxModel(std::move(proto)));
  if (auto status = model->Reindex(); !status.ok()) return status;
  return model;
}

absl::Status OnnxModel::Reindex() {
  refs_ = CollectOnnxTensors(*proto_->mutable_graph());
  external_.clear();
  const OnnxGraphIndex graph_index(*proto_->mutable_graph());
  const auto heads = WeightsReachingGraphOutputs(graph_index);
  infos_.clear();
  infos_.reserve(refs_.size());
  for (const OnnxTensorRef& ref : refs_) {
    TensorInfo info;
    info.name = ref.name;
    if (auto status = CheckOnnxTensorStorage(*ref.proto, ref.name, &info.params); !status.ok()) {
      return status;
    }
    info.shape.assign(ref.proto->dims().begin(), ref.proto->dims().end());
    info.dtype = DTypeFromOnnx(ref.proto->data_type());
    info.file = file_name_;
    std::optional<ExternalLocation> where;
    if (ref.proto->data_location() == onnx::TensorProto::EXTERNAL) {
      const size_t width = tensor::DTypeSize(info.dtype);
      auto resolved = ResolveExternalData(*ref.proto, ref.name, file_name_, companions_,
                                          width > 0 ? info.params * width : 0);
      if (!resolved.ok()) return resolved.status();
      where = *resolved;
      info.file = companions_[where->file].name();
    }
    external_.push_back(where);
    ClassifyOnnxTensor(graph_index, info);
    info.output_head = heads.contains(info.name);
    infos_.push_back(std::move(info));
  }
  hints_.assign(infos_.size(), PackingHint{});
  quantized_.assign(infos_.size(), std::nullopt);
  held_.assign(infos_.size(), std::nullopt);
  return absl::OkStatus();
}

absl::Status OnnxModel::Edit(absl::FunctionRef<absl::Status(onnx::ModelProto&)> edit) {
  if (consumed_) return absl::FailedPreconditionError("the model was already serialized");
  if (auto status = edit(*proto_); !status.ok()) return status;
  return Reindex();
}

absl::Status OnnxModel::CheckUsable(size_t index) const {
  if (auto status = CheckTensorAccess(consumed_, index, infos_.size()); !status.ok()) {
    return status;
  }
  if (!tensor::IsFloating(infos_[index].dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor \"", infos_[index].name,
        "\" is not FLOAT, FLOAT16, BFLOAT16 or DOUBLE and cannot be compressed"));
  }
  return absl::OkStatus();
}

absl::Status OnnxModel::ReadInto(size_t index, tensor::FloatTensor& out) const {
  if (auto status = CheckUsable(index); !status.ok()) return status;
  out.shape = infos_[index].shape;
  storage::ResizeForOverwrite(out.values, infos_[index].params);  // checked against the stored data
  if (external_[index]) {
    if (auto status = LoadExternal(index); !status.ok()) return status;
    return tensor::DecodeToFloat(infos_[index].dtype, raw_.data(), out.size(), out.span());
  }
  return ReadOnnxTensor(*refs_[index].proto, out.span());
}

absl::Status OnnxModel::Write(size_t index, const tensor::FloatTensor& values,
                              const PackingHint& packing) {
  if (auto status = CheckUsable(index); !status.ok()) return status;
  if (values.shape != infos_[index].shape || values.size() != infos_[index].params) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Write to tensor \"", infos_[index].name, "\" must keep its shape and element count"));
  }
  hints_[index] = packing;
  if (sink_ != nullptr && options_.packed && packing.packing == Packing::kQuantized) {
    // The codes come from the float values now, before the tensor's dtype
    // could round them; the graph changes at serialization.
    if (!refs_[index].is_initializer || external_[index]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "packed ONNX output of quantized tensor \"", infos_[index].name, "\": it is stored ",
          external_[index] ? "in external data" : "in a Constant node",
          ", and only graph initializers are packed; ask for output dense"));
    }
    auto form = QuantizeOnnxWeight(infos_[index], values.span(), *packing.quant,
                                   DefaultOpset(*proto_));
    if (!form.ok()) return form.status();
    quantized_[index] = *std::move(form);
  }
  if (external_[index]) return WriteExternal(index, values.span());
  return WriteOnnxTensor(*refs_[index].proto, values.span());
}

absl::StatusOr<std::unique_ptr<OnnxModel>> OnnxModel::Open(const InputFile& input,
                                                            std::vector<InputFile> companions) {
  auto bytes = input.ReadAll();
  if (!bytes.ok()) return bytes.status();
  auto proto = ParseOnnxProto(*bytes);
  if (!proto.ok()) return proto.status();
  const uint64_t size = bytes->size();
  std::string().swap(*bytes);  // the proto holds its own copy of every inline tensor
  std::unique_ptr<OnnxModel> model(new OnnxModel(*std::move(proto)));
  model->file_index_ = input.index();
  model->file_name_ = input.name();
  model->resident_ = size;
  model->companions_ = std::move(companions);
  if (auto status = model->Reindex(); !status.ok()) return status;
  return model;
}

absl::Status OnnxModel::LoadExternal(size_t index) const {
  const ExternalLocation& where = *external_[index];
  storage::ResizeForOverwrite(raw_, where.length);
  if (held_[index]) {
    return held_bytes_->ReadAt(held_[index]->offset, absl::MakeSpan(raw_.data(), raw_.size()));
  }
  return companions_[where.file].ReadAt(where.offset, absl::MakeSpan(raw_.data(), raw_.size()));
}

absl::Status OnnxModel::WriteExternal(size_t index, absl::Span<const float> values) {
  if (auto status = LoadExternal(index); !status.ok()) return status;
  if (auto status = tensor::EncodeChangedFromFloat(
          infos_[index].dtype, values, reinterpret_cast<unsigned char*>(raw_.data()));
      !status.ok()) {
    return status;
  }
  if (!held_bytes_) {
    auto file = sink_ != nullptr ? sink_->Scratch(file_name_ + " (external tensors)")
                                 : storage::SpoolFile::CreateInMemory(file_name_);
    if (!file.ok()) return file.status();
    held_bytes_ = *file;
  }
  held_[index] = Held{held_bytes_->size(), raw_.size()};
  return held_bytes_->Append(raw_);
}

// Each data file as uploaded, with the written tensors' new bytes at their
// own offsets: the layout, and so every location in the graph, is unchanged.
absl::Status OnnxModel::WriteDataFiles() {
  std::vector<std::vector<size_t>> by_file(companions_.size());
  for (size_t i = 0; i < external_.size(); ++i) {
    if (external_[i]) by_file[external_[i]->file].push_back(i);
  }
  for (size_t f = 0; f < companions_.size(); ++f) {
    const InputFile& input = companions_[f];
    if (by_file[f].empty()) {
      if (auto s = PassThrough(input, "other", *sink_); !s.ok()) return s;
      continue;
    }
    if (auto s = input.WaitComplete(); !s.ok()) return s;
    std::sort(by_file[f].begin(), by_file[f].end(), [this](size_t a, size_t b) {
      return external_[a]->offset < external_[b]->offset;
    });
    auto writer = sink_->BeginFile(input.index(), "external_data");
    if (!writer.ok()) return writer.status();
    uint64_t emitted = 0;
    for (size_t i : by_file[f]) {
      const ExternalLocation& where = *external_[i];
      if (!held_[i] || where.offset < emitted) continue;  // overlapping tensors: kept as stored
      if (auto s = (*writer)->CopyFrom(input.data(), emitted, where.offset - emitted); !s.ok()) return s;
      if (auto s = (*writer)->CopyFrom(*held_bytes_, held_[i]->offset, held_[i]->length); !s.ok()) {
        return s;
      }
      emitted = where.offset + where.length;
    }
    if (auto s = (*writer)->CopyFrom(input.data(), emitted, input.size() - emitted); !s.ok()) return s;
    if (auto s = sink_->EndFile(); !s.ok()) return s;
  }
  return absl::OkStatus();
}

uint64_t OnnxModel::largest_tensor_bytes() const {
  uint64_t largest = 0;
  for (size_t i = 0; i < infos_.size(); ++i) {
    largest = std::max(largest, external_[i] ? external_[i]->length
                                             : DenseBytes(infos_[i], *refs_[i].proto));
  }
  return largest;
}

absl::Status OnnxModel::StartOutput(const SerializeOptions& options, OutputSink& sink) {
  if (sink_ != nullptr || consumed_) {
    return absl::FailedPreconditionError("output of this model was already started");
  }
  options_ = options;
  sink_ = &sink;
  return absl::OkStatus();
}

// The graph is one protobuf message: it is written whole, after the last
// tensor.
absl::Status OnnxModel::FinishOutput() {
  if (sink_ == nullptr) return absl::FailedPreconditionError("StartOutput was not called");
  if (auto status = WriteDataFiles(); !status.ok()) return status;
  auto bytes = SerializeProto(options_);
  if (!bytes.ok()) return bytes.status();
  auto writer = sink_->BeginFile(file_index_, "model");
  if (!writer.ok()) return writer.status();
  if (auto status = (*writer)->Write(*bytes); !status.ok()) return status;
  return sink_->EndFile();
}

absl::StatusOr<std::string> OnnxModel::SerializeProto(const SerializeOptions& options) {
  if (consumed_) return absl::FailedPreconditionError("the model was already serialized");
  consumed_ = true;
  stored_.clear();
  for (size_t i = 0; i < infos_.size(); ++i) {
    const uint64_t dense = DenseBytes(infos_[i], *refs_[i].proto);
    stored_.push_back({dense, dense});
  }
  if (options.packed) {
    // Both unstructured and N:M zeros are stored as sparse initializers;
    // binary and ternary weights have no zeros to gain from.
    absl::flat_hash_map<onnx::GraphProto*, absl::flat_hash_set<const onnx::TensorProto*>> removed;
    for (size_t i = 0; i < refs_.size(); ++i) {
      const Packing packing = hints_[i].packing;
      // External tensors stay dense where they are: the data files keep
      // their layout.
      if (quantized_[i]) {
        if (auto s = ApplyOnnxQuantizedForm(*proto_, *refs_[i].graph, refs_[i].name, *quantized_[i]);
            !s.ok()) {
          return s;
        }
        stored_[i].stored_bytes = quantized_[i]->stored_bytes;
        removed[refs_[i].graph].insert(refs_[i].proto);
        quantized_[i].reset();
        continue;
      }
      if (!refs_[i].is_initializer || external_[i] || !tensor::IsFloating(infos_[i].dtype) ||
          (packing != Packing::kSparseBitmask && packing != Packing::kNM)) {
        continue;
      }
      auto sparse = SparsifyOnnxTensor(*refs_[i].proto, infos_[i].params);
      if (!sparse) continue;
      stored_[i].stored_bytes = sparse->values().raw_data().size() + sparse->indices().raw_data().size();
      *refs_[i].graph->add_sparse_initializer() = *std::move(sparse);
      removed[refs_[i].graph].insert(refs_[i].proto);
    }
    for (auto& [graph, tensors] : removed) RemoveInitializers(*graph, tensors);
    if (!removed.empty() && proto_->ir_version() < kSparseInitializerIrVersion) {
      proto_->set_ir_version(kSparseInitializerIrVersion);
    }
    refs_.clear();  // pointers into removed initializers are gone
  }
  auto out = SerializeOnnxDeterministic(*proto_);
  proto_.reset();  // the proto is the model's only copy of the weights
  return out;
}


}  // namespace bonsai::formats
