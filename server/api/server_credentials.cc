#include "server/api/server_credentials.h"

#include <grpcpp/security/server_credentials.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/observability/log.h"

namespace bonsai::api {
namespace {

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* cert) const { X509_free(cert); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;

absl::StatusOr<std::string> ReadPemFile(const char* flag, const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": cannot read ", path, ": ", std::strerror(errno)));
  }
  std::string text;
  char buffer[8192];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof buffer, file)) > 0) text.append(buffer, n);
  const bool failed = std::ferror(file) != 0;
  std::fclose(file);
  if (failed) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": cannot read ", path));
  }
  return text;
}

std::unique_ptr<BIO, BioFree> MemoryBio(const std::string& text) {
  return std::unique_ptr<BIO, BioFree>(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

// The first certificate of a PEM file (a chain starts with the leaf).
absl::StatusOr<X509Ptr> FirstCertificate(const char* flag, const std::string& path,
                                         const std::string& pem) {
  auto bio = MemoryBio(pem);
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (cert == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": ", path, " holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
  }
  return cert;
}

// gRPC would take a mismatched or garbled pair and fail later, at BuildAndStart
// or in every handshake, without saying which file is wrong.
absl::Status CheckKeyPair(const TlsFiles& files, const std::string& cert_pem,
                          const std::string& key_pem) {
  auto cert = FirstCertificate("tls_cert_file", files.cert_file, cert_pem);
  if (!cert.ok()) return cert.status();
  auto bio = MemoryBio(key_pem);
  std::unique_ptr<EVP_PKEY, PkeyFree> key(
      PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls_key_file: ", files.key_file, " holds no unencrypted PEM private key"));
  }
  if (X509_check_private_key(cert->get(), key.get()) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("--tls_key_file: ", files.key_file,
                                                   " is not the private key of the certificate in "
                                                   "--tls_cert_file (",
                                                   files.cert_file, ")"));
  }
  // Not an error: the file may be renewed before a restart picks it up, and
  // the clients will say why they refuse. But it is the first thing to check.
  if (X509_cmp_current_time(X509_get0_notAfter(cert->get())) < 0) {
    observability::LogWarning(absl::StrCat("the certificate in --tls_cert_file (", files.cert_file,
                                           ") has expired; clients will refuse it"));
  }
  return absl::OkStatus();
}

}  // namespace

std::string_view TlsModeName(TlsMode mode) {
  switch (mode) {
    case TlsMode::kOff:
      return "off";
    case TlsMode::kOn:
      return "on";
    case TlsMode::kMutual:
      return "mutual";
  }
  return "off";
}

absl::StatusOr<PortCredentials> BuildPortCredentials(const TlsFiles& files) {
  const bool has_cert = !files.cert_file.empty();
  const bool has_key = !files.key_file.empty();
  const bool has_client_ca = !files.client_ca_file.empty();
  if (!has_cert && !has_key && !has_client_ca) {
    return PortCredentials{grpc::InsecureServerCredentials(), TlsMode::kOff};
  }
  if (has_cert != has_key) {
    return absl::InvalidArgumentError(
        has_cert ? "--tls_cert_file is set but --tls_key_file is not: TLS needs the "
                   "certificate's private key as well"
                 : "--tls_key_file is set but --tls_cert_file is not: TLS needs the "
                   "certificate as well as its private key");
  }
  if (!has_cert) {
    return absl::InvalidArgumentError(
        "--tls_client_ca_file needs --tls_cert_file and --tls_key_file: the server must present "
        "its own certificate before it can ask clients for theirs");
  }

  auto cert_pem = ReadPemFile("tls_cert_file", files.cert_file);
  if (!cert_pem.ok()) return cert_pem.status();
  auto key_pem = ReadPemFile("tls_key_file", files.key_file);
  if (!key_pem.ok()) return key_pem.status();
  if (auto status = CheckKeyPair(files, *cert_pem, *key_pem); !status.ok()) return status;

  grpc::SslServerCredentialsOptions options(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  options.pem_key_cert_pairs.push_back({*key_pem, *cert_pem});
  TlsMode mode = TlsMode::kOn;
  if (has_client_ca) {
    auto ca_pem = ReadPemFile("tls_client_ca_file", files.client_ca_file);
    if (!ca_pem.ok()) return ca_pem.status();
    if (auto ca = FirstCertificate("tls_client_ca_file", files.client_ca_file, *ca_pem); !ca.ok()) {
      return ca.status();
    }
    options.pem_root_certs = *ca_pem;
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    mode = TlsMode::kMutual;
  }
  return PortCredentials{grpc::SslServerCredentials(options), mode};
}

}  // namespace bonsai::api
