//! `FaultProxy`: a loopback TCP proxy with runtime fault injection.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::base::{lock, ConnTicket, Core, Counter};

struct ProxyShared {
    stop: AtomicBool,
    black_hole: AtomicBool,
    refuse: AtomicBool,
    delay: Mutex<Duration>,
    refused: Counter,
    proxied: Counter,
    upstreams: Mutex<HashMap<u64, TcpStream>>,
}

/// TCP proxy on 127.0.0.1:0 forwarding to an upstream, with faults switchable at runtime
/// (two pump threads per connection; all joined on drop).
pub struct FaultProxy {
    shared: Arc<ProxyShared>,
    kill: Option<Sender<()>>,
    core: Core,
}

fn kill_both(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

/// Copies `src` -> `dst` honouring black-hole and delay settings.
fn pump(mut src: TcpStream, mut dst: TcpStream, sh: &ProxyShared, kill: &Receiver<()>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => {
                // Propagate the half-close unless we are pretending to be a black hole.
                if !sh.black_hole.load(Ordering::SeqCst) {
                    let _ = dst.shutdown(Shutdown::Write);
                }
                return;
            }
            Ok(n) => n,
            Err(_) => {
                kill_both(&src, &dst);
                return;
            }
        };
        if sh.black_hole.load(Ordering::SeqCst) {
            continue;
        }
        let delay = *lock(&sh.delay);
        if !delay.is_zero() {
            match kill.recv_timeout(delay) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => {
                    kill_both(&src, &dst);
                    return;
                }
            }
            if sh.black_hole.load(Ordering::SeqCst) {
                continue;
            }
        }
        if dst.write_all(&buf[..n]).is_err() {
            kill_both(&src, &dst);
            return;
        }
    }
}

impl FaultProxy {
    /// Starts proxying 127.0.0.1:0 -> `upstream`.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let shared = Arc::new(ProxyShared {
            stop: AtomicBool::new(false),
            black_hole: AtomicBool::new(false),
            refuse: AtomicBool::new(false),
            delay: Mutex::new(Duration::ZERO),
            refused: Counter::default(),
            proxied: Counter::default(),
            upstreams: Mutex::new(HashMap::new()),
        });
        let (kill_tx, kill_rx) = crossbeam_channel::bounded::<()>(0);
        let sh = Arc::clone(&shared);
        let on_conn = move |client: TcpStream, ticket: ConnTicket| {
            if sh.refuse.load(Ordering::SeqCst) || sh.stop.load(Ordering::SeqCst) {
                // Count first so a test that saw the close also sees the count.
                sh.refused.incr();
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            let upstream = match TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("[test-proxy] upstream connect failed: {e}");
                    let _ = client.shutdown(Shutdown::Both);
                    return;
                }
            };
            let _ = upstream.set_nodelay(true);
            let _ = client.set_nodelay(true);
            let clones = (
                upstream.try_clone(),
                upstream.try_clone(),
                client.try_clone(),
            );
            let (Ok(registry_clone), Ok(up2), Ok(client2)) = clones else {
                eprintln!("[test-proxy] try_clone failed");
                kill_both(&client, &upstream);
                return;
            };
            {
                let mut ups = lock(&sh.upstreams);
                if sh.stop.load(Ordering::SeqCst) {
                    kill_both(&client, &upstream);
                    return;
                }
                ups.insert(ticket.id(), registry_clone);
            }
            sh.proxied.incr();
            let sh2 = Arc::clone(&sh);
            let kill2 = kill_rx.clone();
            let back = thread::Builder::new()
                .name("tk-proxy-pump".into())
                .spawn(move || pump(up2, client2, &sh2, &kill2));
            match back {
                Ok(handle) => {
                    pump(client, upstream, &sh, &kill_rx);
                    let _ = handle.join();
                }
                Err(e) => {
                    eprintln!("[test-proxy] spawn failed: {e}");
                    kill_both(&client, &upstream);
                }
            }
            let removed = lock(&sh.upstreams).remove(&ticket.id());
            drop(removed);
        };
        let core = Core::start("proxy", Arc::new(on_conn));
        FaultProxy {
            shared,
            kill: Some(kill_tx),
            core,
        }
    }

    /// Listening address.
    pub fn addr(&self) -> SocketAddr {
        self.core.addr()
    }

    /// Listening port.
    pub fn port(&self) -> u16 {
        self.core.addr().port()
    }

    /// `ws://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.port())
    }

    /// `wss://localhost:PORT/` (for proxying a TLS upstream; the test cert covers localhost).
    pub fn wss_url(&self) -> String {
        format!("wss://localhost:{}/", self.port())
    }

    /// Connections accepted so far (including refused ones).
    pub fn connections(&self) -> usize {
        self.core.accepted()
    }

    /// Waits until at least `n` connections were accepted.
    pub fn wait_for_connections(&self, n: usize, timeout: Duration) -> bool {
        self.core.wait_for_accepted(n, timeout)
    }

    /// Connections that were refused (accepted and closed while `set_refuse(true)`).
    pub fn refused(&self) -> usize {
        self.shared.refused.get()
    }

    /// Connections successfully bridged to the upstream so far.
    pub fn proxied(&self) -> usize {
        self.shared.proxied.get()
    }

    /// Connections currently open through the proxy.
    pub fn live(&self) -> usize {
        self.core.live()
    }

    /// Waits until exactly `n` connections are open.
    pub fn wait_for_live(&self, n: usize, timeout: Duration) -> bool {
        self.core.wait_for_live(n, timeout)
    }

    /// Abruptly kills every live proxied connection (shutdown(Both) on both halves; the
    /// client sees EOF/FIN, not an RST: std cannot set SO_LINGER=0 on stable).
    pub fn reset_all(&self) {
        for s in lock(&self.shared.upstreams).values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.core.shutdown_all();
    }

    /// While on, bytes in both directions are read and discarded (sockets stay open, and
    /// EOFs are not propagated either). Affects live and new connections.
    pub fn set_black_hole(&self, on: bool) {
        self.shared.black_hole.store(on, Ordering::SeqCst);
    }

    /// Delays every forwarded chunk by `delay` (per direction; chunks are serialized, so
    /// latency accumulates under sustained traffic). `Duration::ZERO` disables.
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.shared.delay) = delay;
    }

    /// While on, new connections are accepted and immediately closed (counted in `refused()`).
    pub fn set_refuse(&self, on: bool) {
        self.shared.refuse.store(on, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake pumps waiting out a delay.
        drop(self.kill.take());
        self.reset_all();
        // `core` is dropped next: stops accepting, shuts client sockets, joins threads.
    }
}
