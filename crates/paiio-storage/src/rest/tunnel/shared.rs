//! Download sessions shared by the processes of a job (docs/tunnel.md §11.1).
//!
//! The service allows about 200 download sessions per table per 5 minutes, and every rank and
//! data-loader worker of a job opens its own reader. So the first process that needs the
//! session of a (service, table, partition) creates it and records its `DownloadID` in a
//! directory; the others, under the same directory lock, reload it instead of creating one.
//!
//! A recorded session is reused only while it is young ([`SHARE_WINDOW_MS`]), still `NORMAL`,
//! made when the table's metadata reported the same last change as it does now, and made at
//! least a second after that change (it is reported in whole seconds), so a reader never gets
//! a snapshot older than data committed before it started: a change after the session shows
//! as a different last change, whatever the clocks of the machines say. The directory is `$PAIIO_TUNNEL_SESSIONS` (`off` turns sharing off), else
//! `$PAIIO_CACHE/tunnel-sessions`, else `~/.cache/paiio-rs/tunnel-sessions`: shared by the
//! processes of a machine, and across machines when it names a shared file system. Any
//! failure of the directory (unwritable, locked by a dead file system) falls back to creating
//! the session, with a warning.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::protocol::tunnel::session::{DownloadSession, DownloadStatus};
use crate::uri::{PartitionSpec, TableId};

use super::TunnelClient;

/// How long a recorded download session is offered to other processes (30 minutes).
pub const SHARE_WINDOW_MS: i64 = 30 * 60 * 1000;

/// Where download sessions are shared, if anywhere.
#[derive(Debug, Clone, Default)]
pub(super) struct SharedSessions {
    dir: Option<PathBuf>,
}

/// One recorded session.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    download_id: String,
    created_ms: i64,
    /// The table's last change as the creator saw it: a reader that sees another one knows
    /// the table changed since, whatever the clocks say.
    table_modified_ms: i64,
}

impl SharedSessions {
    pub(super) fn new(dir: Option<PathBuf>) -> Self {
        SharedSessions { dir }
    }

    /// The directory the environment names (see the module docs).
    pub(super) fn from_env() -> Self {
        let dir = match std::env::var_os("PAIIO_TUNNEL_SESSIONS") {
            Some(v) if v.is_empty() || v.eq_ignore_ascii_case("off") => None,
            Some(v) => Some(PathBuf::from(v)),
            None => std::env::var_os("PAIIO_CACHE")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/paiio-rs"))
                })
                .map(|base| base.join("tunnel-sessions")),
        };
        SharedSessions { dir }
    }

    /// The lock and record files of a (service, table, partition).
    fn files(
        &self,
        service: &str,
        table: &TableId,
        partition: &PartitionSpec,
    ) -> Option<(PathBuf, PathBuf)> {
        let dir = self.dir.as_ref()?;
        let key = format!("{service}\n{table}\n{partition}");
        let name = format!("{:08x}{:08x}", crc32c::crc32c(key.as_bytes()), {
            let mut reversed = key.into_bytes();
            reversed.reverse();
            crc32c::crc32c(&reversed)
        });
        Some((
            dir.join(format!("{name}.lock")),
            dir.join(format!("{name}.json")),
        ))
    }
}

/// Takes the exclusive lock of `path` (creating the directory and the file), off the async
/// threads; released when the file is dropped.
async fn lock(path: PathBuf) -> std::io::Result<File> {
    tokio::task::spawn_blocking(move || {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        file.lock()?;
        Ok(file)
    })
    .await
    .map_err(std::io::Error::other)?
}

fn read_entry(path: &Path) -> Option<Entry> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Writes the record whole (a temporary file renamed over it).
fn write_entry(path: &Path, entry: &Entry) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("json.{}", std::process::id()));
    std::fs::write(
        &tmp,
        serde_json::to_vec(entry).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, path)
}

impl TunnelClient {
    /// The download session of `partition`: the one another process recorded when it may be
    /// reused (see the module docs), else a new one, recorded for the others.
    pub(super) async fn shared_download(
        &self,
        table: &TableId,
        partition: &PartitionSpec,
        table_modified_ms: i64,
    ) -> Result<DownloadSession> {
        let service = format!(
            "{}|{}",
            self.rest.inner.endpoint,
            self.rest.inner.quota_name.as_deref().unwrap_or("")
        );
        let Some((lock_path, entry_path)) = self.shared.files(&service, table, partition) else {
            return self.create_download(table, partition).await;
        };
        let guard = match lock(lock_path.clone()).await {
            Ok(file) => file,
            Err(e) => {
                tracing::warn!(
                    "not sharing Tunnel download sessions: cannot lock {}: {e}",
                    lock_path.display()
                );
                return self.create_download(table, partition).await;
            }
        };
        let now = self.rest.inner.clock.now_ms();
        if let Some(entry) = read_entry(&entry_path)
            && now.saturating_sub(entry.created_ms) < SHARE_WINDOW_MS
            && entry.table_modified_ms == table_modified_ms
            && entry.created_ms >= table_modified_ms.saturating_add(1000)
            && let Ok(session) = self
                .reload_download(table, partition, &entry.download_id)
                .await
            && session.status == DownloadStatus::Normal
        {
            drop(guard);
            return Ok(session);
        }
        let session = self.create_download(table, partition).await?;
        let entry = Entry {
            download_id: session.id.clone(),
            created_ms: now,
            table_modified_ms,
        };
        if let Err(e) = write_entry(&entry_path, &entry) {
            tracing::warn!(
                "cannot record Tunnel download session {} in {}: {e}",
                session.id,
                entry_path.display()
            );
        }
        drop(guard);
        Ok(session)
    }
}
