//! Messages, close frames and close codes: jetsocket's own types, so tungstenite's never leak
//! into the public API.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

/// An immutable, cheaply clonable UTF-8 string: the payload of a text [`Message`].
///
/// Incoming text is handed over without copying; cloning only bumps a reference count.
/// It dereferences to [`str`].
///
/// # Examples
///
/// ```
/// use jetsocket::Utf8Bytes;
/// let text = Utf8Bytes::from("hello");
/// assert_eq!(text.as_str(), "hello");
/// assert_eq!(text.len(), 5);
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Utf8Bytes(tungstenite::Utf8Bytes);

impl Utf8Bytes {
    /// Creates from a static string without copying.
    pub const fn from_static(s: &'static str) -> Self {
        Utf8Bytes(tungstenite::Utf8Bytes::from_static(s))
    }

    /// The text as a string slice.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The underlying bytes (shared, no copy).
    pub fn into_bytes(self) -> Bytes {
        self.0.into()
    }

    pub(crate) fn into_inner(self) -> tungstenite::Utf8Bytes {
        self.0
    }

    pub(crate) fn from_inner(inner: tungstenite::Utf8Bytes) -> Self {
        Utf8Bytes(inner)
    }
}

impl Deref for Utf8Bytes {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Utf8Bytes {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Utf8Bytes {
    fn as_ref(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Self {
        Utf8Bytes(s.into())
    }
}

impl From<&str> for Utf8Bytes {
    fn from(s: &str) -> Self {
        Utf8Bytes(s.into())
    }
}

impl From<&String> for Utf8Bytes {
    fn from(s: &String) -> Self {
        Utf8Bytes(s.as_str().into())
    }
}

impl From<Utf8Bytes> for String {
    fn from(s: Utf8Bytes) -> Self {
        s.as_str().to_owned()
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Utf8Bytes {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

/// A complete WebSocket data message: text or binary.
///
/// Control frames (ping, pong, close) are handled by the engine and surface as
/// [`Event`](crate::Event)s, never as messages. Payloads are reference-counted, so cloning a
/// message is cheap and incoming payloads are not copied.
///
/// # Examples
///
/// ```
/// use jetsocket::Message;
/// let m = Message::text("hi");
/// assert!(m.is_text());
/// assert_eq!(m.as_text(), Some("hi"));
/// let b: Message = vec![1u8, 2, 3].into();
/// assert_eq!(b.as_bytes(), &[1, 2, 3]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Message {
    /// A UTF-8 text message.
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Message {
    /// A text message.
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        Message::Text(text.into())
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Message::Binary(data.into())
    }

    /// Whether this is a text message.
    pub fn is_text(&self) -> bool {
        matches!(self, Message::Text(_))
    }

    /// Whether this is a binary message.
    pub fn is_binary(&self) -> bool {
        matches!(self, Message::Binary(_))
    }

    /// The text, if this is a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(t) => Some(t.as_str()),
            Message::Binary(_) => None,
        }
    }

    /// The payload bytes, whatever the kind.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(t) => t.as_str().as_bytes(),
            Message::Binary(b) => b,
        }
    }

    /// The payload length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload as shared bytes (no copy).
    pub fn into_data(self) -> Bytes {
        match self {
            Message::Text(t) => t.into_bytes(),
            Message::Binary(b) => b,
        }
    }

    /// The payload as text: a text message as is, a binary one if it is valid UTF-8.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`](crate::Error::Protocol) when a binary payload is not UTF-8.
    pub fn into_text(self) -> crate::Result<Utf8Bytes> {
        match self {
            Message::Text(t) => Ok(t),
            Message::Binary(b) => tungstenite::Utf8Bytes::try_from(b)
                .map(Utf8Bytes::from_inner)
                .map_err(|e| crate::Error::Protocol(format!("not UTF-8: {e}"))),
        }
    }

    /// Borrows the payload as text: a text message as is, a binary one if it is valid UTF-8.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`](crate::Error::Protocol) when a binary payload is not UTF-8.
    pub fn to_text(&self) -> crate::Result<&str> {
        match self {
            Message::Text(t) => Ok(t.as_str()),
            Message::Binary(b) => std::str::from_utf8(b)
                .map_err(|e| crate::Error::Protocol(format!("not UTF-8: {e}"))),
        }
    }

    pub(crate) fn into_tungstenite(self) -> tungstenite::Message {
        match self {
            Message::Text(t) => tungstenite::Message::Text(t.into_inner()),
            Message::Binary(b) => tungstenite::Message::Binary(b),
        }
    }
}

impl AsRef<[u8]> for Message {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Message::text(s)
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Self {
        Message::text(s)
    }
}

impl From<Utf8Bytes> for Message {
    fn from(s: Utf8Bytes) -> Self {
        Message::Text(s)
    }
}

impl From<Vec<u8>> for Message {
    fn from(b: Vec<u8>) -> Self {
        Message::binary(b)
    }
}

impl From<&[u8]> for Message {
    fn from(b: &[u8]) -> Self {
        Message::binary(Bytes::copy_from_slice(b))
    }
}

impl From<Bytes> for Message {
    fn from(b: Bytes) -> Self {
        Message::Binary(b)
    }
}

/// A WebSocket close status code (RFC 6455 §7.4).
///
/// # Examples
///
/// ```
/// use jetsocket::CloseCode;
/// assert_eq!(CloseCode::NORMAL.as_u16(), 1000);
/// assert!(CloseCode::from(4401).is_fatal());
/// assert!(CloseCode::from(4000).is_sendable());
/// assert!(!CloseCode::from(1006).is_sendable());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(u16);

impl CloseCode {
    /// 1000: normal closure.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away.
    pub const AWAY: CloseCode = CloseCode(1001);
    /// 1002: protocol error.
    pub const PROTOCOL: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED: CloseCode = CloseCode(1003);
    /// 1005: no status code was present (never sent on the wire).
    pub const STATUS: CloseCode = CloseCode(1005);
    /// 1006: the connection dropped without a close frame (never sent on the wire).
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: data inconsistent with the message type (e.g. bad UTF-8).
    pub const INVALID: CloseCode = CloseCode(1007);
    /// 1008: policy violation. Fatal: jetsocket does not reconnect.
    pub const POLICY: CloseCode = CloseCode(1008);
    /// 1009: message too big.
    pub const SIZE: CloseCode = CloseCode(1009);
    /// 1010: a required extension was not negotiated.
    pub const EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: unexpected server error.
    pub const ERROR: CloseCode = CloseCode(1011);
    /// 1012: the service is restarting.
    pub const RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later.
    pub const AGAIN: CloseCode = CloseCode(1013);

    /// The numeric code.
    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// Whether the code means "do not reconnect": 1008, 4401 (unauthorized) or 4403 (forbidden).
    pub fn is_fatal(self) -> bool {
        matches!(self.0, 1008 | 4401 | 4403)
    }

    /// Whether an endpoint may send this code in a close frame: 1000–1003, 1007–1014, and
    /// 3000–4999.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        CloseCode(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A close frame: a code and a (possibly empty) reason.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// The reason text (at most 123 bytes on the wire).
    pub reason: String,
}

impl CloseFrame {
    /// A close frame with the given code and reason.
    pub fn new(code: impl Into<CloseCode>, reason: impl Into<String>) -> Self {
        CloseFrame {
            code: code.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn from_tungstenite(f: tungstenite::protocol::CloseFrame) -> Self {
        CloseFrame {
            code: CloseCode(u16::from(f.code)),
            reason: f.reason.as_str().to_owned(),
        }
    }

    pub(crate) fn to_tungstenite(&self) -> tungstenite::protocol::CloseFrame {
        tungstenite::protocol::CloseFrame {
            code: self.code.0.into(),
            reason: self.reason.as_str().into(),
        }
    }
}

impl fmt::Display for CloseFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{} ({})", self.code, self.reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        let m: Message = "a".into();
        assert_eq!(m, Message::text("a"));
        assert_eq!(m.clone().into_data(), Bytes::from_static(b"a"));
        let b = Message::binary(vec![0xff]);
        assert!(b.to_text().is_err());
        assert!(b.into_text().is_err());
        let ok = Message::binary(&b"ok"[..]);
        assert_eq!(ok.into_text().unwrap(), "ok");
        assert!(Message::text("").is_empty());
    }

    #[test]
    fn close_codes() {
        assert!(CloseCode::POLICY.is_fatal());
        assert!(!CloseCode::NORMAL.is_fatal());
        assert!(!CloseCode::ABNORMAL.is_sendable());
        assert!(!CloseCode::from(999).is_sendable());
        assert!(!CloseCode::from(5000).is_sendable());
        let f = CloseFrame::new(4000, "bye");
        assert_eq!(f.to_string(), "4000 (bye)");
        assert_eq!(CloseFrame::from_tungstenite(f.to_tungstenite()), f);
    }
}
