//! One connection attempt, driven by readiness: resolve (on a short-lived thread, since the
//! system resolver blocks), non-blocking TCP connect (trying each address), TLS handshake,
//! then the WebSocket upgrade, never reading past the response head.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, TryRecvError};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::deflate::DeflateConfig;
use crate::error::{Error, Result};
use crate::handshake::{self, Accepted};
use crate::io::stream::Stream;
use crate::proxy::{self, Proxy};
use crate::tls::Connector;
use crate::url::Target;

/// Everything an attempt needs to know, prepared by the engine.
pub(crate) struct AttemptParams<'a> {
    pub(crate) target: &'a Target,
    pub(crate) headers: &'a [(String, String)],
    pub(crate) subprotocols: &'a [String],
    pub(crate) tls: Option<&'a Connector>,
    pub(crate) nodelay: bool,
    pub(crate) proxy: Option<&'a Proxy>,
    /// Offer permessage-deflate with these settings.
    pub(crate) deflate: Option<&'a DeflateConfig>,
    pub(crate) deadline: Instant,
}

/// A finished handshake.
pub(crate) struct Established {
    pub(crate) stream: Stream,
    /// Bytes after the response head that arrived with it (frames the server sent at once).
    pub(crate) leftover: Vec<u8>,
    pub(crate) accepted: Accepted,
}

enum Stage {
    /// Waiting for the resolver thread's answer.
    Resolving(Receiver<Result<VecDeque<SocketAddr>>>),
    Tcp {
        stream: TcpStream,
        rest: VecDeque<SocketAddr>,
    },
    /// Asking an HTTP proxy for a tunnel: the CONNECT request written so far, then its answer.
    Tunnel {
        stream: TcpStream,
        written: usize,
    },
    #[cfg(feature = "native-tls")]
    Tls(native_tls::MidHandshakeTlsStream<TcpStream>),
    Request {
        stream: Stream,
        written: usize,
    },
    Response {
        stream: Stream,
        buf: Vec<u8>,
    },
    Finished,
}

/// An attempt in progress.
pub(crate) struct Attempt {
    stage: Stage,
    token: Token,
    host: String,
    tls: Option<Connector>,
    nodelay: bool,
    tunnel_request: Option<Vec<u8>>,
    key: String,
    request: Vec<u8>,
    subprotocols: Vec<String>,
    deflate: Option<DeflateConfig>,
    pub(crate) deadline: Instant,
}

impl std::fmt::Debug for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attempt")
            .field("host", &self.host)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// Resolves `host` with the system resolver, which blocks.
fn resolve(host: &str, port: u16) -> Result<VecDeque<SocketAddr>> {
    let addrs: VecDeque<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::Dns {
            host: host.to_owned(),
            reason: e.to_string(),
        })?
        .collect();
    if addrs.is_empty() {
        return Err(Error::Dns {
            host: host.to_owned(),
            reason: "no addresses".into(),
        });
    }
    Ok(addrs)
}

/// Where the addresses to dial come from.
enum Resolution {
    Ready(VecDeque<SocketAddr>),
    Pending(Receiver<Result<VecDeque<SocketAddr>>>),
}

/// Resolves the target afresh (servers move between attempts). An IP literal needs no
/// lookup; a name is looked up on a short-lived thread that wakes the I/O thread when done,
/// so a slow resolver never holds up `close()`, and the connect timeout covers the lookup.
fn start_resolving(target: &Target, waker: &Arc<mio::Waker>) -> Result<Resolution> {
    if let Ok(ip) = target.host.parse::<std::net::IpAddr>() {
        return Ok(Resolution::Ready(VecDeque::from([SocketAddr::new(
            ip,
            target.port,
        )])));
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    let (host, port, waker) = (target.host.clone(), target.port, Arc::clone(waker));
    let spawned = std::thread::Builder::new()
        .name("jetsocket-dns".into())
        .spawn(move || {
            // Nobody may be listening any more (the attempt timed out or the handle closed).
            if tx.send(resolve(&host, port)).is_ok() {
                let _ = waker.wake();
            }
        });
    match spawned {
        Ok(_) => Ok(Resolution::Pending(rx)),
        Err(e) => {
            log::debug!("no resolver thread ({e}); resolving {} inline", target.host);
            resolve(&target.host, target.port).map(Resolution::Ready)
        }
    }
}

impl Attempt {
    /// Starts resolving the host (or the proxy's), then connecting to its first address.
    /// `waker` wakes the I/O thread when a lookup finishes.
    pub(crate) fn start(
        p: AttemptParams<'_>,
        registry: &Registry,
        token: Token,
        waker: &Arc<mio::Waker>,
    ) -> Result<Self> {
        let resolution = match p.proxy {
            Some(proxy) => start_resolving(&proxy.target(), waker)?,
            None => start_resolving(p.target, waker)?,
        };
        let stage = match resolution {
            Resolution::Ready(mut addrs) => {
                let (stream, rest) = connect_next(&mut addrs, registry, token, None)?;
                Stage::Tcp { stream, rest }
            }
            Resolution::Pending(rx) => Stage::Resolving(rx),
        };
        let key = handshake::generate_key();
        let request = handshake::request(p.target, &key, p.headers, p.subprotocols, p.deflate);
        Ok(Attempt {
            stage,
            token,
            host: p.target.host.clone(),
            tls: if p.target.tls { p.tls.cloned() } else { None },
            nodelay: p.nodelay,
            tunnel_request: p.proxy.map(|proxy| proxy.connect_request(p.target)),
            key,
            request,
            subprotocols: p.subprotocols.to_vec(),
            deflate: p.deflate.copied(),
            deadline: p.deadline,
        })
    }

    /// Makes as much progress as the socket allows. `Ok(None)`: wait for readiness.
    pub(crate) fn advance(&mut self, registry: &Registry) -> Result<Option<Established>> {
        loop {
            let stage = std::mem::replace(&mut self.stage, Stage::Finished);
            let step = match stage {
                Stage::Resolving(rx) => match rx.try_recv() {
                    Ok(addrs) => {
                        let (stream, rest) = connect_next(&mut addrs?, registry, self.token, None)?;
                        Step::Wait(Stage::Tcp { stream, rest })
                    }
                    Err(TryRecvError::Empty) => Step::Wait(Stage::Resolving(rx)),
                    Err(TryRecvError::Disconnected) => {
                        return Err(Error::Dns {
                            host: self.host.clone(),
                            reason: "the resolver thread ended without an answer".into(),
                        })
                    }
                },
                Stage::Tcp { stream, rest } => self.tcp(stream, rest, registry)?,
                Stage::Tunnel { stream, written } => self.tunnel(stream, written)?,
                #[cfg(feature = "native-tls")]
                Stage::Tls(mid) => self.tls_step(mid.handshake())?,
                Stage::Request { stream, written } => self.write_request(stream, written)?,
                Stage::Response { stream, buf } => self.read_response(stream, buf)?,
                Stage::Finished => {
                    return Err(Error::Io(std::sync::Arc::new(io::Error::other(
                        "connection attempt already finished",
                    ))))
                }
            };
            match step {
                Step::Continue(next) => self.stage = next,
                Step::Wait(next) => {
                    self.stage = next;
                    return Ok(None);
                }
                Step::Done(est) => return Ok(Some(est)),
            }
        }
    }

    fn tcp(
        &mut self,
        stream: TcpStream,
        mut rest: VecDeque<SocketAddr>,
        registry: &Registry,
    ) -> Result<Step> {
        // A non-blocking connect has finished once the socket is writable: check for an
        // error, then whether it has a peer.
        let failure = match stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    return Ok(Step::Wait(Stage::Tcp { stream, rest }))
                }
                Err(e) => Some(e),
            },
        };
        if let Some(e) = failure {
            let _ = registry.deregister(&mut { stream });
            let (stream, rest) = connect_next(&mut rest, registry, self.token, Some(e))?;
            return Ok(Step::Wait(Stage::Tcp { stream, rest }));
        }
        if self.nodelay {
            stream.set_nodelay(true)?;
        }
        if self.tunnel_request.is_some() {
            return Ok(Step::Continue(Stage::Tunnel { stream, written: 0 }));
        }
        self.over_tcp(stream)
    }

    /// Opens the proxy tunnel: writes `CONNECT`, then reads the answer without consuming a
    /// byte past it.
    fn tunnel(&mut self, mut stream: TcpStream, mut written: usize) -> Result<Step> {
        let request = self.tunnel_request.as_deref().unwrap_or_default();
        while written < request.len() {
            match stream.write(&request[written..]) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Step::Wait(Stage::Tunnel { stream, written }))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut peek = vec![0; 16 * 1024];
        let n = match stream.peek(&mut peek) {
            Ok(0) => {
                return Err(Error::Handshake(
                    "the proxy closed the connection before answering CONNECT".into(),
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Ok(Step::Wait(Stage::Tunnel { stream, written }))
            }
            Err(e) => return Err(e.into()),
        };
        match proxy::parse_connect_response(&peek[..n])? {
            None => Ok(Step::Wait(Stage::Tunnel { stream, written })),
            Some(head) => {
                let mut sink = vec![0; head];
                stream.read_exact(&mut sink)?;
                log::debug!("proxy tunnel to {} open", self.host);
                self.tunnel_request = None;
                self.over_tcp(stream)
            }
        }
    }

    /// The TCP connection (direct or tunnelled) is up: TLS if needed, then the upgrade.
    fn over_tcp(&mut self, stream: TcpStream) -> Result<Step> {
        match &self.tls {
            None => Ok(Step::Continue(Stage::Request {
                stream: Stream::Plain(stream),
                written: 0,
            })),
            #[cfg(feature = "native-tls")]
            Some(connector) => {
                let result = connector.connect(&self.host, stream);
                self.tls_step(result)
            }
            #[cfg(not(feature = "native-tls"))]
            Some(_) => Err(Error::TlsUnavailable),
        }
    }

    #[cfg(feature = "native-tls")]
    fn tls_step(
        &mut self,
        result: std::result::Result<
            native_tls::TlsStream<TcpStream>,
            native_tls::HandshakeError<TcpStream>,
        >,
    ) -> Result<Step> {
        match result {
            Ok(tls) => Ok(Step::Continue(Stage::Request {
                stream: Stream::Tls(Box::new(tls)),
                written: 0,
            })),
            Err(native_tls::HandshakeError::WouldBlock(mid)) => Ok(Step::Wait(Stage::Tls(mid))),
            Err(native_tls::HandshakeError::Failure(e)) => Err(crate::tls::classify(&e)),
        }
    }

    fn write_request(&mut self, mut stream: Stream, mut written: usize) -> Result<Step> {
        while written < self.request.len() {
            match stream.write(&self.request[written..]) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Step::Wait(Stage::Request { stream, written }))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        match stream.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Ok(Step::Wait(Stage::Request { stream, written }))
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Step::Continue(Stage::Response {
            stream,
            buf: Vec::with_capacity(1024),
        }))
    }

    fn read_response(&mut self, mut stream: Stream, mut buf: Vec<u8>) -> Result<Step> {
        loop {
            // On plain TCP, peek first so that nothing past the response head is consumed:
            // the frames behind it stay in the socket for tungstenite's own read buffer.
            // (Without TLS support every stream is plain, hence the allow.)
            #[allow(irrefutable_let_patterns)]
            if let Stream::Plain(tcp) = &mut stream {
                let mut peek = [0u8; 4096];
                let n = match tcp.peek(&mut peek) {
                    Ok(0) => return Err(closed_during_handshake()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok(Step::Wait(Stage::Response { stream, buf }))
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e.into()),
                };
                let mut head_so_far = buf.clone();
                head_so_far.extend_from_slice(&peek[..n]);
                match self.parse(&head_so_far)? {
                    None => {
                        // Every byte seen so far belongs to the head: consume it, so that a
                        // later peek of 0 bytes reveals a peer that hung up mid-head.
                        tcp.read_exact(&mut peek[..n])?;
                        buf.extend_from_slice(&peek[..n]);
                        continue;
                    }
                    Some((accepted, head)) => {
                        let rest = head.saturating_sub(buf.len());
                        tcp.read_exact(&mut peek[..rest])?;
                        return Ok(Step::Done(Established {
                            stream,
                            leftover: Vec::new(),
                            accepted,
                        }));
                    }
                }
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) => return Err(closed_during_handshake()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(Step::Wait(Stage::Response { stream, buf }))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            if let Some((accepted, head)) = self.parse(&buf)? {
                let leftover = buf.split_off(head);
                return Ok(Step::Done(Established {
                    stream,
                    leftover,
                    accepted,
                }));
            }
        }
    }
}

impl Attempt {
    fn parse(&self, head: &[u8]) -> Result<Option<(Accepted, usize)>> {
        handshake::parse_response(head, &self.key, &self.subprotocols, self.deflate.as_ref())
    }
}

enum Step {
    Continue(Stage),
    Wait(Stage),
    Done(Established),
}

fn closed_during_handshake() -> Error {
    Error::Handshake("the server closed the connection during the handshake".into())
}

/// Starts a non-blocking connect to the next address that accepts one.
fn connect_next(
    addrs: &mut VecDeque<SocketAddr>,
    registry: &Registry,
    token: Token,
    mut last: Option<io::Error>,
) -> Result<(TcpStream, VecDeque<SocketAddr>)> {
    while let Some(addr) = addrs.pop_front() {
        match TcpStream::connect(addr) {
            Ok(mut stream) => {
                registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
                return Ok((stream, std::mem::take(addrs)));
            }
            Err(e) => {
                log::debug!("connect to {addr} failed: {e}");
                last = Some(e);
            }
        }
    }
    Err(last
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address to connect to"))
        .into())
}
