//! Integration tests of the Storage API and Tunnel server, over HTTP against an in-process server.

mod common;
mod connections;
mod faults;
mod tunnel;
mod v1;
mod v2_write;
