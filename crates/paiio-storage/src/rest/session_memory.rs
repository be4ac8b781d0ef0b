//! What the client remembers of sessions the V2 API does not echo: how a read session was
//! asked for, its expiration (and when a refresh is due), and how a write session was
//! created and committed.

use crate::error::Result;
use crate::protocol::storage::ReadSessionResponse;
use crate::service::{CommitInfo, ReadSession, SplitMode, WriteMode};
use crate::types::ArrowOptions;
use crate::uri::{PartitionSpec, TableId};

use super::RestClient;

/// What the client remembers of a read session it created (not echoed by the server).
#[derive(Debug, Clone, Copy)]
pub(super) struct ReadMeta {
    pub(super) split_mode: SplitMode,
    pub(super) arrow_options: ArrowOptions,
}

/// A read session's expiration as last reported, and its lifetime then (by the client's clock).
#[derive(Debug, Clone, Copy)]
pub(super) struct Expiry {
    pub(super) expiration_ms: i64,
    lifetime_ms: i64,
}

/// What the client remembers of a write session.
#[derive(Debug, Clone, Default)]
pub(super) struct WriteMeta {
    pub(super) partition: PartitionSpec,
    pub(super) overwrite: bool,
    pub(super) mode: WriteMode,
    pub(super) committed: Option<CommitInfo>,
}

impl RestClient {
    /// The read session an answer describes, with what the client asked it for.
    pub(super) fn read_session(
        &self,
        table: &TableId,
        answer: ReadSessionResponse,
    ) -> Result<ReadSession> {
        let meta = self
            .inner
            .read_meta
            .lock()
            .get(&answer.session_id)
            .map(|m| (m.split_mode, m.arrow_options));
        let session = answer.into_session(table, meta)?;
        self.note_expiry(&session.session_id, session.expiration_time_ms);

        Ok(session)
    }

    /// Keeps a read session's expiration time (0: unknown, forgotten).
    fn note_expiry(&self, session_id: &str, expiration_ms: i64) {
        let mut expiry = self.inner.expiry.lock();
        if expiration_ms <= 0 {
            expiry.remove(session_id);
            return;
        }
        let now = self.inner.clock.now_ms();
        let lifetime_ms = (expiration_ms - now).max(0);
        // A plain get of a session reports the same expiration: keep the lifetime seen at
        // creation (or the last refresh) rather than the time left.
        let lifetime_ms = match expiry.get(session_id) {
            Some(e) if e.expiration_ms == expiration_ms => e.lifetime_ms,
            _ => lifetime_ms,
        };
        expiry.insert(
            session_id.to_string(),
            Expiry {
                expiration_ms,
                lifetime_ms,
            },
        );
    }

    /// Whether a read session is due for a refresh: within the margin of its expiry.
    pub(super) fn refresh_due(&self, session_id: &str) -> bool {
        let Some(e) = self.inner.expiry.lock().get(session_id).copied() else {
            return false;
        };
        let margin = (self.inner.refresh_margin.as_millis() as i64).min(e.lifetime_ms / 10);
        self.inner.clock.now_ms() >= e.expiration_ms - margin
    }

    pub(super) fn write_meta(&self, session_id: &str) -> Option<WriteMeta> {
        self.inner.write_meta.lock().get(session_id).cloned()
    }
}
