//! The HTTP/1.1 upgrade request and the checks on the server's answer. Pure logic, so the
//! engine can drive the handshake over a non-blocking socket without reading past its end.

use crate::deflate::{self, DeflateConfig, Negotiated};
use crate::error::{Error, Result};
use crate::url::Target;

/// The largest response head we accept; a server that sends more is misbehaving.
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 64;

/// What the server agreed to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Accepted {
    pub(crate) subprotocol: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
    /// permessage-deflate, if offered and accepted.
    pub(crate) deflate: Option<Negotiated>,
}

/// A fresh random `Sec-WebSocket-Key`.
pub(crate) fn generate_key() -> String {
    tungstenite::handshake::client::generate_key()
}

/// The upgrade request bytes; `deflate` offers permessage-deflate with those settings.
pub(crate) fn request(
    target: &Target,
    key: &str,
    headers: &[(String, String)],
    subprotocols: &[String],
    deflate: Option<&DeflateConfig>,
) -> Vec<u8> {
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n",
        target.resource,
        target.host_header()
    );
    if !subprotocols.is_empty() {
        req.push_str("Sec-WebSocket-Protocol: ");
        req.push_str(&subprotocols.join(", "));
        req.push_str("\r\n");
    }
    if let Some(config) = deflate {
        req.push_str("Sec-WebSocket-Extensions: ");
        req.push_str(&deflate::offer(config));
        req.push_str("\r\n");
    }
    for (name, value) in headers {
        req.push_str(name);
        req.push_str(": ");
        req.push_str(value);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Parses the response head in `buf`. `Ok(None)`: incomplete, read more. `Ok(Some((a, n)))`:
/// accepted, and the head is the first `n` bytes.
///
/// # Errors
///
/// [`Error::Http`] for a status other than 101 (with the start of the body, if it is in
/// `buf`); [`Error::Handshake`] for garbage, missing upgrade headers, a wrong accept key, an
/// unoffered subprotocol or extension, an extension answer that breaks RFC 7692, or a head
/// larger than [`MAX_RESPONSE_HEAD`].
pub(crate) fn parse_response(
    buf: &[u8],
    key: &str,
    subprotocols: &[String],
    deflate: Option<&DeflateConfig>,
) -> Result<Option<(Accepted, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= MAX_RESPONSE_HEAD {
                return Err(Error::Handshake(format!(
                    "response head larger than {MAX_RESPONSE_HEAD} bytes"
                )));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::Handshake(format!(
                "more than {MAX_HEADERS} response headers"
            )))
        }
        Err(e) => {
            return Err(Error::Handshake(format!(
                "not an HTTP response ({e}): {:?}",
                preview(buf)
            )))
        }
    };
    let status = resp.code.unwrap_or(0);
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
    };
    if status != 101 {
        let body = String::from_utf8_lossy(&buf[head_len..buf.len().min(head_len + 512)]);
        return Err(Error::Http {
            status,
            body: body.trim().to_owned(),
        });
    }
    if !header("Upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err(Error::Handshake("missing `Upgrade: websocket`".into()));
    }
    if !header("Connection").is_some_and(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    }) {
        return Err(Error::Handshake("missing `Connection: Upgrade`".into()));
    }
    let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
    match header("Sec-WebSocket-Accept") {
        Some(v) if v == expected => {}
        Some(_) => return Err(Error::Handshake("wrong `Sec-WebSocket-Accept`".into())),
        None => return Err(Error::Handshake("missing `Sec-WebSocket-Accept`".into())),
    }
    let subprotocol = header("Sec-WebSocket-Protocol").filter(|p| !p.is_empty());
    if let Some(p) = &subprotocol {
        if !subprotocols.iter().any(|o| o == p) {
            return Err(Error::Handshake(format!(
                "server chose subprotocol {p:?}, which was not offered"
            )));
        }
    }
    // The header may be repeated; its values then form one list (RFC 7230 §3.2.2).
    let extensions = resp
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Extensions"))
        .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    let deflate = match (extensions.is_empty(), deflate) {
        (true, _) => None,
        (false, Some(config)) => Some(deflate::accept(&extensions, config)?),
        (false, None) => {
            return Err(Error::Handshake(format!(
                "server enabled extension {extensions:?}, which was not offered"
            )))
        }
    };
    let headers = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    Ok(Some((
        Accepted {
            subprotocol,
            headers,
            deflate,
        },
        head_len,
    )))
}

fn preview(buf: &[u8]) -> String {
    String::from_utf8_lossy(&buf[..buf.len().min(64)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        crate::url::parse("ws://example.com:8080/feed?x=1").unwrap()
    }

    fn ok_response(key: &str, extra: &str) -> Vec<u8> {
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn request_has_required_headers() {
        let req = request(
            &target(),
            "abc",
            &[("Authorization".into(), "Bearer t".into())],
            &["v1".into(), "v2".into()],
            None,
        );
        let req = String::from_utf8(req).unwrap();
        assert!(req.starts_with("GET /feed?x=1 HTTP/1.1\r\nHost: example.com:8080\r\n"));
        assert!(req.contains("Sec-WebSocket-Key: abc\r\n"));
        assert!(req.contains("Sec-WebSocket-Protocol: v1, v2\r\n"));
        assert!(req.contains("Authorization: Bearer t\r\n"));
        assert!(req.ends_with("\r\n\r\n"));
        assert!(!req.contains("Sec-WebSocket-Extensions"));
    }

    #[test]
    fn request_offers_deflate_when_configured() {
        let req = request(&target(), "abc", &[], &[], Some(&DeflateConfig::default()));
        let req = String::from_utf8(req).unwrap();
        assert!(req
            .contains("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"));
    }

    #[test]
    fn deflate_answer_is_negotiated_or_rejected() {
        let key = generate_key();
        let config = DeflateConfig::default();
        let parse =
            |extra: &str| parse_response(&ok_response(&key, extra), &key, &[], Some(&config));
        let (acc, _) = parse("").unwrap().unwrap();
        assert_eq!(acc.deflate, None, "no header: the server declined");
        let (acc, _) = parse(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\
             Sec-WebSocket-Extensions: \r\n",
        )
        .unwrap()
        .unwrap();
        let n = acc.deflate.unwrap();
        assert!(n.server_no_context_takeover);
        assert!(!n.client_no_context_takeover);
        // Two answers, split over repeated headers, are one list of two extensions.
        let two = "Sec-WebSocket-Extensions: permessage-deflate\r\n\
                   Sec-WebSocket-Extensions: permessage-deflate\r\n";
        assert!(matches!(parse(two), Err(Error::Handshake(_))));
        assert!(matches!(
            parse("Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\n"),
            Err(Error::Handshake(_))
        ));
    }

    #[test]
    fn accepts_valid_response_and_reports_head_length() {
        let key = generate_key();
        let mut resp = ok_response(&key, "Sec-WebSocket-Protocol: v2\r\n");
        let head = resp.len();
        resp.extend_from_slice(b"\x81\x02hi");
        let (acc, n) = parse_response(&resp, &key, &["v1".into(), "v2".into()], None)
            .unwrap()
            .unwrap();
        assert_eq!(n, head);
        assert_eq!(acc.subprotocol.as_deref(), Some("v2"));
    }

    #[test]
    fn partial_response_asks_for_more() {
        let key = generate_key();
        let resp = ok_response(&key, "");
        assert_eq!(parse_response(&resp[..20], &key, &[], None).unwrap(), None);
    }

    #[test]
    fn rejects_bad_responses() {
        let key = generate_key();
        let err = |buf: &[u8]| parse_response(buf, &key, &[], None).unwrap_err();
        assert!(matches!(
            err(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\nnope"),
            Error::Http { status: 401, ref body } if body == "nope"
        ));
        assert!(matches!(
            err(b"\x00\x01garbage\r\n\r\n"),
            Error::Handshake(_)
        ));
        let no_upgrade = b"HTTP/1.1 101 OK\r\nConnection: Upgrade\r\n\r\n";
        assert!(err(no_upgrade).to_string().contains("Upgrade"));
        let wrong_accept = b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAA\r\n\r\n";
        assert!(err(wrong_accept).to_string().contains("Accept"));
        let proto = ok_response(&key, "Sec-WebSocket-Protocol: evil\r\n");
        assert!(err(&proto).to_string().contains("subprotocol"));
        let ext = ok_response(&key, "Sec-WebSocket-Extensions: permessage-deflate\r\n");
        assert!(err(&ext).to_string().contains("extension"));
    }

    #[test]
    fn endless_head_is_rejected() {
        let key = generate_key();
        let mut buf = b"HTTP/1.1 101 OK\r\n".to_vec();
        while buf.len() < MAX_RESPONSE_HEAD {
            buf.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert!(matches!(
            parse_response(&buf, &key, &[], None),
            Err(Error::Handshake(_))
        ));
    }
}
