//! The `Sec-WebSocket-Extensions` offer and the checks on the server's answer (RFC 7692 §5
//! and §7.1, RFC 6455 §9.1).
//!
//! We always offer `client_max_window_bits` without a value: it tells the server we can
//! compress with any window it asks for (see [`super`] for how a window smaller than the
//! 32 KiB of the compressor is honoured). We never offer `server_max_window_bits`: the
//! decompressor always keeps a 32 KiB window, so it decodes whatever window the server uses.

use super::{DeflateConfig, MAX_WINDOW_BITS, MIN_WINDOW_BITS};
use crate::error::Error;

/// The extension's registered name.
pub(crate) const EXTENSION: &str = "permessage-deflate";

/// What the server agreed to, from the client's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Negotiated {
    /// The server resets its compressor for every message.
    pub(crate) server_no_context_takeover: bool,
    /// We must reset our compressor for every message.
    pub(crate) client_no_context_takeover: bool,
    /// The server's LZ77 window (informational: we always inflate with 32 KiB).
    pub(crate) server_max_window_bits: u8,
    /// The largest LZ77 window we may compress with.
    pub(crate) client_max_window_bits: u8,
}

impl Default for Negotiated {
    /// The plain `permessage-deflate` answer: context takeover both ways, 32 KiB windows.
    fn default() -> Self {
        Negotiated {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: MAX_WINDOW_BITS,
            client_max_window_bits: MAX_WINDOW_BITS,
        }
    }
}

/// The `Sec-WebSocket-Extensions` request header value.
pub(crate) fn offer(config: &DeflateConfig) -> String {
    let mut offer = format!("{EXTENSION}; client_max_window_bits");
    if config.no_context_takeover {
        offer.push_str("; server_no_context_takeover; client_no_context_takeover");
    }
    offer
}

/// Checks the server's `Sec-WebSocket-Extensions` response header against our offer.
///
/// Call it only when the header is present and not empty; an absent header means the server
/// declined compression. If the server sent the header more than once, join the values with
/// `", "` first (HTTP list semantics).
///
/// # Errors
///
/// [`Error::Handshake`] if the value is malformed, names another extension or more than one,
/// or has an unknown, duplicate, valueless-where-a-value-is-needed or out-of-range parameter,
/// or omits `server_no_context_takeover` when we asked for it. RFC 7692 §5 says the client
/// must then fail the connection.
pub(crate) fn accept(value: &str, config: &DeflateConfig) -> Result<Negotiated, Error> {
    let fail = |why: String| Error::Handshake(format!("Sec-WebSocket-Extensions {value:?}: {why}"));
    let extensions = parse_list(value).map_err(fail)?;
    let ext = match extensions.as_slice() {
        [] => return Err(fail("no extension".into())),
        [one] => one,
        [..] => {
            return Err(fail(format!(
                "the server enabled {} extensions; only {EXTENSION} was offered",
                extensions.len()
            )))
        }
    };
    if !ext.name.eq_ignore_ascii_case(EXTENSION) {
        return Err(fail(format!("extension {:?} was not offered", ext.name)));
    }
    let mut n = Negotiated::default();
    let mut seen: Vec<&str> = Vec::with_capacity(4);
    for (name, value) in &ext.params {
        let name = name.to_ascii_lowercase();
        let key = match name.as_str() {
            "server_no_context_takeover" => "server_no_context_takeover",
            "client_no_context_takeover" => "client_no_context_takeover",
            "server_max_window_bits" => "server_max_window_bits",
            "client_max_window_bits" => "client_max_window_bits",
            _ => return Err(fail(format!("unknown parameter {name:?}"))),
        };
        if seen.contains(&key) {
            return Err(fail(format!("duplicate parameter {key:?}")));
        }
        seen.push(key);
        match key {
            "server_no_context_takeover" | "client_no_context_takeover" => {
                if let Some(v) = value {
                    return Err(fail(format!("{key} takes no value, got {v:?}")));
                }
                if key == "server_no_context_takeover" {
                    n.server_no_context_takeover = true;
                } else {
                    n.client_no_context_takeover = true;
                }
            }
            _ => {
                // In a response both window parameters must carry a value (RFC 7692 §7.1.2).
                let bits = match value {
                    Some(v) => window_bits(v).ok_or_else(|| {
                        fail(format!(
                            "{key} must be {MIN_WINDOW_BITS}..={MAX_WINDOW_BITS}, got {v:?}"
                        ))
                    })?,
                    None => return Err(fail(format!("{key} needs a value in a response"))),
                };
                if key == "server_max_window_bits" {
                    n.server_max_window_bits = bits;
                } else {
                    n.client_max_window_bits = bits;
                }
            }
        }
    }
    if config.no_context_takeover {
        // RFC 7692 §7.1.1.1: a server accepting an offer with this parameter must echo it.
        if !n.server_no_context_takeover {
            return Err(fail(
                "server_no_context_takeover was requested but not confirmed".into(),
            ));
        }
        // We asked not to take over our own context; that holds whatever the answer says.
        n.client_no_context_takeover = true;
    }
    Ok(n)
}

/// A decimal from 8 to 15 without leading zeros or signs (RFC 7692 §7.1.2.1).
fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || v.len() > 2 || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = v.parse().ok()?;
    (MIN_WINDOW_BITS..=MAX_WINDOW_BITS)
        .contains(&bits)
        .then_some(bits)
}

/// One element of the extension list.
#[derive(Debug, PartialEq, Eq)]
struct Extension {
    name: String,
    params: Vec<(String, Option<String>)>,
}

/// `token` characters (RFC 7230 §3.2.6).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses `1#( token *( OWS ";" OWS token [ "=" ( token / quoted-string ) ] ) )`, skipping
/// empty list elements as HTTP requires. Quoted values must unescape to a token (RFC 6455
/// §9.1).
fn parse_list(value: &str) -> Result<Vec<Extension>, String> {
    let b = value.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let skip_ows = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t') {
            *i += 1;
        }
    };
    let token = |i: &mut usize, what: &str| -> Result<String, String> {
        let start = *i;
        while *i < b.len() && is_tchar(b[*i]) {
            *i += 1;
        }
        if start == *i {
            return Err(match b.get(*i) {
                Some(&c) => format!("expected {what}, found {:?}", char::from(c)),
                None => format!("expected {what}, found the end"),
            });
        }
        // Token characters are ASCII.
        Ok(String::from_utf8_lossy(&b[start..*i]).into_owned())
    };
    loop {
        skip_ows(&mut i);
        if i == b.len() {
            break;
        }
        if b[i] == b',' {
            i += 1;
            continue;
        }
        let name = token(&mut i, "an extension name")?;
        let mut params = Vec::new();
        loop {
            skip_ows(&mut i);
            match b.get(i) {
                None | Some(b',') => break,
                Some(b';') => i += 1,
                Some(&c) => return Err(format!("expected ';' or ',', found {:?}", char::from(c))),
            }
            skip_ows(&mut i);
            let pname = token(&mut i, "a parameter name")?;
            skip_ows(&mut i);
            let mut pvalue = None;
            if b.get(i) == Some(&b'=') {
                i += 1;
                skip_ows(&mut i);
                pvalue = Some(if b.get(i) == Some(&b'"') {
                    quoted(b, &mut i)?
                } else {
                    token(&mut i, "a parameter value")?
                });
            }
            params.push((pname, pvalue));
        }
        out.push(Extension { name, params });
    }
    Ok(out)
}

/// Reads a quoted string starting at the opening quote; the unescaped value must be a token.
fn quoted(b: &[u8], i: &mut usize) -> Result<String, String> {
    *i += 1;
    let mut v = Vec::new();
    loop {
        match b.get(*i) {
            None => return Err("unterminated quoted string".into()),
            Some(b'"') => {
                *i += 1;
                break;
            }
            Some(b'\\') => match b.get(*i + 1) {
                Some(&c) => {
                    v.push(c);
                    *i += 2;
                }
                None => return Err("unterminated quoted string".into()),
            },
            Some(&c) => {
                v.push(c);
                *i += 1;
            }
        }
    }
    if v.is_empty() || !v.iter().all(|&c| is_tchar(c)) {
        return Err(format!(
            "quoted value {:?} is not a token",
            String::from_utf8_lossy(&v)
        ));
    }
    Ok(String::from_utf8_lossy(&v).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(v: &str) -> Negotiated {
        accept(v, &DeflateConfig::default()).unwrap_or_else(|e| panic!("{v:?}: {e}"))
    }

    fn bad(v: &str) -> String {
        match accept(v, &DeflateConfig::default()) {
            Err(Error::Handshake(why)) => why,
            other => panic!("{v:?} should be rejected, got {other:?}"),
        }
    }

    #[test]
    fn offer_asks_for_client_window_negotiation() {
        assert_eq!(
            offer(&DeflateConfig::default()),
            "permessage-deflate; client_max_window_bits"
        );
        let cfg = DeflateConfig {
            no_context_takeover: true,
            ..DeflateConfig::default()
        };
        assert_eq!(
            offer(&cfg),
            "permessage-deflate; client_max_window_bits; server_no_context_takeover; \
             client_no_context_takeover"
        );
    }

    #[test]
    fn our_offer_parses_as_a_list() {
        let cfg = DeflateConfig {
            no_context_takeover: true,
            ..DeflateConfig::default()
        };
        let list = parse_list(&offer(&cfg)).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].name, EXTENSION);
        assert_eq!(list[0].params.len(), 3);
    }

    #[test]
    fn plain_answer_means_takeover_and_full_windows() {
        assert_eq!(ok("permessage-deflate"), Negotiated::default());
        assert_eq!(ok("  permessage-deflate  "), Negotiated::default());
        assert_eq!(ok("Permessage-Deflate"), Negotiated::default());
    }

    #[test]
    fn all_parameters() {
        let n = ok(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                    server_max_window_bits=10; client_max_window_bits=9",
        );
        assert_eq!(
            n,
            Negotiated {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: 10,
                client_max_window_bits: 9,
            }
        );
        // Whitespace around separators, quoted values, empty list elements.
        let n = ok(", permessage-deflate ;client_max_window_bits = \"8\" ; server_max_window_bits=\"1\\5\",");
        assert_eq!(
            (n.client_max_window_bits, n.server_max_window_bits),
            (8, 15)
        );
        for bits in 8..=15 {
            let n = ok(&format!(
                "permessage-deflate; client_max_window_bits={bits}"
            ));
            assert_eq!(n.client_max_window_bits, bits);
        }
    }

    #[test]
    fn rejects_other_and_extra_extensions() {
        assert!(bad("x-webkit-deflate-frame").contains("not offered"));
        assert!(bad("permessage-deflate, permessage-deflate").contains("2 extensions"));
        assert!(bad("permessage-deflate, foo").contains("2 extensions"));
        assert!(bad("foo; a=1, permessage-deflate").contains("2 extensions"));
        assert!(bad("").contains("no extension"));
        assert!(bad(" , ,").contains("no extension"));
    }

    #[test]
    fn rejects_unknown_and_duplicate_parameters() {
        assert!(bad("permessage-deflate; foo").contains("unknown"));
        assert!(bad("permessage-deflate; mux=1").contains("unknown"));
        assert!(
            bad("permessage-deflate; server_no_context_takeover; server_no_context_takeover")
                .contains("duplicate")
        );
        assert!(
            bad("permessage-deflate; client_max_window_bits=9; client_max_window_bits=10")
                .contains("duplicate")
        );
        assert!(
            bad("permessage-deflate; Server_Max_Window_Bits=9; server_max_window_bits=9")
                .contains("duplicate")
        );
    }

    #[test]
    fn rejects_bad_values() {
        for v in [
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=08",
            "permessage-deflate; client_max_window_bits=+9",
            "permessage-deflate; server_max_window_bits=0",
            "permessage-deflate; server_max_window_bits=100",
            "permessage-deflate; server_max_window_bits=\"\"",
            "permessage-deflate; server_max_window_bits=99999999999999999999999",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover=\"x\"",
        ] {
            bad(v);
        }
    }

    #[test]
    fn rejects_malformed_syntax() {
        for v in [
            "permessage-deflate;",
            "permessage-deflate; ;",
            "permessage-deflate; =9",
            "permessage-deflate; client_max_window_bits=",
            "permessage-deflate; client_max_window_bits=\"9",
            "permessage-deflate; client_max_window_bits=\"9\\",
            "permessage-deflate; client_max_window_bits=\"9,10\"",
            "permessage-deflate client_max_window_bits",
            "permessage-deflate; server_max_window_bits=1 0",
            "permessage-deflate; server_max_window_bits=é",
            "\"permessage-deflate\"",
            "permessage-deflate; client_max_window_bits=\"\u{e9}\"",
        ] {
            bad(v);
        }
    }

    #[test]
    fn requested_no_context_takeover_must_be_confirmed() {
        let cfg = DeflateConfig {
            no_context_takeover: true,
            ..DeflateConfig::default()
        };
        assert!(matches!(
            accept("permessage-deflate", &cfg),
            Err(Error::Handshake(_))
        ));
        let n = accept("permessage-deflate; server_no_context_takeover", &cfg).unwrap();
        assert!(n.server_no_context_takeover && n.client_no_context_takeover);
    }
}
