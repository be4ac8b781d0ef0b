//! End-to-end tests of the `paiio` binary, each against its own temporary warehouse.

mod catalog;
mod common;
mod errors;
mod flow;
mod formats;
mod serve;
mod vacuum;
