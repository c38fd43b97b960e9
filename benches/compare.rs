//! jetsocket side by side with a raw tungstenite client: same loopback server, same run,
//! interleaved and repeated.
//!
//! ```text
//! cargo bench --bench compare                          # full run, writes target/bench-results.json
//! cargo bench --bench compare -- --quick               # smoke run (CI), under a minute
//! cargo bench --bench compare -- --only inbound-64     # one row group (see --help)
//! cargo bench --bench compare -- --only deflate        # the permessage-deflate rows
//! cargo bench --bench compare -- --only echo --client jetsocket --scale 5   # for a profiler
//! ```
//!
//! The server runs in a child process (this binary, re-executed with `JETSOCKET_BENCH_ROLE`),
//! so the CPU time this process uses is the client's alone. BENCHMARKS.md explains every row.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use jetsocket::{
    BackoffConfig, BufferConfig, Bytes, Event, HeartbeatConfig, OverflowPolicy, SendQueueConfig,
    SyncWebSocket, Utf8Bytes,
};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::WebSocket;

/// Selects what a re-executed copy of this binary does.
const ROLE_ENV: &str = "JETSOCKET_BENCH_ROLE";
/// Arguments for a re-executed copy.
const ARGS_ENV: &str = "JETSOCKET_BENCH_ARGS";

type Res<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("server") => server::run(),
        Ok("rss") => {
            if let Err(e) = rss_child() {
                eprintln!("rss child failed: {e}");
                std::process::exit(1);
            }
            std::process::exit(0);
        }
        _ => {}
    }
    if cfg!(debug_assertions) && std::env::args().len() == 1 {
        // `cargo test --all-targets` runs bench targets too, unoptimized and without
        // `--bench`: do not spend minutes measuring a debug build.
        println!("compare: skipped (an unoptimized build); run `cargo bench --bench compare`");
        return;
    }
    let opts = match Opts::parse() {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("{msg}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(opts) {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}

const USAGE: &str = "\
usage: cargo bench --bench compare -- [options]
  --quick            small counts, 2 repetitions (CI smoke run, under a minute)
  --reps N           repetitions per row (default 5, quick 2)
  --only LIST        comma-separated groups or prefixes: server, inbound-64, inbound-1k,
                     inbound-16k, outbound-64, outbound-1k, outbound-64x4, deflate-in,
                     deflate-out, echo, reconnect, idle-cpu, idle-rss
                     (e.g. --only inbound,echo or --only deflate)
  --client WHO       jetsocket | raw | both (default both; one side only for profiling)
  --scale F          multiply message counts and durations by F (profiling)
  --buffer N         inbound buffer capacity for the jetsocket throughput rows (default 8192)
  --jet-opt LIST     experiment: extra jetsocket settings for every row, e.g.
                     sendq=64,buf=100,readbuf=16384,hb=off,deflate=off,zlevel=1,
                     spin=50 (busy_poll in µs)
                     (reported in the output; deflate=off stops offering compression
                     outside the JSON rows, zlevel sets the level of their deflate client)
  --wait-quiet SECS  before each group, wait up to SECS for other processes to use less
                     than 10% of the machine (shared machines; default 0 = don't wait)
  --json PATH        where to write results (default target/bench-results.json;
                     written only by complete runs unless given)";

// ----- options --------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Jet,
    Raw,
}

impl Who {
    fn name(self) -> &'static str {
        match self {
            Who::Jet => "jetsocket",
            Who::Raw => "raw",
        }
    }
}

#[derive(Debug)]
struct Opts {
    quick: bool,
    reps: usize,
    only: Vec<String>,
    clients: Vec<Who>,
    scale: f64,
    buffer: usize,
    json: Option<String>,
    jet_opts: String,
    wait_quiet: u64,
}

impl Opts {
    fn parse() -> std::result::Result<Opts, String> {
        let mut o = Opts {
            quick: false,
            reps: 0,
            only: Vec::new(),
            clients: vec![Who::Jet, Who::Raw],
            scale: 1.0,
            buffer: 8192,
            json: None,
            jet_opts: String::new(),
            wait_quiet: 0,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            match a.as_str() {
                "--bench" => {} // passed by `cargo bench`
                "--quick" => o.quick = true,
                "--reps" => {
                    o.reps = value("--reps")?
                        .parse()
                        .map_err(|e| format!("--reps: {e}"))?
                }
                "--only" => {
                    o.only = value("--only")?
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                }
                "--client" => {
                    o.clients = match value("--client")?.as_str() {
                        "jetsocket" | "jet" => vec![Who::Jet],
                        "raw" => vec![Who::Raw],
                        "both" => vec![Who::Jet, Who::Raw],
                        other => return Err(format!("unknown client {other:?}")),
                    }
                }
                "--scale" => {
                    o.scale = value("--scale")?
                        .parse()
                        .map_err(|e| format!("--scale: {e}"))?
                }
                "--buffer" => {
                    o.buffer = value("--buffer")?
                        .parse()
                        .map_err(|e| format!("--buffer: {e}"))?
                }
                "--jet-opt" => o.jet_opts = value("--jet-opt")?,
                "--wait-quiet" => {
                    o.wait_quiet = value("--wait-quiet")?
                        .parse()
                        .map_err(|e| format!("--wait-quiet: {e}"))?
                }
                "--json" => {
                    o.json = Some(value("--json")?);
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if o.reps == 0 {
            o.reps = if o.quick { 2 } else { 5 };
        }
        if o.scale.is_nan() || o.scale <= 0.0 {
            return Err("--scale must be above zero".into());
        }
        Ok(o)
    }

    fn wants(&self, group: &str) -> bool {
        self.only.is_empty()
            || self
                .only
                .iter()
                .any(|o| group == o || group.starts_with(&format!("{o}-")))
    }

    fn complete(&self) -> bool {
        self.only.is_empty() && self.clients.len() == 2 && self.jet_opts.is_empty()
    }

    /// A message count: `full` normally, `quick` with --quick, times --scale.
    fn count(&self, full: u64, quick: u64) -> u64 {
        let base = if self.quick { quick } else { full };
        ((base as f64 * self.scale) as u64).max(1)
    }

    /// The order of the two clients in repetition `rep` (alternating, so neither side
    /// always runs first).
    fn order(&self, rep: usize) -> Vec<Who> {
        let mut v = self.clients.clone();
        if rep % 2 == 1 {
            v.reverse();
        }
        v
    }
}

// ----- measurement helpers --------------------------------------------------------------

/// CPU time (ns) of each live thread of this process, from /proc/self/task/*/schedstat
/// (the scheduler's own nanosecond run-time accounting).
fn thread_cpu_snapshot() -> HashMap<u32, u64> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if let Some(ns) = read_schedstat(&entry.path().join("schedstat")) {
            out.insert(tid, ns);
        }
    }
    out
}

fn read_schedstat(path: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time used by this process's threads since `start` (threads that started later count
/// from zero; every thread that matters lives across the whole window).
fn cpu_since(start: &HashMap<u32, u64>) -> u64 {
    thread_cpu_snapshot()
        .into_iter()
        .map(|(tid, ns)| ns.saturating_sub(start.get(&tid).copied().unwrap_or(0)))
        .sum()
}

/// The CPU time of the calling thread, in ns.
fn own_thread_cpu() -> u64 {
    read_schedstat(std::path::Path::new("/proc/thread-self/schedstat")).unwrap_or(0)
}

fn proc_status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The soft limit on open files, from /proc/self/limits.
fn fd_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time in clock ticks (1/100 s): the whole machine's busy and stolen time, this
/// process's own (with its waited-for children), and the server child's.
#[derive(Debug, Clone, Copy)]
struct Ticks {
    at: Instant,
    machine_busy: u64,
    steal: u64,
    ours: u64,
    server: u64,
}

impl Ticks {
    fn now(server_pid: u32) -> Ticks {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let field = |i: usize| cpu.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal. Interrupt time is left out: on
        // loopback it is mostly our own packets, and the kernel charges it to no process.
        let steal = field(7);
        let machine_busy = field(0) + field(1) + field(2);
        Ticks {
            at: Instant::now(),
            machine_busy,
            steal,
            ours: proc_ticks("/proc/self/stat", true),
            server: proc_ticks(&format!("/proc/{server_pid}/stat"), false),
        }
    }

    /// (share of the machine used by other processes, share stolen by the hypervisor), in
    /// percent of all cores, between `self` and `later`.
    fn others(&self, later: &Ticks, cores: usize) -> (f64, f64) {
        let capacity = later.at.duration_since(self.at).as_secs_f64() * 100.0 * cores.max(1) as f64;
        let busy = later.machine_busy.saturating_sub(self.machine_busy) as f64;
        let mine = (later.ours + later.server).saturating_sub(self.ours + self.server) as f64;
        let steal = later.steal.saturating_sub(self.steal) as f64;
        (
            ((busy - mine).max(0.0) / capacity * 100.0).min(100.0),
            (steal / capacity * 100.0).min(100.0),
        )
    }
}

/// Waits (at most `limit`) until other processes use less than 10% of the machine over one
/// second.
fn wait_for_quiet(group: &str, server_pid: u32, cores: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut said = false;
    loop {
        let a = Ticks::now(server_pid);
        std::thread::sleep(Duration::from_secs(1));
        let (other, _) = a.others(&Ticks::now(server_pid), cores);
        if other < 10.0 {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "{group}: the machine is still busy ({other:.0}% used by others); going ahead"
            );
            return;
        }
        if !said {
            eprintln!(
                "{group}: waiting for other processes to quieten ({other:.0}% of the machine) ..."
            );
            said = true;
        }
    }
}

/// utime + stime (and, with `children`, cutime + cstime) from a /proc/<pid>/stat file.
fn proc_ticks(path: &str, children: bool) -> u64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    // After the command name: state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let get = |n: usize| f.get(n - 3).copied().unwrap_or(0);
    get(14) + get(15) + if children { get(16) + get(17) } else { 0 }
}

fn unix_nanos(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

// ----- frames ---------------------------------------------------------------------------

/// One unmasked (server-to-client) frame with FIN set.
fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 10);
    push_frame(&mut f, 0x80 | opcode, payload, None);
    f
}

/// One masked (client-to-server) frame with FIN set.
fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    push_frame(&mut f, 0x80 | opcode, payload, Some(mask));
    f
}

/// Appends one frame whose first byte is `b0` (FIN, RSV1 and opcode), masked with `mask` if
/// given.
fn push_frame(out: &mut Vec<u8>, b0: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    out.extend_from_slice(&frame_head(b0, payload.len(), mask.is_some()));
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
}

fn frame_head(b0: u8, len: usize, masked: bool) -> Vec<u8> {
    let m = if masked { 0x80 } else { 0 };
    let mut f = vec![b0];
    if len < 126 {
        f.push(m | len as u8);
    } else if len <= 0xffff {
        f.push(m | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(m | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    f
}

/// A payload of `size` bytes. Static, so cloning and dropping it costs nothing for either
/// client: a shared, reference-counted payload would make the sending thread and
/// jetsocket's I/O thread fight over one counter, which measures the benchmark, not the
/// client.
fn payload(size: usize) -> Bytes {
    static CACHE: Mutex<Vec<(usize, &'static [u8])>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = cache.iter().find(|(s, _)| *s == size) {
        return Bytes::from_static(p);
    }
    let p: &'static [u8] = Box::leak((0..size).map(|i| (i % 251) as u8).collect());
    cache.push((size, p));
    Bytes::from_static(p)
}

// ----- JSON market data and permessage-deflate ------------------------------------------

/// Distinct messages in the JSON pool: about 800 KB, far more than deflate's 32 KiB window,
/// so the compressor never sees a message again that it could still refer back to.
const JSON_POOL: usize = 1024;

/// What a sync flush ends with: removed by the sender of a compressed message, appended by
/// its receiver (RFC 7692 §7.2.1-7.2.2).
const DEFLATE_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// SplitMix64: tiny and deterministic, so the parent and the server child build the same pool.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `value` units of 10^-`decimals`, written with eight decimals as exchanges print them.
fn push_fixed(out: &mut String, value: u64, decimals: u32) {
    let unit = 10u64.pow(decimals);
    let _ = write!(
        out,
        "\"{}.{:0width$}{}\"",
        value / unit,
        value % unit,
        "0".repeat(8 - decimals as usize),
        width = decimals as usize
    );
}

/// Order-book updates shaped like a large exchange's public depth stream: `{"e":"depthUpdate",
/// "E":..,"s":..,"U":..,"u":..,"b":[[price,qty],..],"a":[..]}` with 3 to 20 levels a side
/// (about 270 to 1,350 bytes), six symbols, drifting prices, update ids and event times, and
/// one level in ten removed (quantity zero). Static, so a send clones no string.
fn json_pool() -> &'static [&'static str] {
    static POOL: OnceLock<Vec<&'static str>> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut rng = SplitMix(0x6a65_7473_6f63_6b74);
        // (symbol, mid price in ticks, decimals of a tick, decimals of a quantity, last id)
        let mut books = [
            ("BTCUSDT", 4_325_010u64, 2u32, 5u32, 0u64),
            ("ETHUSDT", 228_137, 2, 4, 0),
            ("SOLUSDT", 61_245, 3, 3, 0),
            ("BNBUSDT", 312_400, 3, 3, 0),
            ("XRPUSDT", 6_184, 4, 1, 0),
            ("DOGEUSDT", 82_410, 6, 0, 0),
        ];
        for b in &mut books {
            b.4 = 1_000_000_000 + rng.below(9_000_000_000);
        }
        let mut time = 1_700_000_000_123u64;
        (0..JSON_POOL)
            .map(|_| {
                let i = rng.below(books.len() as u64) as usize;
                let (symbol, mid, tick_decimals, qty_decimals, last) = &mut books[i];
                time += 1 + rng.below(120);
                let first = *last + 1;
                *last = first + rng.below(40);
                *mid = (*mid + rng.below(21)).saturating_sub(10).max(1000);
                let mut m = String::with_capacity(1400);
                let _ = write!(
                    m,
                    "{{\"e\":\"depthUpdate\",\"E\":{time},\"s\":\"{symbol}\",\"U\":{first},\"u\":{last}"
                );
                for (side, dir) in [("b", -1i64), ("a", 1)] {
                    let _ = write!(m, ",\"{side}\":[");
                    let mut price = *mid as i64;
                    for level in 0..3 + rng.below(18) {
                        price += dir * (1 + rng.below(4) as i64);
                        let qty = if rng.below(10) == 0 {
                            0
                        } else {
                            // Mostly small orders, now and then a large one.
                            let digits = 2 + rng.below(4) as u32;
                            rng.below(10u64.pow(digits)) + 1
                        };
                        m.push_str(if level == 0 { "[" } else { ",[" });
                        push_fixed(&mut m, price.max(1) as u64, *tick_decimals);
                        m.push(',');
                        push_fixed(&mut m, qty, *qty_decimals);
                        m.push(']');
                    }
                    m.push(']');
                }
                m.push('}');
                &*Box::leak(m.into_boxed_str())
            })
            .collect()
    })
}

/// (smallest, largest, mean) message size of the pool, in bytes.
fn json_pool_sizes() -> (usize, usize, f64) {
    let pool = json_pool();
    let lens = pool.iter().map(|m| m.len());
    let total: usize = lens.clone().sum();
    (
        lens.clone().min().unwrap_or(0),
        lens.max().unwrap_or(0),
        total as f64 / pool.len().max(1) as f64,
    )
}

/// Compresses one message as RFC 7692 §7.2.1 says: deflate with a sync flush, keeping the
/// context, then without the flush's `00 00 ff ff`.
fn deflate_message(c: &mut Compress, msg: &[u8], out: &mut Vec<u8>) -> Res<()> {
    out.clear();
    let mut input = msg;
    loop {
        // Deflate never grows data by more than a few bytes per block: one call is the rule.
        out.reserve(input.len() + 64);
        let before = c.total_in();
        c.compress_vec(input, out, FlushCompress::Sync)?;
        input = &input[(c.total_in() - before) as usize..];
        if input.is_empty() && out.len() < out.capacity() {
            break;
        }
    }
    if !out.ends_with(&DEFLATE_TAIL) {
        return Err("a sync flush did not end with 00 00 ff ff".into());
    }
    out.truncate(out.len() - DEFLATE_TAIL.len());
    Ok(())
}

/// Feeds `input` to the inflater, appending what comes out to `out` (at most `limit` bytes).
fn inflate_into(d: &mut Decompress, mut input: &[u8], out: &mut Vec<u8>, limit: usize) -> Res<()> {
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(4096);
        }
        let (in0, out0) = (d.total_in(), d.total_out());
        d.decompress_vec(input, out, FlushDecompress::Sync)?;
        input = &input[(d.total_in() - in0) as usize..];
        if out.len() > limit {
            return Err(format!("a message inflated past {limit} bytes").into());
        }
        if input.is_empty() && out.len() < out.capacity() {
            return Ok(());
        }
        if d.total_in() == in0 && d.total_out() == out0 {
            return Err("inflate made no progress".into());
        }
    }
}

/// Inflates one compressed message (RFC 7692 §7.2.2: the payload, then `00 00 ff ff`).
fn inflate_message(d: &mut Decompress, wire: &[u8], out: &mut Vec<u8>) -> Res<()> {
    out.clear();
    inflate_into(d, wire, out, 1 << 20)?;
    inflate_into(d, &DEFLATE_TAIL, out, 1 << 20)
}

/// Pre-encoded frames of the JSON pool, written as `first` and then `steady` over and over.
/// Compressed, `first` is the pool compressed from a fresh context, and `steady` the pool
/// compressed right after it, by the same compressor. A back-reference reaches at most 32 KiB,
/// far less than one pass over the pool, so whatever precedes any message of `steady` within
/// its reach is the same in every later pass: `steady` after `steady` is exactly what live
/// compression with context takeover would send, without paying for it while measuring.
struct JsonFrames {
    first: FrameCycle,
    steady: FrameCycle,
}

#[derive(Default)]
struct FrameCycle {
    bytes: Vec<u8>,
    /// Where each frame ends in `bytes`.
    ends: Vec<usize>,
    /// Payload bytes of the frames up to and including each one.
    payload: Vec<u64>,
}

impl JsonFrames {
    /// Server frames (`mask` = None) or client frames of the pool's messages, as text,
    /// compressed (RSV1 set) or not.
    fn build(deflate: bool, mask: Option<[u8; 4]>) -> Res<JsonFrames> {
        let pool = json_pool();
        let pool_bytes: usize = pool.iter().map(|m| m.len()).sum();
        if pool_bytes < 64 * 1024 {
            return Err("the JSON pool is too small to repeat under deflate's window".into());
        }
        let mut c = Compress::new(Compression::default(), false);
        let mut z = Vec::new();
        let mut cycle = || -> Res<FrameCycle> {
            let mut f = FrameCycle::default();
            let mut total = 0u64;
            for msg in pool {
                let payload = if deflate {
                    deflate_message(&mut c, msg.as_bytes(), &mut z)?;
                    &z[..]
                } else {
                    msg.as_bytes()
                };
                push_frame(
                    &mut f.bytes,
                    if deflate { 0xc1 } else { 0x81 },
                    payload,
                    mask,
                );
                total += payload.len() as u64;
                f.ends.push(f.bytes.len());
                f.payload.push(total);
            }
            Ok(f)
        };
        let first = cycle()?;
        let steady = cycle()?;
        Ok(JsonFrames { first, steady })
    }

    /// Cached per kind: (deflate, client frames).
    fn get(deflate: bool, client: bool) -> Res<&'static JsonFrames> {
        static CACHE: [OnceLock<Result<JsonFrames, String>>; 4] = [const { OnceLock::new() }; 4];
        let slot = &CACHE[usize::from(deflate) * 2 + usize::from(client)];
        slot.get_or_init(|| {
            JsonFrames::build(deflate, client.then_some([0x5a, 0x1e, 0x2b, 0x77]))
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| e.clone().into())
    }

    /// Writes the first `n` messages; returns their payload bytes.
    fn write(&self, w: &mut impl Write, n: u64) -> io::Result<u64> {
        let (mut left, mut bytes, mut cycle) = (n, 0, &self.first);
        while left > 0 {
            let k = left.min(cycle.ends.len() as u64) as usize;
            w.write_all(&cycle.bytes[..cycle.ends[k - 1]])?;
            bytes += cycle.payload[k - 1];
            left -= k as u64;
            cycle = &self.steady;
        }
        Ok(bytes)
    }
}

// ----- the server (child process) -------------------------------------------------------

mod server {
    //! The loopback server: tungstenite handshakes on std `TcpStream`s, one thread per
    //! connection. Its hot paths are kept cheaper than any client: a flood writes
    //! pre-encoded frames with `write_all`, a sink scans frame headers without copying
    //! payloads, so on a 2-core machine it steals as little CPU from the client as possible.
    //! Each flood and sink records its own wall and CPU time; the parent asks for them on
    //! stdin/stdout.

    use super::*;
    use std::sync::Condvar;
    use tungstenite::handshake::server::{Request, Response};

    /// What one flood or sink connection did.
    struct Record {
        kind: &'static str,
        wall_ns: u64,
        cpu_ns: u64,
        count: u64,
        /// Payload bytes on the wire (compressed ones as compressed).
        bytes: u64,
    }

    #[derive(Default)]
    struct State {
        records: Vec<Record>,
        drops: Vec<u128>,
    }

    static STATE: Mutex<State> = Mutex::new(State {
        records: Vec::new(),
        drops: Vec::new(),
    });
    static CHANGED: Condvar = Condvar::new();

    fn with_state<T>(f: impl FnOnce(&mut State) -> T) -> T {
        let mut s = STATE.lock().unwrap_or_else(|e| e.into_inner());
        let out = f(&mut s);
        drop(s);
        CHANGED.notify_all();
        out
    }

    /// Waits (at most 10 s) until `ready` holds, then runs `take`.
    fn wait_for<T>(ready: impl Fn(&State) -> bool, take: impl FnOnce(&mut State) -> T) -> T {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut s = STATE.lock().unwrap_or_else(|e| e.into_inner());
        while !ready(&s) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            s = CHANGED
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        take(&mut s)
    }

    pub(super) fn run() -> ! {
        let listener = match TcpListener::bind("127.0.0.1:0") {
            Ok(l) => l,
            Err(e) => {
                eprintln!("server: bind failed: {e}");
                std::process::exit(1);
            }
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let _ = std::thread::Builder::new()
            .name("srv-accept".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let spawned = std::thread::Builder::new()
                        .name("srv-conn".into())
                        .stack_size(256 * 1024)
                        .spawn(move || serve(stream));
                    if let Err(e) = spawned {
                        eprintln!("server: cannot start a connection thread: {e}");
                    }
                }
            });
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "PORT {port}");
        let _ = out.flush();
        let stdin = io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            let mut words = line.split_whitespace();
            let reply = match (words.next(), words.next().and_then(|w| w.parse().ok())) {
                (Some("records"), Some(n)) => {
                    let n: usize = n;
                    let recs =
                        wait_for(|s| s.records.len() >= n, |s| std::mem::take(&mut s.records));
                    let mut r = String::from("RECORDS");
                    for rec in recs {
                        let _ = write!(
                            r,
                            " {}:{}:{}:{}:{}",
                            rec.kind, rec.wall_ns, rec.cpu_ns, rec.count, rec.bytes
                        );
                    }
                    r
                }
                (Some("drops"), Some(n)) => {
                    let n: usize = n;
                    let drops = wait_for(|s| s.drops.len() >= n, |s| std::mem::take(&mut s.drops));
                    let mut r = String::from("DROPS");
                    for d in drops {
                        let _ = write!(r, " {d}");
                    }
                    r
                }
                (Some("clear"), _) => {
                    with_state(|s| *s = State::default());
                    "OK".to_owned()
                }
                _ => format!("ERR unknown command {line:?}"),
            };
            let _ = writeln!(out, "{reply}");
            let _ = out.flush();
        }
        // The parent closed our stdin: it is done (or gone).
        std::process::exit(0);
    }

    fn serve(stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let mut path = String::new();
        let mut deflate = false;
        #[allow(clippy::result_large_err)] // tungstenite's callback signature
        let callback = |req: &Request, mut resp: Response| {
            path = req.uri().path().to_owned();
            // Only the JSON rows that ask for it take a permessage-deflate offer; everywhere
            // else the server ignores it, as a server without the extension does.
            if path.ends_with("/deflate") && offers_deflate(req) {
                resp.headers_mut().insert(
                    "Sec-WebSocket-Extensions",
                    HeaderValue::from_static("permessage-deflate"),
                );
                deflate = true;
            }
            Ok(resp)
        };
        let Ok(mut ws) = tungstenite::accept_hdr(stream, callback) else {
            return;
        };
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let num = |i: usize| {
            parts
                .get(i)
                .and_then(|p| p.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match parts.first().copied() {
            Some("flood") => flood(&mut ws, num(1) as usize, num(2)),
            Some("sink") => return sink(ws, num(1)),
            Some("json-flood") => json_flood(&mut ws, num(1), deflate),
            Some("json-sink") => return json_sink(ws, num(1), deflate),
            Some("drop") => return echo(&mut ws, true),
            _ => {}
        }
        echo(&mut ws, false);
    }

    /// Echoes data messages until the peer leaves. With `drop_on_request`, a text message
    /// "drop" makes it note the time and cut the TCP connection without a close frame.
    fn echo(ws: &mut WebSocket<TcpStream>, drop_on_request: bool) {
        loop {
            match ws.read() {
                Ok(tungstenite::Message::Text(t)) if drop_on_request && t.as_str() == "drop" => {
                    let at = unix_nanos(SystemTime::now());
                    let _ = ws.get_ref().shutdown(Shutdown::Both);
                    with_state(|s| s.drops.push(at));
                    return;
                }
                Ok(m @ (tungstenite::Message::Text(_) | tungstenite::Message::Binary(_))) => {
                    if ws.send(m).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    }

    /// Waits for any data message, then writes `count` binary frames of `size` bytes as
    /// fast as the socket takes them, then serves the close handshake.
    fn flood(ws: &mut WebSocket<TcpStream>, size: usize, count: u64) {
        loop {
            match ws.read() {
                Ok(m) if m.is_text() || m.is_binary() => break,
                Ok(_) => {}
                Err(_) => return,
            }
        }
        let frame = server_frame(2, &payload(size));
        let per_chunk = (256 * 1024 / frame.len()).max(1);
        let chunk = frame.repeat(per_chunk);
        let (t0, cpu0) = (Instant::now(), own_thread_cpu());
        let mut left = count;
        while left > 0 {
            let n = left.min(per_chunk as u64) as usize;
            if ws.get_mut().write_all(&chunk[..n * frame.len()]).is_err() {
                return;
            }
            left -= n as u64;
        }
        let rec = Record {
            kind: "flood",
            wall_ns: t0.elapsed().as_nanos() as u64,
            cpu_ns: own_thread_cpu().saturating_sub(cpu0),
            count,
            bytes: count * size as u64,
        };
        with_state(|s| s.records.push(rec));
    }

    /// Counts incoming data frames by scanning headers (payloads are skipped, not copied);
    /// after `count`, records its times and sends a text frame "done". Answers pings and
    /// the close handshake by hand. The handshake never reads past the request head
    /// (clients send frames only after the response), so nothing is lost in tungstenite's
    /// buffer.
    fn sink(ws: WebSocket<TcpStream>, count: u64) {
        let mut stream = ws.into_inner();
        let mut buf = SinkBuf::new();
        let mut skip = 0u64;
        let (mut seen, mut bytes) = (0u64, 0u64);
        let mut timer = SinkTimer::default();
        loop {
            skip -= buf.consume_up_to(skip);
            while skip == 0 {
                let Some(h) = FrameHead::parse(buf.unread()) else {
                    break;
                };
                if h.opcode >= 8 {
                    // A control frame: needs its (small) payload.
                    let Some(frame) = buf.unread().get(..h.size + h.len as usize) else {
                        break;
                    };
                    let payload: Vec<u8> = h.unmasked(&frame[h.size..]).collect();
                    buf.consume(frame.len());
                    if !answer_control(&mut stream, h.opcode, &payload) {
                        return;
                    }
                    continue;
                }
                buf.consume(h.size);
                bytes += h.len;
                skip = h.len - buf.consume_up_to(h.len);
                if h.fin {
                    seen += 1;
                    if seen == count {
                        timer.record("sink", count, bytes);
                        if stream.write_all(&server_frame(1, b"done")).is_err() {
                            return;
                        }
                    }
                }
            }
            if !buf.fill(&mut stream) {
                return;
            }
            timer.start();
        }
    }

    /// A frame header as the sinks read it.
    struct FrameHead {
        fin: bool,
        rsv1: bool,
        opcode: u8,
        /// All zeros for an unmasked frame.
        mask: [u8; 4],
        /// The payload length.
        len: u64,
        /// The header's own length.
        size: usize,
    }

    impl FrameHead {
        /// The header at the start of `bytes`, once all of it is there.
        fn parse(bytes: &[u8]) -> Option<FrameHead> {
            let (&b0, &b1) = (bytes.first()?, bytes.get(1)?);
            let masked = b1 & 0x80 != 0;
            let (len, ext) = match b1 & 0x7f {
                126 => (
                    u64::from(u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?)),
                    2,
                ),
                127 => (u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?), 8),
                n => (u64::from(n), 0),
            };
            let size = 2 + ext + if masked { 4 } else { 0 };
            let mask = if masked {
                bytes.get(size - 4..size)?.try_into().ok()?
            } else {
                [0; 4]
            };
            Some(FrameHead {
                fin: b0 & 0x80 != 0,
                rsv1: b0 & 0x40 != 0,
                opcode: b0 & 0x0f,
                mask,
                len,
                size,
            })
        }

        /// `payload` (this frame's, from its start) with the mask removed.
        fn unmasked<'a>(&'a self, payload: &'a [u8]) -> impl Iterator<Item = u8> + 'a {
            payload
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ self.mask[i % 4])
        }
    }

    /// Answers a control frame by hand: a pong for a ping, the close handshake for a close.
    /// `false` when the sink is done.
    fn answer_control(stream: &mut TcpStream, opcode: u8, payload: &[u8]) -> bool {
        match opcode {
            8 => {
                let _ = stream.write_all(&server_frame(8, &[0x03, 0xe8]));
                let _ = stream.shutdown(Shutdown::Write);
                false
            }
            9 => stream.write_all(&server_frame(10, payload)).is_ok(),
            _ => true,
        }
    }

    /// The sinks' read buffer: `buf[start..end]` is read but not yet parsed.
    struct SinkBuf {
        buf: Vec<u8>,
        start: usize,
        end: usize,
    }

    impl SinkBuf {
        fn new() -> SinkBuf {
            SinkBuf {
                buf: vec![0; 256 * 1024],
                start: 0,
                end: 0,
            }
        }

        fn unread(&self) -> &[u8] {
            &self.buf[self.start..self.end]
        }

        fn consume(&mut self, n: usize) {
            self.start += n;
        }

        /// Consumes up to `n` bytes and says how many.
        fn consume_up_to(&mut self, n: u64) -> u64 {
            let take = n.min((self.end - self.start) as u64);
            self.start += take as usize;
            take
        }

        /// Makes room for a whole frame of `size` bytes.
        fn reserve_frame(&mut self, size: usize) {
            if size > self.buf.len() {
                self.buf.resize(size.next_power_of_two(), 0);
            }
        }

        /// Moves what is unparsed to the front and reads more; `false` when the peer is gone.
        fn fill(&mut self, stream: &mut TcpStream) -> bool {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            loop {
                match stream.read(&mut self.buf[self.end..]) {
                    Ok(0) => return false,
                    Ok(n) => {
                        self.end += n;
                        return true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
        }
    }

    /// A sink's wall and CPU time, from the first bytes it read.
    #[derive(Default)]
    struct SinkTimer(Option<(Instant, u64)>);

    impl SinkTimer {
        fn start(&mut self) {
            self.0
                .get_or_insert_with(|| (Instant::now(), own_thread_cpu()));
        }

        fn record(&self, kind: &'static str, count: u64, bytes: u64) {
            let (t, c) = self.0.unwrap_or((Instant::now(), own_thread_cpu()));
            let rec = Record {
                kind,
                wall_ns: t.elapsed().as_nanos() as u64,
                cpu_ns: own_thread_cpu().saturating_sub(c),
                count,
                bytes,
            };
            with_state(|s| s.records.push(rec));
        }
    }

    /// Whether the request offers permessage-deflate in a form this server can take: context
    /// takeover and a full window on its own side (it answers with the bare name, which keeps
    /// every default, RFC 7692 §7.1).
    fn offers_deflate(req: &Request) -> bool {
        req.headers()
            .get_all("sec-websocket-extensions")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|offer| {
                let mut parts = offer.split(';').map(str::trim);
                parts
                    .next()
                    .is_some_and(|name| name.eq_ignore_ascii_case("permessage-deflate"))
                    && parts.all(|p| {
                        let name = p.split('=').next().unwrap_or("").trim();
                        !name.eq_ignore_ascii_case("server_no_context_takeover")
                            && !name.eq_ignore_ascii_case("server_max_window_bits")
                    })
            })
    }

    /// Waits for any data message, then writes `count` messages of the JSON pool as text
    /// frames, pre-encoded (compressed ones included: see [`JsonFrames`]), then serves the
    /// close handshake.
    fn json_flood(ws: &mut WebSocket<TcpStream>, count: u64, deflate: bool) {
        // Built by the first connection (an unmeasured warm-up), before it reads `go`.
        let frames = match JsonFrames::get(deflate, false) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("server: cannot encode the JSON pool: {e}");
                return;
            }
        };
        loop {
            match ws.read() {
                Ok(m) if m.is_text() || m.is_binary() => break,
                Ok(_) => {}
                Err(_) => return,
            }
        }
        let (t0, cpu0) = (Instant::now(), own_thread_cpu());
        let Ok(bytes) = frames.write(ws.get_mut(), count) else {
            return;
        };
        let rec = Record {
            kind: "json-flood",
            wall_ns: t0.elapsed().as_nanos() as u64,
            cpu_ns: own_thread_cpu().saturating_sub(cpu0),
            count,
            bytes,
        };
        with_state(|s| s.records.push(rec));
    }

    /// Takes `count` messages of the JSON pool, in order, and checks each: an uncompressed
    /// one by its length (its payload is skipped, like [`sink`] does), a compressed one by
    /// inflating it (a persistent inflater: context takeover) and comparing it with the pool.
    /// Then records its times and sends a text frame `done`, or `error: ...` if a message
    /// was wrong. Answers pings and the close handshake by hand.
    fn json_sink(ws: WebSocket<TcpStream>, count: u64, deflate: bool) {
        let pool = json_pool();
        let mut stream = ws.into_inner();
        let mut inflater = deflate.then(|| Decompress::new(false));
        let mut buf = SinkBuf::new();
        // The message being assembled: compressed (RSV1 on its first frame) or not, its
        // unmasked compressed payload, its uncompressed length so far.
        let (mut compressed, mut zmsg, mut plain_len) = (false, Vec::new(), 0usize);
        let mut inflated = Vec::with_capacity(4096);
        let (mut seen, mut bytes) = (0u64, 0u64);
        let mut failure: Option<String> = None;
        let mut timer = SinkTimer::default();
        loop {
            // Whole frames only: every frame here is small, and the buffer grows for any
            // that is not.
            while let Some(h) = FrameHead::parse(buf.unread()) {
                let size = h.size + h.len as usize;
                let Some(frame) = buf.unread().get(..size) else {
                    buf.reserve_frame(size);
                    break;
                };
                if h.opcode >= 8 {
                    let payload: Vec<u8> = h.unmasked(&frame[h.size..]).collect();
                    buf.consume(size);
                    if !answer_control(&mut stream, h.opcode, &payload) {
                        return;
                    }
                    continue;
                }
                bytes += h.len;
                if h.opcode != 0 {
                    compressed = h.rsv1;
                    zmsg.clear();
                    plain_len = 0;
                }
                if compressed {
                    zmsg.extend(h.unmasked(&frame[h.size..]));
                } else {
                    plain_len += h.len as usize;
                }
                buf.consume(size);
                if !h.fin {
                    continue;
                }
                let expected = pool[(seen % pool.len() as u64) as usize].as_bytes();
                if failure.is_none() {
                    failure = match (compressed, inflater.as_mut()) {
                        (false, _) if plain_len == expected.len() => None,
                        (false, _) => Some(format!(
                            "message {seen}: {plain_len} bytes, expected {}",
                            expected.len()
                        )),
                        (true, None) => Some(format!(
                            "message {seen}: compressed, but compression was not negotiated"
                        )),
                        (true, Some(d)) => match inflate_message(d, &zmsg, &mut inflated) {
                            Ok(()) if inflated == expected => None,
                            Ok(()) => Some(format!("message {seen} inflated to other bytes")),
                            Err(e) => Some(format!("message {seen}: {e}")),
                        },
                    };
                }
                seen += 1;
                if seen == count {
                    timer.record("json-sink", count, bytes);
                    let reply = match &failure {
                        None => "done".to_owned(),
                        Some(f) => format!("error: {f}"),
                    };
                    if stream
                        .write_all(&server_frame(1, reply.as_bytes()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
            if !buf.fill(&mut stream) {
                return;
            }
            timer.start();
        }
    }
}

/// The parent's handle on the server child process.
struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    port: u16,
}

/// What the server reported about one flood or sink.
#[derive(Debug, Clone)]
struct ServerRecord {
    wall_ns: u64,
    cpu_ns: u64,
    count: u64,
    /// Payload bytes on the wire.
    bytes: u64,
}

impl ServerRecord {
    fn busy(&self) -> f64 {
        self.cpu_ns as f64 / self.wall_ns.max(1) as f64
    }
}

impl Server {
    fn start() -> Res<Server> {
        let mut child = Command::new(std::env::current_exe()?)
            .env(ROLE_ENV, "server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no server stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let port = line
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| format!("unexpected server greeting {line:?}"))?;
        Ok(Server {
            child,
            stdin,
            stdout,
            port,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    fn command(&mut self, cmd: &str) -> Res<String> {
        let stdin = self.stdin.as_mut().ok_or("server stdin closed")?;
        writeln!(stdin, "{cmd}")?;
        stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        Ok(line.trim_end().to_owned())
    }

    /// The records of the last `n` floods or sinks (waits for them).
    fn records(&mut self, n: usize) -> Res<Vec<ServerRecord>> {
        let line = self.command(&format!("records {n}"))?;
        let recs: Vec<ServerRecord> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|r| {
                let f: Vec<&str> = r.split(':').collect();
                Some(ServerRecord {
                    wall_ns: f.get(1)?.parse().ok()?,
                    cpu_ns: f.get(2)?.parse().ok()?,
                    count: f.get(3)?.parse().ok()?,
                    bytes: f.get(4)?.parse().ok()?,
                })
            })
            .collect();
        if recs.len() < n {
            return Err(format!("the server reported {} of {n} records", recs.len()).into());
        }
        Ok(recs)
    }

    /// Wall-clock times (ns since the epoch) of the last `n` server-side drops.
    fn drops(&mut self, n: usize) -> Res<Vec<u128>> {
        let line = self.command(&format!("drops {n}"))?;
        let drops: Vec<u128> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|d| d.parse().ok())
            .collect();
        if drops.len() < n {
            return Err(format!("the server reported {} of {n} drops", drops.len()).into());
        }
        Ok(drops)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stdin.take()); // EOF: the server exits
        let _ = self.child.wait();
    }
}

// ----- clients --------------------------------------------------------------------------

type RawWs = WebSocket<TcpStream>;

/// A raw tungstenite client: blocking std `TcpStream`, TCP_NODELAY like jetsocket's default.
fn raw_connect(url: &str, config: Option<WebSocketConfig>) -> Res<RawWs> {
    let addr = url
        .strip_prefix("ws://")
        .and_then(|r| r.split('/').next())
        .ok_or("bad url")?;
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let (ws, _) = tungstenite::client::client_with_config(url, stream, config)
        .map_err(|e| format!("raw handshake: {e}"))?;
    Ok(ws)
}

fn raw_close(mut ws: RawWs) {
    let _ = ws.close(None);
    let _ = ws.get_ref().set_read_timeout(Some(Duration::from_secs(5)));
    while ws.read().is_ok() {}
}

/// Extra jetsocket settings for experiments (`--jet-opt`), e.g. `sendq=64,readbuf=16384`.
const JET_OPTS_ENV: &str = "JETSOCKET_BENCH_JET_OPTS";

/// A jetsocket builder with every default, plus any `--jet-opt` experiment settings.
fn jet_builder(url: &str) -> jetsocket::Builder {
    let mut b = SyncWebSocket::builder(url);
    let opts = std::env::var(JET_OPTS_ENV).unwrap_or_default();
    for kv in opts.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let n = v.parse::<usize>().unwrap_or(0);
        b = match k {
            "sendq" => b.send_queue(SendQueueConfig::new(n)),
            "buf" => b.buffer(BufferConfig::new(n)),
            "readbuf" => b.read_buffer_size(n),
            "hb" if v == "off" => b.heartbeat(None),
            "zlevel" => b.compression_level(n as u32),
            "deflate" if v == "off" => b.compression(false),
            "spin" => b.busy_poll(Duration::from_micros(n as u64)),
            _ => {
                eprintln!("ignoring unknown --jet-opt {kv:?}");
                b
            }
        };
    }
    b
}

/// One client's result for one repetition of a throughput row.
struct Throughput {
    secs: f64,
    count: u64,
    cpu_ns: u64,
}

fn inbound(who: Who, server: &Server, size: usize, count: u64, buffer: usize) -> Res<Throughput> {
    let url = server.url(&format!("/flood/{size}/{count}"));
    match who {
        Who::Jet => {
            let ws = jet_builder(&url)
                .buffer(BufferConfig::new(buffer).overflow_policy(OverflowPolicy::Block))
                .connect()?;
            let cpu0 = thread_cpu_snapshot();
            let t0 = Instant::now();
            ws.send_text("go")?;
            let mut n = 0u64;
            for msg in ws.messages() {
                if msg.len() != size {
                    return Err(format!("got {} bytes, expected {size}", msg.len()).into());
                }
                n += 1;
                if n == count {
                    break;
                }
            }
            let secs = t0.elapsed().as_secs_f64();
            let cpu_ns = cpu_since(&cpu0);
            if n != count {
                return Err(format!("jetsocket got {n} of {count} messages").into());
            }
            ws.close()?;
            Ok(Throughput {
                secs,
                count,
                cpu_ns,
            })
        }
        Who::Raw => {
            let mut ws = raw_connect(&url, None)?;
            let cpu0 = thread_cpu_snapshot();
            let t0 = Instant::now();
            ws.send(tungstenite::Message::text("go"))?;
            let mut n = 0u64;
            while n < count {
                if let tungstenite::Message::Binary(b) = ws.read()? {
                    if b.len() != size {
                        return Err(format!("got {} bytes, expected {size}", b.len()).into());
                    }
                    n += 1;
                }
            }
            let secs = t0.elapsed().as_secs_f64();
            let cpu_ns = cpu_since(&cpu0);
            raw_close(ws);
            Ok(Throughput {
                secs,
                count,
                cpu_ns,
            })
        }
    }
}

fn outbound(who: Who, server: &Server, size: usize, count: u64, senders: u64) -> Res<Throughput> {
    let url = server.url(&format!("/sink/{count}"));
    let data = payload(size);
    let per_sender = count / senders;
    let extra = count - per_sender * senders;
    match who {
        Who::Jet => {
            let ws = jet_builder(&url).connect()?;
            let cpu0 = thread_cpu_snapshot();
            let t0 = Instant::now();
            std::thread::scope(|s| -> Res<()> {
                let handles: Vec<_> = (0..senders)
                    .map(|i| {
                        let (ws, data) = (&ws, &data);
                        let n = per_sender + if i == 0 { extra } else { 0 };
                        s.spawn(move || -> jetsocket::Result<()> {
                            for _ in 0..n {
                                ws.send_binary(data.clone())?;
                            }
                            Ok(())
                        })
                    })
                    .collect();
                for h in handles {
                    h.join().map_err(|_| "sender panicked")??;
                }
                Ok(())
            })?;
            let done = ws.recv_timeout(Duration::from_secs(120))?;
            let secs = t0.elapsed().as_secs_f64();
            let cpu_ns = cpu_since(&cpu0);
            if done.as_text() != Some("done") {
                return Err(format!("unexpected reply {done:?}").into());
            }
            ws.close()?;
            Ok(Throughput {
                secs,
                count,
                cpu_ns,
            })
        }
        Who::Raw => {
            let ws = Mutex::new(raw_connect(&url, None)?);
            let cpu0 = thread_cpu_snapshot();
            let t0 = Instant::now();
            let write_all = |n: u64| -> Res<()> {
                for _ in 0..n {
                    let mut guard = ws.lock().map_err(|_| "poisoned")?;
                    guard.write(tungstenite::Message::Binary(data.clone()))?;
                }
                Ok(())
            };
            if senders == 1 {
                write_all(count)?;
            } else {
                std::thread::scope(|s| -> Res<()> {
                    let handles: Vec<_> = (0..senders)
                        .map(|i| {
                            let n = per_sender + if i == 0 { extra } else { 0 };
                            let write_all = &write_all;
                            s.spawn(move || write_all(n))
                        })
                        .collect();
                    for h in handles {
                        h.join().map_err(|_| "sender panicked")??;
                    }
                    Ok(())
                })?;
            }
            let mut ws = ws.into_inner().map_err(|_| "poisoned")?;
            ws.flush()?;
            loop {
                if let tungstenite::Message::Text(t) = ws.read()? {
                    if t.as_str() == "done" {
                        break;
                    }
                }
            }
            let secs = t0.elapsed().as_secs_f64();
            let cpu_ns = cpu_since(&cpu0);
            raw_close(ws);
            Ok(Throughput {
                secs,
                count,
                cpu_ns,
            })
        }
    }
}

/// The three clients of the JSON rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonClient {
    /// Raw tungstenite (it has no permessage-deflate).
    Raw,
    /// jetsocket with `.compression(false)`.
    Plain,
    /// jetsocket with compression negotiated (default settings: level 1, threshold 128).
    Deflate,
}

impl JsonClient {
    const ALL: [JsonClient; 3] = [JsonClient::Raw, JsonClient::Plain, JsonClient::Deflate];

    /// The compressed client's wire bytes, after checking that it compressed every one of
    /// the `count` messages (`compressed`, from `stats().compression`); `None` for the others.
    fn wire_bytes(self, compressed: u64, wire: u64, count: u64, verb: &str) -> Res<Option<u64>> {
        if self != JsonClient::Deflate {
            return Ok(None);
        }
        if compressed != count {
            return Err(
                format!("jetsocket {verb} {compressed} compressed messages of {count}").into(),
            );
        }
        Ok(Some(wire))
    }

    fn who(self) -> Who {
        match self {
            JsonClient::Raw => Who::Raw,
            JsonClient::Plain | JsonClient::Deflate => Who::Jet,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn url(self, server: &Server, kind: &str, count: u64) -> String {
        let suffix = if self == JsonClient::Deflate {
            "/deflate"
        } else {
            ""
        };
        server.url(&format!("/{kind}/{count}{suffix}"))
    }

    /// A jetsocket connection with compression on or off as this client wants, checked.
    fn jet_connect(self, builder: jetsocket::Builder) -> Res<SyncWebSocket> {
        let deflate = self == JsonClient::Deflate;
        let ws = builder.compression(deflate).connect()?;
        if ws.stats().compression.active != deflate {
            let _ = ws.close();
            return Err(format!(
                "compression is {} on a connection that asked for it {}",
                if deflate { "off" } else { "on" },
                if deflate { "on" } else { "off" },
            )
            .into());
        }
        Ok(ws)
    }
}

/// One client's result for one run of a JSON row: its times, and for jetsocket with
/// compression its own count of compressed payload bytes (`stats().compression`).
struct JsonRun {
    t: Throughput,
    wire_bytes: Option<u64>,
}

/// Consumes `count` JSON messages from `/json-flood`. Every message's length is checked;
/// with `verify`, its text too.
fn json_inbound(
    client: JsonClient,
    server: &Server,
    count: u64,
    buffer: usize,
    verify: bool,
) -> Res<JsonRun> {
    let pool = json_pool();
    let url = client.url(server, "json-flood", count);
    let check = |n: u64, text: Option<&str>, len: usize| -> Res<()> {
        let expected = pool[(n % pool.len() as u64) as usize];
        match text {
            None => Err(format!("message {n} is not text").into()),
            Some(t) if verify && t != expected => Err(format!("message {n} has other text").into()),
            Some(_) if len != expected.len() => {
                Err(format!("message {n}: {len} bytes, expected {}", expected.len()).into())
            }
            Some(_) => Ok(()),
        }
    };
    match client.who() {
        Who::Jet => {
            let ws =
                client
                    .jet_connect(jet_builder(&url).buffer(
                        BufferConfig::new(buffer).overflow_policy(OverflowPolicy::Block),
                    ))?;
            let cpu0 = thread_cpu_snapshot();
            let t0 = Instant::now();
            ws.send_text("go")?;
            let mut n = 0u64;
            for msg in ws.messages() {
                check(n, msg.as_text(), msg.len())?;
                n += 1;
                if n == count {
                    break;
                }
            }
            let secs = t0.elapsed().as_secs_f64();
            let cpu_ns = cpu_since(&cpu0);
            if n != count {
                return Err(format!("jetsocket got {n} of {count} messages").into());
            }
            let c = ws.stats().compression;
            ws.close()?;
            let wire_bytes = client.wire_bytes(
                c.received_messages,
                c.received_wire_bytes,
                count,
                "received",
            )?;
            Ok(JsonRun {
                t: Throughput {
                    secs,
                    count,
                    cpu_ns,
                },
                wire_bytes,
            })
        }
        Who::Raw => {
            let mut ws = raw_connect(&url, None)?;
            let cpu0 = thread_cpu_snapshot();
            let t0 = Instant::now();
            ws.send(tungstenite::Message::text("go"))?;
            let mut n = 0u64;
            while n < count {
                match ws.read()? {
                    tungstenite::Message::Text(t) => check(n, Some(t.as_str()), t.len())?,
                    tungstenite::Message::Binary(_) => check(n, None, 0)?,
                    _ => continue,
                }
                n += 1;
            }
            let secs = t0.elapsed().as_secs_f64();
            let cpu_ns = cpu_since(&cpu0);
            raw_close(ws);
            Ok(JsonRun {
                t: Throughput {
                    secs,
                    count,
                    cpu_ns,
                },
                wire_bytes: None,
            })
        }
    }
}

/// Sends `count` JSON messages (the pool in order, as text) to `/json-sink`, which checks
/// each one. The clock stops at the server's `done`.
fn json_outbound(client: JsonClient, server: &Server, count: u64) -> Res<JsonRun> {
    let pool = json_pool();
    let url = client.url(server, "json-sink", count);
    let text = |i: u64| pool[(i % pool.len() as u64) as usize];
    let reply_ok = |reply: Option<&str>| -> Res<()> {
        match reply {
            Some("done") => Ok(()),
            other => Err(format!("the server answered {other:?}").into()),
        }
    };
    match client.who() {
        Who::Jet => {
            let ws = client.jet_connect(jet_builder(&url))?;
            let cpu0 = thread_cpu_snapshot();
            let t0 = Instant::now();
            for i in 0..count {
                ws.send_text(Utf8Bytes::from_static(text(i)))?;
            }
            let reply = ws.recv_timeout(Duration::from_secs(120))?;
            let secs = t0.elapsed().as_secs_f64();
            let cpu_ns = cpu_since(&cpu0);
            reply_ok(reply.as_text())?;
            let c = ws.stats().compression;
            ws.close()?;
            let wire_bytes =
                client.wire_bytes(c.sent_messages, c.sent_wire_bytes, count, "sent")?;
            Ok(JsonRun {
                t: Throughput {
                    secs,
                    count,
                    cpu_ns,
                },
                wire_bytes,
            })
        }
        Who::Raw => {
            let mut ws = raw_connect(&url, None)?;
            let cpu0 = thread_cpu_snapshot();
            let t0 = Instant::now();
            for i in 0..count {
                ws.write(tungstenite::Message::Text(
                    tungstenite::Utf8Bytes::from_static(text(i)),
                ))?;
            }
            ws.flush()?;
            let reply = loop {
                if let tungstenite::Message::Text(t) = ws.read()? {
                    break t;
                }
            };
            let secs = t0.elapsed().as_secs_f64();
            let cpu_ns = cpu_since(&cpu0);
            reply_ok(Some(reply.as_str()))?;
            raw_close(ws);
            Ok(JsonRun {
                t: Throughput {
                    secs,
                    count,
                    cpu_ns,
                },
                wire_bytes: None,
            })
        }
    }
}

/// Round-trip latencies (µs) of `iters` sequential 64 B echoes, after `warmup` unmeasured ones.
fn echo(
    who: Who,
    server: &Server,
    iters: usize,
    warmup: usize,
    spin: Option<Duration>,
) -> Res<Vec<f64>> {
    let url = server.url("/echo");
    let data = payload(64);
    let mut lat = Vec::with_capacity(iters);
    match who {
        Who::Jet => {
            let mut builder = jet_builder(&url);
            if let Some(spin) = spin {
                builder = builder.busy_poll(spin);
            }
            let ws = builder.connect()?;
            for i in 0..warmup + iters {
                let t = Instant::now();
                ws.send_binary(data.clone())?;
                let m = ws.recv_timeout(Duration::from_secs(10))?;
                let us = t.elapsed().as_secs_f64() * 1e6;
                if m.len() != 64 {
                    return Err("bad echo".into());
                }
                if i >= warmup {
                    lat.push(us);
                }
            }
            ws.close()?;
        }
        Who::Raw => {
            let mut ws = raw_connect(&url, None)?;
            for i in 0..warmup + iters {
                let t = Instant::now();
                ws.send(tungstenite::Message::Binary(data.clone()))?;
                let m = loop {
                    match ws.read()? {
                        m @ tungstenite::Message::Binary(_) => break m,
                        _ => continue,
                    }
                };
                let us = t.elapsed().as_secs_f64() * 1e6;
                if m.len() != 64 {
                    return Err("bad echo".into());
                }
                if i >= warmup {
                    lat.push(us);
                }
            }
            raw_close(ws);
        }
    }
    Ok(lat)
}

/// Reconnect times (µs). jetsocket: from the server's drop (its wall clock, same machine) to
/// this thread receiving `Event::Reconnected`. Raw: a fresh TCP connect plus handshake.
fn reconnect(who: Who, server: &mut Server, n: usize) -> Res<(Vec<f64>, Vec<f64>)> {
    let url = server.url("/drop");
    match who {
        Who::Jet => {
            let ws = jet_builder(&url)
                .backoff(BackoffConfig::default().base(Duration::ZERO).jitter(false))
                .connect()?;
            let events = ws.events();
            let mut seen = Vec::with_capacity(n);
            let mut downtimes = Vec::with_capacity(n);
            for _ in 0..n {
                ws.send_text("drop")?;
                loop {
                    match events.recv_timeout(Duration::from_secs(10)) {
                        Ok(Event::Reconnected { downtime, .. }) => {
                            seen.push(unix_nanos(SystemTime::now()));
                            downtimes.push(downtime.as_secs_f64() * 1e6);
                            break;
                        }
                        Ok(_) => {}
                        Err(_) => return Err("no Reconnected event within 10 s".into()),
                    }
                }
            }
            ws.close()?;
            let drops = server.drops(n)?;
            let times = drops
                .iter()
                .zip(&seen)
                .map(|(d, s)| s.saturating_sub(*d) as f64 / 1e3)
                .collect();
            Ok((times, downtimes))
        }
        Who::Raw => {
            let mut times = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let ws = raw_connect(&url, None)?;
                times.push(t.elapsed().as_secs_f64() * 1e6);
                drop(ws);
            }
            Ok((times, Vec::new()))
        }
    }
}

/// CPU use of `n` idle connections with a 1 s heartbeat, sampled every second for `secs`
/// seconds: percent of one core per sample.
fn idle_cpu(who: Who, server: &Server, n: usize, secs: u64) -> Res<Vec<f64>> {
    let url = server.url("/echo");
    let mut jets = Vec::new();
    let mut raw_threads = Vec::new();
    let mut raw_sockets = Vec::new();
    match who {
        Who::Jet => {
            for _ in 0..n {
                jets.push(
                    jet_builder(&url)
                        .heartbeat(HeartbeatConfig::default().interval(Duration::from_secs(1)))
                        .connect()?,
                );
            }
        }
        Who::Raw => {
            // The classic blocking design: one thread per connection, blocked in `read`
            // with a 1 s timeout that doubles as the heartbeat clock.
            for _ in 0..n {
                let mut ws = raw_connect(&url, None)?;
                ws.get_ref()
                    .set_read_timeout(Some(Duration::from_secs(1)))?;
                raw_sockets.push(ws.get_ref().try_clone()?);
                raw_threads.push(std::thread::spawn(move || loop {
                    match ws.read() {
                        Ok(_) => {}
                        Err(tungstenite::Error::Io(e))
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) =>
                        {
                            if ws.send(tungstenite::Message::Ping(Bytes::new())).is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }));
            }
        }
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    let mut snap = thread_cpu_snapshot();
    for i in 1..=secs {
        let until = start + Duration::from_secs(i);
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
        let used = cpu_since(&snap);
        snap = thread_cpu_snapshot();
        samples.push(used as f64 / 1e9 * 100.0);
    }
    for ws in jets {
        ws.close()?;
    }
    for s in raw_sockets {
        let _ = s.shutdown(Shutdown::Both);
    }
    for t in raw_threads {
        let _ = t.join();
    }
    Ok(samples)
}

/// Resident memory of `n` idle connections, measured in a fresh child process so that no
/// allocator cache from earlier rows hides anything. Returns (before, after) in KiB.
fn idle_rss(who: Who, server: &Server, n: usize, small: bool) -> Res<(u64, u64)> {
    let args = format!(
        "{} {} {n} {}",
        who.name(),
        if small { "small" } else { "default" },
        server.port
    );
    let out = Command::new(std::env::current_exe()?)
        .env(ROLE_ENV, "rss")
        .env(ARGS_ENV, args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(format!("rss child failed ({})", out.status).into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("RSS "))
        .ok_or("no RSS line from the child")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    match v.as_slice() {
        [before, after] => Ok((*before, *after)),
        _ => Err(format!("bad RSS line {line:?}").into()),
    }
}

/// The `rss` role: open N idle connections, print VmRSS before and after, exit.
fn rss_child() -> Res<()> {
    let args = std::env::var(ARGS_ENV)?;
    let a: Vec<&str> = args.split_whitespace().collect();
    let [who, buffers, n, port] = a.as_slice() else {
        return Err("bad arguments".into());
    };
    let n: usize = n.parse()?;
    let small = *buffers == "small";
    let url = format!("ws://127.0.0.1:{port}/echo");
    let before = proc_status_kib("VmRSS");
    let mut keep_jet = Vec::new();
    let mut keep_raw = Vec::new();
    if *who == "jetsocket" {
        for _ in 0..n {
            let mut b = jet_builder(&url);
            if small {
                b = b.read_buffer_size(4096);
            }
            keep_jet.push(b.connect()?);
        }
        // Every connection has answered the handshake; make sure each I/O thread has also
        // reached its readiness wait (one echo round trip each).
        for ws in &keep_jet {
            ws.send_text("x")?;
            ws.recv_timeout(Duration::from_secs(10))?;
        }
    } else {
        let config = small.then(|| WebSocketConfig::default().read_buffer_size(4096));
        for _ in 0..n {
            let mut ws = raw_connect(&url, config)?;
            ws.send(tungstenite::Message::text("x"))?;
            ws.read()?;
            // One thread per connection, blocked in `read`, as a blocking client must.
            keep_raw.push(std::thread::spawn(move || while ws.read().is_ok() {}));
        }
    }
    let after = proc_status_kib("VmRSS");
    println!("RSS {before} {after}");
    io::stdout().flush()?;
    // Exit without closing: the server sees the sockets go.
    std::process::exit(0);
}

/// How fast the server alone can push or take small messages: a byte-discarding reader for
/// the flood, a writer of pre-encoded frames for the sink. Returns messages per second. (Not
/// used for large payloads: there the loopback copy dominates both ends, and a reader that
/// does nothing but block in `read` makes the sender wake it more often, so it is no upper
/// bound; the server's busy share during each run is the evidence instead.)
fn server_capacity(server: &mut Server, flood: bool, size: usize, count: u64) -> Res<f64> {
    if flood {
        let frame_len = server_frame(2, &payload(size)).len() as u64;
        let mut ws = raw_connect(&server.url(&format!("/flood/{size}/{count}")), None)?;
        ws.send(tungstenite::Message::text("go"))?;
        let mut stream = ws.into_inner();
        // Read as much per call as tungstenite does by default (128 KiB).
        let mut buf = vec![0u8; 128 * 1024];
        let t0 = Instant::now();
        let mut left = count * frame_len;
        while left > 0 {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Err("flood ended early".into());
            }
            left = left.saturating_sub(n as u64);
        }
        let secs = t0.elapsed().as_secs_f64();
        server.records(1)?;
        Ok(count as f64 / secs)
    } else {
        let frame = client_frame(2, &payload(size), [1, 2, 3, 4]);
        let per_chunk = (256 * 1024 / frame.len()).max(1);
        let chunk = frame.repeat(per_chunk);
        let ws = raw_connect(&server.url(&format!("/sink/{count}")), None)?;
        let mut stream = ws.into_inner();
        let t0 = Instant::now();
        let mut left = count;
        while left > 0 {
            let n = left.min(per_chunk as u64) as usize;
            stream.write_all(&chunk[..n * frame.len()])?;
            left -= n as u64;
        }
        let mut ws = WebSocket::from_raw_socket(stream, Role::Client, None);
        loop {
            if let tungstenite::Message::Text(t) = ws.read()? {
                if t.as_str() == "done" {
                    break;
                }
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        server.records(1)?;
        raw_close(ws);
        Ok(count as f64 / secs)
    }
}

/// How fast the server alone takes compressed JSON: pre-encoded compressed client frames
/// written to `/json-sink/<count>/deflate`, which inflates and checks every message (the
/// server's work in the outbound deflate row). Returns messages per second.
fn json_sink_capacity(server: &mut Server, count: u64) -> Res<f64> {
    let frames = JsonFrames::get(true, true)?;
    let mut request = server
        .url(&format!("/json-sink/{count}/deflate"))
        .into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Extensions",
        HeaderValue::from_static("permessage-deflate"),
    );
    let stream = TcpStream::connect(("127.0.0.1", server.port))?;
    stream.set_nodelay(true)?;
    let (ws, response) = tungstenite::client::client_with_config(request, stream, None)
        .map_err(|e| format!("raw handshake: {e}"))?;
    if !response.headers().contains_key("sec-websocket-extensions") {
        return Err("the server did not accept permessage-deflate".into());
    }
    let mut stream = ws.into_inner();
    let t0 = Instant::now();
    frames.write(&mut stream, count)?;
    let mut ws = WebSocket::from_raw_socket(stream, Role::Client, None);
    let reply = loop {
        if let tungstenite::Message::Text(t) = ws.read()? {
            break t;
        }
    };
    let secs = t0.elapsed().as_secs_f64();
    server.records(1)?;
    raw_close(ws);
    if reply.as_str() != "done" {
        return Err(format!("the server answered {reply:?}").into());
    }
    Ok(count as f64 / secs)
}

// ----- rows and reporting ---------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Unit {
    MsgPerSec,
    MegabytesPerSec,
    NsPerMsg,
    Micros,
    PercentCore,
    Mebibytes,
    BytesPerMsg,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::MsgPerSec => "msg/s",
            Unit::MegabytesPerSec => "MB/s",
            Unit::NsPerMsg => "ns/msg",
            Unit::Micros => "µs",
            Unit::PercentCore => "% core",
            Unit::Mebibytes => "MiB",
            Unit::BytesPerMsg => "B/msg",
        }
    }

    fn higher_is_better(self) -> bool {
        matches!(self, Unit::MsgPerSec | Unit::MegabytesPerSec)
    }

    fn fmt(self, v: f64) -> String {
        if v.is_nan() {
            return "-".into();
        }
        match self {
            Unit::MsgPerSec if v >= 1e6 => format!("{:.2} M", v / 1e6),
            Unit::MsgPerSec => format!("{:.0} k", v / 1e3),
            Unit::MegabytesPerSec => format!("{v:.0}"),
            Unit::NsPerMsg => format!("{v:.0}"),
            Unit::Micros if v >= 1000.0 => format!("{:.2} ms", v / 1000.0),
            Unit::Micros => format!("{v:.1}"),
            Unit::PercentCore => format!("{v:.3}"),
            Unit::Mebibytes => format!("{v:.1}"),
            Unit::BytesPerMsg => format!("{v:.0}"),
        }
    }

    /// A value with its unit, for target descriptions.
    fn fmt_with_unit(self, v: f64) -> String {
        match self {
            Unit::Micros if v >= 1000.0 => self.fmt(v),
            _ => format!("{} {}", self.fmt(v), self.name()),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Target {
    /// jetsocket / raw at least this.
    RatioAtLeast(f64),
    /// jetsocket / raw at most this.
    RatioAtMost(f64),
    /// jetsocket median at least this (in the row's unit).
    AtLeast(f64),
    /// jetsocket median below this (in the row's unit).
    Below(f64),
    /// jetsocket median at most raw's plus this (in the row's unit).
    RawPlus(f64),
}

impl Target {
    fn describe(self, unit: Unit) -> String {
        match self {
            Target::RatioAtLeast(r) => format!(">= {r}x raw"),
            Target::RatioAtMost(r) => format!("<= {r}x raw"),
            Target::AtLeast(v) => format!(">= {}", unit.fmt_with_unit(v)),
            Target::Below(v) => format!("< {}", unit.fmt_with_unit(v)),
            Target::RawPlus(v) => format!("<= raw + {}", unit.fmt_with_unit(v)),
        }
    }

    fn met(self, jet: f64, raw: f64) -> Option<bool> {
        let ratio = jet / raw;
        let ok = match self {
            Target::RatioAtLeast(r) => ratio >= r,
            Target::RatioAtMost(r) => ratio <= r,
            Target::AtLeast(v) => jet >= v,
            Target::Below(v) => jet < v,
            Target::RawPlus(v) => jet <= raw + v,
        };
        if jet.is_nan()
            || (raw.is_nan()
                && matches!(
                    self,
                    Target::RatioAtLeast(_) | Target::RatioAtMost(_) | Target::RawPlus(_)
                ))
        {
            None
        } else {
            Some(ok)
        }
    }
}

#[derive(Debug)]
struct Row {
    id: String,
    label: String,
    unit: Unit,
    jet: Vec<f64>,
    raw: Vec<f64>,
    target: Option<Target>,
    note: String,
    /// Whether both sides do the same work. The compressed JSON rows do not (raw
    /// tungstenite cannot compress): their ratio prices a feature, not overhead, and the
    /// chart leaves them out.
    like_for_like: bool,
}

impl Row {
    fn new(id: &str, label: &str, unit: Unit) -> Row {
        Row {
            id: id.into(),
            label: label.into(),
            unit,
            jet: Vec::new(),
            raw: Vec::new(),
            target: None,
            note: String::new(),
            like_for_like: true,
        }
    }

    fn target(mut self, t: Target) -> Row {
        self.target = Some(t);
        self
    }

    fn push(&mut self, who: Who, v: f64) {
        match who {
            Who::Jet => self.jet.push(v),
            Who::Raw => self.raw.push(v),
        }
    }

    fn ratio(&self) -> f64 {
        median(&self.jet) / median(&self.raw)
    }

    fn status(&self) -> Option<bool> {
        self.target
            .and_then(|t| t.met(median(&self.jet), median(&self.raw)))
    }
}

fn spread(unit: Unit, v: &[f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.len() == 1 {
        unit.fmt(v[0])
    } else {
        format!(
            "{} [{}–{}]",
            unit.fmt(median(v)),
            unit.fmt(lo),
            unit.fmt(hi)
        )
    }
}

/// Everything a run produced.
struct Report {
    rows: Vec<Row>,
    /// (label, jetsocket runs, raw runs): the server thread's busy fraction per run.
    server_busy: Vec<(String, Vec<f64>, Vec<f64>)>,
    /// (label, messages per second the server alone reaches).
    server_capacity: Vec<(String, Vec<f64>)>,
    /// (group, % of the machine used by other processes, % stolen by the hypervisor).
    contention: Vec<(String, f64, f64)>,
    notes: Vec<String>,
}

fn run(opts: Opts) -> Res<()> {
    if !opts.jet_opts.is_empty() {
        // Read by `jet_builder` here and inherited by the rss children. Set before any
        // thread starts.
        std::env::set_var(JET_OPTS_ENV, &opts.jet_opts);
    }
    let started = Instant::now();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!(
        "jetsocket vs raw tungstenite: {} mode, {} repetitions, {cores} cores, load {load}",
        if opts.quick { "quick" } else { "full" },
        opts.reps
    );
    let mut server = Server::start()?;
    let server_pid = server.child.id();
    let mut report = Report {
        rows: Vec::new(),
        server_busy: Vec::new(),
        server_capacity: Vec::new(),
        contention: Vec::new(),
        notes: Vec::new(),
    };
    if !opts.jet_opts.is_empty() {
        report.notes.push(format!(
            "experiment: jetsocket built with --jet-opt {}",
            opts.jet_opts
        ));
    }
    let whole = Ticks::now(server_pid);
    let group = |name: &str,
                 report: &mut Report,
                 server: &mut Server,
                 f: &mut dyn FnMut(&mut Report, &mut Server) -> Res<()>|
     -> Res<()> {
        if !opts.wants(name) {
            return Ok(());
        }
        if opts.wait_quiet > 0 {
            wait_for_quiet(
                name,
                server_pid,
                cores,
                Duration::from_secs(opts.wait_quiet),
            );
        }
        let before = Ticks::now(server_pid);
        f(report, server)?;
        let (other, steal) = before.others(&Ticks::now(server_pid), cores);
        report.contention.push((name.to_owned(), other, steal));
        Ok(())
    };

    group("server", &mut report, &mut server, &mut |r, s| {
        group_server(&opts, s, r)
    })?;
    for (id, label, size, full, quick) in [
        (
            "inbound-64",
            "inbound 64 B",
            64usize,
            3_000_000u64,
            400_000u64,
        ),
        ("inbound-1k", "inbound 1 KiB", 1024, 600_000, 80_000),
        ("inbound-16k", "inbound 16 KiB", 16 * 1024, 60_000, 8_000),
    ] {
        let count = opts.count(full, quick);
        group(id, &mut report, &mut server, &mut |r, s| {
            group_inbound(&opts, s, r, id, label, size, count)
        })?;
    }
    for (id, label, size, senders, full, quick) in [
        (
            "outbound-64",
            "outbound 64 B",
            64usize,
            1u64,
            3_000_000u64,
            400_000u64,
        ),
        ("outbound-1k", "outbound 1 KiB", 1024, 1, 600_000, 80_000),
        (
            "outbound-64x4",
            "outbound 64 B, 4 senders",
            64,
            4,
            3_000_000,
            400_000,
        ),
    ] {
        let count = opts.count(full, quick);
        group(id, &mut report, &mut server, &mut |r, s| {
            group_outbound(&opts, s, r, id, label, size, senders, count)
        })?;
    }
    // Compressing costs tens of µs a message: the deflate client gets fewer messages, so
    // that every client runs for a similar time.
    for (id, outbound, full, quick, zfull, zquick) in [
        (
            "deflate-in",
            false,
            300_000u64,
            20_000u64,
            150_000u64,
            10_000u64,
        ),
        ("deflate-out", true, 300_000, 20_000, 30_000, 2_000),
    ] {
        let counts = (opts.count(full, quick), opts.count(zfull, zquick));
        group(id, &mut report, &mut server, &mut |r, s| {
            group_json(&opts, s, r, id, outbound, counts)
        })?;
    }
    group("echo", &mut report, &mut server, &mut |r, s| {
        group_echo(&opts, s, r)
    })?;
    group("reconnect", &mut report, &mut server, &mut |r, s| {
        group_reconnect(&opts, s, r)
    })?;
    group("idle-cpu", &mut report, &mut server, &mut |r, s| {
        group_idle_cpu(&opts, s, r)
    })?;
    group("idle-rss", &mut report, &mut server, &mut |r, s| {
        group_idle_rss(&opts, s, r)
    })?;
    let (other, steal) = whole.others(&Ticks::now(server_pid), cores);
    report.contention.push(("whole run".into(), other, steal));
    drop(server);

    let elapsed = started.elapsed().as_secs_f64();
    print_report(&report, &date, cores, &load, &opts, elapsed);
    let path = match (&opts.json, opts.complete()) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => {
            let dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
            Some(format!("{dir}/bench-results.json"))
        }
        (None, false) => None,
    };
    if let Some(path) = path {
        let json = to_json(&report, &date, cores, &load, &opts, elapsed);
        if let Some(parent) = std::path::Path::new(&path).parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::write(&path, json)?;
        println!("results written to {path}");
    } else {
        println!("(partial or experimental run: no JSON written; pass --json PATH to keep it)");
    }
    Ok(())
}

fn group_server(opts: &Opts, server: &mut Server, report: &mut Report) -> Res<()> {
    eprintln!("server capacity ...");
    for (label, flood, size, full, quick) in [
        ("server flood 64 B", true, 64usize, 3_000_000u64, 400_000u64),
        ("server sink 64 B", false, 64, 3_000_000, 400_000),
    ] {
        let count = opts.count(full, quick);
        let mut v = Vec::new();
        for _ in 0..opts.reps {
            v.push(server_capacity(server, flood, size, count)?);
        }
        report.server_capacity.push((label.into(), v));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // a row group's full description
fn group_inbound(
    opts: &Opts,
    server: &mut Server,
    report: &mut Report,
    id: &str,
    label: &str,
    size: usize,
    count: u64,
) -> Res<()> {
    eprintln!("{label}: {count} messages x {} repetitions ...", opts.reps);
    let mut rate = Row::new(id, &format!("{label} msg/s"), Unit::MsgPerSec);
    let mut mbs = Row::new(
        &format!("{id}-mbs"),
        &format!("{label} MB/s"),
        Unit::MegabytesPerSec,
    );
    let mut cpu = Row::new(
        &format!("{id}-cpu"),
        &format!("{label} client CPU/msg"),
        Unit::NsPerMsg,
    );
    if size == 64 {
        rate = rate.target(Target::RatioAtLeast(0.75));
    }
    if size == 16 * 1024 {
        cpu = cpu.target(Target::RatioAtMost(1.6));
    }
    let (mut busy_jet, mut busy_raw) = (Vec::new(), Vec::new());
    // One short unmeasured run each: page faults, allocator warm-up.
    for who in opts.order(0) {
        inbound(who, server, size, (count / 10).max(1), opts.buffer)?;
        server.records(1)?;
    }
    for rep in 0..opts.reps {
        for who in opts.order(rep) {
            let t = inbound(who, server, size, count, opts.buffer)?;
            let per_sec = t.count as f64 / t.secs;
            rate.push(who, per_sec);
            mbs.push(who, per_sec * size as f64 / 1e6);
            cpu.push(who, t.cpu_ns as f64 / t.count as f64);
            let rec = server.records(1)?;
            let busy = rec[0].busy();
            debug_assert_eq!(rec[0].count, count);
            match who {
                Who::Jet => busy_jet.push(busy),
                Who::Raw => busy_raw.push(busy),
            }
        }
    }
    rate.note = format!(
        "{count} messages per run; jetsocket buffer {} (Block)",
        opts.buffer
    );
    report.rows.extend([rate, mbs, cpu]);
    report.server_busy.push((label.into(), busy_jet, busy_raw));
    Ok(())
}

#[allow(clippy::too_many_arguments)] // a row group's full description
fn group_outbound(
    opts: &Opts,
    server: &mut Server,
    report: &mut Report,
    id: &str,
    label: &str,
    size: usize,
    senders: u64,
    count: u64,
) -> Res<()> {
    eprintln!("{label}: {count} messages x {} repetitions ...", opts.reps);
    let mut rate = Row::new(id, &format!("{label} msg/s"), Unit::MsgPerSec);
    let mut cpu = Row::new(
        &format!("{id}-cpu"),
        &format!("{label} client CPU/msg"),
        Unit::NsPerMsg,
    );
    if size == 64 && senders == 1 {
        rate = rate.target(Target::AtLeast(5e6));
    }
    let (mut busy_jet, mut busy_raw) = (Vec::new(), Vec::new());
    for who in opts.order(0) {
        outbound(who, server, size, (count / 10).max(1), senders)?;
        server.records(1)?;
    }
    for rep in 0..opts.reps {
        for who in opts.order(rep) {
            let t = outbound(who, server, size, count, senders)?;
            rate.push(who, t.count as f64 / t.secs);
            cpu.push(who, t.cpu_ns as f64 / t.count as f64);
            let rec = server.records(1)?;
            match who {
                Who::Jet => busy_jet.push(rec[0].busy()),
                Who::Raw => busy_raw.push(rec[0].busy()),
            }
        }
    }
    rate.note = format!("{count} messages per run");
    if senders > 1 {
        cpu.note =
            "sender threads start and end inside the window: their CPU is partly missed".into();
        report.rows.push(rate);
    } else {
        report.rows.extend([rate, cpu]);
    }
    report.server_busy.push((label.into(), busy_jet, busy_raw));
    Ok(())
}

/// JSON market data with and without permessage-deflate: raw tungstenite, jetsocket
/// uncompressed and jetsocket compressed, in turn. Each jetsocket variant gets its own rows
/// against the same raw samples; the wire row's ratio is the compression ratio.
fn group_json(
    opts: &Opts,
    server: &mut Server,
    report: &mut Report,
    id: &str,
    outbound: bool,
    (count, zcount): (u64, u64),
) -> Res<()> {
    let label = if outbound {
        "outbound JSON"
    } else {
        "inbound JSON"
    };
    // Without the feature, jetsocket never offers compression: its row would only fail.
    let deflate_built = cfg!(feature = "deflate");
    if !deflate_built {
        report.notes.push(format!(
            "{label}: no compressed client, jetsocket was built without the `deflate` feature"
        ));
    }
    let clients: Vec<JsonClient> = JsonClient::ALL
        .into_iter()
        .filter(|c| opts.clients.contains(&c.who()))
        .filter(|c| *c != JsonClient::Deflate || deflate_built)
        .collect();
    let (min, max, mean) = json_pool_sizes();
    eprintln!(
        "{label} ({min}–{max} B, mean {mean:.0} B): {count} messages ({zcount} compressed) x {} \
         repetitions ...",
        opts.reps
    );
    let count_for = |c: JsonClient| {
        if c == JsonClient::Deflate {
            zcount
        } else {
            count
        }
    };
    let run = |client: JsonClient, server: &mut Server, n: u64, verify: bool| -> Res<JsonRun> {
        if outbound {
            json_outbound(client, server, n)
        } else {
            json_inbound(client, server, n, opts.buffer, verify)
        }
    };
    if outbound && opts.clients.contains(&Who::Jet) {
        let mut v = Vec::new();
        for _ in 0..opts.reps {
            v.push(json_sink_capacity(server, zcount)?);
        }
        report
            .server_capacity
            .push(("server sink JSON, inflating".into(), v));
    }
    // Per client: msg/s, CPU ns/msg, wire payload bytes/msg, server busy share.
    let mut rate = [const { Vec::new() }; 3];
    let mut cpu = [const { Vec::new() }; 3];
    let mut wire = [const { Vec::new() }; 3];
    let mut busy = [const { Vec::new() }; 3];
    // One short unmeasured run each, checking every message's text.
    for &c in &clients {
        run(c, server, (count_for(c) / 10).max(1), true)?;
        server.records(1)?;
    }
    for rep in 0..opts.reps {
        let mut order = clients.clone();
        let shift = rep % order.len().max(1);
        order.rotate_left(shift);
        for c in order {
            let r = run(c, server, count_for(c), false)?;
            let rec = server.records(1)?.remove(0);
            if let Some(own) = r.wire_bytes {
                if own != rec.bytes {
                    return Err(format!(
                        "{label}: jetsocket counted {own} compressed bytes, the server {}",
                        rec.bytes
                    )
                    .into());
                }
            }
            let i = c.index();
            rate[i].push(r.t.count as f64 / r.t.secs);
            cpu[i].push(r.t.cpu_ns as f64 / r.t.count as f64);
            wire[i].push(rec.bytes as f64 / rec.count.max(1) as f64);
            busy[i].push(rec.busy());
        }
    }
    let (raw, plain, z) = (
        JsonClient::Raw.index(),
        JsonClient::Plain.index(),
        JsonClient::Deflate.index(),
    );
    let row = |suffix: &str, what: &str, unit: Unit, jet: &[f64], raw: &[f64]| {
        let mut r = Row::new(&format!("{id}{suffix}"), &format!("{label}, {what}"), unit);
        r.jet = jet.to_vec();
        r.raw = raw.to_vec();
        r.like_for_like = suffix.starts_with("-plain");
        r
    };
    let mut rows = [
        row(
            "-plain",
            "uncompressed msg/s",
            Unit::MsgPerSec,
            &rate[plain],
            &rate[raw],
        ),
        row("", "deflate msg/s", Unit::MsgPerSec, &rate[z], &rate[raw]),
        row(
            "-plain-cpu",
            "uncompressed client CPU/msg",
            Unit::NsPerMsg,
            &cpu[plain],
            &cpu[raw],
        ),
        row(
            "-cpu",
            "deflate client CPU/msg",
            Unit::NsPerMsg,
            &cpu[z],
            &cpu[raw],
        ),
        row(
            "-wire",
            "deflate wire bytes/msg",
            Unit::BytesPerMsg,
            &wire[z],
            &wire[raw],
        ),
    ];
    rows[0].note = format!(
        "{count} messages per run ({zcount} with deflate); {JSON_POOL} distinct depth updates \
         of {min}–{max} B (mean {mean:.0} B) sent as text{}",
        if outbound {
            String::new()
        } else {
            format!("; jetsocket buffer {} (Block)", opts.buffer)
        }
    );
    let extra_cpu = median(&cpu[z]) - median(&cpu[plain]);
    let saved = median(
        &wire[raw]
            .iter()
            .chain(&wire[plain])
            .copied()
            .collect::<Vec<_>>(),
    ) - median(&wire[z]);
    if extra_cpu.is_finite() && saved > 0.0 {
        rows[3].note = format!(
            "{} ns more than uncompressed jetsocket, for {} B less on the wire per message \
             ({:.1} ns per byte saved)",
            Unit::NsPerMsg.fmt(extra_cpu),
            Unit::BytesPerMsg.fmt(saved),
            extra_cpu / saved
        );
    }
    rows[4].note = format!(
        "payload bytes, frame headers left out; raw and uncompressed jetsocket carry the text \
         as it is; {}, context takeover both ways; ratio = compressed / plain; jetsocket's own \
         count (stats().compression) agrees",
        if outbound {
            "jetsocket compresses at its level (default 1; --jet-opt zlevel=N)"
        } else {
            "the server compresses at level 6"
        }
    );
    report.rows.extend(rows);
    report.server_busy.push((
        format!("{label}, uncompressed"),
        busy[plain].clone(),
        busy[raw].clone(),
    ));
    report.server_busy.push((
        format!("{label}, deflate"),
        busy[z].clone(),
        busy[raw].clone(),
    ));
    Ok(())
}

fn group_echo(opts: &Opts, server: &Server, report: &mut Report) -> Res<()> {
    let iters = opts.count(20_000, 3_000) as usize;
    let warmup = (iters / 10).max(100);
    eprintln!(
        "echo 64 B: {iters} round trips x {} repetitions ...",
        opts.reps
    );
    let mut rows = [
        Row::new("echo-p50", "echo 64 B round trip p50", Unit::Micros)
            .target(Target::RawPlus(10.0)),
        Row::new("echo-p90", "echo 64 B round trip p90", Unit::Micros),
        Row::new("echo-p99", "echo 64 B round trip p99", Unit::Micros),
    ];
    // The same round trips with `busy_poll`, against the same raw samples.
    let mut spin_rows = [
        Row::new(
            "echo-p50-spin",
            "echo 64 B p50, busy_poll(50 µs)",
            Unit::Micros,
        ),
        Row::new(
            "echo-p99-spin",
            "echo 64 B p99, busy_poll(50 µs)",
            Unit::Micros,
        ),
    ];
    for rep in 0..opts.reps {
        for who in opts.order(rep) {
            let mut lat = echo(who, server, iters, warmup, None)?;
            lat.sort_by(f64::total_cmp);
            for (row, p) in rows.iter_mut().zip([50.0, 90.0, 99.0]) {
                row.push(who, percentile(&lat, p));
            }
            if who == Who::Raw {
                for (row, p) in spin_rows.iter_mut().zip([50.0, 99.0]) {
                    row.push(who, percentile(&lat, p));
                }
            } else {
                let mut lat = echo(who, server, iters, warmup, Some(ECHO_SPIN))?;
                lat.sort_by(f64::total_cmp);
                for (row, p) in spin_rows.iter_mut().zip([50.0, 99.0]) {
                    row.push(who, percentile(&lat, p));
                }
            }
        }
    }
    rows[0].note = format!("{iters} sequential round trips per run");
    spin_rows[0].note = "jetsocket spins up to 50 µs after traffic instead of sleeping \
                         (Builder::busy_poll; off by default)"
        .into();
    report.rows.extend(rows);
    report.rows.extend(spin_rows);
    Ok(())
}

/// The busy-poll time of the `busy_poll` echo rows.
const ECHO_SPIN: Duration = Duration::from_micros(50);

fn group_reconnect(opts: &Opts, server: &mut Server, report: &mut Report) -> Res<()> {
    let n = opts.count(50, 10) as usize;
    eprintln!("reconnect: {n} drops x {} repetitions ...", opts.reps);
    let mut row = Row::new("reconnect", "reconnect after a server drop", Unit::Micros)
        .target(Target::Below(5000.0));
    let mut downtimes = Vec::new();
    for rep in 0..opts.reps {
        for who in opts.order(rep) {
            let (times, down) = reconnect(who, server, n)?;
            row.push(who, median(&times));
            downtimes.extend(down);
        }
    }
    row.note = format!(
        "median of {n} per run; raw = fresh connect + handshake; engine-reported downtime median {}",
        Unit::Micros.fmt(median(&downtimes))
    );
    report.rows.push(row);
    Ok(())
}

fn group_idle_cpu(opts: &Opts, server: &Server, report: &mut Report) -> Res<()> {
    let n = 100;
    let secs = ((if opts.quick { 2.0 } else { 10.0 }) * opts.scale)
        .round()
        .max(1.0) as u64;
    eprintln!("idle CPU: {n} connections, 1 s heartbeat, {secs} s each ...");
    let mut row = Row::new(
        "idle-cpu",
        "idle CPU, 100 conns, 1 s heartbeat",
        Unit::PercentCore,
    )
    .target(Target::Below(1.0));
    for who in opts.order(0) {
        for v in idle_cpu(who, server, n, secs)? {
            row.push(who, v);
        }
    }
    row.note = format!(
        "{secs} one-second samples; raw = thread per connection, read timeout as the ping clock"
    );
    report.rows.push(row);
    Ok(())
}

fn group_idle_rss(opts: &Opts, server: &Server, report: &mut Report) -> Res<()> {
    let n = opts.count(1000, 200) as usize;
    let need = 3 * n as u64 + 64;
    match fd_limit() {
        Some(limit) if limit < need => {
            let msg = format!(
                "idle-rss skipped: {n} connections need about {need} open files, but `ulimit -n` \
                 is {limit}. Raise the soft limit in the shell first (for example `ulimit -n {}`), \
                 then run the benchmark again.",
                need.next_power_of_two()
            );
            eprintln!("{msg}");
            report.notes.push(msg);
            return Ok(());
        }
        _ => {}
    }
    let reps = opts.reps.min(3);
    eprintln!("idle RSS: {n} connections x {reps} repetitions ...");
    let scale = 1000.0 / n as f64;
    for (small, id, label) in [
        (false, "idle-rss", "idle RSS, 1000 conns, default buffers"),
        (
            true,
            "idle-rss-small",
            "idle RSS, 1000 conns, read_buffer_size(4096)",
        ),
    ] {
        let mut row = Row::new(id, label, Unit::Mebibytes).target(Target::Below(100.0));
        for rep in 0..reps {
            for who in opts.order(rep) {
                let (before, after) = idle_rss(who, server, n, small)?;
                row.push(who, after.saturating_sub(before) as f64 / 1024.0 * scale);
            }
        }
        row.note = if n == 1000 {
            "VmRSS delta in a fresh process; raw = thread per connection".into()
        } else {
            format!("measured with {n} connections, scaled to 1000")
        };
        report.rows.push(row);
    }
    Ok(())
}

fn print_report(report: &Report, date: &str, cores: usize, load: &str, opts: &Opts, elapsed: f64) {
    println!();
    println!(
        "jetsocket vs raw tungstenite, loopback, {date}, {cores} cores, load before run {load}, \
         {} mode, {} repetitions, {elapsed:.0} s",
        if opts.quick { "quick" } else { "full" },
        opts.reps
    );
    println!("cells: median [min–max] over repetitions; ratio = jetsocket / raw (medians)");
    println!();
    let header = [
        "row",
        "unit",
        "jetsocket",
        "raw tungstenite",
        "ratio",
        "target",
        "status",
    ];
    let mut lines = vec![header.map(String::from).to_vec()];
    for r in &report.rows {
        let ratio = r.ratio();
        lines.push(vec![
            r.label.clone(),
            r.unit.name().into(),
            spread(r.unit, &r.jet),
            spread(r.unit, &r.raw),
            if ratio.is_finite() {
                format!("{ratio:.2}x")
            } else {
                "-".into()
            },
            r.target.map_or(String::new(), |t| t.describe(r.unit)),
            match r.status() {
                Some(true) => "met".into(),
                Some(false) => "MISSED".into(),
                None => String::new(),
            },
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (i, l) in lines.iter().enumerate() {
        let cells: Vec<String> = l
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        println!("{}", cells.join("  ").trim_end());
        if i == 0 {
            println!(
                "{}",
                "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1))
            );
        }
    }
    println!();
    let notes: Vec<&Row> = report.rows.iter().filter(|r| !r.note.is_empty()).collect();
    for r in notes {
        println!("  {}: {}", r.label, r.note);
    }
    if !report.server_busy.is_empty() {
        println!();
        println!(
            "server thread busy (CPU time / wall time of its flood or sink), median [min–max]:"
        );
        for (label, jet, raw) in &report.server_busy {
            println!(
                "  {label:<28} with jetsocket {}   with raw {}",
                busy_cell(jet),
                busy_cell(raw)
            );
        }
    }
    if !report.server_capacity.is_empty() {
        println!();
        println!(
            "server alone (flood to a byte-discarding reader / sink of pre-encoded frames), msg/s:"
        );
        for (label, v) in &report.server_capacity {
            println!("  {label:<28} {}", spread(Unit::MsgPerSec, v));
        }
    }
    if !report.contention.is_empty() {
        println!();
        println!("machine load from other processes during each group (% of all cores; steal = hypervisor):");
        let cells: Vec<String> = report
            .contention
            .iter()
            .map(|(g, o, st)| {
                let flag = if *o > 5.0 || *st > 5.0 {
                    " (noisy)"
                } else {
                    ""
                };
                format!(
                    "{g} {o:.1}%{}{flag}",
                    if *st >= 0.05 {
                        format!(" steal {st:.1}%")
                    } else {
                        String::new()
                    }
                )
            })
            .collect();
        for chunk in cells.chunks(4) {
            println!("  {}", chunk.join(" | "));
        }
    }
    for n in &report.notes {
        println!();
        println!("note: {n}");
    }
}

fn busy_cell(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let pct: Vec<f64> = v.iter().map(|b| b * 100.0).collect();
    let lo = pct.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = pct.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.0}% [{lo:.0}–{hi:.0}]", median(&pct))
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".into()
    }
}

fn json_stats(v: &[f64]) -> String {
    if v.is_empty() {
        return "null".into();
    }
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let samples: Vec<String> = v.iter().map(|x| json_num(*x)).collect();
    format!(
        "{{\"median\": {}, \"min\": {}, \"max\": {}, \"samples\": [{}]}}",
        json_num(median(v)),
        json_num(lo),
        json_num(hi),
        samples.join(", ")
    )
}

fn to_json(
    report: &Report,
    date: &str,
    cores: usize,
    load: &str,
    opts: &Opts,
    elapsed: f64,
) -> String {
    let mut s = String::from("{\n");
    let _ = writeln!(s, "  \"date\": {},", json_str(date));
    let _ = writeln!(s, "  \"cores\": {cores},");
    let _ = writeln!(s, "  \"load_before\": {},", json_str(load));
    let _ = writeln!(
        s,
        "  \"mode\": {},",
        json_str(if opts.quick { "quick" } else { "full" })
    );
    let _ = writeln!(s, "  \"repetitions\": {},", opts.reps);
    let _ = writeln!(s, "  \"seconds\": {},", json_num(elapsed.round()));
    s.push_str("  \"rows\": [\n");
    let rows: Vec<String> = report
        .rows
        .iter()
        .map(|r| {
            format!(
                "    {{\"id\": {}, \"label\": {}, \"unit\": {}, \"higher_is_better\": {}, \
                 \"jetsocket\": {}, \"raw\": {}, \"ratio\": {}, \"target\": {}, \"target_met\": {}, \
                 \"like_for_like\": {}, \"note\": {}}}",
                json_str(&r.id),
                json_str(&r.label),
                json_str(r.unit.name()),
                r.unit.higher_is_better(),
                json_stats(&r.jet),
                json_stats(&r.raw),
                json_num(r.ratio()),
                r.target
                    .map_or("null".into(), |t| json_str(&t.describe(r.unit))),
                r.status().map_or("null".into(), |b| b.to_string()),
                r.like_for_like,
                json_str(&r.note),
            )
        })
        .collect();
    s.push_str(&rows.join(",\n"));
    s.push_str("\n  ],\n  \"server_busy\": [\n");
    let busy: Vec<String> = report
        .server_busy
        .iter()
        .map(|(l, j, r)| {
            format!(
                "    {{\"label\": {}, \"with_jetsocket\": {}, \"with_raw\": {}}}",
                json_str(l),
                json_stats(j),
                json_stats(r)
            )
        })
        .collect();
    s.push_str(&busy.join(",\n"));
    s.push_str("\n  ],\n  \"server_capacity\": [\n");
    let cap: Vec<String> = report
        .server_capacity
        .iter()
        .map(|(l, v)| {
            format!(
                "    {{\"label\": {}, \"msg_per_sec\": {}}}",
                json_str(l),
                json_stats(v)
            )
        })
        .collect();
    s.push_str(&cap.join(",\n"));
    s.push_str("\n  ],\n  \"contention\": [\n");
    let con: Vec<String> = report
        .contention
        .iter()
        .map(|(g, o, st)| {
            format!(
                "    {{\"group\": {}, \"other_processes_pct\": {}, \"steal_pct\": {}}}",
                json_str(g),
                json_num(*o),
                json_num(*st)
            )
        })
        .collect();
    s.push_str(&con.join(",\n"));
    s.push_str("\n  ],\n  \"notes\": [");
    let notes: Vec<String> = report.notes.iter().map(|n| json_str(n)).collect();
    s.push_str(&notes.join(", "));
    s.push_str("]\n}\n");
    s
}
