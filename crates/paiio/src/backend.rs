//! Finds the backend a job is configured for: `ODPS_CONFIG_FILE_PATH`, environment variables,
//! or the default local warehouse (read when a table is opened, not at import).

use std::sync::Arc;

use paiio_storage::TableService;
use paiio_storage::config::{Backend, Config};
use parking_lot::Mutex;

use crate::error::Result;

/// Opens the service of the current process configuration (`Config::load()`; the
/// configuration and the environment are read on every call).
///
/// The service is shared by every call that finds the same configuration in this process: a
/// data loader opens readers for every epoch (and with a service each, paid for a new
/// connection pool, or new warehouse state, every time).
pub fn open_default_service() -> Result<Arc<dyn TableService>> {
    let config = Config::load()?;
    // The backend too: the local warehouse's directory may come from the environment
    // (PAIIO_WAREHOUSE) rather than from the configuration.
    let key = ServiceKey {
        backend: config.backend()?,
        config,
    };
    if let Some(service) = SERVICES.lookup(&key) {
        return Ok(service);
    }
    let service = paiio_storage::open_backend(&key.backend, &key.config)?;
    SERVICES.insert(key, service.clone());
    Ok(service)
}

/// What a service opened by [`open_default_service`] was opened for.
#[derive(Clone, PartialEq)]
struct ServiceKey {
    config: Config,
    backend: Backend,
}

/// Services opened by [`open_default_service`], for the process that opened them.
static SERVICES: ServiceCache = ServiceCache::new();

/// The most services remembered (a process normally uses one; tests switch often).
const MAX_CACHED_SERVICES: usize = 8;

struct ServiceCache {
    entries: Mutex<CachedServices>,
}

struct CachedServices {
    /// The process the services belong to.
    pid: u32,
    /// Most recently used last.
    services: Vec<(ServiceKey, Arc<dyn TableService>)>,
}

impl ServiceCache {
    const fn new() -> Self {
        ServiceCache {
            entries: Mutex::new(CachedServices {
                pid: 0,
                services: Vec::new(),
            }),
        }
    }

    fn lookup(&self, key: &ServiceKey) -> Option<Arc<dyn TableService>> {
        let mut entries = self.entries.lock();
        entries.forget_if_forked();
        let at = entries.services.iter().position(|(k, _)| k == key)?;
        let entry = entries.services.remove(at);
        let service = entry.1.clone();
        entries.services.push(entry);
        Some(service)
    }

    fn insert(&self, key: ServiceKey, service: Arc<dyn TableService>) {
        let mut entries = self.entries.lock();
        entries.forget_if_forked();
        entries.services.retain(|(k, _)| *k != key);
        if entries.services.len() >= MAX_CACHED_SERVICES {
            entries.services.remove(0);
        }
        entries.services.push((key, service));
    }
}

impl CachedServices {
    /// After `fork()`, the parent's services are not this process's: a REST client's pooled
    /// connections are registered with the parent's runtime (see [`crate::runtime`]). They
    /// are leaked rather than dropped, as the inherited runtime is.
    fn forget_if_forked(&mut self) {
        let pid = std::process::id();
        if self.pid != pid {
            std::mem::forget(std::mem::take(&mut self.services));
            self.pid = pid;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_shared_per_configuration_and_backend() {
        let cache = ServiceCache::new();
        let dir = tempfile::tempdir().unwrap();
        let key = |config: &Config, root: &str| ServiceKey {
            config: config.clone(),
            backend: Backend::Local {
                root: dir.path().join(root),
            },
        };
        let config = Config::default();
        let a = key(&config, "a");
        // The same configuration, another warehouse (from the environment).
        let b = key(&config, "b");
        assert!(cache.lookup(&a).is_none());
        let service = paiio_storage::open_backend(&a.backend, &a.config).unwrap();
        cache.insert(a.clone(), service.clone());
        assert!(Arc::ptr_eq(&cache.lookup(&a).unwrap(), &service));
        assert!(cache.lookup(&b).is_none());
        for i in 0..MAX_CACHED_SERVICES {
            let other = key(&config, &i.to_string());
            let service = paiio_storage::open_backend(&other.backend, &other.config).unwrap();
            cache.insert(other, service);
        }
        // The least recently used made room for the others.
        assert!(cache.lookup(&a).is_none());
        assert_eq!(cache.entries.lock().services.len(), MAX_CACHED_SERVICES);
    }
}
