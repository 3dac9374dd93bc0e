// The gRPC port's TLS set-up: which flag combinations give plaintext, TLS or
// mutual TLS, and that every mistake is refused with a message naming the flag.
#include "server/api/server_credentials.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <string>

namespace bonsai::api {
namespace {

using ::testing::HasSubstr;

// A fresh EC key and a self-signed certificate for it, as PEM files.
struct KeyPairFiles {
  std::string cert;
  std::string key;
};

// Named after the process and the test: ctest runs tests of this binary in
// parallel processes, and a shared name let one overwrite another's key.
std::string WriteFile(const std::string& name, const std::string& text) {
  const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string path = ::testing::TempDir() + "/server_credentials_" + std::to_string(getpid()) +
                           "_" + (test ? test->name() : "none") + "_" + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

KeyPairFiles MakeSelfSigned(const std::string& name) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), -60);
  X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* subject = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert, subject);
  X509_sign(cert, key, EVP_sha256());

  auto pem = [](auto write) {
    BIO* bio = BIO_new(BIO_s_mem());
    write(bio);
    char* data = nullptr;
    const long size = BIO_get_mem_data(bio, &data);
    std::string text(data, size);
    BIO_free(bio);
    return text;
  };
  KeyPairFiles files;
  files.cert = WriteFile(name + ".crt", pem([&](BIO* b) { PEM_write_bio_X509(b, cert); }));
  files.key = WriteFile(name + ".key", pem([&](BIO* b) {
    PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr);
  }));
  X509_free(cert);
  EVP_PKEY_free(key);
  return files;
}

std::string ErrorOf(const TlsFiles& files) {
  auto result = BuildPortCredentials(files);
  EXPECT_FALSE(result.ok());
  if (result.ok()) return "";
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(result.status().message());
}

TEST(ServerCredentials, NoFilesIsPlaintext) {
  auto result = BuildPortCredentials({});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->mode, TlsMode::kOff);
  EXPECT_NE(result->credentials, nullptr);
  EXPECT_EQ(TlsModeName(result->mode), "off");
}

TEST(ServerCredentials, CertificateAndKeyAreTls) {
  const KeyPairFiles server = MakeSelfSigned("server");
  auto result = BuildPortCredentials({server.cert, server.key, ""});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->mode, TlsMode::kOn);
  EXPECT_EQ(TlsModeName(result->mode), "on");
}

TEST(ServerCredentials, ClientCaMakesItMutual) {
  const KeyPairFiles server = MakeSelfSigned("server");
  const KeyPairFiles ca = MakeSelfSigned("client-ca");
  auto result = BuildPortCredentials({server.cert, server.key, ca.cert});
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->mode, TlsMode::kMutual);
  EXPECT_EQ(TlsModeName(result->mode), "mutual");
}

TEST(ServerCredentials, CertificateWithoutKeyNamesTheMissingFlag) {
  const KeyPairFiles server = MakeSelfSigned("server");
  EXPECT_THAT(ErrorOf({server.cert, "", ""}),
              HasSubstr("--tls_cert_file is set but --tls_key_file is not"));
}

TEST(ServerCredentials, KeyWithoutCertificateNamesTheMissingFlag) {
  const KeyPairFiles server = MakeSelfSigned("server");
  EXPECT_THAT(ErrorOf({"", server.key, ""}),
              HasSubstr("--tls_key_file is set but --tls_cert_file is not"));
}

TEST(ServerCredentials, ClientCaAloneIsRefused) {
  const KeyPairFiles ca = MakeSelfSigned("client-ca");
  EXPECT_THAT(ErrorOf({"", "", ca.cert}),
              HasSubstr("--tls_client_ca_file needs --tls_cert_file and --tls_key_file"));
}

TEST(ServerCredentials, UnreadableFileNamesTheFlagAndPath) {
  const KeyPairFiles server = MakeSelfSigned("server");
  const std::string missing = ::testing::TempDir() + "/no-such-file.pem";
  EXPECT_THAT(ErrorOf({missing, server.key, ""}),
              HasSubstr("--tls_cert_file: cannot read " + missing));
  EXPECT_THAT(ErrorOf({server.cert, missing, ""}),
              HasSubstr("--tls_key_file: cannot read " + missing));
  EXPECT_THAT(ErrorOf({server.cert, server.key, missing}),
              HasSubstr("--tls_client_ca_file: cannot read " + missing));
}

TEST(ServerCredentials, FileWithoutPemIsRefusedNamingTheFlag) {
  const KeyPairFiles server = MakeSelfSigned("server");
  const std::string garbage = WriteFile("garbage.pem", "not a certificate\n");
  EXPECT_THAT(ErrorOf({garbage, server.key, ""}),
              HasSubstr("--tls_cert_file: " + garbage + " holds no PEM certificate"));
  EXPECT_THAT(ErrorOf({server.cert, garbage, ""}),
              HasSubstr("--tls_key_file: " + garbage + " holds no unencrypted PEM private key"));
  EXPECT_THAT(ErrorOf({server.cert, server.key, garbage}),
              HasSubstr("--tls_client_ca_file: " + garbage + " holds no PEM certificate"));
}

TEST(ServerCredentials, KeyOfAnotherCertificateIsRefused) {
  const KeyPairFiles server = MakeSelfSigned("server");
  const KeyPairFiles other = MakeSelfSigned("other");
  EXPECT_THAT(ErrorOf({server.cert, other.key, ""}),
              HasSubstr("is not the private key of the certificate in --tls_cert_file"));
}

}  // namespace
}  // namespace bonsai::api
