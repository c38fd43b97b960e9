//! Shared plumbing: a counter tests can wait on, and the accept-loop core used by every
//! server type (self-connect shutdown, per-connection threads, live-socket registry).

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Locks a std mutex, ignoring poisoning (a panicking handler must not wedge the server).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits on `cond` until `done(&guard)` holds or `timeout` elapses; returns the final guard
/// and whether the condition held.
pub fn wait_cond<'a, T>(
    m: &'a Mutex<T>,
    cond: &Condvar,
    timeout: Duration,
    mut done: impl FnMut(&T) -> bool,
) -> (MutexGuard<'a, T>, bool) {
    let deadline = Instant::now() + timeout;
    let mut guard = lock(m);
    loop {
        if done(&guard) {
            return (guard, true);
        }
        let now = Instant::now();
        if now >= deadline {
            return (guard, false);
        }
        guard = cond
            .wait_timeout(guard, deadline - now)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// A monotonically increasing counter that tests can block on.
#[derive(Default)]
pub struct Counter {
    value: Mutex<usize>,
    cond: Condvar,
}

impl Counter {
    /// Adds one and wakes all waiters.
    pub fn incr(&self) {
        *lock(&self.value) += 1;
        self.cond.notify_all();
    }

    /// Current value.
    pub fn get(&self) -> usize {
        *lock(&self.value)
    }

    /// Blocks until the value is at least `n`; false on timeout.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        wait_cond(&self.value, &self.cond, timeout, |v| *v >= n).1
    }
}

/// Per-connection callback run on its own thread by [`Core`].
pub type ConnFn = dyn Fn(TcpStream, ConnTicket) + Send + Sync + 'static;

/// State shared between a [`Core`], its accept thread and its connection threads.
pub struct CoreShared {
    stop: AtomicBool,
    accepted: Counter,
    live: Mutex<HashMap<u64, TcpStream>>,
    live_cond: Condvar,
    workers: Mutex<Vec<JoinHandle<()>>>,
    next_id: AtomicU64,
}

impl CoreShared {
    fn remove_live(&self, id: u64) {
        let removed = lock(&self.live).remove(&id);
        drop(removed);
        self.live_cond.notify_all();
    }
}

/// Held by a connection thread while its connection is live. Dropping it removes (and
/// closes) the registry's clone of the socket.
pub struct ConnTicket {
    id: u64,
    shared: Arc<CoreShared>,
}

impl ConnTicket {
    /// Unique (per server) connection id.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for ConnTicket {
    fn drop(&mut self) {
        self.shared.remove_live(self.id);
    }
}

/// Accept loop on 127.0.0.1:0 that hands every accepted socket to a callback on a fresh
/// thread. Dropping it stops accepting (self-connect trick), shuts down all live sockets
/// and joins every thread it started.
pub struct Core {
    addr: SocketAddr,
    shared: Arc<CoreShared>,
    accept_thread: Option<JoinHandle<()>>,
}

impl Core {
    /// Binds 127.0.0.1:0 and starts the accept thread. `tag` (short!) names the threads
    /// `tk-<tag>-acc` / `tk-<tag>-conn`.
    pub fn start(tag: &str, on_conn: Arc<ConnFn>) -> Core {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(CoreShared {
            stop: AtomicBool::new(false),
            accepted: Counter::default(),
            live: Mutex::new(HashMap::new()),
            live_cond: Condvar::new(),
            workers: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        });
        let sh = Arc::clone(&shared);
        let conn_name = format!("tk-{tag}-conn");
        let accept_thread = thread::Builder::new()
            .name(format!("tk-{tag}-acc"))
            .spawn(move || accept_loop(listener, sh, on_conn, conn_name))
            .expect("spawn accept thread");
        Core {
            addr,
            shared,
            accept_thread: Some(accept_thread),
        }
    }

    /// Listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Number of TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.get()
    }

    /// Waits until at least `n` connections were accepted.
    pub fn wait_for_accepted(&self, n: usize, timeout: Duration) -> bool {
        self.shared.accepted.wait_for(n, timeout)
    }

    /// Number of connections whose thread is still running.
    pub fn live(&self) -> usize {
        lock(&self.shared.live).len()
    }

    /// Waits until exactly `n` connections are live.
    pub fn wait_for_live(&self, n: usize, timeout: Duration) -> bool {
        wait_cond(&self.shared.live, &self.shared.live_cond, timeout, |m| {
            m.len() == n
        })
        .1
    }

    /// Ids of the live connections.
    pub fn live_ids(&self) -> Vec<u64> {
        lock(&self.shared.live).keys().copied().collect()
    }

    /// `shutdown(Both)` on every live socket (their threads then see EOF/errors and exit).
    pub fn shutdown_all(&self) {
        for s in lock(&self.shared.live).values() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// `shutdown(Both)` on one live socket.
    pub fn shutdown_one(&self, id: u64) {
        if let Some(s) = lock(&self.shared.live).get(&id) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: TcpListener, sh: Arc<CoreShared>, on_conn: Arc<ConnFn>, name: String) {
    loop {
        match listener.accept() {
            Ok((stream, _peer)) => {
                if sh.stop.load(Ordering::SeqCst) {
                    let _ = stream.shutdown(Shutdown::Both);
                    break;
                }
                let id = sh.next_id.fetch_add(1, Ordering::SeqCst);
                match stream.try_clone() {
                    Ok(clone) => {
                        lock(&sh.live).insert(id, clone);
                        sh.live_cond.notify_all();
                    }
                    Err(e) => eprintln!("[test-server] try_clone failed: {e}"),
                }
                sh.accepted.incr();
                let ticket = ConnTicket {
                    id,
                    shared: Arc::clone(&sh),
                };
                let f = Arc::clone(&on_conn);
                let spawned = thread::Builder::new()
                    .name(name.clone())
                    .spawn(move || f(stream, ticket));
                match spawned {
                    Ok(handle) => {
                        let mut workers = lock(&sh.workers);
                        // Reap finished threads so the list stays short.
                        let (done, running): (Vec<_>, Vec<_>) =
                            workers.drain(..).partition(|h| h.is_finished());
                        *workers = running;
                        workers.push(handle);
                        drop(workers);
                        for h in done {
                            let _ = h.join();
                        }
                    }
                    Err(e) => eprintln!("[test-server] spawn failed: {e}"),
                }
            }
            Err(e) => {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                eprintln!("[test-server] accept error: {e}");
                // Back off briefly so a persistent error (e.g. EMFILE) cannot spin a core.
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Unblock accept() by connecting to ourselves.
        if let Err(e) = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)) {
            eprintln!("[test-server] self-connect to stop accept loop failed: {e}");
        }
        if let Some(h) = self.accept_thread.take() {
            let _ = h.join();
        }
        self.shutdown_all();
        let workers = std::mem::take(&mut *lock(&self.shared.workers));
        for h in workers {
            let _ = h.join();
        }
    }
}
