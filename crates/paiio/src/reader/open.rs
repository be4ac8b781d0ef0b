//! Opening a [`TableReader`]: the tables to read ([`IntoTables`]), their output columns, a
//! read session per table, and the reader over them.

use std::sync::Arc;

use arrow_schema::{Schema, SchemaRef};
use paiio_storage::{
    Column, ReadSessionRequest, SplitOptions, TableId, TableSchema, TableService, TableUri,
};

use super::plan::make_plan;
use super::prefetch::{Counters, Source, Typing};
use super::{OpenTable, Shape, TableReader};
use crate::coerce;
use crate::error::{Error, Result};
use crate::options::{AUTO_BYTES_PER_THREAD, ReaderOptions};
use crate::runtime;
use crate::shard;

/// Tables to read: one URI, a comma-separated list of URIs, or a list of either.
pub trait IntoTables {
    fn into_tables(self) -> Result<Vec<TableUri>>;
}

impl IntoTables for &str {
    fn into_tables(self) -> Result<Vec<TableUri>> {
        Ok(TableUri::parse_list(self)?)
    }
}

impl IntoTables for String {
    fn into_tables(self) -> Result<Vec<TableUri>> {
        self.as_str().into_tables()
    }
}

impl IntoTables for &String {
    fn into_tables(self) -> Result<Vec<TableUri>> {
        self.as_str().into_tables()
    }
}

impl<S: AsRef<str>> IntoTables for &[S] {
    fn into_tables(self) -> Result<Vec<TableUri>> {
        let mut out = Vec::new();
        for s in self {
            out.extend(s.as_ref().into_tables()?);
        }
        Ok(out)
    }
}

impl<S: AsRef<str>> IntoTables for Vec<S> {
    fn into_tables(self) -> Result<Vec<TableUri>> {
        self.as_slice().into_tables()
    }
}

impl<S: AsRef<str>, const N: usize> IntoTables for [S; N] {
    fn into_tables(self) -> Result<Vec<TableUri>> {
        self.as_slice().into_tables()
    }
}

impl IntoTables for TableUri {
    fn into_tables(self) -> Result<Vec<TableUri>> {
        Ok(vec![self])
    }
}

/// The output columns of `schema` for the options: names resolved case-insensitively,
/// in selected order (or table order).
fn resolve_columns(
    schema: &TableSchema,
    options: &ReaderOptions,
    table: &TableId,
) -> Result<Vec<Column>> {
    let unknown = |name: &str, which: &str| {
        Error::invalid(
            which,
            format!(
                "`{name}` is not a column of {table} (its columns: {})",
                schema.column_names().join(", ")
            ),
        )
    };
    if let Some(selected) = options.selected_list() {
        let mut out: Vec<Column> = Vec::new();
        for name in selected {
            let column = schema
                .column(name)
                .ok_or_else(|| unknown(name, "selected_cols"))?;
            if out.iter().any(|c| c.name == column.name) {
                return Err(Error::invalid(
                    "selected_cols",
                    format!("`{name}` is selected twice"),
                ));
            }
            out.push(column.clone());
        }
        return Ok(out);
    }
    if let Some(excluded) = options.excluded_list() {
        for name in excluded {
            schema
                .column(name)
                .ok_or_else(|| unknown(name, "excluded_cols"))?;
        }
        let out: Vec<Column> = schema
            .columns
            .iter()
            .filter(|c| !excluded.iter().any(|e| e.eq_ignore_ascii_case(&c.name)))
            .cloned()
            .collect();
        if out.is_empty() {
            return Err(Error::invalid(
                "excluded_cols",
                format!("every column of {table} is excluded"),
            ));
        }
        return Ok(out);
    }
    Ok(schema.columns.clone())
}

pub(super) async fn open_async(
    service: Arc<dyn TableService>,
    uris: Vec<TableUri>,
    options: ReaderOptions,
) -> Result<TableReader> {
    let mut columns: Option<Vec<Column>> = None;
    let mut tables = Vec::new();
    for uri in uris {
        let table_schema = service.table_schema(&uri.table).await?;
        let these = resolve_columns(&table_schema, &options, &uri.table)?;
        match &columns {
            None => columns = Some(these.clone()),
            Some(first) => check_same_columns(first, &these, &uri.table)?,
        }
        let mut request = ReadSessionRequest::new(uri.table.clone());
        for c in &these {
            if table_schema.is_partition_column(&c.name) {
                request.required_partition_columns.push(c.name.clone());
            } else {
                request.required_data_columns.push(c.name.clone());
            }
        }
        if request.required_data_columns.is_empty() {
            // Only partition columns: the session still needs one data column to count rows.
            if let Some(first) = table_schema.columns.first() {
                request.required_data_columns.push(first.name.clone());
            }
        }
        if !uri.partition.is_empty() {
            request.required_partitions.push(uri.partition.clone());
        }
        request.split_options = SplitOptions::row_offset();
        request.arrow_options = options.arrow_options;
        let session = service.create_read_session(&request).await?;
        // The session delivers its columns in its own order (data, then partition columns):
        // where each output column is, found once.
        let delivered: Vec<&Column> = session.schema.all_columns().collect();
        let columns_at = these
            .iter()
            .map(|c| {
                delivered
                    .iter()
                    .position(|d| d.name.eq_ignore_ascii_case(&c.name))
                    .ok_or_else(|| {
                        Error::invalid(
                            "table data",
                            format!(
                                "the read session of {} has no column `{}`",
                                uri.table, c.name
                            ),
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let total = u64::try_from(session.record_count).unwrap_or(0);
        let range =
            shard::slice_range(total, options.slice_id, options.slice_count, options.equal)?;
        let row_bytes = match (u64::try_from(session.estimated_size), total) {
            (Ok(size), rows) if rows > 0 => size / rows,
            _ => 0,
        };
        tables.push(OpenTable {
            uri,
            session_id: session.session_id,
            total,
            range,
            row_bytes,
            columns_at,
        });
    }
    let columns = columns.unwrap_or_default();
    let read_schema: SchemaRef = Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| c.to_arrow_field(&options.arrow_options))
            .collect::<Vec<_>>(),
    ));
    let (arrow_schema, typing) = match &options.record_defaults {
        None => (read_schema.clone(), None),
        Some(defaults) => {
            coerce::check_defaults(&columns, defaults)?;
            let typing = Typing {
                types: columns.iter().map(|c| c.ty.clone()).collect(),
                defaults: defaults.clone(),
            };
            (
                coerce::output_schema(&columns, defaults),
                Some(Arc::new(typing)),
            )
        }
    };
    let threads = match options.num_threads {
        0 => service.hints().default_streams,
        n => n,
    };
    let shape = Shape {
        schema: TableSchema {
            columns,
            partition_columns: Vec::new(),
        },
        read_schema,
        arrow_schema,
        typing,
        threads,
        byte_budget: options
            .byte_budget
            .unwrap_or(threads * AUTO_BYTES_PER_THREAD),
    };
    Ok(assemble(service, options, tables, shape))
}

/// Checks that a table has the columns of the first one.
fn check_same_columns(first: &[Column], these: &[Column], table: &TableId) -> Result<()> {
    let same = first.len() == these.len()
        && first
            .iter()
            .zip(these)
            .all(|(a, b)| a.name == b.name && a.ty == b.ty);
    if same {
        return Ok(());
    }
    let show = |cs: &[Column]| {
        cs.iter()
            .map(|c| format!("{} {}", c.name, c.ty))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(Error::invalid(
        "tables",
        format!(
            "every table must have the same columns: {table} has ({}) where the first table \
             has ({})",
            show(these),
            show(first)
        ),
    ))
}

/// A reader at the start of its slice of `tables` (whose sessions are open).
pub(super) fn assemble(
    service: Arc<dyn TableService>,
    options: ReaderOptions,
    tables: Vec<OpenTable>,
    shape: Shape,
) -> TableReader {
    let row_count = tables.iter().map(|t| t.range.end - t.range.start).sum();
    let sources = Arc::new(
        tables
            .iter()
            .map(|t| Source {
                table: t.uri.table.clone(),
                session_id: t.session_id.clone(),
                columns_at: t.columns_at.clone(),
            })
            .collect(),
    );
    let plan = make_plan(&tables, &options, shape.threads);
    TableReader {
        service,
        options,
        tables,
        sources,
        shape,
        plan,
        row_count,
        position: 0,
        cursor: None,
        counters: Arc::new(Counters::default()),
        pid: std::process::id(),
        closed: false,
    }
}

/// The rows of each table (one read session each, nothing read): what a reader of all of
/// them would count, without opening one.
pub fn row_counts(service: Arc<dyn TableService>, tables: impl IntoTables) -> Result<Vec<u64>> {
    let uris = tables.into_tables()?;
    runtime::block_on(async move {
        let mut counts = Vec::with_capacity(uris.len());
        for uri in uris {
            let mut request = ReadSessionRequest::new(uri.table);
            if !uri.partition.is_empty() {
                request.required_partitions.push(uri.partition);
            }
            request.split_options = SplitOptions::row_offset();
            let session = service.create_read_session(&request).await?;
            counts.push(u64::try_from(session.record_count).unwrap_or(0));
        }
        Ok(counts)
    })?
}
