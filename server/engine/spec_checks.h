// Checks of a recipe that need no model: that each method is given what it
// needs and nothing it would ignore. A request the server would otherwise
// run differently from what its author meant is refused with the reason.
#ifndef BONSAI_SERVER_ENGINE_SPEC_CHECKS_H_
#define BONSAI_SERVER_ENGINE_SPEC_CHECKS_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "bonsai/v1/compressor.pb.h"
#include "server/methods/method_config.h"

namespace bonsai::engine {

// Every option set in `options` is one `method` reads, per the registry's
// parameter list (the one GetCapabilities publishes). `where` prefixes the
// message ("" or "rule 'attn': ").
absl::Status CheckOptionsAreRead(const std::string& method, const v1::MethodOptions& options,
                                 absl::string_view where);

// A rule whose method prunes by a sparsity (magnitude, structured; wanda and
// sparsegpt without n:m or bits) but gives none would change nothing.
absl::Status CheckRuleHasSparsity(const methods::MethodConfig& config, absl::string_view where);

}  // namespace bonsai::engine

#endif  // BONSAI_SERVER_ENGINE_SPEC_CHECKS_H_
