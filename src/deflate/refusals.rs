//! Pseudo-random `WouldBlock` refusals for the in-memory pipes that stand in for sockets in
//! the layer's tests and fuzz target.

use std::io;

/// Refuses about one call in `one_in` (never, with `0`). The refusals follow a xorshift
/// sequence rather than a fixed period, so no caller's rhythm can always hit (or always
/// miss) them.
pub(crate) struct Refusals {
    one_in: u64,
    state: u64,
}

impl Refusals {
    /// `seed` must not be zero (xorshift would stay at zero).
    pub(crate) fn new(one_in: u64, seed: u64) -> Self {
        debug_assert_ne!(seed, 0, "a xorshift seed of zero never changes");
        Self {
            one_in,
            state: seed,
        }
    }

    /// `Err(WouldBlock)` when this call is refused.
    pub(crate) fn tick(&mut self) -> io::Result<()> {
        if self.one_in == 0 {
            return Ok(());
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        if self.state % self.one_in == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    }
}
