//! The byte stream under tungstenite: plain TCP or TLS over a non-blocking mio socket.

use std::io::{self, Read, Write};

use mio::net::TcpStream;

/// A connected, non-blocking socket, with or without TLS.
pub(crate) enum Stream {
    Plain(TcpStream),
    #[cfg(feature = "native-tls")]
    Tls(Box<native_tls::TlsStream<TcpStream>>),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stream::Plain(s) => f.debug_tuple("Plain").field(s).finish(),
            #[cfg(feature = "native-tls")]
            Stream::Tls(s) => f.debug_tuple("Tls").field(s.get_ref()).finish(),
        }
    }
}

impl Stream {
    /// The TCP socket, for registration and shutdown.
    pub(crate) fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            Stream::Plain(s) => s,
            #[cfg(feature = "native-tls")]
            Stream::Tls(s) => s.get_mut(),
        }
    }
}

/// What tungstenite reads and writes: the socket, under the permessage-deflate layer when the
/// feature is on (the layer is transparent on connections that did not negotiate it).
#[cfg(feature = "deflate")]
pub(crate) type Transport = crate::deflate::DeflateStream<Stream>;
/// What tungstenite reads and writes: the socket itself.
#[cfg(not(feature = "deflate"))]
pub(crate) type Transport = Stream;

/// The TCP socket under a transport, for registration and shutdown.
pub(crate) fn tcp_of(transport: &mut Transport) -> &mut TcpStream {
    #[cfg(feature = "deflate")]
    let transport = transport.get_mut();
    transport.tcp_mut()
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            #[cfg(feature = "native-tls")]
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            #[cfg(feature = "native-tls")]
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write_vectored(bufs),
            #[cfg(feature = "native-tls")]
            Stream::Tls(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            #[cfg(feature = "native-tls")]
            Stream::Tls(s) => s.flush(),
        }
    }
}
