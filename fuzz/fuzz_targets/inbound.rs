//! Bytes from the server after the handshake, through tungstenite into jetsocket's messages
//! and errors.
//! The input format is in `fuzz/README.md`; the checks are in `jetsocket::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    jetsocket::fuzzing::run("inbound", data);
});
