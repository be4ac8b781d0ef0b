//! [`AutoClient`]: the Storage API when it answers, else the Tunnel (`transport = auto`, the
//! default for an http(s) endpoint).
//!
//! The choice is made once, on the first call that names a table: the Storage API is asked
//! for the table's schema (`TableGetWriteSchema`, one attempt and one retry). An answer, or
//! the Storage API's own "no such table", means it serves this client; a signature the
//! service refuses is the caller's error (no choice is made); anything else (no connection, a
//! 404 for the route, Open Storage off or not permitted, a server error) means the Tunnel.
//! The choice and its reason are logged once (`tracing::info`).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::OnceCell;

use crate::config::Config;
use crate::error::{Error, ObjectKind, Result};
use crate::protocol::storage::{Action, WriteSchemaResponse};
use crate::service::WriterSlot;
use crate::service::{
    CommitInfo, CreateTableOptions, PartitionInfo, ReadRequest, ReadSession, ReadSessionRequest,
    RecordBatchStream, ServiceHints, TableInfo, TableService, WriteAck, WriteRequest, WriteSession,
    WriteSessionRequest, WriteStream,
};
use crate::types::TableSchema;
use crate::uri::{PartitionSpec, TableId};

use super::transport::Call;
use super::{RestClient, RestClientBuilder, RetryConfig, TunnelClient};

/// The transport an [`AutoClient`] settled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen {
    Storage,
    Tunnel,
}

/// Picks the Storage API or the Tunnel on first use (see the module documentation).
#[derive(Debug)]
pub struct AutoClient {
    storage: RestClient,
    tunnel: TunnelClient,
    probe: RestClient,
    chosen: OnceCell<Chosen>,
}

impl AutoClient {
    /// Both clients from one configuration.
    pub fn from_config(config: &Config) -> Result<Self> {
        let storage = RestClient::from_config(config)?;
        let probe = RestClientBuilder::from_config(config)?
            .retry(RetryConfig {
                max_retries: 1,
                initial_backoff: Duration::from_millis(200),
                retry_timeout: Duration::from_secs(20),
                ..RetryConfig::default()
            })
            .connect_timeout(Duration::from_secs(5))
            .request_timeout(Duration::from_secs(15))
            .build()?;
        Ok(Self::new(storage, probe))
    }

    /// From a Storage API client (the Tunnel client shares its machinery) and a client that
    /// probes with few retries.
    pub fn new(storage: RestClient, probe: RestClient) -> Self {
        AutoClient {
            tunnel: TunnelClient::new(storage.clone()),
            storage,
            probe,
            chosen: OnceCell::new(),
        }
    }

    /// The transport chosen so far, if any.
    pub fn chosen(&self) -> Option<Chosen> {
        self.chosen.get().copied()
    }

    async fn pick(&self, table: &TableId) -> Result<&dyn TableService> {
        let chosen = self
            .chosen
            .get_or_try_init(|| async {
                let call = Call::new(Action::TableGetWriteSchema, table, &json!({}));
                let answer = self.probe.inner.json::<WriteSchemaResponse>(&call).await;
                let (chosen, why) = match answer {
                    Ok(_) => (Chosen::Storage, "the Storage API answered".to_string()),
                    Err(Error::NotFound {
                        kind: ObjectKind::Table,
                        ..
                    }) => (
                        Chosen::Storage,
                        "the Storage API answered (no such table)".to_string(),
                    ),
                    // Keys that do not sign (or a clock far off) fail on either transport:
                    // the caller hears of it, and the next call asks again.
                    Err(
                        e @ Error::Unauthenticated {
                            code:
                                crate::auth::SIGNATURE_NOT_MATCH
                                | crate::auth::AUTHENTICATION_REQUEST_EXPIRED,
                            ..
                        },
                    ) => return Err(e),
                    // A busy or failing service (5xx, 429) says nothing about which API it
                    // offers: choosing on it could put the ranks of one job on different
                    // transports, whose row orders differ. The caller hears of it, and the
                    // next call asks again.
                    Err(
                        e @ Error::Service {
                            status: 429 | 500..=599,
                            ..
                        },
                    ) => return Err(e),
                    Err(e) => (
                        Chosen::Tunnel,
                        format!("the Storage API did not answer: {e}"),
                    ),
                };
                tracing::info!(
                    endpoint = self.storage.endpoint(),
                    transport = match chosen {
                        Chosen::Storage => "storage",
                        Chosen::Tunnel => "tunnel",
                    },
                    "paiio picked its transport: {why}"
                );
                Ok::<_, Error>(chosen)
            })
            .await?;
        Ok(match chosen {
            Chosen::Storage => &self.storage,
            Chosen::Tunnel => &self.tunnel,
        })
    }
}

#[async_trait]
impl TableService for AutoClient {
    fn name(&self) -> &'static str {
        match self.chosen() {
            Some(Chosen::Storage) => "rest",
            Some(Chosen::Tunnel) => "tunnel",
            None => "auto",
        }
    }

    fn hints(&self) -> ServiceHints {
        ServiceHints::default()
    }

    /// Slots are claimed under one name whatever the choice, so that a writer that claimed
    /// one before the choice and one after still exclude each other.
    async fn lock_writer_slot(
        &self,
        table: &TableId,
        partition: &PartitionSpec,
        slot: u64,
    ) -> Result<WriterSlot> {
        WriterSlot::in_process("auto", table, partition, slot)
    }

    async fn describe_table(&self, table: &TableId) -> Result<TableInfo> {
        self.pick(table).await?.describe_table(table).await
    }

    async fn table_schema(&self, table: &TableId) -> Result<TableSchema> {
        self.pick(table).await?.table_schema(table).await
    }

    async fn create_read_session(&self, request: &ReadSessionRequest) -> Result<ReadSession> {
        self.pick(&request.table)
            .await?
            .create_read_session(request)
            .await
    }

    async fn get_read_session(
        &self,
        table: &TableId,
        session_id: &str,
        refresh: bool,
    ) -> Result<ReadSession> {
        self.pick(table)
            .await?
            .get_read_session(table, session_id, refresh)
            .await
    }

    async fn read(&self, request: &ReadRequest) -> Result<RecordBatchStream> {
        self.pick(&request.table).await?.read(request).await
    }

    async fn preview(
        &self,
        table: &TableId,
        partition: Option<&PartitionSpec>,
        columns: &[String],
        limit: u64,
    ) -> Result<RecordBatchStream> {
        self.pick(table)
            .await?
            .preview(table, partition, columns, limit)
            .await
    }

    async fn create_write_session(&self, request: &WriteSessionRequest) -> Result<WriteSession> {
        self.pick(&request.table)
            .await?
            .create_write_session(request)
            .await
    }

    async fn get_write_session(&self, table: &TableId, session_id: &str) -> Result<WriteSession> {
        self.pick(table)
            .await?
            .get_write_session(table, session_id)
            .await
    }

    async fn create_write_stream_version(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: Option<&str>,
        version: Option<u64>,
        exactly_once: bool,
    ) -> Result<WriteStream> {
        self.pick(table)
            .await?
            .create_write_stream_version(table, session_id, stream_id, version, exactly_once)
            .await
    }

    async fn get_write_stream(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: &str,
    ) -> Result<WriteStream> {
        self.pick(table)
            .await?
            .get_write_stream(table, session_id, stream_id)
            .await
    }

    async fn write(&self, request: WriteRequest) -> Result<WriteAck> {
        let service = self.pick(&request.table).await?;
        service.write(request).await
    }

    async fn close_write_stream(
        &self,
        table: &TableId,
        session_id: &str,
        stream_id: &str,
        version: u64,
    ) -> Result<WriteStream> {
        self.pick(table)
            .await?
            .close_write_stream(table, session_id, stream_id, version)
            .await
    }

    async fn commit_write_session(
        &self,
        table: &TableId,
        session_id: &str,
        streams: Option<&[(String, u64)]>,
    ) -> Result<CommitInfo> {
        self.pick(table)
            .await?
            .commit_write_session(table, session_id, streams)
            .await
    }

    async fn abort_write_session(&self, table: &TableId, session_id: &str) -> Result<()> {
        self.pick(table)
            .await?
            .abort_write_session(table, session_id)
            .await
    }

    async fn create_table(
        &self,
        table: &TableId,
        schema: &TableSchema,
        options: CreateTableOptions,
    ) -> Result<()> {
        self.pick(table)
            .await?
            .create_table(table, schema, options)
            .await
    }

    async fn drop_table(&self, table: &TableId, if_exists: bool) -> Result<()> {
        self.pick(table).await?.drop_table(table, if_exists).await
    }

    async fn list_partitions(&self, table: &TableId) -> Result<Vec<PartitionInfo>> {
        self.pick(table).await?.list_partitions(table).await
    }

    async fn drop_partition(
        &self,
        table: &TableId,
        partition: &PartitionSpec,
        if_exists: bool,
    ) -> Result<()> {
        self.pick(table)
            .await?
            .drop_partition(table, partition, if_exists)
            .await
    }
}
