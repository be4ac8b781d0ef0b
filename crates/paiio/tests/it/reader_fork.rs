//! Fork safety: a child process gets a fresh runtime and can read; a reader inherited from
//! the parent refuses to work instead of hanging.

#![cfg(unix)]

use paiio::TableReader;
use paiio::options::ReaderOptions;
use paiio_storage::local::LocalWarehouse;

use crate::common;

#[test]
fn a_forked_child_reads_with_a_fresh_runtime() {
    let b = common::local();
    let (t, _) = b.table("fork", 0..500);
    let uri = b.uri(&t, "");
    let root = b.dir.path().join("warehouse");
    // The parent's runtime is built and busy.
    let mut inherited = TableReader::open_with(
        b.service.clone(),
        uri.as_str(),
        ReaderOptions::default().threads(2),
    )
    .unwrap();
    assert_eq!(inherited.read(10).unwrap().num_rows(), 10);

    // SAFETY: the child only runs the code below and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // The inherited reader refuses (its prefetch tasks do not exist here).
            if inherited.read(1).is_ok() {
                return 2;
            }
            let service = std::sync::Arc::new(LocalWarehouse::open(&root).unwrap());
            let mut r =
                TableReader::open_with(service, uri.as_str(), ReaderOptions::default().threads(3))
                    .unwrap();
            let ids = common::read_ids(&mut r);
            if ids == (0..500).collect::<Vec<_>>() {
                0
            } else {
                3
            }
        }))
        .unwrap_or(4);
        // SAFETY: leaving the child without running the parent's destructors or atexit hooks.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(
        libc::WIFEXITED(status),
        "the child did not exit normally: {status}"
    );
    assert_eq!(libc::WEXITSTATUS(status), 0, "the child failed");
    // The parent's reader goes on.
    assert_eq!(
        common::read_ids(&mut inherited),
        (10..500).collect::<Vec<_>>()
    );
}
