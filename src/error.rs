//! The crate's one error type and its classification.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::message::{CloseCode, CloseFrame};

/// A specialized [`Result`](std::result::Result) for jetsocket operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which deadline passed, carried by [`Error::Timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Timeout {
    /// DNS, TCP, TLS and the WebSocket handshake together took longer than
    /// [`Builder::connect_timeout`](crate::Builder::connect_timeout).
    Connect,
    /// The peer did not answer our close frame within
    /// [`Builder::close_timeout`](crate::Builder::close_timeout).
    Close,
    /// A `send_timeout`/`send_deadline` could not queue the message in time.
    Send,
    /// A `recv_timeout`/`recv_deadline` saw no message in time.
    Recv,
    /// No pong arrived within the heartbeat timeout: the peer is considered dead.
    Heartbeat,
    /// A connection pool could not hand out a connection in time.
    Acquire,
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Timeout::Connect => "connect",
            Timeout::Close => "close handshake",
            Timeout::Send => "send",
            Timeout::Recv => "receive",
            Timeout::Heartbeat => "heartbeat (no pong)",
            Timeout::Acquire => "pool acquire",
        })
    }
}

/// Everything that can go wrong in jetsocket.
///
/// The variants fall into groups a caller can act on:
///
/// * **your input**: [`InvalidUrl`](Error::InvalidUrl), [`InvalidConfig`](Error::InvalidConfig);
/// * **network and TLS**: [`Io`](Error::Io), [`Dns`](Error::Dns), [`Tls`](Error::Tls),
///   [`Certificate`](Error::Certificate);
/// * **the handshake**: [`Http`](Error::Http), [`Handshake`](Error::Handshake),
///   [`Proxy`](Error::Proxy);
/// * **the protocol**: [`Protocol`](Error::Protocol), [`MessageTooLarge`](Error::MessageTooLarge);
/// * **limits**: [`SendQueueFull`](Error::SendQueueFull), [`BufferOverflow`](Error::BufferOverflow),
///   [`PoolExhausted`](Error::PoolExhausted);
/// * **endings**: [`ConnectionClosed`](Error::ConnectionClosed) (the peer closed),
///   [`AlreadyClosed`](Error::AlreadyClosed) (you used a closed handle),
///   [`RetriesExhausted`](Error::RetriesExhausted);
/// * **deadlines**: [`Timeout`](Error::Timeout);
/// * **hooks and internals**: [`Hook`](Error::Hook), [`WorkerPanicked`](Error::WorkerPanicked).
///
/// [`is_fatal`](Error::is_fatal) tells whether the engine gives up (state
/// [`Failed`](crate::State::Failed)) or retries. `Error` is `Clone` so that one failure can be
/// handed to every event subscriber; wrapped I/O errors are shared behind an [`Arc`].
///
/// Texts of wrapped third-party errors (TLS, tungstenite) are carried as strings and are not
/// covered by semver.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL could not be used: not `ws://`/`wss://`, no host, a bad port, and so on.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given (user information removed).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A socket operation failed.
    #[error("I/O error: {0}")]
    Io(Arc<std::io::Error>),
    /// The host name did not resolve to any address.
    #[error("could not resolve {host:?}: {reason}")]
    Dns {
        /// The host that was looked up.
        host: String,
        /// Why it failed.
        reason: String,
    },
    /// The TLS handshake failed for a reason other than the certificate.
    #[error("TLS error: {0}")]
    Tls(String),
    /// The server's certificate was rejected (untrusted, expired, wrong host name). Fatal.
    #[error("TLS certificate rejected: {0}")]
    Certificate(String),
    /// `wss://` was requested but the crate was built without the `native-tls` feature.
    #[error("wss:// needs the `native-tls` feature")]
    TlsUnavailable,
    /// The server answered the upgrade request with an HTTP status other than 101.
    #[error("handshake rejected with HTTP {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Http {
        /// The HTTP status code.
        status: u16,
        /// The start of the response body, if any (at most 512 bytes, lossily decoded).
        body: String,
    },
    /// The HTTP proxy refused to open the tunnel (407 is fatal: the credentials are wrong).
    #[error("proxy refused the tunnel: HTTP {status} {reason}")]
    Proxy {
        /// The proxy's HTTP status.
        status: u16,
        /// The proxy's reason phrase.
        reason: String,
    },
    /// The server's handshake response was malformed (garbage, no `Upgrade`, a wrong
    /// `Sec-WebSocket-Accept`, headers that never end, ...).
    #[error("invalid handshake response: {0}")]
    Handshake(String),
    /// The peer broke the WebSocket protocol (reserved bits, bad opcodes, invalid UTF-8 in a
    /// text message, a bad close code, ...).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An incoming message or frame exceeded the configured maximum size.
    #[error("message too large: {0}")]
    MessageTooLarge(String),
    /// The send queue is at its capacity (see [`Builder::send_queue`](crate::Builder::send_queue)).
    #[error("send queue is full ({capacity} messages)")]
    SendQueueFull {
        /// The configured capacity.
        capacity: usize,
    },
    /// Messages were dropped under [`OverflowPolicy::Error`](crate::OverflowPolicy::Error);
    /// delivery continues with the next `recv`.
    #[error("inbound buffer overflowed: {dropped} messages dropped")]
    BufferOverflow {
        /// How many messages were dropped since the last report.
        dropped: u64,
    },
    /// Every connection of a [`ConnectionPool`](crate::ConnectionPool) stayed in use for the whole
    /// acquire timeout.
    #[error("connection pool exhausted: all {max_connections} connections in use for {timeout:?}")]
    PoolExhausted {
        /// The pool's `max_connections`.
        max_connections: usize,
        /// How long `acquire` waited.
        timeout: Duration,
    },
    /// The peer closed the connection (carrying its close frame, if it sent one).
    #[error("connection closed by peer{}", match .0 { Some(f) => format!(": {f}"), None => String::new() })]
    ConnectionClosed(Option<CloseFrame>),
    /// The handle is closed (by [`close`](crate::SyncWebSocket::close) or because the connection
    /// ended) and cannot be used any more.
    #[error("connection is closed")]
    AlreadyClosed,
    /// Reconnecting gave up after `max_attempts` failed attempts. Fatal.
    #[error("gave up after {attempts} reconnect attempts; last error: {last}")]
    RetriesExhausted {
        /// How many reconnect attempts were made.
        attempts: u32,
        /// The error of the last attempt.
        last: Box<Error>,
    },
    /// A deadline passed.
    #[error("{0} timed out")]
    Timeout(Timeout),
    /// An `on_open` or replay hook returned an error or panicked; the attempt counts as failed.
    #[error("hook failed: {0}")]
    Hook(String),
    /// A message could not be serialized to or parsed from JSON (`json` feature). Carries the
    /// raw text so nothing is lost.
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    #[error("JSON error: {error}")]
    Json {
        /// What serde_json reported.
        error: Arc<serde_json::Error>,
        /// The payload that failed to parse (empty when serializing failed).
        raw: crate::Message,
    },
    /// The background I/O thread panicked. This is a bug in jetsocket; please report it.
    #[error("the I/O thread panicked: {0}")]
    WorkerPanicked(String),
}

const INVALID_UTF8: &str = "invalid UTF-8 in a text message";
/// How a message that does not inflate is reported; it is answered with close code 1007.
const INVALID_DEFLATE: &str = "invalid compressed message";

/// HTTP statuses that mean "do not try again": the credentials or the path are wrong.
const FATAL_HTTP: [u16; 4] = [401, 403, 404, 410];

impl Error {
    /// Whether retrying cannot help, so the connection goes to [`State::Failed`](crate::State::Failed).
    ///
    /// Fatal: invalid URL or configuration, HTTP 401/403/404/410 during the handshake, a close
    /// with code 1008, 4401 or 4403, a rejected certificate, missing TLS support, exhausted
    /// retries. Everything else (network errors, timeouts, HTTP 5xx, an unexpected close) is
    /// retriable.
    ///
    /// # Examples
    ///
    /// ```
    /// use jetsocket::Error;
    /// assert!(Error::Http { status: 401, body: String::new() }.is_fatal());
    /// assert!(!Error::Http { status: 503, body: String::new() }.is_fatal());
    /// ```
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::InvalidUrl { .. }
            | Error::InvalidConfig(_)
            | Error::Certificate(_)
            | Error::TlsUnavailable
            | Error::RetriesExhausted { .. } => true,
            Error::Http { status, .. } => FATAL_HTTP.contains(status),
            Error::Proxy { status, .. } => *status == 407,
            Error::ConnectionClosed(Some(frame)) => frame.code.is_fatal(),
            _ => false,
        }
    }

    /// Whether this is [`Error::Timeout`] (of any kind).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_))
    }

    /// Whether the connection is over: [`AlreadyClosed`](Error::AlreadyClosed) or
    /// [`ConnectionClosed`](Error::ConnectionClosed).
    pub fn is_closed(&self) -> bool {
        matches!(self, Error::AlreadyClosed | Error::ConnectionClosed(_))
    }

    /// Converts into a [`std::io::Error`], keeping the original I/O error where there is one.
    pub fn into_io(self) -> std::io::Error {
        use std::io::ErrorKind;
        match self {
            Error::Io(e) => match Arc::try_unwrap(e) {
                Ok(e) => e,
                Err(e) => std::io::Error::new(e.kind(), e.to_string()),
            },
            Error::Timeout(_) => std::io::Error::new(ErrorKind::TimedOut, self),
            Error::AlreadyClosed | Error::ConnectionClosed(_) => {
                std::io::Error::new(ErrorKind::NotConnected, self)
            }
            Error::InvalidUrl { .. } | Error::InvalidConfig(_) => {
                std::io::Error::new(ErrorKind::InvalidInput, self)
            }
            other => std::io::Error::other(other),
        }
    }

    /// The close code to send when this error ends a connection on our side: 1002 for a
    /// protocol violation, 1007 for invalid UTF-8 or compressed data, 1009 for a message that
    /// is too big.
    pub(crate) fn close_code(&self) -> Option<CloseCode> {
        match self {
            Error::Protocol(text)
                if text.starts_with(INVALID_UTF8) || text.starts_with(INVALID_DEFLATE) =>
            {
                Some(CloseCode::INVALID)
            }
            Error::Protocol(_) => Some(CloseCode::PROTOCOL),
            Error::MessageTooLarge(_) => Some(CloseCode::SIZE),
            _ => None,
        }
    }

    pub(crate) fn invalid_url(url: &str, reason: impl Into<String>) -> Self {
        Error::InvalidUrl {
            url: url.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn config(reason: impl Into<String>) -> Self {
        Error::InvalidConfig(reason.into())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(Arc::new(e))
    }
}

impl From<tungstenite::Error> for Error {
    fn from(e: tungstenite::Error) -> Self {
        use tungstenite::error::CapacityError;
        use tungstenite::Error as T;
        match e {
            T::ConnectionClosed | T::AlreadyClosed => Error::ConnectionClosed(None),
            T::Io(io) => match crate::deflate::close_code_of(&io) {
                Some((1009, reason)) => Error::MessageTooLarge(reason),
                Some((1007, reason)) => Error::Protocol(format!("{INVALID_DEFLATE}: {reason}")),
                Some((_, reason)) => Error::Protocol(reason),
                None => Error::Io(Arc::new(io)),
            },
            T::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                Error::MessageTooLarge(format!("{size} bytes, limit {max_size}"))
            }
            T::Capacity(c) => Error::MessageTooLarge(c.to_string()),
            T::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
                Error::ConnectionClosed(None)
            }
            T::Protocol(p) => Error::Protocol(p.to_string()),
            T::Utf8(s) => Error::Protocol(format!("{INVALID_UTF8}: {s}")),
            T::WriteBufferFull(_) => {
                Error::Io(Arc::new(std::io::Error::other("write buffer full")))
            }
            T::Url(u) => Error::InvalidUrl {
                url: String::new(),
                reason: u.to_string(),
            },
            T::Http(resp) => Error::Http {
                status: resp.status().as_u16(),
                body: String::new(),
            },
            T::HttpFormat(h) => Error::Handshake(h.to_string()),
            T::AttackAttempt => Error::Protocol("attack attempt detected".into()),
            other => Error::Protocol(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn error_is_send_sync_static() {
        assert_send_sync::<Error>();
    }

    #[test]
    fn fatal_http_statuses() {
        for s in [401, 403, 404, 410] {
            assert!(
                Error::Http {
                    status: s,
                    body: String::new()
                }
                .is_fatal(),
                "{s}"
            );
        }
        for s in [400, 429, 500, 502, 503] {
            assert!(
                !Error::Http {
                    status: s,
                    body: String::new()
                }
                .is_fatal(),
                "{s}"
            );
        }
    }

    #[test]
    fn fatal_close_codes() {
        for code in [1008, 4401, 4403] {
            let e = Error::ConnectionClosed(Some(CloseFrame::new(CloseCode::from(code), "")));
            assert!(e.is_fatal(), "{code}");
        }
        for code in [1000, 1001, 1006, 1011, 4000] {
            let e = Error::ConnectionClosed(Some(CloseFrame::new(CloseCode::from(code), "")));
            assert!(!e.is_fatal(), "{code}");
        }
        assert!(!Error::ConnectionClosed(None).is_fatal());
    }

    #[test]
    fn retriable_network_errors() {
        let e: Error = std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        assert!(!e.is_fatal());
        assert!(!Error::Timeout(Timeout::Heartbeat).is_fatal());
        assert!(Error::Certificate("x".into()).is_fatal());
        assert!(Error::config("x").is_fatal());
    }

    #[test]
    fn display_is_meaningful() {
        let e = Error::Http {
            status: 401,
            body: "no".into(),
        };
        assert_eq!(e.to_string(), "handshake rejected with HTTP 401: no");
        assert_eq!(
            Error::Timeout(Timeout::Connect).to_string(),
            "connect timed out"
        );
        let io = Error::AlreadyClosed.into_io();
        assert_eq!(io.kind(), std::io::ErrorKind::NotConnected);
    }
}
