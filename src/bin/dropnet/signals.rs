//! SIGINT and SIGTERM while training: the first asks the run to stop after its current step (the
//! training loop polls [`Signals::received`]); a second ends the process at once, with the
//! conventional status 128 + signal number, without touching the last good model file (a save in
//! progress is a temporary file that the next save removes).

use dropnet::error::{Error, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Which stop signals have arrived.
pub struct Signals {
    interrupt: Arc<AtomicBool>,
    terminate: Arc<AtomicBool>,
}

impl Signals {
    /// Install the handlers (for the rest of the process).
    pub fn install() -> Result<Self> {
        let any = Arc::new(AtomicBool::new(false));
        let interrupt = Arc::new(AtomicBool::new(false));
        let terminate = Arc::new(AtomicBool::new(false));
        let register = || -> std::io::Result<()> {
            for (signal, flag) in [(SIGINT, &interrupt), (SIGTERM, &terminate)] {
                // In this order: the exit runs only if an earlier signal already set `any`.
                signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, Arc::clone(&any))?;
                signal_hook::flag::register(signal, Arc::clone(flag))?;
                signal_hook::flag::register(signal, Arc::clone(&any))?;
            }
            Ok(())
        };
        register().map_err(|e| Error::Config(format!("cannot install the SIGINT/SIGTERM handlers: {e}")))?;
        Ok(Self { interrupt, terminate })
    }

    /// The first stop signal received, if any (SIGTERM wins when both came).
    pub fn received(&self) -> Option<i32> {
        if self.terminate.load(Ordering::SeqCst) {
            Some(SIGTERM)
        } else if self.interrupt.load(Ordering::SeqCst) {
            Some(SIGINT)
        } else {
            None
        }
    }
}

/// `SIGINT` or `SIGTERM`, for messages.
pub fn name(signal: i32) -> &'static str {
    if signal == SIGTERM {
        "SIGTERM"
    } else {
        "SIGINT"
    }
}
