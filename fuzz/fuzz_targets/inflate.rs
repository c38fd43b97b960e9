//! Bytes from a server that agreed to permessage-deflate, through the client's compression
//! layer and tungstenite into jetsocket's messages and errors.
//! The input format is in `fuzz/README.md`; the checks are in `jetsocket::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    jetsocket::fuzzing::run("inflate", data);
});
