// Certificates for TLS tests, made on the fly with OpenSSL (EC P-256 keys, SHA-256 signatures, valid for a day):
// a CA, a server certificate it signs for localhost and 127.0.0.1, and client certificates naming their subject.
#ifndef RLHF_TESTS_TESTING_TEST_CERTS_H_
#define RLHF_TESTS_TESTING_TEST_CERTS_H_

#include <string>

#include "absl/status/statusor.h"

namespace rlhf::testing {

// A PEM certificate and its PEM private key.
struct PemCertificate {
  std::string cert;
  std::string key;
};

// A self-signed CA whose subject common name is `common_name`.
absl::StatusOr<PemCertificate> MakeCertificateAuthority(const std::string& common_name);

// A certificate signed by `ca` with subject CN `common_name`. `server` adds the subject alternative names
// DNS:localhost and IP:127.0.0.1 (so clients can verify a loopback server) and the serverAuth usage; otherwise it is a
// client certificate (clientAuth).
absl::StatusOr<PemCertificate> MakeSignedCertificate(const PemCertificate& ca, const std::string& common_name,
                                                     bool server);

// A new PEM private key that belongs to no certificate.
absl::StatusOr<std::string> MakePrivateKey();

}  // namespace rlhf::testing

#endif  // RLHF_TESTS_TESTING_TEST_CERTS_H_
