//! HTTP CONNECT proxies: configuration, `NO_PROXY` matching, and the tunnel request and
//! response. Pure logic; the engine drives it over the non-blocking socket.

use std::fmt;

use crate::error::{Error, Result};
use crate::url::Target;

/// An HTTP proxy that tunnels connections with `CONNECT`.
///
/// `wss://` through the proxy stays end-to-end TLS: the proxy only sees the target's host
/// and port. Credentials are sent as `Proxy-Authorization: Basic` and never logged.
///
/// # Examples
///
/// ```
/// use jetsocket::Proxy;
/// let proxy = Proxy::new("http://user:secret@proxy.internal:3128")?;
/// assert_eq!(proxy.host(), "proxy.internal");
/// assert!(!format!("{proxy:?}").contains("secret"));
/// # Ok::<(), jetsocket::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("host", &self.host)
            .field("port", &self.port)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Proxy {
    /// Parses `http://[user[:password]@]host[:port]` (port 80 by default; a bare
    /// `host:port` is accepted too).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for another scheme, an empty host or a bad port.
    pub fn new(url: impl AsRef<str>) -> Result<Self> {
        let url = url.as_ref().trim();
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(Error::config(format!(
                    "proxy scheme {scheme:?} is not supported: use http://"
                )))
            }
            None => url,
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (credentials, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (Some((percent_decode(user), percent_decode(pass))), hostport)
            }
            None => (None, authority),
        };
        let parsed = crate::url::parse(&format!("ws://{hostport}/"))
            .map_err(|_| Error::config("invalid proxy address: expected http://host:port"))?;
        Ok(Proxy {
            host: parsed.host,
            port: parsed.port,
            credentials,
        })
    }

    /// Sets the credentials for `Proxy-Authorization: Basic`.
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// The proxy's host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The proxy as a connection target.
    pub(crate) fn target(&self) -> Target {
        Target {
            tls: false,
            host: self.host.clone(),
            port: self.port,
            resource: "/".into(),
        }
    }

    /// The `CONNECT` request for `target`.
    pub(crate) fn connect_request(&self, target: &Target) -> Vec<u8> {
        let authority = if target.host.contains(':') {
            format!("[{}]:{}", target.host, target.port)
        } else {
            format!("{}:{}", target.host, target.port)
        };
        let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some((user, pass)) = &self.credentials {
            req.push_str("Proxy-Authorization: Basic ");
            req.push_str(&base64(format!("{user}:{pass}").as_bytes()));
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        req.into_bytes()
    }
}

/// Reads the proxy settings for `target` from `HTTPS_PROXY`/`HTTP_PROXY` (upper or lower
/// case; `wss://` uses the former, `ws://` the latter, each falling back to `ALL_PROXY`),
/// honouring `NO_PROXY`.
pub(crate) fn from_env(target: &Target) -> Result<Option<Proxy>> {
    let var = |name: &str| {
        std::env::var(name)
            .or_else(|_| std::env::var(name.to_ascii_lowercase()))
            .ok()
            .filter(|v| !v.trim().is_empty())
    };
    let url = if target.tls {
        var("HTTPS_PROXY")
    } else {
        var("HTTP_PROXY")
    }
    .or_else(|| var("ALL_PROXY"));
    let Some(url) = url else { return Ok(None) };
    if let Some(no_proxy) = var("NO_PROXY") {
        if bypasses(&no_proxy, &target.host) {
            return Ok(None);
        }
    }
    Proxy::new(url).map(Some)
}

/// Whether `NO_PROXY` (comma-separated hosts, domain suffixes, IPs, or `*`) covers `host`.
pub(crate) fn bypasses(no_proxy: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    no_proxy
        .split(',')
        .map(|e| e.trim().trim_end_matches('.').to_ascii_lowercase())
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            // Entries may carry a port (`host:8080`); ports are not compared.
            let entry = match entry.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => {
                    h.to_owned()
                }
                _ => entry
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
            };
            let bare = entry.trim_start_matches("*.").trim_start_matches('.');
            host == bare || host.ends_with(&format!(".{bare}"))
        })
}

/// Checks the proxy's answer to `CONNECT`. `Ok(None)`: incomplete; `Ok(Some(n))`: the
/// tunnel is open and the answer was `n` bytes long.
pub(crate) fn parse_connect_response(buf: &[u8]) -> Result<Option<usize>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => match resp.code {
            Some(200..=299) => Ok(Some(n)),
            Some(status) => Err(Error::Proxy {
                status,
                reason: resp.reason.unwrap_or_default().to_owned(),
            }),
            None => Err(Error::Handshake("the proxy sent no status".into())),
        },
        Ok(httparse::Status::Partial) if buf.len() >= 16 * 1024 => Err(Error::Handshake(
            "the proxy's response head is larger than 16 KiB".into(),
        )),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(Error::Handshake(format!(
            "the proxy did not answer with HTTP: {e}"
        ))),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proxy_urls() {
        let p = Proxy::new("http://proxy:3128").unwrap();
        assert_eq!((p.host(), p.port()), ("proxy", 3128));
        let p = Proxy::new("proxy.corp").unwrap();
        assert_eq!(p.port(), 80);
        let p = Proxy::new("http://us%40er:p%3Ass@10.0.0.1:8080/").unwrap();
        assert_eq!(p.credentials, Some(("us@er".into(), "p:ss".into())));
        assert!(Proxy::new("socks5://h:1").is_err());
        assert!(Proxy::new("http://:1").is_err());
        assert!(Proxy::new("http://h:99999").is_err());
    }

    #[test]
    fn connect_request_carries_basic_auth() {
        let p = Proxy::new("http://aladdin:opensesame@proxy:1").unwrap();
        let t = crate::url::parse("wss://example.com/ws").unwrap();
        let req = String::from_utf8(p.connect_request(&t)).unwrap();
        assert!(req.starts_with("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n"));
        assert!(req.contains("Proxy-Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l\r\n"));
        assert!(req.ends_with("\r\n\r\n"));
    }

    #[test]
    fn base64_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
    }

    #[test]
    fn no_proxy_matching() {
        assert!(bypasses("*", "anything"));
        assert!(bypasses("localhost,127.0.0.1", "127.0.0.1"));
        assert!(bypasses("example.com", "api.example.com"));
        assert!(bypasses(".example.com", "api.example.com"));
        assert!(bypasses("*.example.com", "example.com"));
        assert!(bypasses("example.com:443", "example.com"));
        assert!(!bypasses("example.com", "badexample.com"));
        assert!(!bypasses("", "example.com"));
        assert!(bypasses("[::1]", "::1"));
    }

    #[test]
    fn connect_responses() {
        assert_eq!(
            parse_connect_response(b"HTTP/1.1 200 Connection established\r\n\r\n").unwrap(),
            Some(39)
        );
        assert_eq!(
            parse_connect_response(b"HTTP/1.1 200 OK\r\n").unwrap(),
            None
        );
        let e = parse_connect_response(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
            .unwrap_err();
        assert!(e.is_fatal());
        let e = parse_connect_response(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").unwrap_err();
        assert!(!e.is_fatal());
        assert!(matches!(e, Error::Proxy { status: 502, .. }));
        assert!(parse_connect_response(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn debug_redacts_credentials() {
        let p = Proxy::new("http://u:hunter2@proxy:1").unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
