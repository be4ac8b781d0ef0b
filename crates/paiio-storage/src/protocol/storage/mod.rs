//! The MaxCompute Storage API (docs/storage-api.md): V2 calls (`POST /api/storage/v2?Action=...`,
//! [`Action`]) and V1 paths (`/api/storage/v1/projects/...`), whose JSON bodies have the
//! same shapes ([`messages`]), the schema JSON ([`schema`]), and the stream ids of the
//! BatchCompatible block / attempt model.

mod action;
pub mod messages;
pub mod schema;

pub use action::{Action, UnknownAction};
pub use messages::*;
pub use schema::{ReadColumn, ReadSchema};

/// Valid block numbers of a BatchCompatible (V1-style) write session are
/// `[0, MAX_BLOCK_NUMBER)`.
pub const MAX_BLOCK_NUMBER: u64 = 20_000;

/// The id of the backend stream that holds block `block`, attempt `attempt` of a
/// BatchCompatible write session.
pub fn block_stream_id(block: u64, attempt: u64) -> String {
    format!("block-{block}-attempt-{attempt}")
}

/// The block and attempt of a [`block_stream_id`].
pub fn parse_block_stream_id(id: &str) -> Option<(u64, u64)> {
    let rest = id.strip_prefix("block-")?;
    let (b, a) = rest.split_once("-attempt-")?;
    Some((b.parse().ok()?, a.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_stream_ids_round_trip() {
        assert_eq!(block_stream_id(3, 1), "block-3-attempt-1");
        assert_eq!(parse_block_stream_id("block-3-attempt-1"), Some((3, 1)));
        assert_eq!(parse_block_stream_id("block-3"), None);
        assert_eq!(parse_block_stream_id("s1"), None);
    }
}
