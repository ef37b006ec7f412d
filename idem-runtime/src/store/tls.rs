//! TLS to the Redis and PostgreSQL servers (feature `tls`): what a builder was told to trust
//! and to present, the rustls client configuration made of it, and a refused certificate
//! explained in words a user acts on.
//!
//! The settings exist in every build, so that a program reads the same with or without the
//! feature; asking for TLS in a build without it is an error that names the feature
//! ([`without_feature`]).
//!
//! Trust: the platform's roots (`rustls-native-certs`, the store OpenSSL-based clients such
//! as libpq and redis-cli read), or, when a CA is given, that CA alone (as libpq's
//! `sslrootcert` and redis-cli's `--cacert` do): a private CA is then not mixed with every
//! public one.

// Without the feature, or without a store that connects over the network, the settings are
// kept but not read.
#![cfg_attr(
    not(all(feature = "tls", any(feature = "redis", feature = "postgres"))),
    allow(dead_code)
)]

use std::fmt;

use crate::Error;

/// What a builder was told about TLS: the CA certificates to trust instead of the platform's,
/// and a client certificate to present (mutual TLS). PEM bytes, checked when connecting.
#[derive(Clone, Default)]
pub(crate) struct TlsSettings {
    /// One or more `-----BEGIN CERTIFICATE-----` blocks.
    pub(crate) root_certificates: Option<Vec<u8>>,
    pub(crate) client: Option<ClientIdentity>,
}

/// A client certificate (with the chain up to its CA, if any) and its private key, PEM.
#[derive(Clone)]
pub(crate) struct ClientIdentity {
    pub(crate) certificate_chain: Vec<u8>,
    pub(crate) key: Vec<u8>,
}

impl ClientIdentity {
    /// A client certificate (with its chain) and its private key, both PEM, as the builders'
    /// `tls_client_certificate` take them.
    pub(crate) fn new(certificate_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        ClientIdentity {
            certificate_chain: certificate_pem.into(),
            key: key_pem.into(),
        }
    }
}

// Never the key's bytes: a builder's `Debug` ends up in logs.
impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("root_certificates", &self.root_certificates.is_some())
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

impl TlsSettings {
    /// Whether anything was given: then the connection must be TLS.
    pub(crate) fn is_set(&self) -> bool {
        self.root_certificates.is_some() || self.client.is_some()
    }
}

/// The error for a connection that asks for TLS (`what`: `rediss://`, `sslmode=require`, a
/// CA given to the builder) in a build without the `tls` feature.
#[cfg_attr(feature = "tls", allow(dead_code))]
pub(crate) fn without_feature(store: &'static str, what: &str) -> Error {
    Error::store(
        store,
        None,
        format!(
            "{what} asks for TLS, and idem was built without its `tls` feature: enable it \
             (`features = [\"{store}\", \"tls\"]` on the `idem` or `idem-runtime` dependency)"
        ),
    )
}

/// The rustls configuration of a client that trusts what `settings` say (the platform's
/// roots when no CA is given) and presents its client certificate, if any. `store` and
/// `give_ca` (how a user gives a CA to this store) go into the errors.
#[cfg(all(feature = "tls", feature = "postgres"))]
pub(crate) fn client_config(
    settings: &TlsSettings,
    store: &'static str,
    give_ca: &str,
) -> Result<rustls::ClientConfig, Error> {
    use std::sync::Arc;

    let refused = |why: String| Error::store(store, None, why);
    let mut roots = rustls::RootCertStore::empty();
    match &settings.root_certificates {
        Some(pem) => {
            for certificate in certificates(pem).map_err(|e| {
                refused(format!(
                    "the CA certificate given is not a PEM certificate: {e}"
                ))
            })? {
                roots.add(certificate).map_err(|e| {
                    refused(format!("the CA certificate given cannot be trusted: {e}"))
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
                return Err(refused(format!(
                    "this machine has no trusted root certificates to check the server's \
                     certificate with ({}); {give_ca}",
                    if errors.is_empty() {
                        "none found".to_owned()
                    } else {
                        errors.join("; ")
                    }
                )));
            }
        }
    }
    // The ring provider named here, not the process's default: a program whose other
    // dependencies compile rustls's aws-lc-rs too has no default unless it installs one.
    let provider = Arc::new(ring_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| refused(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    match &settings.client {
        None => Ok(builder.with_no_client_auth()),
        Some(identity) => {
            use rustls::pki_types::pem::PemObject;
            let chain = certificates(&identity.certificate_chain).map_err(|e| {
                refused(format!(
                    "the client certificate is not a PEM certificate: {e}"
                ))
            })?;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&identity.key)
                .map_err(|e| refused(format!("the client key is not a PEM private key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| refused(format!("the client certificate cannot be used: {e}")))
        }
    }
}

/// rustls's provider on `ring` (see the workspace's Cargo.toml for why ring).
///
/// rustls 0.23.48 deprecated it because ring has no post-quantum key exchange
/// (X25519MLKEM768): the connections use classical X25519 or P-256 key exchange, as the
/// OpenSSL of most Redis and PostgreSQL servers offers anyway. The deprecation is a warning
/// about that, not a removal; the provider is supported throughout rustls 0.23.
#[cfg(feature = "tls")]
#[allow(deprecated)]
pub(crate) fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The certificates in `pem`; at least one.
#[cfg(all(feature = "tls", feature = "postgres"))]
fn certificates(pem: &[u8]) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let found = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if found.is_empty() {
        return Err("no -----BEGIN CERTIFICATE----- block".to_owned());
    }
    Ok(found)
}

/// What a TLS failure somewhere in `error`'s causes means to a user, when it is about
/// certificates: the server's refused (not signed by a trusted CA, for another name,
/// expired), or the client's missing or refused. `give_ca` says how to give this store a CA.
///
/// The failure is found as rustls's error among the causes, or, where a client kept only
/// its text (the `redis` crate's cluster client says "Failed to create initial connections"
/// with its nodes' errors as words), as the words rustls writes for it: the refusals of
/// [`REFUSALS`] by name, any other refused certificate by rustls's words for one (whose
/// details, such as the names a certificate holds, are then in the text shown).
#[cfg(feature = "tls")]
pub(crate) fn explained(
    error: &(dyn std::error::Error + 'static),
    give_ca: &str,
) -> Option<String> {
    if let Some(tls) = tls_error(error) {
        return said(tls, &tls.to_string(), give_ca);
    }
    let text = error.to_string();
    let known = REFUSALS
        .iter()
        .find(|refusal| names(&text, &refusal.to_string()));
    // rustls's words for a refused certificate, before its reason: "invalid peer certificate".
    let refused = OTHER_CERTIFICATE.to_string();
    let (refused, _) = refused.split_once(':')?;
    let tls = known.or_else(|| text.contains(refused).then_some(&OTHER_CERTIFICATE))?;
    said(tls, &text, give_ca)
}

/// Whether `text` has `words`, not as the start of longer words (an alert `BadCertificate`
/// is not `BadCertificateStatusResponse`).
#[cfg(feature = "tls")]
fn names(text: &str, words: &str) -> bool {
    text.match_indices(words).any(|(at, _)| {
        !text[at + words.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
    })
}

/// The refusals [`explained`] knows by name in an error that kept only its text: those
/// whose words are the same each time (rustls writes a certificate for another name, or
/// expired, with its details).
#[cfg(feature = "tls")]
const REFUSALS: [rustls::Error; 8] = {
    use rustls::{AlertDescription as Alert, CertificateError as Certificate, Error};
    [
        Error::InvalidCertificate(Certificate::UnknownIssuer),
        Error::InvalidCertificate(Certificate::BadSignature),
        Error::AlertReceived(Alert::CertificateRequired),
        Error::AlertReceived(Alert::HandshakeFailure),
        Error::AlertReceived(Alert::BadCertificate),
        Error::AlertReceived(Alert::UnknownCA),
        Error::AlertReceived(Alert::UnsupportedCertificate),
        Error::AlertReceived(Alert::CertificateUnknown),
    ]
};

/// A certificate refused for a reason [`REFUSALS`] does not name, as [`said`] words it.
#[cfg(feature = "tls")]
const OTHER_CERTIFICATE: rustls::Error =
    rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding);

/// What `tls` means to a user, `shown` being the failure as it was given.
#[cfg(feature = "tls")]
fn said(tls: &rustls::Error, shown: &str, give_ca: &str) -> Option<String> {
    use rustls::{AlertDescription, CertificateError};

    let words = match tls {
        rustls::Error::InvalidCertificate(why) => match why {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                "the server's TLS certificate is not trusted: no trusted CA signed it \
                 ({shown}); {give_ca}"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "the server's TLS certificate is not for the host name connected to \
                     ({shown}); connect with a name the certificate holds"
                )
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("the server's TLS certificate has expired ({shown})")
            }
            _ => format!("the server's TLS certificate was refused ({shown})"),
        },
        rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure,
        ) => format!(
            "the server refused the TLS connection ({shown}): it may require a client \
             certificate, or one it trusts"
        ),
        rustls::Error::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateUnknown,
        ) => format!("the server refused the client certificate ({shown})"),
        _ => return None,
    };
    Some(words)
}

/// The rustls error among `error` and its causes. (An `io::Error` wrapping one hides it from
/// `source()`: its inner error is looked at too.)
#[cfg(feature = "tls")]
fn tls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(tls) = tls_error(inner) {
                return Some(tls);
            }
        }
        cause = error.source();
    }
    None
}

/// Reads a PEM file named by a URL parameter (`param`), for `store`.
pub(crate) fn read_pem_file(
    store: &'static str,
    param: &str,
    path: &str,
) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| {
        Error::store(
            store,
            None,
            format!("cannot read the file {path:?} that {param}= names: {e}"),
        )
    })
}

#[cfg(all(test, feature = "tls", feature = "postgres"))]
mod tests {
    use super::*;

    #[cfg(feature = "tls")]
    #[test]
    fn a_refusal_kept_only_as_text_is_explained_as_the_typed_one_is() {
        let give_ca = "give the CA";
        let typed = std::io::Error::other(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        // The `redis` crate's cluster client: its nodes' errors as words.
        let text = std::io::Error::other(
            "Failed to create initial connections - IoError: invalid peer certificate: \
             UnknownIssuer",
        );
        for error in [typed, text] {
            let said = explained(&error, give_ca).expect("explained");
            assert!(
                said.starts_with("the server's TLS certificate is not trusted")
                    && said.ends_with(give_ca),
                "{said}"
            );
        }
        let other = std::io::Error::other("connection refused");
        assert_eq!(explained(&other, give_ca), None);
        // Another alert whose name starts with a known one's is not taken for it.
        let status = std::io::Error::other(format!(
            "Failed to create initial connections - IoError: {}",
            rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificateStatusResponse)
        ));
        assert_eq!(explained(&status, give_ca), None);
        // A certificate refused with details rustls writes itself (here, for another name).
        let named = std::io::Error::other(
            "Failed to create initial connections - IoError: invalid peer certificate: \
             certificate not valid for name \"db.internal\"; certificate is only valid for \
             DnsName(\"localhost\")",
        );
        let said = explained(&named, give_ca).expect("explained");
        assert!(
            said.starts_with("the server's TLS certificate was refused")
                && said.contains("db.internal"),
            "{said}"
        );
    }

    #[test]
    fn a_ca_that_is_not_pem_is_an_error_that_says_so() {
        let settings = TlsSettings {
            root_certificates: Some(b"not a certificate".to_vec()),
            client: None,
        };
        let error = client_config(&settings, "redis", "give a CA").unwrap_err();
        assert!(
            error.to_string().contains("not a PEM certificate"),
            "{error}"
        );
    }

    #[test]
    fn the_debug_of_the_settings_shows_no_key() {
        let settings = TlsSettings {
            root_certificates: None,
            client: Some(ClientIdentity {
                certificate_chain: b"CERT".to_vec(),
                key: b"SECRET KEY".to_vec(),
            }),
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("client_certificate: true"), "{shown}");
    }
}
