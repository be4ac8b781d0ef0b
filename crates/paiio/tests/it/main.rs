//! The integration tests of the `paiio` facade (one binary).

mod coerce;
mod common;
mod reader;
mod reader_fork;
mod reader_props;
mod record_defaults;
mod retries;
mod writer;
