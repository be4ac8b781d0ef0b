//! Integration tests of the Storage API server, over HTTP against an in-process server.

mod common;
mod connections;
mod faults;
mod v1;
mod v2_write;
