//! TLS settings for `wss://` (native-tls: OpenSSL, Secure Transport or SChannel).

use std::fmt;

use crate::error::{Error, Result};

/// TLS settings for `wss://` connections.
///
/// Safe by default: the system's root certificates, host name verification, TLS 1.2 or
/// newer. Add roots for private CAs, present a client certificate, or, for testing only,
/// turn verification off with the explicitly named `danger_` options.
///
/// # Examples
///
/// ```
/// use jetsocket::TlsConfig;
///
/// # let ca_pem = b"-----BEGIN CERTIFICATE-----\n".to_vec();
/// let tls = TlsConfig::new().add_root_certificate_pem(ca_pem);
/// assert!(!tls.accepts_invalid_certs());
/// ```
#[derive(Clone, Default)]
pub struct TlsConfig {
    pub(crate) roots_pem: Vec<Vec<u8>>,
    pub(crate) identity: Option<Identity>,
    pub(crate) accept_invalid_certs: bool,
    pub(crate) accept_invalid_hostnames: bool,
    pub(crate) disable_built_in_roots: bool,
}

#[derive(Clone)]
// Without a TLS back-end the identity is stored but never used.
#[cfg_attr(not(feature = "native-tls"), allow(dead_code))]
pub(crate) enum Identity {
    Pkcs12 { der: Vec<u8>, password: String },
    Pem { cert: Vec<u8>, key: Vec<u8> },
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("extra_roots", &self.roots_pem.len())
            .field("client_identity", &self.identity.is_some())
            .field("danger_accept_invalid_certs", &self.accept_invalid_certs)
            .field(
                "danger_accept_invalid_hostnames",
                &self.accept_invalid_hostnames,
            )
            .field("disable_built_in_roots", &self.disable_built_in_roots)
            .finish()
    }
}

impl TlsConfig {
    /// The defaults: system roots, full verification.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts one more root certificate, PEM-encoded (a private or test CA). Checked when the
    /// connection is built. Defaults to none.
    pub fn add_root_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.roots_pem.push(pem.into());
        self
    }

    /// Presents a client certificate from a PKCS #12 archive. Defaults to none.
    pub fn identity_pkcs12(mut self, der: impl Into<Vec<u8>>, password: impl Into<String>) -> Self {
        self.identity = Some(Identity::Pkcs12 {
            der: der.into(),
            password: password.into(),
        });
        self
    }

    /// Presents a client certificate chain and PKCS #8 private key, both PEM-encoded.
    /// Defaults to none.
    pub fn identity_pem(mut self, cert_chain: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.identity = Some(Identity::Pem {
            cert: cert_chain.into(),
            key: key.into(),
        });
        self
    }

    /// Trusts only the roots added with
    /// [`add_root_certificate_pem`](Self::add_root_certificate_pem). Defaults to `false`.
    pub fn disable_built_in_roots(mut self, disable: bool) -> Self {
        self.disable_built_in_roots = disable;
        self
    }

    /// **Dangerous**: accepts any certificate, including expired and self-signed ones, which
    /// lets anyone on the path read and change the traffic. For tests only. Defaults to `false`.
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.accept_invalid_certs = accept;
        self
    }

    /// **Dangerous**: accepts certificates issued for another host name. For tests only.
    /// Defaults to `false`.
    pub fn danger_accept_invalid_hostnames(mut self, accept: bool) -> Self {
        self.accept_invalid_hostnames = accept;
        self
    }

    /// Whether certificate verification is off.
    pub fn accepts_invalid_certs(&self) -> bool {
        self.accept_invalid_certs
    }
}

#[cfg(feature = "native-tls")]
pub(crate) type Connector = native_tls::TlsConnector;

/// Without TLS support there is nothing to build; `wss://` fails at build time.
#[cfg(not(feature = "native-tls"))]
#[derive(Clone, Debug)]
pub(crate) struct Connector;

#[cfg(feature = "native-tls")]
pub(crate) fn build_connector(config: &TlsConfig) -> Result<Connector> {
    let mut b = native_tls::TlsConnector::builder();
    b.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
    for pem in &config.roots_pem {
        let cert = native_tls::Certificate::from_pem(pem)
            .map_err(|e| Error::config(format!("invalid root certificate: {e}")))?;
        b.add_root_certificate(cert);
    }
    if let Some(identity) = &config.identity {
        let id = match identity {
            Identity::Pkcs12 { der, password } => native_tls::Identity::from_pkcs12(der, password),
            Identity::Pem { cert, key } => native_tls::Identity::from_pkcs8(cert, key),
        }
        .map_err(|e| Error::config(format!("invalid client identity: {e}")))?;
        b.identity(id);
    }
    b.danger_accept_invalid_certs(config.accept_invalid_certs);
    b.danger_accept_invalid_hostnames(config.accept_invalid_hostnames);
    b.disable_built_in_roots(config.disable_built_in_roots);
    b.build()
        .map_err(|e| Error::config(format!("could not set up TLS: {e}")))
}

#[cfg(not(feature = "native-tls"))]
pub(crate) fn build_connector(_config: &TlsConfig) -> Result<Connector> {
    Err(Error::TlsUnavailable)
}

/// Sorts a TLS handshake failure into a fatal certificate rejection or a retriable error.
#[cfg(feature = "native-tls")]
pub(crate) fn classify(e: &native_tls::Error) -> Error {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("certificate")
        || lower.contains("verify")
        || lower.contains("hostname mismatch")
    {
        Error::Certificate(text)
    } else {
        Error::Tls(text)
    }
}

#[cfg(all(test, feature = "native-tls"))]
mod tests {
    use super::*;

    #[test]
    fn bad_pem_is_invalid_config() {
        let cfg = TlsConfig::new().add_root_certificate_pem(b"not a cert".to_vec());
        assert!(matches!(
            build_connector(&cfg),
            Err(Error::InvalidConfig(_))
        ));
        let cfg = TlsConfig::new().identity_pem(b"x".to_vec(), b"y".to_vec());
        assert!(matches!(
            build_connector(&cfg),
            Err(Error::InvalidConfig(_))
        ));
    }

    #[test]
    fn debug_hides_key_material() {
        let cfg = TlsConfig::new().identity_pem(b"CERT".to_vec(), b"SECRETKEY".to_vec());
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("SECRETKEY"), "{dbg}");
    }
}
