//! Replays of uploads: a retried TableWrite (the same retry trace id and request, with an
//! index above 0) gets the first attempt's answer instead of being applied twice.

use std::collections::HashMap;
use std::sync::Arc;

use paiio_storage::protocol::storage::WriteResponse;

/// Uploads by retry trace id, so a replayed TableWrite (the same trace id and request, with an
/// index above 0) gets the first attempt's answer instead of being applied twice: also when
/// it arrives while the first attempt is still being applied (it waits for that outcome).
#[derive(Debug, Default)]
pub(crate) struct Replays {
    inner: parking_lot::Mutex<ReplayMap>,
}

#[derive(Debug, Default)]
struct ReplayMap {
    by_id: HashMap<String, Arc<ReplayEntry>>,
    /// Trace ids, oldest first, to forget the oldest beyond [`MAX_REPLAYS`].
    order: std::collections::VecDeque<String>,
}

#[derive(Debug)]
pub(crate) struct ReplayEntry {
    /// The request the trace id was first seen with.
    identity: String,
    outcome: tokio::sync::watch::Sender<Outcome>,
}

/// What became of the attempt a trace id was first seen with.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Running,
    Applied(WriteResponse),
    /// It failed: a retry is applied as a new attempt.
    Failed,
}

/// The most trace ids remembered (the oldest are forgotten first).
const MAX_REPLAYS: usize = 10_000;

/// What a request with a trace id is to do.
pub(crate) enum Claim {
    /// Apply it, then report the outcome through the entry.
    Apply(Arc<ReplayEntry>),
    /// An earlier attempt of the same request was applied: answer with its answer.
    Replay(WriteResponse),
}

impl Replays {
    /// Finds or registers the attempt of `id`. A retry (`is_retry`) of a request whose first
    /// attempt is still running waits for it; one whose attempt failed is applied anew.
    pub(crate) async fn claim(&self, id: &str, identity: &str, is_retry: bool) -> Claim {
        loop {
            let mut waiting = {
                let mut map = self.inner.lock();
                match map.by_id.get(id) {
                    Some(entry) if is_retry && entry.identity == identity => {
                        let rx = entry.outcome.subscribe();
                        let outcome = rx.borrow().clone();
                        match outcome {
                            Outcome::Applied(answer) => return Claim::Replay(answer),
                            Outcome::Running => rx,
                            Outcome::Failed => return Claim::Apply(map.register(id, identity)),
                        }
                    }
                    _ => return Claim::Apply(map.register(id, identity)),
                }
            };
            // The first attempt is still running (it finishes even if its client left).
            if waiting
                .wait_for(|o| !matches!(o, Outcome::Running))
                .await
                .is_err()
            {
                // Its entry was dropped unfinished (forgotten): look again.
                continue;
            }
        }
    }
}

impl ReplayMap {
    fn register(&mut self, id: &str, identity: &str) -> Arc<ReplayEntry> {
        let (tx, _) = tokio::sync::watch::channel(Outcome::Running);
        let entry = Arc::new(ReplayEntry {
            identity: identity.to_string(),
            outcome: tx,
        });
        if self.by_id.insert(id.to_string(), entry.clone()).is_none() {
            self.order.push_back(id.to_string());
        }
        while self.order.len() > MAX_REPLAYS {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
        entry
    }
}

impl ReplayEntry {
    pub(crate) fn finish(&self, outcome: Outcome) {
        self.outcome.send_replace(outcome);
    }
}

/// Reports `Failed` for an attempt that ends without an outcome (an error, or a panic).
pub(crate) struct FinishGuard(pub Option<Arc<ReplayEntry>>);

impl Drop for FinishGuard {
    fn drop(&mut self) {
        if let Some(entry) = self.0.take() {
            entry.finish(Outcome::Failed);
        }
    }
}
