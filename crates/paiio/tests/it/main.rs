//! The integration tests of the `paiio` facade (one binary).

mod coerce;
mod common;
mod dataset;
mod reader;
mod reader_fork;
mod reader_props;
mod retries;
mod writer;
