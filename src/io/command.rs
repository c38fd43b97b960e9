//! Commands from the handles to the I/O thread (data messages travel on their own bounded
//! channel; these rare control commands on an unbounded one, so a full send queue never
//! delays a close).

use crossbeam_channel::Sender;

use crate::error::Result;
use crate::message::CloseFrame;

/// A control command.
#[derive(Debug)]
pub(crate) enum Control {
    /// Start connecting if idle, and reply once connected or when the attempt fails.
    Connect(Sender<Result<()>>),
    /// Send what is queued, then close with this frame and end.
    Close(CloseFrame),
}
