//! WebSocket URL parsing: `SyncWebSocket::builder(url)` on any string.
//! The input format is in `fuzz/README.md`; the checks are in `jetsocket::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    jetsocket::fuzzing::run("url", data);
});
