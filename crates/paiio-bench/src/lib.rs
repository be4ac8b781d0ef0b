//! Benchmarks of paiio. `serve_bench` measures what serving costs: `paiio serve` runs as a
//! child process over a cached local warehouse holding `bench.wide` (at least 1 GB of Arrow),
//! and the bench reads it over HTTP with 1, 4 and 16 concurrent readers, uncompressed, LZ4 and
//! zstd, reading the server's CPU time and memory from `/proc`; then it holds 1,000 streaming
//! reads open at once. Run it with `scripts/bench-serve.sh` (Linux only).
//!
//! `client_bench` measures the client side: paiio's `RestClient` reading the same table with
//! 1, 4 and 16 concurrent streams, next to the released PyODPS reader, to reading the local
//! files in-process, and to `paiio serve --stream-rate` with up to 64 streams ([`reads`]). Run
//! it with `scripts/bench-client.sh`.

pub mod cli;
pub mod client;
pub mod proc_stats;
pub mod reads;
pub mod server;
pub mod table;
