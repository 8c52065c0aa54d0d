#include "tests/testing/test_certs.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

#include "absl/strings/str_cat.h"

namespace rlhf::testing {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;
using Cert = std::unique_ptr<X509, X509Free>;

Key NewKey() { return Key(EVP_EC_gen("P-256")); }

std::string ReadBio(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(n));
}

absl::StatusOr<std::string> KeyPem(EVP_PKEY* key) {
  std::unique_ptr<BIO, BioFree> bio(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr)) {
    return absl::InternalError("PEM_write_bio_PrivateKey failed");
  }
  return ReadBio(bio.get());
}

absl::StatusOr<std::string> CertPem(X509* cert) {
  std::unique_ptr<BIO, BioFree> bio(BIO_new(BIO_s_mem()));
  if (!PEM_write_bio_X509(bio.get(), cert)) return absl::InternalError("PEM_write_bio_X509 failed");
  return ReadBio(bio.get());
}

bool AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) return false;
  const bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

// An unsigned certificate for `key` with subject CN `common_name`, issued by `issuer` (null: self-issued).
absl::StatusOr<Cert> NewCert(EVP_PKEY* key, const std::string& common_name, X509* issuer, long serial) {
  Cert cert(X509_new());
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), serial);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 24 * 3600);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(common_name.c_str()),
                             -1, -1, 0);
  X509_set_issuer_name(cert.get(), issuer != nullptr ? X509_get_subject_name(issuer) : name);
  return cert;
}

absl::Status Sign(X509* cert, EVP_PKEY* signing_key) {
  if (X509_sign(cert, signing_key, EVP_sha256()) == 0) return absl::InternalError("X509_sign failed");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PemCertificate> MakeCertificateAuthority(const std::string& common_name) {
  Key key = NewKey();
  if (!key) return absl::InternalError("EC key generation failed");
  auto cert = NewCert(key.get(), common_name, nullptr, 1);
  if (!cert.ok()) return cert.status();
  X509* x = cert->get();
  if (!AddExtension(x, x, NID_basic_constraints, "critical,CA:TRUE") ||
      !AddExtension(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") ||
      !AddExtension(x, x, NID_subject_key_identifier, "hash")) {
    return absl::InternalError("cannot add the CA extensions");
  }
  if (absl::Status s = Sign(x, key.get()); !s.ok()) return s;
  PemCertificate out;
  auto cert_pem = CertPem(x);
  auto key_pem = KeyPem(key.get());
  if (!cert_pem.ok()) return cert_pem.status();
  if (!key_pem.ok()) return key_pem.status();
  out.cert = *std::move(cert_pem);
  out.key = *std::move(key_pem);
  return out;
}

absl::StatusOr<PemCertificate> MakeSignedCertificate(const PemCertificate& ca, const std::string& common_name,
                                                     bool server) {
  std::unique_ptr<BIO, BioFree> ca_cert_bio(BIO_new_mem_buf(ca.cert.data(), static_cast<int>(ca.cert.size())));
  std::unique_ptr<BIO, BioFree> ca_key_bio(BIO_new_mem_buf(ca.key.data(), static_cast<int>(ca.key.size())));
  Cert ca_cert(PEM_read_bio_X509(ca_cert_bio.get(), nullptr, nullptr, nullptr));
  Key ca_key(PEM_read_bio_PrivateKey(ca_key_bio.get(), nullptr, nullptr, nullptr));
  if (!ca_cert || !ca_key) return absl::InvalidArgumentError("the CA's PEM does not parse");
  Key key = NewKey();
  if (!key) return absl::InternalError("EC key generation failed");
  static long serial = 100;
  auto cert = NewCert(key.get(), common_name, ca_cert.get(), ++serial);
  if (!cert.ok()) return cert.status();
  X509* x = cert->get();
  bool ok = AddExtension(x, ca_cert.get(), NID_basic_constraints, "critical,CA:FALSE") &&
            AddExtension(x, ca_cert.get(), NID_key_usage, "critical,digitalSignature,keyEncipherment") &&
            AddExtension(x, ca_cert.get(), NID_ext_key_usage, server ? "serverAuth" : "clientAuth");
  if (server) ok = ok && AddExtension(x, ca_cert.get(), NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1");
  if (!ok) return absl::InternalError(absl::StrCat("cannot add the extensions of ", common_name));
  if (absl::Status s = Sign(x, ca_key.get()); !s.ok()) return s;
  PemCertificate out;
  auto cert_pem = CertPem(x);
  auto key_pem = KeyPem(key.get());
  if (!cert_pem.ok()) return cert_pem.status();
  if (!key_pem.ok()) return key_pem.status();
  out.cert = *std::move(cert_pem);
  out.key = *std::move(key_pem);
  return out;
}

absl::StatusOr<std::string> MakePrivateKey() {
  Key key = NewKey();
  if (!key) return absl::InternalError("EC key generation failed");
  return KeyPem(key.get());
}

}  // namespace rlhf::testing
