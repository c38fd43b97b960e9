//! Everything that runs on the background I/O thread. Only this thread touches the socket.

pub(crate) mod command;
pub(crate) mod connect;
pub(crate) mod engine;
pub(crate) mod stream;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::event::{panic_message, Event};
use crate::message::Message;
use crate::shared::Shared;
use crate::state::State;

use self::command::Control;
use self::engine::Engine;

/// Starts the I/O thread `jetsocket-io-<name>`. `done` is dropped when the thread ends, so
/// any number of closers can wait for the end on a clone of its receiver.
pub(crate) fn spawn(
    settings: Arc<Settings>,
    shared: Arc<Shared>,
    poll: mio::Poll,
    data_rx: Receiver<Message>,
    ctrl_rx: Receiver<Control>,
    done: Sender<()>,
) -> Result<JoinHandle<()>> {
    let name = format!("jetsocket-io-{}", shared.name);
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let _done = done;
            let engine_shared = Arc::clone(&shared);
            let on_end = settings.on_end.clone();
            let outcome = catch_unwind(AssertUnwindSafe(move || {
                Engine::new(settings, engine_shared, poll, data_rx, ctrl_rx).run();
            }));
            if let Err(panic) = outcome {
                let what = panic_message(&*panic);
                log::error!("jetsocket I/O thread panicked: {what}");
                let err = Error::WorkerPanicked(what);
                let from = shared.state();
                shared.store_state(State::Failed);
                shared.inbound.finish(err.clone());
                if let Some(hook) = on_end {
                    hook();
                }
                shared.events.emit(Event::Error(err));
                shared.events.emit(Event::StateChanged {
                    from,
                    to: State::Failed,
                });
                shared.events.emit(Event::Closed { close: None });
                shared.events.finish();
            }
        })
        .map_err(Error::from)
}
