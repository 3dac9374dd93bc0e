// A model spread over several files, as large models really come:
//   - a Hugging Face folder: *.safetensors shards, model.safetensors.index.json
//     (checked against the shards, rewritten when packing renames tensors),
//     and files bonsai does not read (config.json, tokenizer files, README),
//     which come back byte for byte;
//   - an .onnx file with the external data files its tensors name.
// The set is one Model: its tensors are every file's tensors (shards in name
// order, each in data order), so a global threshold spans them all, and its
// output streams file by file as each shard's last tensor is written.
#ifndef BONSAI_SERVER_FORMATS_MODEL_SET_H_
#define BONSAI_SERVER_FORMATS_MODEL_SET_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "server/formats/model.h"
#include "server/formats/model_files.h"

namespace bonsai::formats {

// Opens the job's files as one model. A single file is detected by content;
// several are told apart by their names (*.safetensors, *.index.json,
// *.onnx). InvalidArgument naming the file and the fix for a set that is
// not a model (no model file, ONNX and safetensors mixed, a shard the index
// names missing, a tensor in another shard than the index says).
absl::StatusOr<std::unique_ptr<Model>> OpenModelFiles(std::vector<InputFile> files);

// True when `name` is a path bonsai accepts for a file of a job: relative,
// '/'-separated, no "..", "." or empty components, no NUL.
bool IsSafeRelativePath(std::string_view name);

}  // namespace bonsai::formats

#endif  // BONSAI_SERVER_FORMATS_MODEL_SET_H_
