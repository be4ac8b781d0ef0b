//! Finds the backend a job is configured for: `ODPS_CONFIG_FILE_PATH`, environment variables,
//! or the default local warehouse (read when a table is opened, not at import).

use std::sync::Arc;

use paiio_storage::TableService;
use paiio_storage::config::{Backend, Config};
use paiio_storage::local::LocalWarehouse;

use crate::error::Result;

/// Opens the service the configuration names.
pub fn open_service(config: &Config) -> Result<Arc<dyn TableService>> {
    match config.backend()? {
        Backend::Local { root } => Ok(Arc::new(LocalWarehouse::open(root)?)),
        Backend::Rest { endpoint } => open_rest(config, &endpoint),
    }
}

/// Opens the service of the current process configuration (`Config::load()`).
pub fn open_default_service() -> Result<Arc<dyn TableService>> {
    open_service(&Config::load()?)
}

fn open_rest(config: &Config, _endpoint: &str) -> Result<Arc<dyn TableService>> {
    Ok(Arc::new(paiio_storage::rest::RestClient::from_config(
        config,
    )?))
}
