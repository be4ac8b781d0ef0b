//! The `TableService` conformance suite through the Tunnel client and the in-process server
//! (see [`paiio_tests::TunnelHarness`] for which calls go over the Tunnel).
//!
//! Every capability runs but these, which ask for what the Tunnel does not have:
//!
//! * table versions (`close_and_commit_all`, `commit_idempotent`, `commit_is_atomic`,
//!   `describe_table`, `read_session_pins_version`): a Tunnel commit answers no table
//!   version, and a download session reports none, so the client reports 0;
//! * `read_session_refresh`: a download session lives its fixed time (24 hours on the
//!   service); nothing pushes it forward.
//!
//! And one differs in kind: with dynamic partitions a commit is one Tunnel commit per
//! partition, not atomic across them (`commit_is_atomic` would check that too).

paiio_conformance::__paiio_conformance_each! { (async paiio_tests::tunnel_backend())
    // tables and partitions
    create_table,
    create_table_rejects_invalid_schema,
    column_names_case_insensitive,
    invalid_names_rejected,
    drop_table,
    list_tables,
    list_partitions,
    drop_partition,
    partitions_created_by_writes,
    // read sessions
    read_required_columns,
    read_partition_columns,
    read_required_partitions,
    split_size,
    split_parallelism,
    split_row_offset,
    split_bucket_rejected,
    read_empty_table,
    read_max_batch_rows,
    read_skip_rows,
    read_projection,
    arrow_time_units,
    arrow_large_string,
    read_session_of_dropped_table,
    read_session_expiry,
    unknown_sessions,
    preview,
    // write sessions
    write_stream_ids,
    write_stream_versions,
    write_stream_requested_versions,
    commit_explicit_streams,
    commit_explicit_duplicate_pairs,
    commit_explicit_superseded_version,
    commit_with_open_stream_fails,
    abort,
    overwrite_table,
    overwrite_partition,
    static_partition,
    dynamic_partitions,
    partial_static_partition,
    partition_values_typed,
    exactly_once_duplicates,
    exactly_once_gap,
    exactly_once_access_token,
    exactly_once_resume,
    type_mismatch,
    unknown_extra_column,
    duplicate_data_column_rejected,
    missing_column,
    not_null_violation,
    decimal_out_of_precision_rejected,
    write_after_commit_or_abort,
    write_session_expiry,
    datagen_round_trip,
}
