//! Parsing and checking `ws://` / `wss://` URLs. Pure logic.

use crate::error::{Error, Result};

/// Where to connect, split out of a WebSocket URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// `wss://`?
    pub(crate) tls: bool,
    /// The host name or IP literal, without IPv6 brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Path and query, at least `/`.
    pub(crate) resource: String,
}

impl Target {
    /// The `Host` header value: the port is left out when it is the scheme's default.
    pub(crate) fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Parses a WebSocket URL.
pub(crate) fn parse(url: &str) -> Result<Target> {
    let bad = |reason: &str| Error::invalid_url(&redact(url), reason);
    let trimmed = url.trim();
    if trimmed.is_empty() {
        return Err(bad("the URL is empty"));
    }
    let (scheme, rest) = trimmed
        .split_once("://")
        .ok_or_else(|| bad("missing scheme: expected ws:// or wss://"))?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "ws" => false,
        "wss" => true,
        "http" | "https" => {
            return Err(bad(
                "http:// and https:// are not WebSocket URLs: use ws:// or wss://",
            ))
        }
        _ => return Err(bad("unsupported scheme: expected ws:// or wss://")),
    };
    if rest.contains('#') {
        return Err(bad("WebSocket URLs must not contain a fragment (#...)"));
    }
    if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("the URL contains whitespace or control characters"));
    }
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, resource) = rest.split_at(split);
    let resource = if resource.is_empty() {
        "/".to_owned()
    } else if resource.starts_with('?') {
        format!("/{resource}")
    } else {
        resource.to_owned()
    };
    if authority.contains('@') {
        return Err(bad(
            "credentials in the URL are not supported: pass an Authorization header instead",
        ));
    }
    let (host, port) = split_host_port(authority).map_err(bad)?;
    let port = match port {
        Some(p) => p,
        None if tls => 443,
        None => 80,
    };
    Ok(Target {
        tls,
        host,
        port,
        resource,
    })
}

fn split_host_port(authority: &str) -> std::result::Result<(String, Option<u16>), &'static str> {
    if authority.is_empty() {
        return Err("the host is empty");
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unterminated IPv6 address")?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("invalid IPv6 address");
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or("unexpected text after the IPv6 address")?,
            ),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err("an IPv6 address must be in brackets; a host name has no colon")
            }
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the host is empty");
    }
    if !host.contains(':')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err("the host contains characters that are not allowed");
    }
    let port = match port {
        None => None,
        Some("") => return Err("the port is empty"),
        Some(p) => match p.parse::<u16>() {
            Ok(0) => return Err("port 0 is not a valid destination"),
            Ok(n) => Some(n),
            Err(_) => return Err("the port is not a number from 1 to 65535"),
        },
    };
    Ok((host.to_ascii_lowercase(), port))
}

/// The URL with any user information replaced, safe to log and to put in errors.
pub(crate) fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@') {
            return format!("{scheme}://***@{}", &rest[at + 1..]);
        }
    }
    url.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_urls() {
        let t = parse("ws://example.com").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.resource.as_str()),
            (false, "example.com", 80, "/")
        );
        let t = parse("WSS://Stream.Example.com:9443/ws/v1?x=1&y=2").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.resource.as_str()),
            (true, "stream.example.com", 9443, "/ws/v1?x=1&y=2")
        );
        assert_eq!(t.host_header(), "stream.example.com:9443");
        let t = parse("ws://127.0.0.1:8080?token=a").unwrap();
        assert_eq!(t.resource, "/?token=a");
        let t = parse("wss://[::1]/x").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 443));
        assert_eq!(t.host_header(), "[::1]");
    }

    #[test]
    fn rejects_bad_urls_with_clear_reasons() {
        let cases = [
            ("", "empty"),
            ("example.com/ws", "missing scheme"),
            ("http://example.com", "http://"),
            ("ftp://example.com", "unsupported scheme"),
            ("ws://", "host is empty"),
            ("ws:///path", "host is empty"),
            ("ws://:80/", "host is empty"),
            ("ws://host:99999/", "port"),
            ("ws://host:abc/", "port"),
            ("ws://host:/", "port is empty"),
            ("ws://host:0/", "port 0"),
            ("ws://ho st/", "whitespace"),
            ("ws://host/#frag", "fragment"),
            ("ws://user:pw@host/", "credentials"),
            ("ws://[::1/", "IPv6"),
            ("ws://[nope]/", "IPv6"),
            ("ws://ho%st/", "not allowed"),
        ];
        for (url, needle) in cases {
            match parse(url) {
                Err(Error::InvalidUrl { reason, .. }) => {
                    assert!(reason.contains(needle), "{url:?}: {reason}")
                }
                other => panic!("{url:?}: expected InvalidUrl, got {other:?}"),
            }
        }
    }

    #[test]
    fn errors_never_echo_credentials() {
        let err = parse("ws://user:secret@host/").unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
        assert_eq!(redact("wss://a:b@h:1/p"), "wss://***@h:1/p");
    }
}
