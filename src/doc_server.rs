//! A tiny loopback echo server for the documentation's examples, so they run for real
//! without the network. Hidden from the docs; not part of the supported API.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// An echo server on `127.0.0.1`, stopped when dropped.
#[derive(Debug)]
pub struct DocServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DocServer {
    /// `ws://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }
}

impl Drop for DocServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Unblock accept().
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn echo(stream: TcpStream) {
    let Ok(mut ws) = tungstenite::accept(stream) else {
        return;
    };
    loop {
        match ws.read() {
            Ok(m) if m.is_text() || m.is_binary() => {
                if ws.send(m).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// Starts an echo server for a doc example.
///
/// # Panics
///
/// If no loopback port can be bound (documentation examples only).
#[doc(hidden)]
pub fn __doc_server() -> DocServer {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port for the example");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = std::thread::spawn(move || {
        for stream in listener.incoming() {
            if flag.load(Ordering::SeqCst) {
                return;
            }
            if let Ok(s) = stream {
                std::thread::spawn(move || echo(s));
            }
        }
    });
    DocServer {
        addr,
        stop,
        thread: Some(thread),
    }
}
