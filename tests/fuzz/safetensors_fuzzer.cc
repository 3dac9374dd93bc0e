// Hostile safetensors uploads: the header parser, then everything a job does
// with the tensors it describes (tests/fuzz/model_roundtrip.h).
#include <cstddef>
#include <cstdint>
#include <string>

#include "server/formats/in_memory.h"
#include "tests/fuzz/model_roundtrip.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  // The header parser, then the model read from an in-memory spool file as
  // a job reads it from the upload.
  auto model = bonsai::formats::ParseSafetensors(bytes);
  if (!model.ok()) return 0;
  // The input's own size picks the variant, so every input replays alike.
  bonsai::fuzz::RoundTrip(**model, /*identity=*/size % 3 == 0, static_cast<unsigned>(size),
                          /*packed=*/size % 2 == 0, &bytes);
  return 0;
}
