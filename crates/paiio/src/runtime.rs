//! The process-wide I/O runtime, and the CPU pool.
//!
//! `paiio-storage` is async and never creates a runtime; the facade's blocking API runs its
//! futures on one lazily built multi-thread tokio runtime ([`runtime`], [`block_on`],
//! [`spawn`]). This is the only place a runtime is created.
//!
//! **Fork safety.** PyTorch `DataLoader` workers are `fork()`ed children; a runtime (or a
//! rayon pool) inherited across `fork` has no threads in the child. Each pool remembers the
//! process id it was built in; a child that asks for one gets a fresh one, and the inherited
//! one is leaked, never dropped (dropping it would try to join threads that do not exist).
//! A `pthread_atfork` child handler releases the build lock in case another thread of the
//! parent held it at the moment of the fork, and bumps [`generation`].
//!
//! The blocking calls must not be made from inside an async context (a runtime worker):
//! [`block_on`] answers that with an error instead of panicking.

use std::future::Future;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// A pool and the process it was built in.
struct Built<T> {
    pid: u32,
    pool: T,
}

static RUNTIME: AtomicPtr<Built<Runtime>> = AtomicPtr::new(std::ptr::null_mut());
static CPU_POOL: AtomicPtr<Built<rayon::ThreadPool>> = AtomicPtr::new(std::ptr::null_mut());
/// Held while a pool is being built (a spin lock the fork handler can release).
static BUILDING: AtomicBool = AtomicBool::new(false);
static GENERATION: AtomicU64 = AtomicU64::new(0);
static ATFORK: Once = Once::new();

extern "C" fn after_fork_in_child() {
    // Whatever another parent thread was building, it does not exist here.
    BUILDING.store(false, Ordering::SeqCst);
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

fn register_atfork() {
    ATFORK.call_once(|| {
        #[cfg(unix)]
        // SAFETY: registering a handler that only touches atomics, which is async-signal-safe.
        unsafe {
            libc::pthread_atfork(None, None, Some(after_fork_in_child));
        }
    });
}

/// How many forks this process has seen since it (or its ancestor) first built a pool:
/// objects that hold tasks of the runtime record it, and know they were inherited when it
/// changes.
pub fn generation() -> u64 {
    GENERATION.load(Ordering::SeqCst)
}

fn get_or_build<T>(slot: &'static AtomicPtr<Built<T>>, build: impl Fn() -> T) -> &'static T {
    let pid = std::process::id();
    loop {
        let current = slot.load(Ordering::Acquire);
        // SAFETY: pointers stored in the slot come from `Box::leak` and are never freed.
        if let Some(built) = unsafe { current.as_ref() }
            && built.pid == pid
        {
            return &built.pool;
        }
        if BUILDING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            std::thread::yield_now();
            continue;
        }
        // Re-check under the lock: another thread may have built it meanwhile.
        let current = slot.load(Ordering::Acquire);
        // SAFETY: as above.
        if let Some(built) = unsafe { current.as_ref() }
            && built.pid == pid
        {
            BUILDING.store(false, Ordering::Release);
            return &built.pool;
        }
        register_atfork();
        // The previous pool (if any) was inherited across fork: it is leaked, not dropped.
        let built: &'static Built<T> = Box::leak(Box::new(Built { pid, pool: build() }));
        slot.store(built as *const _ as *mut _, Ordering::Release);
        BUILDING.store(false, Ordering::Release);
        return &built.pool;
    }
}

fn worker_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 4)
}

fn blocking_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(4, |n| n.get())
        .max(4)
        * 8
}

/// The process-wide I/O runtime (multi-thread, 2 to 4 workers named `paiio-io`).
pub fn runtime() -> &'static Runtime {
    get_or_build(&RUNTIME, || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads())
            // The local warehouse reads and writes on the blocking pool: a few threads per
            // core keep disk and cores busy, where tokio's default of 512 would give every
            // concurrent read (dozens of shard readers, each prefetching) a thread of its own.
            .max_blocking_threads(blocking_threads())
            .thread_name("paiio-io")
            .enable_all()
            .build()
            .expect("the paiio I/O runtime could not be started")
    })
}

/// The rayon pool for CPU work (decoding, concatenation, shuffling, conversion), rebuilt in
/// a forked child like the runtime.
pub fn cpu_pool() -> &'static rayon::ThreadPool {
    get_or_build(&CPU_POOL, || {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("paiio-cpu-{i}"))
            .build()
            .expect("the paiio CPU pool could not be started")
    })
}

/// Whether the current thread is inside an async context (where blocking is not allowed).
pub fn in_async_context() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

/// Runs `future` to completion on the process-wide runtime, blocking this thread.
///
/// Called from inside an async context (a runtime worker thread, or within `block_on` of
/// another runtime), this is an error rather than a panic: call the blocking API from a
/// blocking thread (`spawn_blocking`) instead.
pub fn block_on<F: Future>(future: F) -> Result<F::Output> {
    if in_async_context() {
        return Err(Error::invalid(
            "calling context",
            "a blocking paiio call was made from inside an async runtime; call it from a \
             blocking thread (e.g. tokio::task::spawn_blocking)",
        ));
    }
    Ok(runtime().block_on(future))
}

/// [`block_on`], calling `check` every `every` while `future` waits: an `Err` from `check`
/// drops the future (cancelling it) and is returned. For callers that must notice a signal
/// while blocked (Ctrl-C in Python).
pub fn block_on_checked<F: Future, E>(
    future: F,
    every: std::time::Duration,
    mut check: impl FnMut() -> std::result::Result<(), E>,
) -> Result<std::result::Result<F::Output, E>> {
    block_on(async move {
        tokio::pin!(future);
        loop {
            tokio::select! {
                biased;
                out = &mut future => return Ok(out),
                () = tokio::time::sleep(every) => check()?,
            }
        }
    })
}

/// Spawns `future` on the process-wide runtime.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    runtime().spawn(future)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_runtime_per_process() {
        let a = runtime() as *const Runtime;
        let b = runtime() as *const Runtime;
        assert_eq!(a, b);
        assert_eq!(block_on(async { 40 + 2 }).unwrap(), 42);
        assert_eq!(block_on(spawn(async { 7 })).unwrap().unwrap(), 7);
    }

    #[test]
    fn block_on_inside_async_is_an_error() {
        let err = block_on(async { block_on(async { 1 }).unwrap_err() }).unwrap();
        assert!(err.to_string().contains("async runtime"), "{err}");
    }

    #[test]
    fn checked_waits_stop_at_the_first_failed_check() {
        let tick = std::time::Duration::from_millis(1);
        let ready = block_on_checked(async { 5 }, tick, || Err("never asked")).unwrap();
        assert_eq!(ready, Ok(5));
        let mut checks = 0;
        let stopped = block_on_checked(std::future::pending::<()>(), tick, || {
            checks += 1;
            if checks == 3 {
                Err("interrupted")
            } else {
                Ok(())
            }
        })
        .unwrap();
        assert_eq!((stopped, checks), (Err("interrupted"), 3));
    }

    #[test]
    fn cpu_pool_runs() {
        assert_eq!(cpu_pool().install(|| 2 + 2), 4);
    }
}
