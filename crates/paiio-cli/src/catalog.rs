//! The catalog commands: create, ls, schema, count, head, partitions, drop.

use std::sync::Arc;

use arrow::array::RecordBatch;
use futures::StreamExt;
use paiio_storage::uri::{DEFAULT_SCHEMA, validate_name};
use paiio_storage::{
    ArrowOptions, CreateTableOptions, Error as StorageError, TableSchema, TableService, TableUri,
};

use crate::error::{CliError, Result};
use crate::output::Output;
use crate::service::{Target, parse_uri};

pub async fn create(
    service: Arc<dyn TableService>,
    out: &mut Output,
    uri: &str,
    schema: &str,
    partitioned_by: Option<&str>,
    if_not_exists: bool,
) -> Result<()> {
    let uri = parse_uri(uri)?;
    if !uri.partition.is_empty() {
        return Err(CliError::input(format!(
            "create takes a table URI without a partition, got {uri} (declare partition columns \
             with --partitioned-by)"
        )));
    }
    let columns = TableSchema::parse_columns(schema)?;
    let partition_columns = TableSchema::parse_columns(partitioned_by.unwrap_or(""))?;
    let schema = TableSchema::new(columns, partition_columns)?;
    if if_not_exists && service.describe_table(&uri.table).await.is_ok() {
        return out.line(&format!("exists {uri} (unchanged)"));
    }
    service
        .create_table(&uri.table, &schema, CreateTableOptions { if_not_exists })
        .await?;
    out.line(&format!("created {uri}"))
}

/// `odps://PROJECT`, `odps://PROJECT/tables`, `odps://PROJECT/schemas/S[/tables]`.
fn parse_project(text: &str) -> Result<(String, Option<String>)> {
    let bad = |why: &str| {
        CliError::input(format!(
            "invalid project URI {text:?}: {why} (expected odps://PROJECT, odps://PROJECT/tables \
             or odps://PROJECT/schemas/SCHEMA)"
        ))
    };
    let rest = text
        .trim()
        .strip_prefix(TableUri::SCHEME)
        .ok_or_else(|| bad("must start with odps://"))?
        .trim_end_matches('/');
    let parts: Vec<&str> = rest.split('/').collect();
    let (project, schema) = match parts.as_slice() {
        [project] | [project, "tables"] => (*project, None),
        [project, "schemas", schema] | [project, "schemas", schema, "tables"] => {
            (*project, Some(*schema))
        }
        _ => return Err(bad("unexpected path")),
    };
    validate_name("project name", project)?;
    if let Some(schema) = schema {
        validate_name("schema name", schema)?;
    }
    Ok((project.to_string(), schema.map(str::to_string)))
}

pub async fn ls(
    service: Arc<dyn TableService>,
    out: &mut Output,
    project: &str,
    schema: Option<&str>,
) -> Result<()> {
    let (project, uri_schema) = parse_project(project)?;
    let schema = match (uri_schema, schema) {
        (Some(a), Some(b)) if !a.eq_ignore_ascii_case(b) => {
            return Err(CliError::input(format!(
                "the URI names schema `{a}` but --schema names `{b}`"
            )));
        }
        (Some(a), _) => Some(a),
        (None, b) => b.map(str::to_string),
    };
    let tables = service.list_tables(&project, schema.as_deref()).await?;
    for table in tables {
        let mut table = table;
        if table.schema.as_deref() == Some(DEFAULT_SCHEMA) {
            table.schema = None;
        }
        out.line(&TableUri::new(table, Default::default()).to_string())?;
    }
    Ok(())
}

pub async fn schema(service: Arc<dyn TableService>, out: &mut Output, uri: &str) -> Result<()> {
    let target = Target::resolve(service.as_ref(), uri).await?;
    if !target.uri.partition.is_empty() {
        return Err(CliError::input(format!(
            "schema takes a table URI without a partition, got {}",
            target.uri
        )));
    }
    let schema = &target.info.schema;
    let rows: Vec<(String, String, String)> = schema
        .all_columns()
        .map(|c| {
            let mut notes = Vec::new();
            if schema.is_partition_column(&c.name) {
                notes.push("partition".to_string());
            }
            if !c.nullable {
                notes.push("not null".to_string());
            }
            if !c.comment.is_empty() {
                notes.push(format!("comment {:?}", c.comment));
            }
            (c.name.clone(), c.ty.to_string(), notes.join(", "))
        })
        .collect();
    let name_width = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let type_width = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
    for (name, ty, notes) in rows {
        let line = if notes.is_empty() {
            format!("{name:<name_width$}  {ty}")
        } else {
            format!("{name:<name_width$}  {ty:<type_width$}  {notes}")
        };
        out.line(&line)?;
    }
    Ok(())
}

pub async fn count(service: Arc<dyn TableService>, out: &mut Output, uri: &str) -> Result<()> {
    let target = Target::resolve(service.as_ref(), uri).await?;
    target.require_rows_source()?;
    out.line(&target.row_count().to_string())
}

pub async fn head(
    service: Arc<dyn TableService>,
    out: &mut Output,
    uri: &str,
    rows: u64,
) -> Result<()> {
    let target = Target::resolve(service.as_ref(), uri).await?;
    target.require_rows_source()?;
    let partition = (!target.uri.partition.is_empty()).then_some(&target.uri.partition);
    let mut stream = service
        .preview(&target.uri.table, partition, &[], rows)
        .await?;
    let mut batches: Vec<RecordBatch> = Vec::new();
    let mut seen = 0u64;
    while seen < rows {
        let Some(batch) = stream.next().await else {
            break;
        };
        let batch = batch?;
        let take = (rows - seen).min(batch.num_rows() as u64) as usize;
        seen += take as u64;
        batches.push(batch.slice(0, take));
    }
    if batches.is_empty() {
        let schema = target
            .info
            .schema
            .to_arrow_schema(&ArrowOptions::default(), true);
        batches.push(RecordBatch::new_empty(Arc::new(schema)));
    }
    let table = arrow::util::pretty::pretty_format_batches(&batches)
        .map_err(|e| CliError::failure(format!("formatting rows of {}: {e}", target.uri)))?;
    out.line(&table.to_string())
}

pub async fn partitions(service: Arc<dyn TableService>, out: &mut Output, uri: &str) -> Result<()> {
    let target = Target::resolve(service.as_ref(), uri).await?;
    if target.info.schema.partition_columns.is_empty() {
        return Err(StorageError::invalid(
            "table",
            format!("{} is not partitioned", target.uri.table),
        )
        .into());
    }
    let partitions = target.partitions();
    let width = partitions
        .iter()
        .map(|p| p.spec.to_path().chars().count())
        .max()
        .unwrap_or(0);
    for p in partitions {
        out.line(&format!("{:<width$}  {}", p.spec.to_path(), p.row_count))?;
    }
    Ok(())
}

pub async fn drop(
    service: Arc<dyn TableService>,
    out: &mut Output,
    uri: &str,
    if_exists: bool,
) -> Result<()> {
    let uri = parse_uri(uri)?;
    if uri.partition.is_empty() {
        service.drop_table(&uri.table, if_exists).await?;
    } else {
        if if_exists {
            // A missing table is "nothing to drop" too.
            match service.describe_table(&uri.table).await {
                Err(StorageError::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
        }
        service
            .drop_partition(&uri.table, &uri.partition, if_exists)
            .await?;
    }
    out.line(&format!("dropped {uri}"))
}
