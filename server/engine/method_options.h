// What a spec or a recipe rule asks of its method, before any model byte:
// the API's per-method option messages (MethodOptions holds the chosen
// method's, named after it) checked against the method named, read into a
// MethodConfig (which knows no protobuf), and checked to give what the
// method needs. A request the server would otherwise run differently from
// what its author meant is refused with the reason.
#ifndef BONSAI_SERVER_ENGINE_METHOD_OPTIONS_H_
#define BONSAI_SERVER_ENGINE_METHOD_OPTIONS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "bonsai/v1/compressor.pb.h"
#include "server/methods/method_config.h"

namespace bonsai::engine {

// INVALID_ARGUMENT when `options` holds another method's message (e.g.
// options.structured with method "magnitude"), naming both and where the
// method's own options go; or when it carries fields this server does not
// know (an older client's flat options, or a newer client's), which would
// otherwise be dropped unread. An unknown method is left to the method
// check, which names the methods there are. `where` prefixes the message
// ("" or "rule 'attn': ").
absl::Status CheckOptionsBelongToMethod(const std::string& method, const v1::MethodOptions& options,
                                        absl::string_view where);

// What the request asks of `method`: only its own options message is read;
// another method's is CheckOptionsBelongToMethod's to refuse.
methods::MethodConfig ToMethodConfig(const std::string& method, double sparsity, v1::Scope scope,
                                     const v1::MethodOptions& options);

// A rule whose method prunes by a sparsity (magnitude, structured; wanda and
// sparsegpt without n:m or bits) but gives none would change nothing.
absl::Status CheckRuleHasSparsity(const methods::MethodConfig& config, absl::string_view where);

}  // namespace bonsai::engine

#endif  // BONSAI_SERVER_ENGINE_METHOD_OPTIONS_H_
