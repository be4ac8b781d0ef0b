//! Integration tests of the Storage API server, over HTTP against an in-process server.

mod faults;
mod v2_write;
