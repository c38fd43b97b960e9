//! Test PKI (rcgen) and the TLS flavour of the WebSocket server, plus a TLS test client.

use std::net::TcpStream;
use std::ops::Deref;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tungstenite::client::IntoClientRequest;
use tungstenite::WebSocket;

use super::ws::{ServerConn, WsServer, WsServerBuilder};

/// Host names every test leaf certificate covers.
pub const TEST_NAMES: &[&str] = &["localhost", "127.0.0.1"];

/// A PEM certificate + PKCS#8 PEM private key for a TLS server.
#[derive(Clone, Debug)]
pub struct ServerCert {
    /// Leaf certificate, PEM.
    pub cert_pem: Vec<u8>,
    /// Private key, PKCS#8 PEM.
    pub key_pem: Vec<u8>,
}

impl ServerCert {
    /// A self-signed leaf for `names` (not issued by any [`TestCa`]: untrusted by clients).
    pub fn self_signed(names: &[&str]) -> ServerCert {
        let mut params = leaf_params(names);
        params.distinguished_name = dn("jetsocket self-signed test leaf");
        let key = KeyPair::generate().expect("generate key");
        let cert = params.self_signed(&key).expect("self-sign leaf");
        ServerCert {
            cert_pem: cert.pem().into_bytes(),
            key_pem: key.serialize_pem().into_bytes(),
        }
    }

    /// The native-tls identity for a `TlsAcceptor`.
    pub fn identity(&self) -> native_tls::Identity {
        native_tls::Identity::from_pkcs8(&self.cert_pem, &self.key_pem)
            .expect("Identity::from_pkcs8")
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn leaf_params(names: &[&str]) -> CertificateParams {
    let sans: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).expect("leaf params");
    params.distinguished_name = dn(names.first().copied().unwrap_or("localhost"));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params
}

/// A throw-away certificate authority generated at test time.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    /// Generates a fresh CA (ECDSA P-256).
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = dn("jetsocket test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("generate CA key");
        let cert = params.self_signed(&key).expect("self-sign CA");
        TestCa { cert, key }
    }

    /// The CA certificate as PEM (give this to the client as a trusted root).
    pub fn cert_pem(&self) -> Vec<u8> {
        self.cert.pem().into_bytes()
    }

    /// Issues a leaf certificate for `names` (DNS names and/or IP literals) signed by this CA.
    pub fn issue(&self, names: &[&str]) -> ServerCert {
        let mut params = leaf_params(names);
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("generate leaf key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign leaf");
        ServerCert {
            cert_pem: cert.pem().into_bytes(),
            key_pem: key.serialize_pem().into_bytes(),
        }
    }

    /// Issues a leaf for `localhost` and `127.0.0.1`.
    pub fn issue_localhost(&self) -> ServerCert {
        self.issue(TEST_NAMES)
    }
}

/// A [`WsServer`] over TLS plus the PEM of the CA a client must trust. Derefs to [`WsServer`]
/// (`url()` is `wss://localhost:PORT/`, `ip_url()` is `wss://127.0.0.1:PORT/`).
pub struct TlsWsServer {
    server: WsServer,
    ca_pem: Vec<u8>,
    cert: ServerCert,
}

impl TlsWsServer {
    /// TLS server built by `f` from a builder preconfigured with a fresh CA-issued
    /// localhost/127.0.0.1 certificate, e.g. `TlsWsServer::build(|b| b.subprotocol("x").echo())`.
    pub fn build(f: impl FnOnce(WsServerBuilder) -> WsServer) -> TlsWsServer {
        let ca = TestCa::new();
        let cert = ca.issue_localhost();
        let server = f(WsServer::builder().tls(cert.clone()));
        TlsWsServer {
            server,
            ca_pem: ca.cert_pem(),
            cert,
        }
    }

    /// TLS server (trusted via `ca_cert_pem()`) running `handler` per connection.
    pub fn start<F>(handler: F) -> TlsWsServer
    where
        F: Fn(ServerConn) + Send + Sync + 'static,
    {
        Self::build(|b| b.start(handler))
    }

    /// TLS echo server (trusted via `ca_cert_pem()`).
    pub fn echo() -> TlsWsServer {
        Self::build(|b| b.echo())
    }

    /// TLS recording server (trusted via `ca_cert_pem()`).
    pub fn recording() -> TlsWsServer {
        Self::build(|b| b.recording())
    }

    /// TLS echo server with a self-signed certificate: `ca_cert_pem()` returns a real CA that
    /// did NOT sign it, so a client trusting that CA must still reject the server.
    pub fn untrusted_echo() -> TlsWsServer {
        let ca = TestCa::new();
        let cert = ServerCert::self_signed(TEST_NAMES);
        let server = WsServer::builder().tls(cert.clone()).echo();
        TlsWsServer {
            server,
            ca_pem: ca.cert_pem(),
            cert,
        }
    }

    /// PEM of the CA the client should trust.
    pub fn ca_cert_pem(&self) -> Vec<u8> {
        self.ca_pem.clone()
    }

    /// The server's own leaf certificate/key.
    pub fn server_cert(&self) -> &ServerCert {
        &self.cert
    }
}

impl Deref for TlsWsServer {
    type Target = WsServer;

    fn deref(&self) -> &WsServer {
        &self.server
    }
}

/// Blocking TLS WebSocket client for tests: connects to `url` (`wss://host:port/...`),
/// trusting `ca_pem` in addition to the system roots. Read/write timeouts default to 10 s.
pub fn tls_client(
    url: &str,
    ca_pem: Option<&[u8]>,
) -> Result<WebSocket<native_tls::TlsStream<TcpStream>>, String> {
    let req = url
        .into_client_request()
        .map_err(|e| format!("bad url {url}: {e}"))?;
    let host = req
        .uri()
        .host()
        .ok_or_else(|| format!("no host in {url}"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = req.uri().port_u16().unwrap_or(443);
    let tcp = TcpStream::connect((host.as_str(), port)).map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = tcp.set_write_timeout(Some(Duration::from_secs(10)));
    let mut builder = native_tls::TlsConnector::builder();
    if let Some(pem) = ca_pem {
        let cert = native_tls::Certificate::from_pem(pem).map_err(|e| format!("ca pem: {e}"))?;
        builder.add_root_certificate(cert);
    }
    let connector = builder.build().map_err(|e| format!("connector: {e}"))?;
    let tls = connector
        .connect(&host, tcp)
        .map_err(|e| format!("tls handshake: {e}"))?;
    let (ws, _resp) = tungstenite::client(req, tls).map_err(|e| format!("ws handshake: {e}"))?;
    Ok(ws)
}
