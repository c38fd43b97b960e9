//! Messages written by the client through its compression layer, read back by a server-side
//! layer over an in-memory pipe that pushes back: the permessage-deflate write path.
//! The input format is in `fuzz/README.md`; the checks are in `jetsocket::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    jetsocket::fuzzing::run("deflate_roundtrip", data);
});
