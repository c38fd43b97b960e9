//! A loopback address whose TCP connect never completes.
//!
//! Method (std only, Linux): bind a listener (std uses backlog 128), never `accept`, and fill
//! its accept queue with established filler connections. Once the queue is full, Linux drops
//! further SYNs, so new `connect()` calls hang (SYN retransmits) until the caller's timeout.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// Probe timeout when detecting that the accept queue is full.
const PROBE: Duration = Duration::from_millis(100);
/// Safety cap on filler connections (std's backlog is 128 -> 129 fit on Linux).
const MAX_FILLERS: usize = 4200;

/// Guard keeping a "connect hangs" address alive (listener + filler connections).
pub struct Blackhole {
    addr: SocketAddr,
    fillers: Vec<TcpStream>,
    _listener: TcpListener,
}

impl Blackhole {
    /// The address whose connect hangs.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://127.0.0.1:PORT/` pointing at the black hole.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.addr.port())
    }

    /// How many filler connections were needed to fill the accept queue.
    pub fn fillers(&self) -> usize {
        self.fillers.len()
    }
}

/// Creates a loopback address whose TCP connect never completes (keep the guard alive).
/// Costs ~130 file descriptors and ~200 ms. Panics if the queue cannot be filled.
pub fn blackhole_addr() -> Blackhole {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local_addr");
    let mut fillers = Vec::new();
    let mut consecutive_timeouts = 0;
    while fillers.len() < MAX_FILLERS {
        match TcpStream::connect_timeout(&addr, PROBE) {
            Ok(s) => {
                consecutive_timeouts = 0;
                fillers.push(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                // Require two timeouts in a row so one slow connect on a loaded machine
                // cannot make us stop before the queue is really full.
                consecutive_timeouts += 1;
                if consecutive_timeouts >= 2 {
                    return Blackhole {
                        addr,
                        fillers,
                        _listener: listener,
                    };
                }
            }
            Err(e) => panic!("blackhole_addr: unexpected connect error: {e}"),
        }
    }
    panic!("blackhole_addr: accept queue never filled after {MAX_FILLERS} connections");
}
