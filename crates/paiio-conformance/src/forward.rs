//! [`forward_table_service!`](crate::forward_table_service): the `TableService` impl of a test
//! decorator that changes a few calls and passes the others on.

/// What [`forward_table_service!`](crate::forward_table_service) expands to refers to.
#[doc(hidden)]
pub mod __fwd {
    pub use async_trait::async_trait;
    pub use paiio_storage::service::{PartitionInfo, ServiceHints, WriterSlot};
    pub use paiio_storage::{
        CommitInfo, CreateTableOptions, PartitionSpec, ReadRequest, ReadSession,
        ReadSessionRequest, RecordBatchStream, Result, TableId, TableInfo, TableSchema,
        TableService, WriteAck, WriteRequest, WriteSession, WriteSessionRequest, WriteStream,
    };
}

/// Implements `TableService` for a decorator by passing each listed method on: to a field
/// (`field: methods;`, which calls `self.field.method(..)`), or to the type's own inherent
/// method of the same name and signature (`self: methods;`; a `self` method without that
/// inherent method would call itself). Methods not listed keep the trait's provided
/// implementation, as in a hand-written impl. `name` returns the given name.
///
/// ```ignore
/// #[derive(Debug)]
/// struct Slow { inner: LocalWarehouse }
/// impl Slow {
///     async fn read(&self, request: &ReadRequest) -> Result<RecordBatchStream> { /* ... */ }
/// }
/// paiio_conformance::forward_table_service!(Slow, "slow";
///     self: read;
///     inner: describe_table, create_read_session, get_read_session /* , ... */);
/// ```
#[macro_export]
macro_rules! forward_table_service {
    (@go ($ty:ty, $name:literal [$($done:tt)*])) => {
        const _: () = {
            use $crate::__fwd::*;
            #[async_trait]
            impl TableService for $ty {
                fn name(&self) -> &'static str {
                    $name
                }
                $($done)*
            }
        };
    };
    (@go $s:tt $to:tt hints $($r:tt)*) => {
        $crate::forward_table_service!(@sync $s $to hints() -> ServiceHints; $($r)*);
    };
    (@go $s:tt $to:tt table_schema $($r:tt)*) => {
        $crate::forward_table_service!(@async $s $to table_schema(table: &TableId) -> Result<TableSchema>; $($r)*);
    };
    (@go $s:tt $to:tt describe_table $($r:tt)*) => {
        $crate::forward_table_service!(@async $s $to describe_table(table: &TableId) -> Result<TableInfo>; $($r)*);
    };
    (@go $s:tt $to:tt create_read_session $($r:tt)*) => {
        $crate::forward_table_service!(@async $s $to create_read_session(request: &ReadSessionRequest) -> Result<ReadSession>; $($r)*);
    };
    (@go $s:tt $to:tt get_read_session $($r:tt)*) => {
        $crate::forward_table_service!(@async $s $to get_read_session(table: &TableId, session_id: &str, refresh: bool) -> Result<ReadSession>; $($r)*);
    };
    (@go $s:tt $to:tt read $($r:tt)*) => {
        $crate::forward_table_service!(@async $s $to read(request: &ReadRequest) -> Result<RecordBatchStream>; $($r)*);
    };
    (@go $s:tt $to:tt preview $($r:tt)*) => {
        $crate::forward_table_service!(@async $s $to preview(table: &TableId, partition: Option<&PartitionSpec>, columns: &[String], limit: u64) -> Result<RecordBatchStream>; $($r)*);
    };
    (@go $s:tt $to:tt create_write_session $($r:tt)*) => {
        $crate::forward_table_service!(@async $s $to create_write_session(request: &WriteSessionRequest) -> Result<WriteSession>; $($r)*);
    };
    (@go $s:tt $to:tt get_write_session $($r:tt)*) => {
        $crate::forward_table_service!(@async $s $to get_write_session(table: &TableId, session_id: &str) -> Result<WriteSession>; $($r)*);
    };
    (@go $s:tt $to:tt create_write_stream_version $($r:tt)*) => {
        $crate::forward_table_service!(@async $s $to create_write_stream_version(table: &TableId, session_id: &str, stream_id: Option<&str>, version: Option<u64>, exactly_once: bool) -> Result<WriteStream>; $($r)*);
    };
    (@go $s:tt $to:tt create_write_stream $($r:tt)*) => {
        $crate::forward_table_service!(@async $s $to create_write_stream(table: &TableId, session_id: &str, stream_id: Option<&str>, exactly_once: bool) -> Result<WriteStream>; $($r)*);
    };
    (@go $s:tt $to:tt get_write_stream $($r:tt)*) => {
        $crate::forward_table_service!(@async $s $to get_write_stream(table: &TableId, session_id: &str, stream_id: &str) -> Result<WriteStream>; $($r)*);
    };
    (@go $s:tt $to:tt write $($r:tt)*) => {
        $crate::forward_table_service!(@async $s $to write(request: WriteRequest) -> Result<WriteAck>; $($r)*);
    };
    (@go $s:tt $to:tt close_write_stream $($r:tt)*) => {
        $crate::forward_table_service!(@async $s $to close_write_stream(table: &TableId, session_id: &str, stream_id: &str, version: u64) -> Result<WriteStream>; $($r)*);
    };
    (@go $s:tt $to:tt commit_write_session $($r:tt)*) => {
        $crate::forward_table_service!(@async $s $to commit_write_session(table: &TableId, session_id: &str, streams: Option<&[(String, u64)]>) -> Result<CommitInfo>; $($r)*);
    };
    (@go $s:tt $to:tt abort_write_session $($r:tt)*) => {
        $crate::forward_table_service!(@async $s $to abort_write_session(table: &TableId, session_id: &str) -> Result<()>; $($r)*);
    };
    (@go $s:tt $to:tt lock_writer_slot $($r:tt)*) => {
        $crate::forward_table_service!(@async $s $to lock_writer_slot(table: &TableId, partition: &PartitionSpec, slot: u64) -> Result<WriterSlot>; $($r)*);
    };
    (@go $s:tt $to:tt create_table $($r:tt)*) => {
        $crate::forward_table_service!(@async $s $to create_table(table: &TableId, schema: &TableSchema, options: CreateTableOptions) -> Result<()>; $($r)*);
    };
    (@go $s:tt $to:tt drop_table $($r:tt)*) => {
        $crate::forward_table_service!(@async $s $to drop_table(table: &TableId, if_exists: bool) -> Result<()>; $($r)*);
    };
    (@go $s:tt $to:tt list_tables $($r:tt)*) => {
        $crate::forward_table_service!(@async $s $to list_tables(project: &str, schema: Option<&str>) -> Result<Vec<TableId>>; $($r)*);
    };
    (@go $s:tt $to:tt list_partitions $($r:tt)*) => {
        $crate::forward_table_service!(@async $s $to list_partitions(table: &TableId) -> Result<Vec<PartitionInfo>>; $($r)*);
    };
    (@go $s:tt $to:tt create_partition $($r:tt)*) => {
        $crate::forward_table_service!(@async $s $to create_partition(table: &TableId, partition: &PartitionSpec, if_not_exists: bool) -> Result<()>; $($r)*);
    };
    (@go $s:tt $to:tt drop_partition $($r:tt)*) => {
        $crate::forward_table_service!(@async $s $to drop_partition(table: &TableId, partition: &PartitionSpec, if_exists: bool) -> Result<()>; $($r)*);
    };
    (@async ($ty:ty, $name:literal [$($d:tt)*]) self $m:ident($($a:ident: $t:ty),*) -> $ret:ty; $($r:tt)*) => {
        $crate::forward_table_service!(@go ($ty, $name [$($d)*
            async fn $m(&self, $($a: $t),*) -> $ret { Self::$m(self, $($a),*).await }
        ]) $($r)*);
    };
    (@async ($ty:ty, $name:literal [$($d:tt)*]) $f:ident $m:ident($($a:ident: $t:ty),*) -> $ret:ty; $($r:tt)*) => {
        $crate::forward_table_service!(@go ($ty, $name [$($d)*
            async fn $m(&self, $($a: $t),*) -> $ret { self.$f.$m($($a),*).await }
        ]) $($r)*);
    };
    (@sync ($ty:ty, $name:literal [$($d:tt)*]) self $m:ident() -> $ret:ty; $($r:tt)*) => {
        $crate::forward_table_service!(@go ($ty, $name [$($d)* fn $m(&self) -> $ret { Self::$m(self) }]) $($r)*);
    };
    (@sync ($ty:ty, $name:literal [$($d:tt)*]) $f:ident $m:ident() -> $ret:ty; $($r:tt)*) => {
        $crate::forward_table_service!(@go ($ty, $name [$($d)* fn $m(&self) -> $ret { self.$f.$m() }]) $($r)*);
    };
    ($ty:ty, $name:literal; $($to:tt: $($method:ident),+);+ $(;)?) => {
        $crate::forward_table_service!(@go ($ty, $name []) $($($to $method)+)+);
    };
}
