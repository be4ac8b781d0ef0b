//! The one place a configuration becomes a service: the embedded local warehouse, or for an
//! http(s) endpoint the Storage API client, the Tunnel client, or (`transport = auto`, the
//! default) whichever of the two the endpoint serves ([`crate::config::Transport`]).

use std::sync::Arc;

use crate::config::{Backend, Config};
use crate::error::Result;
use crate::local::LocalWarehouse;
use crate::service::TableService;

/// Opens the service `config` selects ([`Config::backend`]).
pub fn open_service(config: &Config) -> Result<Arc<dyn TableService>> {
    open_backend(&config.backend()?, config)
}

/// Opens `backend`; the Storage API client takes its endpoint, credentials and options from
/// `config`, the local warehouse only its directory.
pub fn open_backend(backend: &Backend, config: &Config) -> Result<Arc<dyn TableService>> {
    Ok(match backend {
        Backend::Local { root } => Arc::new(LocalWarehouse::open(root)?),
        #[cfg(feature = "rest")]
        Backend::Rest { .. } => match config.transport()? {
            crate::config::Transport::Storage => {
                Arc::new(crate::rest::RestClient::from_config(config)?)
            }
            crate::config::Transport::Tunnel => {
                Arc::new(crate::rest::TunnelClient::from_config(config)?)
            }
            crate::config::Transport::Auto => {
                Arc::new(crate::rest::AutoClient::from_config(config)?)
            }
        },
        #[cfg(not(feature = "rest"))]
        Backend::Rest { endpoint } => {
            let _ = config;
            return Err(crate::Error::NotSupported {
                message: format!(
                    "the endpoint {endpoint} needs the Storage API client, which this build \
                     leaves out (paiio-storage's `rest` feature)"
                ),
            });
        }
    })
}
