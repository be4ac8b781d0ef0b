//! Credentials and endpoints: `ODPS_CONFIG_FILE_PATH`, environment variables, a builder.
//!
//! # Where the configuration comes from
//!
//! [`Config::load`] looks, in this order, at:
//!
//! 1. the ini file named by [`CONFIG_ENV`] (`ODPS_CONFIG_FILE_PATH`), when that variable is set
//!    and not empty. The file is then the only source: a missing or unreadable file is an
//!    error naming both the path and the variable, and the `ALIBABA_CLOUD_*`/`ODPS_*`
//!    variables are not consulted;
//! 2. otherwise the environment variables [`ACCESS_KEY_ID_ENV`], [`ACCESS_KEY_SECRET_ENV`],
//!    [`ENDPOINT_ENV`], [`PROJECT_ENV`], [`TUNNEL_ENDPOINT_ENV`], [`REGION_ENV`] and
//!    [`SECURITY_TOKEN_ENV`];
//! 3. when none of those is set, the defaults: no endpoint, i.e. the default local warehouse.
//!
//! A [`ConfigBuilder`] started from a loaded configuration ([`ConfigBuilder::base`],
//! [`ConfigBuilder::from_env`]) overrides whatever was loaded with its explicit settings.
//!
//! # The ini file
//!
//! PAI's paiio format: `key=value` lines, with or without a section header.
//!
//! ```ini
//! access_id=LTAI...
//! access_key=...
//! end_point=https://service.cn-hangzhou.maxcompute.aliyun.com/api
//! project=my_project
//! ```
//!
//! Keys are case-insensitive, values are trimmed and one pair of surrounding quotes is
//! stripped, lines starting with `#` or `;` are comments, and empty values count as unset.
//! Keys are read from the section-less part of the file and from the first named section;
//! a key present in both takes the named section's value. The keys are `access_id`,
//! `access_key`, `end_point` (also spelled `odps_endpoint` or `endpoint`), `project`,
//! `tunnel_endpoint`, `quota_name`, `sts_token`, `region` and `warehouse`. Unknown keys are
//! not an error: they are logged and listed in [`Config::unknown_keys`].
//!
//! # What the endpoint means
//!
//! See [`Config::backend`]: an `http://`/`https://` URL selects the Storage API backend, a
//! `file://` URL or a path selects a local warehouse in that directory, and no endpoint at
//! all selects the [default local warehouse](default_warehouse).

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::protocol::codec::ReadCompression;

/// The environment variable naming the ini configuration file.
pub const CONFIG_ENV: &str = "ODPS_CONFIG_FILE_PATH";
/// The environment variable naming the default local warehouse directory.
pub const WAREHOUSE_ENV: &str = "PAIIO_WAREHOUSE";
/// The environment variable holding the AccessKey id.
pub const ACCESS_KEY_ID_ENV: &str = "ALIBABA_CLOUD_ACCESS_KEY_ID";
/// The environment variable holding the AccessKey secret.
pub const ACCESS_KEY_SECRET_ENV: &str = "ALIBABA_CLOUD_ACCESS_KEY_SECRET";
/// The environment variable holding an STS security token.
pub const SECURITY_TOKEN_ENV: &str = "ALIBABA_CLOUD_SECURITY_TOKEN";
/// The environment variable holding the endpoint.
pub const ENDPOINT_ENV: &str = "ODPS_ENDPOINT";
/// The environment variable holding the default project.
pub const PROJECT_ENV: &str = "ODPS_PROJECT";
/// The environment variable holding the tunnel endpoint.
pub const TUNNEL_ENDPOINT_ENV: &str = "ODPS_TUNNEL_ENDPOINT";
/// The environment variable holding the region used for V4 signing.
pub const REGION_ENV: &str = "ODPS_REGION_NAME";
/// The environment variable choosing the transport of an http(s) endpoint
/// (`auto`, `storage` or `tunnel`); it overrides the `transport` key of a file.
pub const TRANSPORT_ENV: &str = "PAIIO_TRANSPORT";
/// The environment variable choosing the body compression of reads (`auto`, `none`, `zstd`
/// or `lz4`); it overrides the `read_compression` key of a file.
pub const READ_COMPRESSION_ENV: &str = "PAIIO_READ_COMPRESSION";

/// How an http(s) endpoint is spoken to (the `transport` key, [`TRANSPORT_ENV`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// The Storage API when it answers, else the Tunnel (the default).
    #[default]
    Auto,
    /// The Storage API (`docs/storage-api.md`), reachable from an Alibaba Cloud VPC.
    Storage,
    /// The MaxCompute Tunnel (`docs/tunnel.md`), what a public endpoint offers.
    Tunnel,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Auto => "auto",
            Transport::Storage => "storage",
            Transport::Tunnel => "tunnel",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Transport::Auto),
            "storage" | "storage_api" | "storage-api" | "storageapi" => Ok(Transport::Storage),
            "tunnel" => Ok(Transport::Tunnel),
            _ => Err(format!(
                "{s:?} is not a transport (expected auto, storage or tunnel)"
            )),
        }
    }
}

/// [`Config::source`] of a configuration read from environment variables.
pub const SOURCE_ENVIRONMENT: &str = "environment";
/// [`Config::source`] of a configuration where nothing was configured.
pub const SOURCE_DEFAULTS: &str = "defaults";
/// [`Config::source`] of a configuration made by a [`ConfigBuilder`] alone.
pub const SOURCE_BUILDER: &str = "builder";

/// What the `Debug` output shows in place of a secret.
const REDACTED: &str = "<redacted>";

/// Credentials, endpoints and defaults for talking to MaxCompute or a local warehouse.
///
/// Empty strings mean "unset" everywhere: loaders store `None` for them, and
/// [`ConfigBuilder::build`] turns an empty override into `None`.
///
/// `Debug` never shows `access_key` or `sts_token`.
#[derive(Clone, Default, PartialEq)]
pub struct Config {
    /// The AccessKey id.
    pub access_id: Option<String>,
    /// The AccessKey secret.
    pub access_key: Option<String>,
    /// An STS security token, for temporary credentials.
    pub sts_token: Option<String>,
    /// The endpoint: an `http(s)://` URL, a `file://` URL or a path (see [`Config::backend`]).
    pub endpoint: Option<String>,
    /// The tunnel endpoint, an `http(s)://` URL.
    pub tunnel_endpoint: Option<String>,
    /// The default project.
    pub project: Option<String>,
    /// The quota (computing resource group) name.
    pub quota_name: Option<String>,
    /// The region used for V4 signing; see [`Config::region_for_signing`].
    pub region: Option<String>,
    /// The local warehouse directory used when no endpoint is configured; when this is
    /// unset too, [`default_warehouse`] is used.
    pub warehouse: Option<PathBuf>,
    /// How an http(s) endpoint is spoken to: `auto` (unset), `storage` or `tunnel`; see
    /// [`Config::transport`].
    pub transport: Option<String>,
    /// The body compression of reads over HTTP: `auto` (unset), `none`, `zstd` or `lz4`; see
    /// [`Config::read_compression`].
    pub read_compression: Option<String>,
    /// Where the configuration was loaded from, for messages: a file path,
    /// [`SOURCE_ENVIRONMENT`], [`SOURCE_DEFAULTS`], [`SOURCE_BUILDER`], or
    /// `"<source> with builder overrides"`.
    pub source: String,
    /// Keys of the configuration file that were not recognised (lower-cased), in file order.
    pub unknown_keys: Vec<String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |secret: &Option<String>| secret.as_ref().map(|_| REDACTED);
        f.debug_struct("Config")
            .field("access_id", &self.access_id)
            .field("access_key", &redact(&self.access_key))
            .field("sts_token", &redact(&self.sts_token))
            .field("endpoint", &self.endpoint)
            .field("tunnel_endpoint", &self.tunnel_endpoint)
            .field("project", &self.project)
            .field("quota_name", &self.quota_name)
            .field("region", &self.region)
            .field("warehouse", &self.warehouse)
            .field("transport", &self.transport)
            .field("read_compression", &self.read_compression)
            .field("source", &self.source)
            .field("unknown_keys", &self.unknown_keys)
            .finish()
    }
}

/// The storage backend a configuration selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The MaxCompute Storage API (REST) at this endpoint, trailing `/` trimmed.
    Rest {
        /// The `http://` or `https://` endpoint URL.
        endpoint: String,
    },
    /// A local warehouse in this directory.
    Local {
        /// The warehouse directory (`~` expanded; it may not exist yet).
        root: PathBuf,
    },
}

/// The settings of a [`Config`], to name them in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    AccessId,
    AccessKey,
    StsToken,
    Endpoint,
    TunnelEndpoint,
    Project,
    QuotaName,
    Region,
    Warehouse,
    Transport,
    ReadCompression,
}

impl Field {
    /// The canonical ini key (which is also the builder setter's name, but for the endpoint).
    fn ini_key(self) -> &'static str {
        match self {
            Field::AccessId => "access_id",
            Field::AccessKey => "access_key",
            Field::StsToken => "sts_token",
            Field::Endpoint => "end_point",
            Field::TunnelEndpoint => "tunnel_endpoint",
            Field::Project => "project",
            Field::QuotaName => "quota_name",
            Field::Region => "region",
            Field::Warehouse => "warehouse",
            Field::Transport => "transport",
            Field::ReadCompression => "read_compression",
        }
    }

    /// The builder setter's name.
    fn builder_key(self) -> &'static str {
        match self {
            Field::Endpoint => "endpoint",
            other => other.ini_key(),
        }
    }

    /// The environment variable, for the settings that have one.
    fn env_var(self) -> Option<&'static str> {
        match self {
            Field::AccessId => Some(ACCESS_KEY_ID_ENV),
            Field::AccessKey => Some(ACCESS_KEY_SECRET_ENV),
            Field::StsToken => Some(SECURITY_TOKEN_ENV),
            Field::Endpoint => Some(ENDPOINT_ENV),
            Field::TunnelEndpoint => Some(TUNNEL_ENDPOINT_ENV),
            Field::Project => Some(PROJECT_ENV),
            Field::Region => Some(REGION_ENV),
            Field::Transport => Some(TRANSPORT_ENV),
            Field::ReadCompression => Some(READ_COMPRESSION_ENV),
            Field::QuotaName | Field::Warehouse => None,
        }
    }

    /// The field an ini key (lower-cased) sets, with the aliases older files use.
    fn from_ini_key(key: &str) -> Option<Field> {
        Some(match key {
            "access_id" | "access_key_id" => Field::AccessId,
            "access_key" | "secret_access_key" | "access_key_secret" => Field::AccessKey,
            "sts_token" | "security_token" => Field::StsToken,
            "end_point" | "odps_endpoint" | "endpoint" => Field::Endpoint,
            "tunnel_endpoint" | "tunnel_end_point" => Field::TunnelEndpoint,
            "project" | "project_name" => Field::Project,
            "quota_name" | "quota" => Field::QuotaName,
            "region" | "region_name" | "region_id" => Field::Region,
            "warehouse" => Field::Warehouse,
            "transport" => Field::Transport,
            "read_compression" | "compression" => Field::ReadCompression,
            _ => return None,
        })
    }

    /// Rank among the spellings of one field: the lowest wins when a file has several.
    fn alias_rank(key: &str) -> usize {
        match key {
            "end_point" | "access_id" | "access_key" | "sts_token" | "tunnel_endpoint"
            | "project" | "quota_name" | "region" | "warehouse" | "transport"
            | "read_compression" => 0,
            "endpoint" => 1,
            _ => 2,
        }
    }
}

/// An error about one setting of the configuration that came from `source`.
///
/// `key` is the name to show for a file or builder source; settings read from the
/// environment are named by their variable.
fn setting_error(source: &str, field: Field, key: &str, message: impl fmt::Display) -> Error {
    // A `Config` put together by hand has no source: it is programmatic, like a builder's.
    let source = if source.is_empty() {
        SOURCE_BUILDER
    } else {
        source
    };
    if source == SOURCE_ENVIRONMENT
        && let Some(var) = field.env_var()
    {
        return Error::Config {
            source_name: format!("environment variable {var}"),
            message: message.to_string(),
        };
    }
    Error::Config {
        source_name: source.to_string(),
        message: format!("key `{key}`: {message}"),
    }
}

/// The name of `field` as the configuration from `source` spells it.
fn key_name(source: &str, field: Field) -> &'static str {
    if source == SOURCE_BUILDER || source.is_empty() {
        field.builder_key()
    } else if source == SOURCE_ENVIRONMENT {
        field.env_var().unwrap_or_else(|| field.ini_key())
    } else {
        field.ini_key()
    }
}

/// What an endpoint string selects, before `~` expansion.
#[derive(Debug, PartialEq)]
enum EndpointKind {
    Rest(String),
    Local(String),
}

/// Classifies an endpoint; the error is a message naming the value, not the key.
fn classify_endpoint(value: &str) -> std::result::Result<EndpointKind, String> {
    let s = value.trim();
    if s.is_empty() {
        return Err("the endpoint is empty".to_string());
    }
    let not_supported = || format!("{s:?} is not an http(s):// URL, a file:// URL or a path");
    if let Some(idx) = s.find("://") {
        let scheme = &s[..idx];
        let rest = &s[idx + 3..];
        if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            if authority.is_empty() {
                return Err(format!("{s:?} has no host"));
            }
            if s.chars().any(char::is_whitespace) {
                return Err(format!("{s:?} contains whitespace"));
            }
            return Ok(EndpointKind::Rest(s.trim_end_matches('/').to_string()));
        }
        if scheme.eq_ignore_ascii_case("file") {
            let path = rest
                .strip_prefix("localhost")
                .filter(|p| p.starts_with('/'))
                .unwrap_or(rest);
            let path = percent_encoding::percent_decode_str(path)
                .decode_utf8()
                .map_err(|_| format!("{s:?} is not valid UTF-8 once percent-decoded"))?;
            if path.is_empty() {
                return Err(format!("{s:?} has no path"));
            }
            return Ok(EndpointKind::Local(path.into_owned()));
        }
        return Err(not_supported());
    }
    if looks_like_host_port(s) {
        return Err(format!(
            "{s:?} looks like host:port without a scheme; write http://{s} or https://{s} \
             (or ./{s} for a local directory)"
        ));
    }
    Ok(EndpointKind::Local(s.to_string()))
}

/// `host:port` or `host:port/path` with no scheme, a likely mistake for an HTTP endpoint.
fn looks_like_host_port(s: &str) -> bool {
    let head = s.split('/').next().unwrap_or_default();
    let Some((host, port)) = head.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && !port.is_empty()
        && port.chars().all(|c| c.is_ascii_digit())
}

/// The home directory according to `env`.
fn home_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let non_empty = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let home = non_empty("HOME");
    #[cfg(windows)]
    let home = home.or_else(|| non_empty("USERPROFILE"));
    home.map(PathBuf::from)
}

/// Expands a leading `~` or `~/` with `$HOME`; other paths are returned unchanged.
fn expand_tilde(
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<PathBuf, String> {
    let rest = if path == "~" {
        ""
    } else if let Some(rest) = path.strip_prefix("~/") {
        rest
    } else if cfg!(windows)
        && let Some(rest) = path.strip_prefix("~\\")
    {
        rest
    } else {
        return Ok(PathBuf::from(path));
    };
    let home = home_dir(env).ok_or_else(|| format!("cannot expand {path:?}: HOME is not set"))?;
    Ok(if rest.is_empty() {
        home
    } else {
        home.join(rest)
    })
}

/// The environment of this process, as a lookup function.
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The default local warehouse directory, with `env` looking up environment variables:
///
/// 1. `$PAIIO_WAREHOUSE` ([`WAREHOUSE_ENV`], `~` expanded) if set and not empty;
/// 2. else `$XDG_DATA_HOME/paiio/warehouse` if `XDG_DATA_HOME` is an absolute path;
/// 3. else `$HOME/.local/share/paiio/warehouse` if `HOME` is set;
/// 4. else `./.paiio-warehouse`.
pub fn default_warehouse(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    let non_empty = |name: &str| {
        env(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if let Some(dir) = non_empty(WAREHOUSE_ENV) {
        // Without HOME, a `~` path is kept literally rather than failing here.
        return expand_tilde(&dir, env).unwrap_or_else(|_| PathBuf::from(dir));
    }
    if let Some(xdg) = non_empty("XDG_DATA_HOME").map(PathBuf::from)
        && xdg.is_absolute()
    {
        return xdg.join("paiio").join("warehouse");
    }
    if let Some(home) = home_dir(env) {
        return home
            .join(".local")
            .join("share")
            .join("paiio")
            .join("warehouse");
    }
    PathBuf::from("./.paiio-warehouse")
}

/// Trims a value, strips one pair of matching surrounding quotes, and maps empty to `None`.
fn clean_value(raw: &str) -> Option<String> {
    let mut v = raw.trim();
    for quote in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(quote) && v.ends_with(quote) {
            v = v[1..v.len() - 1].trim();
            break;
        }
    }
    (!v.is_empty()).then(|| v.to_string())
}

/// Prepares ini text for `rust-ini`: drops comment lines (indented ones too) and leading
/// whitespace, and rejects lines that are neither `[section]` nor `key=value`, which the
/// parser would otherwise silently merge into the next line's key.
fn normalize_ini(text: &str, source_name: &str) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') {
            out.push('\n');
            continue;
        }
        let is_section = line.starts_with('[') && line.ends_with(']');
        if !line.is_empty() && !is_section && !line.contains(['=', ':']) {
            // The line itself is not shown: it may be a pasted secret.
            return Err(Error::Config {
                source_name: source_name.to_string(),
                message: format!("line {}: expected `key=value` or `[section]`", number + 1),
            });
        }
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

/// Checks the syntax of the endpoints of a freshly loaded configuration.
///
/// `endpoint_key` is how the source spelled the endpoint key.
fn validate_endpoints(config: &Config, endpoint_key: &str) -> Result<()> {
    if let Some(endpoint) = &config.endpoint {
        classify_endpoint(endpoint)
            .map_err(|m| setting_error(&config.source, Field::Endpoint, endpoint_key, m))?;
    }
    if let Some(tunnel) = &config.tunnel_endpoint {
        let key = key_name(&config.source, Field::TunnelEndpoint);
        match classify_endpoint(tunnel) {
            Ok(EndpointKind::Rest(_)) => {}
            Ok(EndpointKind::Local(_)) => {
                return Err(setting_error(
                    &config.source,
                    Field::TunnelEndpoint,
                    key,
                    format!("{tunnel:?} is not an http(s):// URL"),
                ));
            }
            Err(m) => return Err(setting_error(&config.source, Field::TunnelEndpoint, key, m)),
        }
    }
    choice::<Transport>(&config.transport, &config.source, Field::Transport)?;
    choice::<ReadCompression>(
        &config.read_compression,
        &config.source,
        Field::ReadCompression,
    )?;
    Ok(())
}

/// Parses a setting with a fixed set of values (`transport`, `read_compression`) from
/// `source`; the error names the key (or the environment variable) and what it takes.
fn choice<T: std::str::FromStr<Err = String>>(
    value: &Option<String>,
    source: &str,
    field: Field,
) -> Result<Option<T>> {
    let Some(v) = value else { return Ok(None) };
    v.parse()
        .map(Some)
        .map_err(|m| setting_error(source, field, key_name(source, field), m))
}

impl Config {
    /// Loads the configuration from this process's environment (see the [module
    /// documentation](self)). Call it when the configuration is needed, not once at start-up,
    /// so that changes to the environment are seen.
    pub fn load() -> Result<Config> {
        Config::load_from(&process_env)
    }

    /// [`Config::load`] with the environment looked up through `env`.
    pub fn load_from(env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
        let var = |name: &str| env(name).and_then(|v| clean_value(&v));

        if let Some(path) = var(CONFIG_ENV) {
            let path = expand_tilde(&path, env).map_err(|m| Error::Config {
                source_name: format!("environment variable {CONFIG_ENV}"),
                message: m,
            })?;
            let text =
                std::fs::read_to_string(&path).map_err(|source| Error::ConfigFileUnreadable {
                    path: path.clone(),
                    named_by: Some(CONFIG_ENV),
                    source,
                })?;
            let mut config = Config::from_ini_str(&text, &path.display().to_string())?;
            // The environment overrides the file's `transport` and `read_compression` (see
            // `Config::transport`).
            if let Some(t) = var(TRANSPORT_ENV) {
                choice::<Transport>(&Some(t.clone()), SOURCE_ENVIRONMENT, Field::Transport)?;
                config.transport = Some(t);
            }
            if let Some(c) = var(READ_COMPRESSION_ENV) {
                let field = Field::ReadCompression;
                choice::<ReadCompression>(&Some(c.clone()), SOURCE_ENVIRONMENT, field)?;
                config.read_compression = Some(c);
            }
            return Ok(config);
        }

        let config = Config {
            access_id: var(ACCESS_KEY_ID_ENV),
            access_key: var(ACCESS_KEY_SECRET_ENV),
            sts_token: var(SECURITY_TOKEN_ENV),
            endpoint: var(ENDPOINT_ENV),
            tunnel_endpoint: var(TUNNEL_ENDPOINT_ENV),
            project: var(PROJECT_ENV),
            quota_name: None,
            region: var(REGION_ENV),
            warehouse: None,
            transport: var(TRANSPORT_ENV),
            read_compression: var(READ_COMPRESSION_ENV),
            source: String::new(),
            unknown_keys: Vec::new(),
        };
        if config == Config::default() {
            return Ok(Config {
                source: SOURCE_DEFAULTS.to_string(),
                ..config
            });
        }
        let config = Config {
            source: SOURCE_ENVIRONMENT.to_string(),
            ..config
        };
        validate_endpoints(&config, ENDPOINT_ENV)?;
        Ok(config)
    }

    /// Reads an ini configuration file (see the [module documentation](self)).
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigFileUnreadable {
            path: path.to_path_buf(),
            named_by: None,
            source,
        })?;
        Config::from_ini_str(&text, &path.display().to_string())
    }

    /// Parses ini configuration text; `source_name` (usually the file path) becomes
    /// [`Config::source`] and names the source in errors.
    pub fn from_ini_str(text: &str, source_name: &str) -> Result<Config> {
        let options = ini::ParseOption {
            // Quotes are stripped by `clean_value`, only when they surround the whole value;
            // backslashes are kept as written (Windows paths, secrets).
            enabled_quote: false,
            enabled_escape: false,
            ..Default::default()
        };
        let text = normalize_ini(text.strip_prefix('\u{feff}').unwrap_or(text), source_name)?;
        let parsed = ini::Ini::load_from_str_opt(&text, options).map_err(|e| Error::Config {
            source_name: source_name.to_string(),
            message: format!("not a valid ini file: {e}"),
        })?;

        let mut config = Config {
            source: source_name.to_string(),
            ..Config::default()
        };
        // The general section, then the first named section, so that the named section wins.
        let named = parsed
            .iter()
            .find(|(name, _)| name.is_some())
            .map(|(_, props)| props);
        let mut endpoint_key = "end_point".to_string();
        for props in std::iter::once(parsed.general_section()).chain(named) {
            // Per field: the rank of the spelling used in this section, its key and value.
            let mut section: Vec<(Field, usize, String, Option<String>)> = Vec::new();
            for (raw_key, raw_value) in props.iter() {
                let key = raw_key.trim().to_ascii_lowercase();
                let Some(field) = Field::from_ini_key(&key) else {
                    if !config.unknown_keys.contains(&key) {
                        tracing::warn!(
                            source = source_name,
                            key = %key,
                            "ignoring unknown key in the paiio configuration"
                        );
                        config.unknown_keys.push(key);
                    }
                    continue;
                };
                let rank = Field::alias_rank(&key);
                let value = clean_value(raw_value);
                match section.iter_mut().find(|(f, ..)| *f == field) {
                    // Within a section the canonical spelling wins, then the later line.
                    Some(entry) if rank <= entry.1 => *entry = (field, rank, key, value),
                    Some(_) => {}
                    None => section.push((field, rank, key, value)),
                }
            }
            for (field, _, key, value) in section {
                match field {
                    Field::AccessId => config.access_id = value,
                    Field::AccessKey => config.access_key = value,
                    Field::StsToken => config.sts_token = value,
                    Field::Endpoint => {
                        config.endpoint = value;
                        endpoint_key = key;
                    }
                    Field::TunnelEndpoint => config.tunnel_endpoint = value,
                    Field::Project => config.project = value,
                    Field::QuotaName => config.quota_name = value,
                    Field::Region => config.region = value,
                    Field::Warehouse => config.warehouse = value.map(PathBuf::from),
                    Field::Transport => config.transport = value,
                    Field::ReadCompression => config.read_compression = value,
                }
            }
        }
        validate_endpoints(&config, &endpoint_key)?;
        Ok(config)
    }

    /// A builder with no base: only its explicit settings count.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// The backend this configuration selects, resolving `~` and the default warehouse
    /// with this process's environment:
    ///
    /// * an `http://` or `https://` endpoint: [`Backend::Rest`] (trailing `/` trimmed);
    /// * a `file://` URL or a path (absolute, relative to the working directory, or `~/…`):
    ///   [`Backend::Local`] in that directory;
    /// * no endpoint: [`Backend::Local`] in [`Config::warehouse`] if set, else in
    ///   [`default_warehouse`];
    /// * any other `scheme://` is an error naming the source and the key.
    ///
    /// This checks no credentials; see [`Config::credentials`] and [`Config::validate`].
    pub fn backend(&self) -> Result<Backend> {
        self.backend_with_env(&process_env)
    }

    /// [`Config::backend`] with the environment looked up through `env`.
    pub fn backend_with_env(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Backend> {
        let endpoint = self
            .endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty());
        let Some(endpoint) = endpoint else {
            let root = match self
                .warehouse
                .as_deref()
                .filter(|w| !w.as_os_str().is_empty())
            {
                Some(dir) => match dir.to_str() {
                    Some(s) => expand_tilde(s, env).map_err(|m| {
                        setting_error(
                            &self.source,
                            Field::Warehouse,
                            key_name(&self.source, Field::Warehouse),
                            m,
                        )
                    })?,
                    None => dir.to_path_buf(),
                },
                None => default_warehouse(env),
            };
            return Ok(Backend::Local { root });
        };
        let key = key_name(&self.source, Field::Endpoint);
        let error = |m: String| setting_error(&self.source, Field::Endpoint, key, m);
        match classify_endpoint(endpoint).map_err(error)? {
            EndpointKind::Rest(endpoint) => Ok(Backend::Rest { endpoint }),
            EndpointKind::Local(path) => Ok(Backend::Local {
                root: expand_tilde(&path, env).map_err(error)?,
            }),
        }
    }

    /// The transport of an http(s) endpoint: [`TRANSPORT_ENV`] when set in this process's
    /// environment, else the `transport` key, else [`Transport::Auto`].
    pub fn transport(&self) -> Result<Transport> {
        self.transport_with_env(&process_env)
    }

    /// [`Config::transport`] with the environment looked up through `env`.
    pub fn transport_with_env(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Transport> {
        self.choice_with_env(&self.transport, Field::Transport, env)
    }

    /// The body compression of reads over HTTP: [`READ_COMPRESSION_ENV`] when set in this
    /// process's environment, else the `read_compression` key, else
    /// [`ReadCompression::Auto`] (chosen per read by the link).
    pub fn read_compression(&self) -> Result<ReadCompression> {
        self.read_compression_with_env(&process_env)
    }

    /// [`Config::read_compression`] with the environment looked up through `env`.
    pub fn read_compression_with_env(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ReadCompression> {
        self.choice_with_env(&self.read_compression, Field::ReadCompression, env)
    }

    /// A setting with a fixed set of values: its environment variable when set, else the
    /// configured value, else the default.
    fn choice_with_env<T>(
        &self,
        value: &Option<String>,
        field: Field,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<T>
    where
        T: std::str::FromStr<Err = String> + Default,
    {
        if let Some(var) = field.env_var()
            && let Some(v) = env(var).and_then(|v| clean_value(&v))
        {
            return Ok(choice(&Some(v), SOURCE_ENVIRONMENT, field)?.unwrap_or_default());
        }
        Ok(choice(value, &self.source, field)?.unwrap_or_default())
    }

    /// The backend, and for a REST backend a check that credentials are configured unless
    /// `allow_anonymous` is true. The error names the missing key and the source.
    pub fn validate(&self, allow_anonymous: bool) -> Result<Backend> {
        let backend = self.backend()?;
        if let Backend::Rest { .. } = &backend {
            if allow_anonymous {
                self.optional_credentials()?;
            } else {
                self.credentials()?;
            }
        }
        Ok(backend)
    }

    /// The region used for V4 signing: [`Config::region`] if set, else the region in an
    /// Alibaba Cloud endpoint host (`service.cn-hangzhou.maxcompute.aliyun.com` and
    /// `service.cn-hangzhou-vpc.maxcompute.aliyun-inc.com` give `cn-hangzhou`), else `None`
    /// (local endpoints, IP addresses, `localhost`, other hosts).
    pub fn region_for_signing(&self) -> Option<String> {
        if let Some(region) = self
            .region
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
        {
            return Some(region.to_string());
        }
        let endpoint = self.endpoint.as_deref()?;
        match classify_endpoint(endpoint).ok()? {
            EndpointKind::Rest(url) => region_from_url(&url),
            EndpointKind::Local(_) => None,
        }
    }

    /// The credentials: [`Config::access_id`] and [`Config::access_key`], which must both
    /// be set (the error names the missing key and the source), with
    /// [`Config::sts_token`] if set.
    pub fn credentials(&self) -> Result<crate::auth::Credentials> {
        let endpoint = match self
            .endpoint
            .as_deref()
            .and_then(|e| classify_endpoint(e).ok())
        {
            Some(EndpointKind::Rest(url)) => format!("the endpoint {url} needs"),
            _ => "signed requests need".to_string(),
        };
        let missing = |field: Field| {
            setting_error(
                &self.source,
                field,
                key_name(&self.source, field),
                format!(
                    "missing: {endpoint} both {} and {}",
                    key_name(&self.source, Field::AccessId),
                    key_name(&self.source, Field::AccessKey),
                ),
            )
        };
        let id = present(&self.access_id).ok_or_else(|| missing(Field::AccessId))?;
        let key = present(&self.access_key).ok_or_else(|| missing(Field::AccessKey))?;
        Ok(crate::auth::Credentials {
            access_id: id.to_string(),
            access_key: key.to_string(),
            sts_token: present(&self.sts_token).map(str::to_string),
        })
    }

    /// Like [`Config::credentials`], for anonymous access: `None` when neither the id nor
    /// the key is configured, and still an error when only one of them is.
    pub fn optional_credentials(&self) -> Result<Option<crate::auth::Credentials>> {
        if present(&self.access_id).is_none() && present(&self.access_key).is_none() {
            return Ok(None);
        }
        self.credentials().map(Some)
    }
}

/// A setting's trimmed value, `None` when unset or empty.
fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// The region label of an Alibaba Cloud endpoint URL, if it has one.
fn region_from_url(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if authority.starts_with('[') {
        return None; // an IPv6 literal
    }
    let host = authority
        .split(':')
        .next()?
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") || host.parse::<IpAddr>().is_ok() {
        return None;
    }
    let aliyun = [".aliyun.com", ".aliyun-inc.com", ".aliyuncs.com"];
    if !aliyun.iter().any(|suffix| host.ends_with(suffix)) {
        return None;
    }
    let labels: Vec<&str> = host.split('.').collect();
    if labels.len() < 4 {
        return None;
    }
    let label = labels[1];
    let region = label
        .strip_suffix("-vpc")
        .or_else(|| label.strip_suffix("-intranet"))
        .or_else(|| label.strip_suffix("-internal"))
        .unwrap_or(label);
    // Every region id has a dash (`cn-hangzhou`, `ap-southeast-1`); `service.odps.aliyun.com`
    // and the like have no region in them.
    let valid = region.contains('-')
        && region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !region.starts_with('-')
        && !region.ends_with('-');
    valid.then(|| region.to_string())
}

/// Builds a [`Config`] from explicit settings, optionally on top of a loaded one.
///
/// Every setter overrides the base's value; an empty string clears it (so
/// `.endpoint("")` selects the default local warehouse whatever the base says).
///
/// ```
/// use paiio_storage::config::{Backend, Config};
///
/// let config = Config::builder().endpoint("/tmp/warehouse").project("demo").build();
/// assert_eq!(config.backend().unwrap(), Backend::Local { root: "/tmp/warehouse".into() });
/// ```
#[derive(Debug, Clone, Default)]
pub struct ConfigBuilder {
    base: Option<Config>,
    /// The explicit settings: `Some` fields override the base.
    set: Config,
}

impl ConfigBuilder {
    /// A builder on top of the configuration loaded from this process's environment
    /// ([`Config::load`]).
    pub fn from_env() -> Result<ConfigBuilder> {
        Ok(ConfigBuilder::default().base(Config::load()?))
    }

    /// Starts from `config`: the builder's settings override its values.
    pub fn base(mut self, config: Config) -> Self {
        self.base = Some(config);
        self
    }

    /// Sets the AccessKey id.
    pub fn access_id(mut self, value: impl Into<String>) -> Self {
        self.set.access_id = Some(value.into());
        self
    }

    /// Sets the AccessKey secret.
    pub fn access_key(mut self, value: impl Into<String>) -> Self {
        self.set.access_key = Some(value.into());
        self
    }

    /// Sets the STS security token.
    pub fn sts_token(mut self, value: impl Into<String>) -> Self {
        self.set.sts_token = Some(value.into());
        self
    }

    /// Sets the endpoint: an `http(s)://` URL, a `file://` URL or a path.
    pub fn endpoint(mut self, value: impl Into<String>) -> Self {
        self.set.endpoint = Some(value.into());
        self
    }

    /// Sets the tunnel endpoint.
    pub fn tunnel_endpoint(mut self, value: impl Into<String>) -> Self {
        self.set.tunnel_endpoint = Some(value.into());
        self
    }

    /// Sets the default project.
    pub fn project(mut self, value: impl Into<String>) -> Self {
        self.set.project = Some(value.into());
        self
    }

    /// Sets the quota name.
    pub fn quota_name(mut self, value: impl Into<String>) -> Self {
        self.set.quota_name = Some(value.into());
        self
    }

    /// Sets the region used for V4 signing.
    pub fn region(mut self, value: impl Into<String>) -> Self {
        self.set.region = Some(value.into());
        self
    }

    /// Sets the transport of an http(s) endpoint.
    pub fn transport(mut self, value: Transport) -> Self {
        self.set.transport = Some(value.as_str().to_string());
        self
    }

    /// Sets the body compression of reads over HTTP.
    pub fn read_compression(mut self, value: ReadCompression) -> Self {
        self.set.read_compression = Some(value.name().to_string());
        self
    }

    /// Sets the local warehouse directory used when there is no endpoint.
    pub fn warehouse(mut self, value: impl Into<PathBuf>) -> Self {
        self.set.warehouse = Some(value.into());
        self
    }

    /// The configuration: the base's values overridden by the explicit settings, with
    /// empty strings turned into `None`.
    ///
    /// [`Config::source`] is the base's source when nothing is overridden, `"builder"`
    /// without a base (or over the defaults), and `"<base source> with builder overrides"`
    /// otherwise.
    pub fn build(self) -> Config {
        let set = self.set;
        let overridden = set != Config::default();
        let base = self.base.unwrap_or_default();
        let pick = |over: Option<String>, base: Option<String>| {
            over.or(base)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let source = match (base.source.as_str(), overridden) {
            ("", _) | (SOURCE_DEFAULTS, true) => SOURCE_BUILDER.to_string(),
            (s, false) => s.to_string(),
            (s, true) if s == SOURCE_BUILDER || s.ends_with(" with builder overrides") => {
                s.to_string()
            }
            (s, true) => format!("{s} with builder overrides"),
        };
        Config {
            access_id: pick(set.access_id, base.access_id),
            access_key: pick(set.access_key, base.access_key),
            sts_token: pick(set.sts_token, base.sts_token),
            endpoint: pick(set.endpoint, base.endpoint),
            tunnel_endpoint: pick(set.tunnel_endpoint, base.tunnel_endpoint),
            project: pick(set.project, base.project),
            quota_name: pick(set.quota_name, base.quota_name),
            region: pick(set.region, base.region),
            transport: pick(set.transport, base.transport),
            read_compression: pick(set.read_compression, base.read_compression),
            warehouse: set
                .warehouse
                .or(base.warehouse)
                .filter(|w| !w.as_os_str().is_empty()),
            source,
            unknown_keys: base.unknown_keys,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// An environment lookup over fixed pairs.
    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn config_error(err: Error) -> (String, String) {
        match err {
            Error::Config {
                source_name,
                message,
            } => (source_name, message),
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    const PAI_FILE: &str = "access_id=LTAIid\naccess_key=s3cr3t\n\
        end_point=https://service.cn-hangzhou.maxcompute.aliyun.com/api\nproject=demo\n";

    #[test]
    fn file_without_section_header() {
        let c = Config::from_ini_str(PAI_FILE, "/etc/odps.ini").unwrap();
        assert_eq!(c.access_id.as_deref(), Some("LTAIid"));
        assert_eq!(c.access_key.as_deref(), Some("s3cr3t"));
        assert_eq!(
            c.endpoint.as_deref(),
            Some("https://service.cn-hangzhou.maxcompute.aliyun.com/api")
        );
        assert_eq!(c.project.as_deref(), Some("demo"));
        assert_eq!(c.source, "/etc/odps.ini");
        assert!(c.unknown_keys.is_empty());
        assert_eq!(
            c.backend().unwrap(),
            Backend::Rest {
                endpoint: "https://service.cn-hangzhou.maxcompute.aliyun.com/api".into()
            }
        );
    }

    #[test]
    fn file_with_section_header_named_section_wins() {
        let text = "project=outer\nquota_name=q1\n[odps]\naccess_id=id\naccess_key=key\n\
                    project=inner\nend_point=http://127.0.0.1:8080/\n[other]\nproject=ignored\n";
        let c = Config::from_ini_str(text, "f.ini").unwrap();
        assert_eq!(c.project.as_deref(), Some("inner"));
        assert_eq!(c.quota_name.as_deref(), Some("q1"));
        assert_eq!(c.access_id.as_deref(), Some("id"));
        assert_eq!(
            c.backend().unwrap(),
            Backend::Rest {
                endpoint: "http://127.0.0.1:8080".into()
            }
        );

        let only_section = Config::from_ini_str("[default]\nproject=p\n", "f.ini").unwrap();
        assert_eq!(only_section.project.as_deref(), Some("p"));
    }

    #[test]
    fn endpoint_spellings() {
        let old = Config::from_ini_str("odps_endpoint=http://h/api", "f").unwrap();
        assert_eq!(old.endpoint.as_deref(), Some("http://h/api"));
        let both = Config::from_ini_str("odps_endpoint=http://old\nend_point=http://new", "f");
        assert_eq!(both.unwrap().endpoint.as_deref(), Some("http://new"));
        let both = Config::from_ini_str("end_point=http://new\nodps_endpoint=http://old", "f");
        assert_eq!(both.unwrap().endpoint.as_deref(), Some("http://new"));
        // The named section wins even with an older spelling.
        let sections = Config::from_ini_str(
            "end_point=http://general\n[s]\nodps_endpoint=http://named",
            "f",
        );
        assert_eq!(sections.unwrap().endpoint.as_deref(), Some("http://named"));
    }

    #[test]
    fn comments_quotes_case_and_whitespace() {
        let text = "# a comment\n; another\n\nACCESS_ID = \"quoted id\" \n  Access_Key='k=v;#x'\n\
                    End_Point =   http://h  \nproject=\nRegion=cn-beijing\nwarehouse=C:\\data\\wh\n";
        let c = Config::from_ini_str(text, "f").unwrap();
        assert_eq!(c.access_id.as_deref(), Some("quoted id"));
        assert_eq!(c.access_key.as_deref(), Some("k=v;#x"));
        assert_eq!(c.endpoint.as_deref(), Some("http://h"));
        assert_eq!(c.project, None, "an empty value is unset");
        assert_eq!(c.region.as_deref(), Some("cn-beijing"));
        assert_eq!(
            c.warehouse,
            Some(PathBuf::from("C:\\data\\wh")),
            "backslashes are kept"
        );
    }

    #[test]
    fn unknown_keys_are_collected() {
        let text = "access_id=a\nlog_view_host=http://logview\nFoo=1\nfoo=2\n[s]\nbar=3\n";
        let c = Config::from_ini_str(text, "f").unwrap();
        assert_eq!(c.unknown_keys, vec!["log_view_host", "foo", "bar"]);
        assert_eq!(c.access_id.as_deref(), Some("a"));
    }

    #[test]
    fn all_keys_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odps.ini");
        std::fs::write(
            &path,
            "access_id=a\naccess_key=k\nsts_token=t\nend_point=https://e/api\n\
             tunnel_endpoint=https://dt.cn-shanghai.maxcompute.aliyun.com\nproject=p\n\
             quota_name=q\nregion=r\nwarehouse=/w\n",
        )
        .unwrap();
        let c = Config::from_file(&path).unwrap();
        let expected = Config {
            access_id: Some("a".into()),
            access_key: Some("k".into()),
            sts_token: Some("t".into()),
            endpoint: Some("https://e/api".into()),
            tunnel_endpoint: Some("https://dt.cn-shanghai.maxcompute.aliyun.com".into()),
            project: Some("p".into()),
            quota_name: Some("q".into()),
            region: Some("r".into()),
            warehouse: Some("/w".into()),
            transport: None,
            read_compression: None,
            source: path.display().to_string(),
            unknown_keys: vec![],
        };
        assert_eq!(c, expected);

        // Through ODPS_CONFIG_FILE_PATH, which wins over the environment variables.
        let path_str = path.display().to_string();
        let env = env_of(&[(CONFIG_ENV, &path_str), (ACCESS_KEY_ID_ENV, "from-env")]);
        assert_eq!(Config::load_from(&env).unwrap(), expected);
    }

    #[test]
    fn missing_file_names_path_and_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.ini");
        let env = env_of(&[(CONFIG_ENV, &path.display().to_string())]);
        let err = Config::load_from(&env).unwrap_err();
        let shown = err.to_string();
        assert!(
            matches!(&err, Error::ConfigFileUnreadable { path: p, named_by: Some(CONFIG_ENV), .. } if *p == path),
            "{err:?}"
        );
        assert!(
            shown.contains(&path.display().to_string()) && shown.contains(CONFIG_ENV),
            "{shown}"
        );
        let err = Config::from_file(&path).unwrap_err();
        assert!(
            matches!(&err, Error::ConfigFileUnreadable { path: p, named_by: None, .. } if *p == path),
            "{err:?}"
        );
    }

    #[test]
    fn empty_config_variable_falls_back_to_environment() {
        let env = env_of(&[(CONFIG_ENV, "  "), (PROJECT_ENV, "p")]);
        let c = Config::load_from(&env).unwrap();
        assert_eq!(c.project.as_deref(), Some("p"));
        assert_eq!(c.source, SOURCE_ENVIRONMENT);
    }

    #[test]
    fn bad_endpoint_names_file_and_key() {
        let err = Config::from_ini_str("end_point=ftp://x", "/etc/odps.ini").unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration error in /etc/odps.ini: key `end_point`: \"ftp://x\" is not an \
             http(s):// URL, a file:// URL or a path"
        );
        let (source, message) =
            config_error(Config::from_ini_str("ODPS_ENDPOINT=s3://b", "/f.ini").unwrap_err());
        assert_eq!(source, "/f.ini");
        assert!(message.starts_with("key `odps_endpoint`:"), "{message}");

        let (_, message) =
            config_error(Config::from_ini_str("end_point=https://", "f").unwrap_err());
        assert!(message.contains("no host"), "{message}");
        let (_, message) =
            config_error(Config::from_ini_str("end_point=localhost:8080", "f").unwrap_err());
        assert!(message.contains("http://localhost:8080"), "{message}");
        let (_, message) =
            config_error(Config::from_ini_str("tunnel_endpoint=/tmp/x", "f").unwrap_err());
        assert!(message.starts_with("key `tunnel_endpoint`:"), "{message}");

        let env = env_of(&[(ENDPOINT_ENV, "ftp://x")]);
        let (source, message) = config_error(Config::load_from(&env).unwrap_err());
        assert_eq!(source, "environment variable ODPS_ENDPOINT");
        assert!(message.contains("ftp://x"), "{message}");

        let built = Config::builder().endpoint("gopher://x").build();
        let (source, message) = config_error(built.backend().unwrap_err());
        assert_eq!(source, "builder");
        assert!(message.starts_with("key `endpoint`:"), "{message}");
    }

    #[test]
    fn rest_endpoint_needs_access_key() {
        let c =
            Config::from_ini_str("access_id=a\nend_point=https://h/api", "/etc/odps.ini").unwrap();
        let (source, message) = config_error(c.validate(false).unwrap_err());
        assert_eq!(source, "/etc/odps.ini");
        assert!(
            message.starts_with("key `access_key`: missing"),
            "{message}"
        );
        // Anonymous access is fine without any key, but not with half of one.
        assert_eq!(
            c.backend().unwrap(),
            Backend::Rest {
                endpoint: "https://h/api".into()
            }
        );
        assert!(c.validate(true).is_err());
        let anonymous = Config::from_ini_str("end_point=https://h/api", "f").unwrap();
        assert!(anonymous.validate(true).is_ok());
        let (_, message) = config_error(anonymous.validate(false).unwrap_err());
        assert!(message.starts_with("key `access_id`"), "{message}");

        let env = env_of(&[(ENDPOINT_ENV, "https://h"), (ACCESS_KEY_ID_ENV, "a")]);
        let c = Config::load_from(&env).unwrap();
        let (source, _) = config_error(c.validate(false).unwrap_err());
        assert_eq!(
            source,
            "environment variable ALIBABA_CLOUD_ACCESS_KEY_SECRET"
        );

        // Local backends need no credentials.
        let local = Config::from_ini_str("end_point=/tmp/wh", "f").unwrap();
        assert!(local.validate(false).is_ok());
    }

    #[test]
    fn credentials() {
        let c = Config::from_ini_str(
            "access_id= id \naccess_key=key\nsts_token=tok\nend_point=https://h",
            "f",
        )
        .unwrap();
        let creds = c.credentials().unwrap();
        assert_eq!(creds.access_id, "id");
        assert_eq!(creds.access_key, "key");
        assert_eq!(creds.sts_token.as_deref(), Some("tok"));
        assert_eq!(c.optional_credentials().unwrap(), Some(creds));

        let none = Config::from_ini_str("end_point=https://h", "/etc/odps.ini").unwrap();
        assert_eq!(none.optional_credentials().unwrap(), None);
        let err = none.credentials().unwrap_err().to_string();
        assert_eq!(
            err,
            "configuration error in /etc/odps.ini: key `access_id`: missing: the endpoint \
             https://h needs both access_id and access_key"
        );
        let by_hand = Config {
            endpoint: Some("ftp://x".into()),
            ..Config::default()
        };
        let (source, message) = config_error(by_hand.backend().unwrap_err());
        assert_eq!(source, "builder");
        assert!(message.starts_with("key `endpoint`:"), "{message}");
        let half = Config::builder().access_id("a").build();
        let (source, message) = config_error(half.optional_credentials().unwrap_err());
        assert_eq!(source, "builder");
        assert!(
            message.starts_with("key `access_key`: missing"),
            "{message}"
        );
    }

    #[test]
    fn environment_fallback() {
        let env = env_of(&[
            (ACCESS_KEY_ID_ENV, " id "),
            (ACCESS_KEY_SECRET_ENV, "secret"),
            (SECURITY_TOKEN_ENV, "sts"),
            (
                ENDPOINT_ENV,
                "https://service.cn-beijing.maxcompute.aliyun.com/api",
            ),
            (PROJECT_ENV, "p"),
            (
                TUNNEL_ENDPOINT_ENV,
                "https://dt.cn-beijing.maxcompute.aliyun.com",
            ),
            (REGION_ENV, "cn-beijing"),
        ]);
        let c = Config::load_from(&env).unwrap();
        assert_eq!(c.access_id.as_deref(), Some("id"));
        assert_eq!(c.access_key.as_deref(), Some("secret"));
        assert_eq!(c.sts_token.as_deref(), Some("sts"));
        assert_eq!(c.project.as_deref(), Some("p"));
        assert_eq!(c.region.as_deref(), Some("cn-beijing"));
        assert_eq!(
            c.tunnel_endpoint.as_deref(),
            Some("https://dt.cn-beijing.maxcompute.aliyun.com")
        );
        assert_eq!(c.source, SOURCE_ENVIRONMENT);
        assert!(c.validate(false).is_ok());

        let nothing = Config::load_from(&env_of(&[("HOME", "/home/u")])).unwrap();
        assert_eq!(
            nothing,
            Config {
                source: SOURCE_DEFAULTS.into(),
                ..Config::default()
            }
        );
    }

    #[test]
    fn builder_overrides_loaded_values() {
        let base = Config::from_ini_str(PAI_FILE, "/etc/odps.ini").unwrap();
        let c = Config::builder()
            .base(base.clone())
            .project("other")
            .access_key("k2")
            .build();
        assert_eq!(c.project.as_deref(), Some("other"));
        assert_eq!(c.access_key.as_deref(), Some("k2"));
        assert_eq!(c.access_id.as_deref(), Some("LTAIid"));
        assert_eq!(c.endpoint, base.endpoint);
        assert_eq!(c.source, "/etc/odps.ini with builder overrides");

        let unchanged = Config::builder().base(base.clone()).build();
        assert_eq!(unchanged, base);

        // An empty override clears: back to the default warehouse.
        let cleared = Config::builder()
            .base(base)
            .endpoint("")
            .warehouse("/wh")
            .build();
        assert_eq!(cleared.endpoint, None);
        assert_eq!(
            cleared.backend().unwrap(),
            Backend::Local { root: "/wh".into() }
        );

        let alone = Config::builder()
            .access_id("a")
            .access_key("k")
            .sts_token("t")
            .endpoint("http://h/")
            .tunnel_endpoint("http://t")
            .project("p")
            .quota_name("q")
            .region("r")
            .build();
        assert_eq!(alone.source, SOURCE_BUILDER);
        assert_eq!(alone.sts_token.as_deref(), Some("t"));
        assert_eq!(alone.quota_name.as_deref(), Some("q"));
        assert_eq!(alone.tunnel_endpoint.as_deref(), Some("http://t"));
        assert_eq!(alone.region_for_signing().as_deref(), Some("r"));
        assert_eq!(
            alone.backend().unwrap(),
            Backend::Rest {
                endpoint: "http://h".into()
            }
        );
    }

    #[test]
    fn local_endpoints() {
        let env = env_of(&[("HOME", "/home/u")]);
        let local = |endpoint: &str| {
            Config::builder()
                .endpoint(endpoint)
                .build()
                .backend_with_env(&env)
                .unwrap()
        };
        assert_eq!(
            local("file:///data/wh"),
            Backend::Local {
                root: "/data/wh".into()
            }
        );
        assert_eq!(
            local("file://localhost/data/wh"),
            Backend::Local {
                root: "/data/wh".into()
            }
        );
        assert_eq!(
            local("FILE:///a%20b"),
            Backend::Local {
                root: "/a b".into()
            }
        );
        assert_eq!(
            local("/abs/wh/"),
            Backend::Local {
                root: "/abs/wh/".into()
            }
        );
        assert_eq!(
            local("rel/wh"),
            Backend::Local {
                root: "rel/wh".into()
            }
        );
        assert_eq!(
            local("./wh"),
            Backend::Local {
                root: "./wh".into()
            }
        );
        assert_eq!(
            local("~/wh"),
            Backend::Local {
                root: "/home/u/wh".into()
            }
        );
        assert_eq!(
            local("file://~/wh"),
            Backend::Local {
                root: "/home/u/wh".into()
            }
        );
        assert_eq!(
            local("~"),
            Backend::Local {
                root: "/home/u".into()
            }
        );

        let from_file = Config::from_ini_str("end_point=file:///srv/wh", "f").unwrap();
        assert_eq!(
            from_file.backend().unwrap(),
            Backend::Local {
                root: "/srv/wh".into()
            }
        );

        // `~` without HOME is an error naming the key.
        let no_home = Config::builder().endpoint("~/wh").build();
        let (_, message) = config_error(no_home.backend_with_env(&env_of(&[])).unwrap_err());
        assert!(message.contains("HOME"), "{message}");

        // The warehouse key applies when there is no endpoint, and the endpoint wins over it.
        let wh = Config::from_ini_str("warehouse=~/mine", "f").unwrap();
        assert_eq!(
            wh.backend_with_env(&env).unwrap(),
            Backend::Local {
                root: "/home/u/mine".into()
            }
        );
        let both = Config::from_ini_str("warehouse=/a\nend_point=/b", "f").unwrap();
        assert_eq!(
            both.backend_with_env(&env).unwrap(),
            Backend::Local { root: "/b".into() }
        );
    }

    #[test]
    fn default_warehouse_chain() {
        let all = [
            (WAREHOUSE_ENV, "/explicit"),
            ("XDG_DATA_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(default_warehouse(&env_of(&all)), PathBuf::from("/explicit"));
        assert_eq!(
            default_warehouse(&env_of(&all[1..])),
            PathBuf::from("/xdg/paiio/warehouse")
        );
        assert_eq!(
            default_warehouse(&env_of(&all[2..])),
            PathBuf::from("/home/u/.local/share/paiio/warehouse")
        );
        assert_eq!(
            default_warehouse(&env_of(&[])),
            PathBuf::from("./.paiio-warehouse")
        );
        // Empty and relative XDG_DATA_HOME values are ignored; `~` is expanded.
        let env = env_of(&[
            (WAREHOUSE_ENV, ""),
            ("XDG_DATA_HOME", "rel"),
            ("HOME", "/h"),
        ]);
        assert_eq!(
            default_warehouse(&env),
            PathBuf::from("/h/.local/share/paiio/warehouse")
        );
        let env = env_of(&[(WAREHOUSE_ENV, "~/wh"), ("HOME", "/h")]);
        assert_eq!(default_warehouse(&env), PathBuf::from("/h/wh"));

        // No endpoint selects the default warehouse.
        let c = Config::load_from(&env_of(&all[1..])).unwrap();
        assert_eq!(
            c.backend_with_env(&env_of(&all)).unwrap(),
            Backend::Local {
                root: "/explicit".into()
            }
        );
    }

    #[test]
    fn region_parsing() {
        let region = |endpoint: &str| {
            Config::builder()
                .endpoint(endpoint)
                .build()
                .region_for_signing()
        };
        assert_eq!(
            region("https://service.cn-hangzhou.maxcompute.aliyun.com/api").as_deref(),
            Some("cn-hangzhou")
        );
        assert_eq!(
            region("http://service.cn-shanghai-vpc.maxcompute.aliyun-inc.com/api").as_deref(),
            Some("cn-shanghai")
        );
        assert_eq!(
            region("https://service.ap-southeast-1-intranet.maxcompute.aliyun-inc.com:443/api")
                .as_deref(),
            Some("ap-southeast-1")
        );
        assert_eq!(region("http://127.0.0.1:8080/api"), None);
        assert_eq!(region("http://localhost:8080"), None);
        assert_eq!(region("http://[::1]:8080"), None);
        assert_eq!(region("http://10.0.0.5/api"), None);
        assert_eq!(region("https://service.odps.aliyun.com/api"), None);
        assert_eq!(region("https://odps.example.com/api"), None);
        assert_eq!(region("/local/wh"), None);
        assert_eq!(Config::default().region_for_signing(), None);
        let explicit = Config::builder()
            .endpoint("https://service.cn-hangzhou.maxcompute.aliyun.com/api")
            .region("cn-beijing")
            .build();
        assert_eq!(explicit.region_for_signing().as_deref(), Some("cn-beijing"));
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = Config::from_ini_str(
            "access_id=visible-id\naccess_key=TOPSECRETKEY\nsts_token=TOPSECRETTOKEN",
            "f",
        )
        .unwrap();
        let shown = format!(
            "{c:?} {:?}",
            Config::builder().base(c.clone()).access_key("NEWSECRET")
        );
        assert!(!shown.contains("TOPSECRET"), "{shown}");
        assert!(!shown.contains("NEWSECRET"), "{shown}");
        assert!(shown.contains("visible-id"), "{shown}");
        assert!(shown.contains(REDACTED), "{shown}");
    }

    #[test]
    fn indented_comments_and_crlf() {
        let text = "  # note: indented\r\n\taccess_id = a\r\n ; x=y\r\n[s]\r\n  project=p\r\n";
        let c = Config::from_ini_str(text, "f").unwrap();
        assert_eq!(c.access_id.as_deref(), Some("a"));
        assert_eq!(c.project.as_deref(), Some("p"));
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
    }

    #[test]
    fn invalid_ini_names_the_source() {
        let (source, message) = config_error(
            Config::from_ini_str("access_id=a\nSECRETLINE\nproject=p", "/x.ini").unwrap_err(),
        );
        assert_eq!(source, "/x.ini");
        assert!(
            message.contains("line 2") && !message.contains("SECRET"),
            "{message}"
        );
        let (source, message) =
            config_error(Config::from_ini_str("[unterminated\nkey=v", "/x.ini").unwrap_err());
        assert_eq!(source, "/x.ini");
        assert!(message.contains("line 1"), "{message}");
    }

    #[test]
    fn transport_from_file_builder_and_environment() {
        let none = env_of(&[]);
        let plain =
            Config::from_ini_str("access_id=a\naccess_key=k\nend_point=http://h/api\n", "f")
                .unwrap();
        assert_eq!(plain.transport, None);
        assert_eq!(plain.transport_with_env(&none).unwrap(), Transport::Auto);
        let tunnel =
            Config::from_ini_str("end_point=http://h/api\nTransport = Tunnel\n", "f").unwrap();
        assert_eq!(tunnel.transport_with_env(&none).unwrap(), Transport::Tunnel);
        // The environment overrides the file.
        let env = env_of(&[(TRANSPORT_ENV, " storage ")]);
        assert_eq!(tunnel.transport_with_env(&env).unwrap(), Transport::Storage);
        let (source, message) =
            config_error(Config::from_ini_str("transport=carrier-pigeon\n", "/x.ini").unwrap_err());
        assert_eq!(source, "/x.ini");
        assert!(message.starts_with("key `transport`:"), "{message}");
        let (source, message) = config_error(
            plain
                .transport_with_env(&env_of(&[(TRANSPORT_ENV, "nope")]))
                .unwrap_err(),
        );
        assert_eq!(source, format!("environment variable {TRANSPORT_ENV}"));
        assert!(message.contains("nope"), "{message}");
        let c = Config::load_from(&env_of(&[
            (ENDPOINT_ENV, "http://h/api"),
            (TRANSPORT_ENV, "tunnel"),
        ]))
        .unwrap();
        assert_eq!(c.transport.as_deref(), Some("tunnel"));
        // Over a file named by ODPS_CONFIG_FILE_PATH too, so that the loaded configuration
        // says which transport it selects.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odps.ini");
        std::fs::write(&path, "end_point=http://h/api\ntransport=storage\n").unwrap();
        let path_text = path.display().to_string();
        let from_file =
            |t: &str| Config::load_from(&env_of(&[(CONFIG_ENV, &path_text), (TRANSPORT_ENV, t)]));
        assert_eq!(from_file("").unwrap().transport.as_deref(), Some("storage"));
        assert_eq!(
            from_file("Tunnel").unwrap().transport.as_deref(),
            Some("Tunnel")
        );
        assert!(from_file("bogus").is_err());
        let built = Config::builder()
            .base(plain)
            .transport(Transport::Tunnel)
            .build();
        assert_eq!(built.transport_with_env(&none).unwrap(), Transport::Tunnel);
    }

    #[test]
    fn read_compression_from_file_builder_and_environment() {
        use crate::protocol::codec::BodyEncoding;
        let none = env_of(&[]);
        let plain = Config::from_ini_str("end_point=http://h/api\n", "f").unwrap();
        assert_eq!(
            plain.read_compression_with_env(&none).unwrap(),
            ReadCompression::Auto
        );
        let zstd =
            Config::from_ini_str("end_point=http://h/api\nread_compression = ZSTD\n", "f").unwrap();
        assert_eq!(
            zstd.read_compression_with_env(&none).unwrap(),
            ReadCompression::Fixed(BodyEncoding::Zstd)
        );
        let env = env_of(&[(READ_COMPRESSION_ENV, "none")]);
        assert_eq!(
            zstd.read_compression_with_env(&env).unwrap(),
            ReadCompression::Fixed(BodyEncoding::Identity)
        );
        let (_, message) =
            config_error(Config::from_ini_str("read_compression=gzip\n", "/x.ini").unwrap_err());
        assert!(message.starts_with("key `read_compression`:"), "{message}");
        assert!(
            message.contains("expected auto, none, zstd or lz4"),
            "{message}"
        );
        let e = zstd
            .read_compression_with_env(&env_of(&[(READ_COMPRESSION_ENV, "brotli")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(READ_COMPRESSION_ENV) && e.contains("brotli"),
            "{e}"
        );
        let c = Config::load_from(&env_of(&[
            (ENDPOINT_ENV, "http://h/api"),
            (READ_COMPRESSION_ENV, "lz4"),
        ]))
        .unwrap();
        assert_eq!(c.read_compression.as_deref(), Some("lz4"));
        let built = Config::builder()
            .base(plain)
            .read_compression(ReadCompression::Fixed(BodyEncoding::Lz4Frame))
            .build();
        assert_eq!(
            built.read_compression_with_env(&none).unwrap(),
            ReadCompression::Fixed(BodyEncoding::Lz4Frame)
        );
    }
}
