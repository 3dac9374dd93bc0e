// Credentials of the gRPC port: plaintext, TLS, or mutual TLS, from PEM files
// named by the server's flags. The files are read and checked here, at start,
// so a wrong path or a key that is not the certificate's is one line naming
// the flag, rather than a listener that fails to bind for no stated reason or
// a handshake error in every client.
#ifndef BONSAI_SERVER_API_SERVER_CREDENTIALS_H_
#define BONSAI_SERVER_API_SERVER_CREDENTIALS_H_

#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace bonsai::api {

struct TlsFiles {
  std::string cert_file;       // --tls_cert_file: the server's certificate chain
  std::string key_file;        // --tls_key_file: its private key
  std::string client_ca_file;  // --tls_client_ca_file: CA that signs client certificates
};

enum class TlsMode { kOff, kOn, kMutual };

// "off", "on" or "mutual", as the ready line prints it.
std::string_view TlsModeName(TlsMode mode);

struct PortCredentials {
  std::shared_ptr<grpc::ServerCredentials> credentials;
  TlsMode mode = TlsMode::kOff;
};

// No files: plaintext. A certificate and its key: TLS. Plus a client CA:
// mutual TLS, where a client without a valid certificate signed by that CA
// is refused during the handshake. Errors are INVALID_ARGUMENT naming the flag.
absl::StatusOr<PortCredentials> BuildPortCredentials(const TlsFiles& files);

}  // namespace bonsai::api

#endif  // BONSAI_SERVER_API_SERVER_CREDENTIALS_H_
