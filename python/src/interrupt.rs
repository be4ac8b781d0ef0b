//! Blocking calls that Ctrl-C can interrupt.
//!
//! A read may wait a long time for the network. The Rust call runs on the reader's worker
//! thread while the calling thread waits without the GIL, waking every
//! [`POLL`] to take the GIL and run `Python::check_signals` (which runs Python's SIGINT
//! handler: `KeyboardInterrupt`). An interrupted call is abandoned: the worker finishes it
//! and the job's `undo` puts the reader back where it was, so no row is lost.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use pyo3::prelude::*;

/// How often a waiting call checks for signals.
pub const POLL: Duration = Duration::from_millis(50);

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A thread that runs one reader's blocking calls in order, started on first use (and in
/// the process that uses it: the owner refuses calls after `fork`).
#[derive(Default)]
pub struct Worker {
    sender: Mutex<Option<mpsc::Sender<Job>>>,
}

impl Worker {
    pub fn submit(&self, job: Job) -> std::io::Result<()> {
        let mut sender = self.sender.lock();
        if let Some(tx) = sender.as_ref() {
            match tx.send(job) {
                Ok(()) => return Ok(()),
                Err(mpsc::SendError(job)) => {
                    // The thread is gone (it panicked): start another.
                    *sender = None;
                    return self.start(&mut sender, job);
                }
            }
        }
        self.start(&mut sender, job)
    }

    fn start(&self, sender: &mut Option<mpsc::Sender<Job>>, job: Job) -> std::io::Result<()> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("paiio-reader".to_string())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job();
                }
            })?;
        tx.send(job)
            .map_err(|_| std::io::Error::other("the reader thread ended"))?;
        *sender = Some(tx);
        Ok(())
    }
}

enum State<T> {
    Pending,
    Done(T),
    Abandoned,
}

/// Where a job leaves its result.
pub struct Slot<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

impl<T> Slot<T> {
    /// Stores the result; if the caller gave up, returns it instead (to be undone).
    pub fn finish(&self, value: T) -> Option<T> {
        let mut state = self.state.lock();
        match *state {
            State::Abandoned => Some(value),
            _ => {
                *state = State::Done(value);
                self.ready.notify_all();
                None
            }
        }
    }
}

/// Runs `job` on `worker` and waits for its result, checking for signals every [`POLL`].
///
/// `job` receives the slot to [`finish`](Slot::finish); when the caller is interrupted
/// first, `finish` hands the value back to the job, which undoes its effect. When the
/// result arrived but the caller was interrupted anyway, `undo` is called with it on the
/// calling thread (without the GIL).
pub fn run<T, J, U>(py: Python<'_>, worker: &Worker, job: J, undo: U) -> PyResult<T>
where
    T: Send + 'static,
    J: FnOnce(&Slot<T>) + Send + 'static,
    U: FnOnce(T) + Send,
{
    let slot = Arc::new(Slot {
        state: Mutex::new(State::Pending),
        ready: Condvar::new(),
    });
    let for_job = slot.clone();
    worker
        .submit(Box::new(move || job(&for_job)))
        .map_err(|e| {
            pyo3::exceptions::PyRuntimeError::new_err(format!(
                "cannot start the paiio reader thread: {e}"
            ))
        })?;
    loop {
        let taken = py.detach(|| {
            let mut state = slot.state.lock();
            if matches!(*state, State::Pending) {
                slot.ready.wait_for(&mut state, POLL);
            }
            match std::mem::replace(&mut *state, State::Pending) {
                State::Done(value) => Some(value),
                other => {
                    *state = other;
                    None
                }
            }
        });
        if let Some(value) = taken {
            return Ok(value);
        }
        if let Err(interrupted) = py.check_signals() {
            let late = {
                let mut state = slot.state.lock();
                match std::mem::replace(&mut *state, State::Abandoned) {
                    State::Done(value) => Some(value),
                    _ => None,
                }
            };
            if let Some(value) = late {
                py.detach(|| undo(value));
            }
            return Err(interrupted);
        }
    }
}
