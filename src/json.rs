//! Typed JSON messages (`json` feature): send and receive serde types, and JSON-field
//! extractors for heartbeats and dedup.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::SyncWebSocket;
use crate::error::{Error, Result};
use crate::heartbeat::HeartbeatConfig;
use crate::message::Message;
use crate::stats::Counters;

/// Serializes `value` into a text message.
pub(crate) fn to_message<T: Serialize + ?Sized>(value: &T) -> Result<Message> {
    serde_json::to_string(value)
        .map(Message::text)
        .map_err(|e| Error::Json {
            error: std::sync::Arc::new(e),
            raw: Message::text(""),
        })
}

/// Parses a text or binary message as `T`; on failure the error carries the message.
pub(crate) fn from_message<T: DeserializeOwned>(msg: Message) -> Result<T> {
    serde_json::from_slice(msg.as_bytes()).map_err(|e| Error::Json {
        error: std::sync::Arc::new(e),
        raw: msg,
    })
}

/// Follows a dotted path (`"data.seq"`) through nested objects.
fn lookup<'v>(value: &'v serde_json::Value, path: &str) -> Option<&'v serde_json::Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

/// Reads the field at `path` of a JSON message as a sequence id (a non-negative integer, or
/// a string holding one).
pub(crate) fn sequence_at(msg: &Message, path: &str) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(msg.as_bytes()).ok()?;
    match lookup(&value, path)? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Whether the field at `path` of a JSON message equals `expected` (a string field compares
/// with the string, any other with its JSON text).
pub(crate) fn field_equals(msg: &Message, path: &str, expected: &str) -> bool {
    // Cheap pre-check: most messages are not pongs. The key must appear literally unless
    // the text uses escapes, so skip the parse when it does not.
    let raw = msg.as_bytes();
    let key = path.rsplit('.').next().unwrap_or(path);
    let needle = format!("\"{key}\"");
    if !raw.contains(&b'\\') && !raw.windows(needle.len()).any(|w| w == needle.as_bytes()) {
        return false;
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(msg.as_bytes()) else {
        return false;
    };
    match lookup(&value, path) {
        Some(serde_json::Value::String(s)) => s == expected,
        Some(other) => serde_json::to_string(other).is_ok_and(|text| text == expected),
        None => false,
    }
}

impl HeartbeatConfig {
    /// An application-level heartbeat in JSON: sends `ping` (serialized once) and treats any
    /// message whose field at `pong_path` (dotted for nesting) equals `pong_value` as the pong.
    ///
    /// # Examples
    ///
    /// ```
    /// use jetsocket::HeartbeatConfig;
    /// // Bybit: {"op":"ping"} answered by {"op":"pong", ...}
    /// let hb = HeartbeatConfig::default().json(&serde_json::json!({"op": "ping"}), "op", "pong")?;
    /// assert!(hb.is_application());
    /// # Ok::<(), jetsocket::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Json`] if `ping` does not serialize.
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn json<T: Serialize + ?Sized>(
        self,
        ping: &T,
        pong_path: impl Into<String>,
        pong_value: impl Into<String>,
    ) -> Result<Self> {
        let payload = to_message(ping)?;
        let (path, value) = (pong_path.into(), pong_value.into());
        Ok(self.application(payload, move |m: &Message| field_equals(m, &path, &value)))
    }
}

impl crate::client::Builder {
    /// Uses the integer field at `path` (dotted for nesting, e.g. `"data.u"`) of JSON
    /// messages as the sequence id for dedup and replay. Messages without it are passed
    /// through. See [`Builder::sequence_id`](crate::Builder::sequence_id).
    ///
    /// # Examples
    ///
    /// ```
    /// use jetsocket::{BufferConfig, SyncWebSocket};
    /// let builder = SyncWebSocket::builder("ws://127.0.0.1:9/")
    ///     .sequence_field("seq")
    ///     .buffer(BufferConfig::default().dedup(true));
    /// # let _ = builder;
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn sequence_field(self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.sequence_id(move |m| sequence_at(m, &path))
    }
}

impl SyncWebSocket {
    /// Serializes `value` as JSON and queues it as a text message.
    ///
    /// # Examples
    ///
    /// ```
    /// # let server = jetsocket::__doc_server();
    /// # let ws = jetsocket::SyncWebSocket::connect_url(server.url())?;
    /// use std::time::Duration;
    /// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    /// struct Order { id: u64, side: String }
    ///
    /// ws.send_json(&Order { id: 7, side: "buy".into() })?;
    /// let echoed: Order = ws.recv_json_timeout(Duration::from_secs(10))?;
    /// assert_eq!(echoed, Order { id: 7, side: "buy".into() });
    /// # Ok::<(), jetsocket::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Json`] if it does not serialize; otherwise as [`send`](Self::send).
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn send_json<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        self.send(to_message(value)?)
    }

    /// Receives the next message and parses it as `T` (strict: a message that does not parse
    /// is an error carrying it).
    ///
    /// # Errors
    ///
    /// [`Error::Json`] with the raw message if it does not parse; otherwise as
    /// [`recv`](Self::recv).
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn recv_json<T: DeserializeOwned>(&self) -> Result<T> {
        from_message(self.recv()?)
    }

    /// As [`recv_json`](Self::recv_json), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`recv_json`](Self::recv_json), or [`Error::Timeout`].
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn recv_json_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        from_message(self.recv_deadline(Instant::now() + timeout)?)
    }

    /// A blocking iterator of typed messages that yields `Err(Error::Json { raw, .. })` for a
    /// message that does not parse (strict mode) and ends when the connection ends.
    ///
    /// # Examples
    ///
    /// ```
    /// # let server = jetsocket::__doc_server();
    /// # let ws = jetsocket::SyncWebSocket::connect_url(server.url())?;
    /// ws.send_text(r#"{"price": 1.5}"#)?;
    /// ws.send_text("not json")?;
    /// let mut typed = ws.typed::<serde_json::Value>();
    /// assert_eq!(typed.next().unwrap()?["price"], 1.5);
    /// assert!(matches!(typed.next(), Some(Err(jetsocket::Error::Json { .. }))));
    /// # Ok::<(), jetsocket::Error>(())
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn typed<T: DeserializeOwned>(&self) -> Typed<'_, T> {
        Typed {
            ws: self,
            _t: PhantomData,
        }
    }

    /// A blocking iterator of typed messages that skips messages that do not parse (lenient
    /// mode), counting them in [`Stats::parse_failures`](crate::Stats::parse_failures).
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn typed_lenient<T: DeserializeOwned>(&self) -> TypedLenient<'_, T> {
        TypedLenient {
            ws: self,
            _t: PhantomData,
        }
    }
}

/// Typed messages, strict mode; see [`SyncWebSocket::typed`].
#[derive(Debug)]
#[cfg_attr(docsrs, doc(cfg(feature = "json")))]
pub struct Typed<'a, T> {
    ws: &'a SyncWebSocket,
    _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Iterator for Typed<'_, T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        let msg = self.ws.messages().next()?;
        Some(from_message(msg))
    }
}

/// Typed messages, lenient mode; see [`SyncWebSocket::typed_lenient`].
#[derive(Debug)]
#[cfg_attr(docsrs, doc(cfg(feature = "json")))]
pub struct TypedLenient<'a, T> {
    ws: &'a SyncWebSocket,
    _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Iterator for TypedLenient<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        loop {
            let msg = self.ws.messages().next()?;
            match from_message(msg) {
                Ok(v) => return Some(v),
                Err(e) => {
                    log::debug!("skipping a message that is not valid JSON for the type: {e}");
                    Counters::add(&self.ws.counters().parse_failures, 1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_paths() {
        let m = Message::text(r#"{"seq": 42, "data": {"u": "7", "neg": -1}}"#);
        assert_eq!(sequence_at(&m, "seq"), Some(42));
        assert_eq!(sequence_at(&m, "data.u"), Some(7));
        assert_eq!(sequence_at(&m, "data.neg"), None);
        assert_eq!(sequence_at(&m, "missing"), None);
        assert_eq!(sequence_at(&Message::text("nope"), "seq"), None);
    }

    #[test]
    fn pong_field_matching() {
        let pong = Message::text(r#"{"op":"pong","ret_msg":"pong"}"#);
        assert!(field_equals(&pong, "op", "pong"));
        assert!(!field_equals(
            &Message::text(r#"{"op":"ping"}"#),
            "op",
            "pong"
        ));
        assert!(!field_equals(
            &Message::text(r#"{"data":"pong"}"#),
            "op",
            "pong"
        ));
        assert!(field_equals(&Message::text(r#"{"id":5}"#), "id", "5"));
        assert!(!field_equals(&Message::text("pong"), "op", "pong"));
    }

    #[test]
    fn parse_failure_keeps_raw() {
        let err = from_message::<u32>(Message::text("x")).unwrap_err();
        match err {
            Error::Json { raw, .. } => assert_eq!(raw, Message::text("x")),
            other => panic!("{other:?}"),
        }
    }
}
