//! Settings that are not big enough for a module of their own, the hook types, and the
//! validated, immutable settings handed to the I/O thread.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::BackoffConfig;
use crate::buffer::BufferConfig;
use crate::error::{Error, Result};
use crate::heartbeat::HeartbeatConfig;
use crate::hooks::Opened;
use crate::message::Message;
use crate::tls::Connector;
use crate::url::Target;

/// What [`send`](crate::SyncWebSocket::send) does when the send queue is full while the
/// connection is away (connecting, reconnecting or backing off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SendFullPolicy {
    /// Fail at once with [`Error::SendQueueFull`]. The default: a program never hangs on a
    /// server that stays down.
    #[default]
    Error,
    /// Block until the connection is back and the queue drains (use
    /// [`send_timeout`](crate::SyncWebSocket::send_timeout) to bound the wait).
    Block,
}

/// The queue of outgoing messages between callers and the I/O thread.
///
/// Messages sent while the connection is away wait here and go out in order after the next
/// successful handshake (after the `on_open` hook's own messages). While connected, a full
/// queue means the socket is pushing back, and `send` waits for room whatever the policy.
///
/// # Examples
///
/// ```
/// use jetsocket::{SendFullPolicy, SendQueueConfig};
/// let q = SendQueueConfig::new(10_000).when_full(SendFullPolicy::Block);
/// assert_eq!(q.capacity, 10_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SendQueueConfig {
    /// Messages held at most. Defaults to 1024.
    pub capacity: usize,
    /// What `send` does when the queue is full while away. Defaults to
    /// [`SendFullPolicy::Error`].
    pub when_full: SendFullPolicy,
}

impl Default for SendQueueConfig {
    fn default() -> Self {
        SendQueueConfig {
            capacity: 1024,
            when_full: SendFullPolicy::Error,
        }
    }
}

impl SendQueueConfig {
    /// A queue of `capacity` messages that fails sends when full.
    pub fn new(capacity: usize) -> Self {
        SendQueueConfig {
            capacity,
            ..Self::default()
        }
    }

    /// What `send` does when full while away. Defaults to [`SendFullPolicy::Error`].
    pub fn when_full(mut self, policy: SendFullPolicy) -> Self {
        self.when_full = policy;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.capacity == 0 {
            return Err(Error::config("send queue capacity must be at least 1"));
        }
        Ok(())
    }
}

/// Runs after every successful handshake; see [`Builder::on_open`](crate::Builder::on_open).
pub(crate) type OpenHook = Arc<dyn Fn(&mut Opened<'_>) -> Result<()> + Send + Sync>;
/// Returns fresh handshake headers before every attempt.
pub(crate) type HeaderProvider = Arc<dyn Fn() -> Vec<(String, String)> + Send + Sync>;
/// Extracts a message's sequence id, for dedup and replay.
pub(crate) type SequenceExtractor = Arc<dyn Fn(&Message) -> Option<u64> + Send + Sync>;
/// Asks the server for what was missed; see [`ReplayConfig`](crate::ReplayConfig).
pub(crate) type ReplayHook = Arc<dyn Fn(&mut Opened<'_>, u64) -> Result<()> + Send + Sync>;
/// Runs on the I/O thread for each incoming message before the inbound buffer: returns the
/// message to buffer it, or `None` when it was delivered elsewhere (multiplex routing).
/// It must never block.
pub(crate) type Router = Arc<dyn Fn(Message) -> Option<Message> + Send + Sync>;
/// Runs on the I/O thread once the connection has ended for good (closed, failed, or the I/O
/// thread panicked), after the final state is set. It must never block.
pub(crate) type EndHook = Arc<dyn Fn() + Send + Sync>;

/// Everything the I/O thread needs, validated once and then immutable.
pub(crate) struct Settings {
    pub(crate) url: String,
    pub(crate) target: Target,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) header_provider: Option<HeaderProvider>,
    pub(crate) subprotocols: Vec<String>,
    pub(crate) connect_timeout: Duration,
    pub(crate) close_timeout: Duration,
    pub(crate) ws_config: tungstenite::protocol::WebSocketConfig,
    pub(crate) tls: Option<Connector>,
    pub(crate) nodelay: bool,
    pub(crate) busy_poll: Duration,
    /// Offer permessage-deflate with these settings; `None` when compression is off.
    pub(crate) deflate: Option<crate::deflate::DeflateConfig>,
    pub(crate) proxy: Option<crate::proxy::Proxy>,
    pub(crate) reconnect: bool,
    pub(crate) backoff: BackoffConfig,
    pub(crate) heartbeat: Option<HeartbeatConfig>,
    pub(crate) max_connection_age: Option<Duration>,
    pub(crate) buffer: BufferConfig,
    pub(crate) send_queue: SendQueueConfig,
    pub(crate) on_open: Vec<OpenHook>,
    pub(crate) router: Option<Router>,
    pub(crate) on_end: Option<EndHook>,
    pub(crate) sequence_id: Option<SequenceExtractor>,
    pub(crate) replay: Option<ReplayHook>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("url", &self.url)
            .field("headers", &redacted_headers(&self.headers))
            .field("subprotocols", &self.subprotocols)
            .field("connect_timeout", &self.connect_timeout)
            .field("close_timeout", &self.close_timeout)
            .field("deflate", &self.deflate)
            .field("proxy", &self.proxy)
            .field("reconnect", &self.reconnect)
            .field("backoff", &self.backoff)
            .field("heartbeat", &self.heartbeat)
            .field("max_connection_age", &self.max_connection_age)
            .field("buffer", &self.buffer)
            .field("send_queue", &self.send_queue)
            .finish_non_exhaustive()
    }
}

/// Header names with their values hidden: values often carry credentials.
pub(crate) fn redacted_headers(headers: &[(String, String)]) -> Vec<(String, &'static str)> {
    headers
        .iter()
        .map(|(name, _)| (name.clone(), "<redacted>"))
        .collect()
}

/// Checks a header name and value so that nothing can be smuggled into the request.
pub(crate) fn check_header(name: &str, value: &str) -> Result<()> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(Error::config(format!("invalid header name {name:?}")));
    }
    if value.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
        return Err(Error::config(format!(
            "the value of header {name:?} contains a line break or NUL"
        )));
    }
    const RESERVED: [&str; 7] = [
        "host",
        "connection",
        "upgrade",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
    ];
    if RESERVED.iter().any(|r| name.eq_ignore_ascii_case(r)) {
        return Err(Error::config(format!(
            "header {name:?} is set by the handshake itself{}",
            if name.eq_ignore_ascii_case("sec-websocket-protocol") {
                "; use Builder::subprotocol"
            } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
                "; use Builder::compression"
            } else {
                ""
            }
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks() {
        assert!(check_header("Authorization", "Bearer x").is_ok());
        assert!(check_header("X-Api-Key", "").is_ok());
        assert!(check_header("", "v").is_err());
        assert!(check_header("Bad Name", "v").is_err());
        assert!(check_header("X", "a\r\nInjected: 1").is_err());
        assert!(check_header("Host", "evil").is_err());
        assert!(check_header("sec-websocket-protocol", "x")
            .unwrap_err()
            .to_string()
            .contains("subprotocol"));
    }

    #[test]
    fn redaction_hides_values() {
        let h = vec![("Authorization".to_owned(), "secret".to_owned())];
        assert_eq!(
            format!("{:?}", redacted_headers(&h)),
            r#"[("Authorization", "<redacted>")]"#
        );
        assert!(SendQueueConfig::new(0).validate().is_err());
    }
}
