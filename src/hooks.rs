//! What `on_open` and replay hooks get to work with, and the replay configuration.

use std::fmt;
use std::sync::Arc;

use crate::config::ReplayHook;
use crate::error::Result;
use crate::io::stream::Transport;
use crate::message::Message;
use crate::stats::Counters;

/// A freshly opened connection, handed to [`Builder::on_open`](crate::Builder::on_open) and to
/// the [`ReplayConfig`] hook on the I/O thread, before any queued message goes out.
///
/// Messages sent here are written first, in order: authenticate and subscribe here, and
/// every reconnect repeats it.
///
/// # Examples
///
/// ```no_run
/// use jetsocket::SyncWebSocket;
///
/// let ws = SyncWebSocket::builder("wss://stream.example.com/ws")
///     .on_open(|conn| {
///         if conn.is_reconnect() {
///             log::info!("reconnected after {} attempts", conn.attempt());
///         }
///         conn.send_text(r#"{"op":"subscribe","args":["trades"]}"#)
///     })
///     .connect()?;
/// ws.close()?;
/// # Ok::<(), jetsocket::Error>(())
/// ```
pub struct Opened<'a> {
    pub(crate) ws: &'a mut tungstenite::WebSocket<Transport>,
    pub(crate) counters: &'a Counters,
    pub(crate) attempt: u32,
    pub(crate) reconnect: bool,
    pub(crate) subprotocol: Option<&'a str>,
    pub(crate) response_headers: &'a [(String, String)],
}

impl fmt::Debug for Opened<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("attempt", &self.attempt)
            .field("reconnect", &self.reconnect)
            .field("subprotocol", &self.subprotocol)
            .finish_non_exhaustive()
    }
}

impl Opened<'_> {
    /// Writes a message ahead of everything queued.
    ///
    /// # Errors
    ///
    /// The socket failed; the attempt then counts as failed and is retried.
    pub fn send(&mut self, msg: impl Into<Message>) -> Result<()> {
        let msg = msg.into();
        let len = msg.len() as u64;
        match self.ws.write(msg.into_tungstenite()) {
            Ok(()) => {}
            // The frame is buffered; the engine flushes it when the socket is writable.
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        Counters::add(&self.counters.messages_sent, 1);
        Counters::add(&self.counters.bytes_sent, len);
        Ok(())
    }

    /// Writes a text message ahead of everything queued.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn send_text(&mut self, text: impl Into<crate::Utf8Bytes>) -> Result<()> {
        self.send(Message::Text(text.into()))
    }

    /// Writes a binary message ahead of everything queued.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub fn send_binary(&mut self, data: impl Into<bytes::Bytes>) -> Result<()> {
        self.send(Message::Binary(data.into()))
    }

    /// Serializes `value` as JSON and writes it ahead of everything queued.
    ///
    /// # Errors
    ///
    /// [`Error::Json`](crate::Error::Json) if it does not serialize, or as [`send`](Self::send).
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn send_json<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.send(crate::json::to_message(value)?)
    }

    /// 1 for the first connection; for a reconnect, the attempt number that succeeded.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether this is a reconnect rather than the first connection.
    pub fn is_reconnect(&self) -> bool {
        self.reconnect
    }

    /// The subprotocol the server chose, if any.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol
    }

    /// A header of the server's handshake response (case-insensitive name).
    pub fn response_header(&self, name: &str) -> Option<&str> {
        self.response_headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Replay on reconnect: after each reconnect (after `on_open`, before queued sends) the hook
/// gets the last sequence id seen before the drop, so the application can ask the server for
/// what it missed. Needs a [`Builder::sequence_id`](crate::Builder::sequence_id) extractor.
/// Emits [`Event::ReplayStarted`](crate::Event::ReplayStarted) and
/// [`Event::ReplayCompleted`](crate::Event::ReplayCompleted) around the call.
///
/// # Examples
///
/// ```
/// use jetsocket::ReplayConfig;
/// let replay = ReplayConfig::sequence_id(|conn, last| {
///     conn.send_text(format!(r#"{{"op":"replay","from":{}}}"#, last + 1))
/// });
/// # let _ = replay;
/// ```
#[derive(Clone)]
pub struct ReplayConfig {
    pub(crate) hook: ReplayHook,
}

impl fmt::Debug for ReplayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayConfig")
            .field("mode", &"sequence_id")
            .finish()
    }
}

impl ReplayConfig {
    /// Calls `hook` with the last sequence id seen, after every reconnect that follows at
    /// least one message with an id. A hook error fails the attempt, which is retried.
    pub fn sequence_id(
        hook: impl Fn(&mut Opened<'_>, u64) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        ReplayConfig {
            hook: Arc::new(hook),
        }
    }
}
