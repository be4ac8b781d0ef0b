//! Request signing (legacy HMAC-SHA1 and V4) and its verification.
//!
//! MaxCompute signs every REST and storage request with an `Authorization` header computed
//! over a *canonical string* (see `docs/storage-api.md` §3):
//!
//! * [`canonical_string`] builds that string exactly as PyODPS (and the Java SDK) do, with
//!   all of their decoding quirks;
//! * [`sign`] and [`sign_request`] are the client side: legacy
//!   `ODPS {id}:{base64(HMAC-SHA1(secret, canonical))}` and V4
//!   `ODPS {id}/{yyyymmdd}/{region}/odps/aliyun_v4_request:{sig}`;
//! * [`Verifier`] is the server side: it checks the signature in constant time, the `Date`
//!   header against a clock-skew window, and an STS token where one is configured.
//!
//! Everything here runs on untrusted network input and never panics on any input.
//!
//! Failures are [`Error::Unauthenticated`] with one of the PyODPS exception class names as
//! the code ([`SIGNATURE_NOT_MATCH`], [`AUTHORIZATION_REQUIRED`],
//! [`AUTHENTICATION_REQUEST_EXPIRED`]), so that a server answering with that code makes the
//! Python client raise the matching `odps.errors` class.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use md5::{Digest as _, Md5};
use percent_encoding::percent_decode_str;
use sha1::Sha1;
use sha2::Sha256;

use crate::error::{Error, Result};

type HmacSha1 = Hmac<Sha1>;
type HmacSha256 = Hmac<Sha256>;

/// Error code: the signature (or anything it covers, or the access id) does not match.
pub const SIGNATURE_NOT_MATCH: &str = "SignatureNotMatch";
/// Error code: the `Authorization` header (or the STS token) is missing or malformed.
pub const AUTHORIZATION_REQUIRED: &str = "AuthorizationRequired";
/// Error code: the `Date` header is missing, malformed or outside the clock-skew window.
pub const AUTHENTICATION_REQUEST_EXPIRED: &str = "AuthenticationRequestExpired";

/// The `Authorization` header name.
pub const AUTHORIZATION_HEADER: &str = "Authorization";
/// The `Date` header name.
pub const DATE_HEADER: &str = "Date";
/// The header that carries an STS security token. It is added after signing and is not signed.
pub const STS_TOKEN_HEADER: &str = "authorization-sts-token";

/// The V4 signature prefix PyODPS uses unless `options.signature_prefix` is set.
pub const DEFAULT_V4_PREFIX: &str = "aliyun_v4";
/// The default clock-skew window of a [`Verifier`]: 15 minutes either way.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// The scheme word of every `Authorization` header.
const AUTH_SCHEME: &str = "ODPS";
/// The service name in the V4 credential scope.
const V4_SERVICE: &str = "odps";
/// The last second `httpdate` can format: 9999-12-31T23:59:59Z.
const MAX_HTTP_DATE_SECS: u64 = 253_402_300_799;

// ---------------------------------------------------------------------------------------
// Credentials and signature versions
// ---------------------------------------------------------------------------------------

/// An access id with its secret, and the STS security token of temporary credentials.
///
/// `Debug` prints the access id only; the secret and the token are redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The AccessKey id (for STS: the temporary id, usually `STS.…`).
    pub access_id: String,
    /// The AccessKey secret.
    pub access_key: String,
    /// The STS security token, sent unsigned in [`STS_TOKEN_HEADER`].
    pub sts_token: Option<String>,
}

impl Credentials {
    /// Long-term credentials: an access id and its secret.
    pub fn new(access_id: impl Into<String>, access_key: impl Into<String>) -> Self {
        Self {
            access_id: access_id.into(),
            access_key: access_key.into(),
            sts_token: None,
        }
    }

    /// The same credentials with an STS security token.
    pub fn with_sts_token(mut self, token: impl Into<String>) -> Self {
        self.sts_token = Some(token.into());
        self
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_id", &self.access_id)
            .field("access_key", &"<redacted>")
            .field("sts_token", &self.sts_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Which signature scheme signs (or signed) a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SignatureVersion {
    /// `ODPS {id}:{base64(HMAC-SHA1(secret, canonical))}` (§3.2). Used by every V1 and
    /// storage_api_v2 storage call, and by any client that knows no region.
    Legacy,
    /// The V4 scheme (§3.3), scoped to a region such as `cn-hangzhou`.
    V4 {
        /// The region of the credential scope.
        region: String,
    },
}

/// Who signed a request that [`Verifier::verify`] accepted, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    /// The access id from the `Authorization` header.
    pub access_id: String,
    /// The signature scheme the request used.
    pub version: SignatureVersion,
}

// ---------------------------------------------------------------------------------------
// Canonical string (§3.1)
// ---------------------------------------------------------------------------------------

/// Builds the canonical string (the "string to sign") of a request, exactly as PyODPS does.
///
/// * `method` is upper-cased.
/// * `relative_url` is the request URL with the client's endpoint base cut off, still
///   percent-encoded as it is on the wire: for the REST endpoint `http://h:p/api` that is
///   e.g. `/projects/p/tunnel?service`, for a tunnel endpoint `http://h:p` e.g.
///   `/api/storage/v2?Action=…`.
/// * `headers` are all request headers; names match case-insensitively, and when a name
///   occurs more than once the last value counts.
///
/// The string is, joined by `\n` with no trailing newline: the method; the values of
/// `content-md5`, `content-type` (each `""` when absent) and `Date` (`""` when absent;
/// [`sign_request`] adds one first); `name:value` for every `x-odps-*` header (lower-cased
/// name) and every `x-odps-*` query parameter, sorted by name; the canonical resource.
///
/// Quirks reproduced on purpose, because the clients sign that way:
///
/// * the whole relative URL is percent-decoded once (Python `unquote`) **before** it is
///   split, and the query is decoded again by `parse_qsl`, so `%2520` ends up as a space,
///   `+` and `%2B` become spaces, and an encoded `&` (`%26`) splits a parameter in two;
/// * the split follows Python `urlparse(…, allow_fragments=False)`: tab, CR and LF are
///   dropped and leading control characters and spaces stripped, a `//host` part or a
///   `scheme:` is not part of the path, and a `;params` part of the last path segment is
///   dropped from the resource;
/// * parameters are sorted by key in byte order (upper case before lower case), a repeated
///   key keeps its last value, empty `&&` segments are skipped, a parameter with an empty
///   value is written as the bare key, and a non-empty query that yields no parameter still
///   leaves the `?`;
/// * like PyODPS, a header whose lower-cased name starts with `x-odps` but not `x-odps-` is
///   signed, as a bare value.
pub fn canonical_string(
    method: &str,
    relative_url: &str,
    headers: &[(impl AsRef<str>, impl AsRef<str>)],
) -> String {
    let decoded = unquote(relative_url);
    let (path, query) = split_path_query(&decoded);
    let params = parse_qsl(&query);

    let mut resource = path;
    if !query.is_empty() {
        resource.push('?');
        let entries: Vec<Cow<'_, str>> = params
            .iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    Cow::Borrowed(k.as_str())
                } else {
                    Cow::Owned(format!("{k}={v}"))
                }
            })
            .collect();
        resource.push_str(&entries.join("&"));
    }

    let mut signed: BTreeMap<String, &str> = BTreeMap::new();
    signed.insert("content-md5".to_owned(), "");
    signed.insert("content-type".to_owned(), "");
    for (name, value) in headers {
        let name = name.as_ref().to_lowercase();
        if name == "content-type" || name == "content-md5" || name.starts_with("x-odps") {
            signed.insert(name, value.as_ref());
        }
    }
    signed.insert(
        "date".to_owned(),
        header_value(headers, DATE_HEADER).unwrap_or(""),
    );
    for (key, value) in &params {
        if key.starts_with("x-odps-") {
            signed.insert(key.clone(), value.as_str());
        }
    }

    let mut out = method.to_ascii_uppercase();
    for (name, value) in &signed {
        out.push('\n');
        if name.starts_with("x-odps-") {
            out.push_str(name);
            out.push(':');
        }
        out.push_str(value);
    }
    out.push('\n');
    out.push_str(&resource);
    out
}

/// Python `urllib.parse.unquote`: `%XX` sequences are decoded, invalid ones are kept as they
/// are, and byte sequences that are not UTF-8 become U+FFFD.
fn unquote(s: &str) -> Cow<'_, str> {
    percent_decode_str(s).decode_utf8_lossy()
}

/// URL schemes for which Python's `urlparse` splits `;params` off the path.
const USES_PARAMS: &[&str] = &[
    "", "ftp", "hdl", "prospero", "http", "imap", "https", "shttp", "rtsp", "rtspu", "sip", "sips",
    "mms", "sftp", "tel",
];

/// Splits a decoded relative URL into the path and the query the way Python's
/// `urlparse(url, allow_fragments=False)` does (see [`canonical_string`]).
fn split_path_query(url: &str) -> (String, String) {
    // `urlsplit` strips leading C0 controls and spaces, and removes tab, CR and LF.
    let cleaned: String = url
        .trim_start_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\r' | '\n'))
        .collect();

    let mut rest = cleaned.as_str();
    let mut scheme = String::new();
    if let Some(i) = rest.find(':') {
        let candidate = &rest[..i];
        let starts_alpha = candidate
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic());
        let all_scheme_chars = candidate
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if starts_alpha && all_scheme_chars {
            scheme = candidate.to_ascii_lowercase();
            rest = &rest[i + 1..];
        }
    }
    if let Some(after) = rest.strip_prefix("//") {
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        rest = &after[end..];
    }
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = if USES_PARAMS.contains(&scheme.as_str()) {
        strip_params(path)
    } else {
        path
    };
    (path.to_owned(), query.to_owned())
}

/// Python's `_splitparams`: drops a `;…` part of the last path segment.
fn strip_params(path: &str) -> &str {
    let from = path.rfind('/').unwrap_or(0);
    match path[from..].find(';') {
        Some(i) => &path[..from + i],
        None => path,
    }
}

/// Python `parse_qsl(query, keep_blank_values=True)` folded into a map: the last value of a
/// repeated key wins, and the map iterates in byte order of the keys.
fn parse_qsl(query: &str) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    for segment in query.split('&') {
        if segment.is_empty() {
            continue;
        }
        let (name, value) = segment.split_once('=').unwrap_or((segment, ""));
        let name = unquote(&name.replace('+', " ")).into_owned();
        let value = unquote(&value.replace('+', " ")).into_owned();
        params.insert(name, value);
    }
    params
}

/// Whether a header takes part in the signature, or in the check of it: `Content-MD5`,
/// `Content-Type`, `Date`, every `x-odps*` header, `Authorization` and the STS token header
/// (names compared case-insensitively). Legacy and V4 signatures sign the same headers.
pub fn is_signed_header(name: &str) -> bool {
    let name = name.trim();
    [
        "content-md5",
        "content-type",
        "date",
        "authorization",
        STS_TOKEN_HEADER,
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
        || name
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case("x-odps"))
}

/// The first header that [`is_signed_header`] and that occurs more than once, lower-cased.
///
/// The signature covers one value of such a header (the last), while a server may act on
/// another (the first), so a request that repeats one is ambiguous and must be refused.
pub fn repeated_signed_header(headers: &[(impl AsRef<str>, impl AsRef<str>)]) -> Option<String> {
    let mut seen: Vec<String> = Vec::new();
    for (name, _) in headers {
        let name = name.as_ref();
        if !is_signed_header(name) {
            continue;
        }
        let lower = name.trim().to_ascii_lowercase();
        if seen.contains(&lower) {
            return Some(lower);
        }
        seen.push(lower);
    }
    None
}

/// The last value of a header, matching the name case-insensitively.
fn header_value<'a>(
    headers: &'a [(impl AsRef<str>, impl AsRef<str>)],
    name: &str,
) -> Option<&'a str> {
    headers
        .iter()
        .rev()
        .find(|(k, _)| k.as_ref().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_ref())
}

// ---------------------------------------------------------------------------------------
// Signing (§3.2, §3.3, §3.4)
// ---------------------------------------------------------------------------------------

/// The lowercase hex MD5 of a body, the value of `Content-MD5` on V1 session calls (not
/// base64, unlike RFC 1864).
pub fn content_md5_hex(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

/// Signs a canonical string and returns the whole `Authorization` header value.
///
/// `utc_date_yyyymmdd` is the UTC date of the request (the date of its `Date` header) as
/// `YYYYMMDD`; only V4 uses it. V4 uses the prefix [`DEFAULT_V4_PREFIX`].
pub fn sign(
    creds: &Credentials,
    version: &SignatureVersion,
    canonical: &str,
    utc_date_yyyymmdd: &str,
) -> String {
    match version {
        SignatureVersion::Legacy => {
            let mut mac = legacy_mac(&creds.access_key);
            mac.update(canonical.as_bytes());
            let sig = BASE64.encode(mac.finalize().into_bytes());
            format!("{AUTH_SCHEME} {}:{sig}", creds.access_id)
        }
        SignatureVersion::V4 { region } => {
            let prefix = DEFAULT_V4_PREFIX;
            let mut mac = v4_mac(prefix, &creds.access_key, utc_date_yyyymmdd, region);
            mac.update(canonical.as_bytes());
            let sig = BASE64.encode(mac.finalize().into_bytes());
            format!(
                "{AUTH_SCHEME} {}/{utc_date_yyyymmdd}/{region}/{V4_SERVICE}/{prefix}_request:{sig}",
                creds.access_id
            )
        }
    }
}

/// Signs a request in place, as PyODPS's `sign_request` does.
///
/// 1. Adds `Date` (RFC 1123 in GMT, from `now`) when there is none or it is empty.
/// 2. Removes any earlier `Authorization` and STS token header.
/// 3. Computes the [`canonical_string`] of `method`, `relative_url` (relative to the
///    endpoint the client was configured with, still percent-encoded) and the headers.
/// 4. Adds `Authorization`; for V4 the credential date is the UTC date of the `Date` header.
/// 5. For STS credentials, adds [`STS_TOKEN_HEADER`] (after signing, so it is not signed).
pub fn sign_request(
    creds: &Credentials,
    version: &SignatureVersion,
    method: &str,
    relative_url: &str,
    headers: &mut Vec<(String, String)>,
    now: SystemTime,
) {
    let date = match header_value(headers, DATE_HEADER) {
        Some(d) if !d.is_empty() => d.to_owned(),
        _ => {
            let d = http_date(now);
            headers.retain(|(k, _)| !k.eq_ignore_ascii_case(DATE_HEADER));
            headers.push((DATE_HEADER.to_owned(), d.clone()));
            d
        }
    };
    let d8 = httpdate::parse_http_date(&date).map_or_else(|_| utc_yyyymmdd(now), utc_yyyymmdd);
    headers.retain(|(k, _)| {
        !k.eq_ignore_ascii_case(AUTHORIZATION_HEADER) && !k.eq_ignore_ascii_case(STS_TOKEN_HEADER)
    });
    let canonical = canonical_string(method, relative_url, headers);
    headers.push((
        AUTHORIZATION_HEADER.to_owned(),
        sign(creds, version, &canonical, &d8),
    ));
    if let Some(token) = &creds.sts_token {
        headers.push((STS_TOKEN_HEADER.to_owned(), token.clone()));
    }
}

/// `t` clamped to the range `httpdate` can represent (1970 to 9999).
fn clamp_http_time(t: SystemTime) -> SystemTime {
    let max = UNIX_EPOCH
        .checked_add(Duration::from_secs(MAX_HTTP_DATE_SECS))
        .unwrap_or(UNIX_EPOCH);
    t.clamp(UNIX_EPOCH, max)
}

/// An RFC 1123 date in GMT, e.g. `Thu, 01 Jan 2026 00:00:00 GMT`.
fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(clamp_http_time(t))
}

/// The UTC date of `t` as `YYYYMMDD`.
fn utc_yyyymmdd(t: SystemTime) -> String {
    let secs = clamp_http_time(t)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let secs = i64::try_from(secs).unwrap_or(0);
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y%m%d")
        .to_string()
}

/// HMAC with a key; HMAC accepts keys of any length, so this cannot fail.
fn new_mac<M: Mac + hmac::digest::KeyInit>(key: &[u8]) -> M {
    <M as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// The legacy MAC: HMAC-SHA1 keyed with the secret.
fn legacy_mac(secret: &str) -> HmacSha1 {
    new_mac(secret.as_bytes())
}

/// The V4 MAC: HMAC-SHA1 keyed with the derived signing key (§3.3).
fn v4_mac(prefix: &str, secret: &str, d8: &str, region: &str) -> HmacSha1 {
    let step = |key: &[u8], msg: &[u8]| {
        let mut mac: HmacSha256 = new_mac(key);
        mac.update(msg);
        mac.finalize().into_bytes()
    };
    let k_date = step(format!("{prefix}{secret}").as_bytes(), d8.as_bytes());
    let k_region = step(&k_date, region.as_bytes());
    let k_service = step(&k_region, V4_SERVICE.as_bytes());
    let k_sign = step(&k_service, format!("{prefix}_request").as_bytes());
    new_mac(&k_sign)
}

// ---------------------------------------------------------------------------------------
// Verification (§3.6)
// ---------------------------------------------------------------------------------------

/// Server-side verification of signed requests.
///
/// Holds the known access ids with their secrets, optionally the STS token each id must
/// present, and the clock-skew window. `Debug` lists the access ids only.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use paiio_storage::auth::{sign_request, Credentials, SignatureVersion, Verifier};
///
/// let creds = Credentials::new("id", "secret");
/// let verifier = Verifier::new(Duration::from_secs(900)).with_key("id", "secret");
/// let now = SystemTime::now();
/// let mut headers = vec![("x-odps-user-agent".to_owned(), "demo".to_owned())];
/// sign_request(&creds, &SignatureVersion::Legacy, "GET", "/projects/p?x=1", &mut headers, now);
/// let who = verifier.verify("GET", "/projects/p?x=1", &headers, now).unwrap();
/// assert_eq!(who.access_id, "id");
/// ```
#[derive(Clone)]
pub struct Verifier {
    secrets: HashMap<String, String>,
    sts_tokens: HashMap<String, String>,
    clock_skew: Duration,
}

impl Default for Verifier {
    /// No keys, and the [`DEFAULT_CLOCK_SKEW`] window.
    fn default() -> Self {
        Self::new(DEFAULT_CLOCK_SKEW)
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&str> = self.secrets.keys().map(String::as_str).collect();
        ids.sort_unstable();
        let mut sts: Vec<&str> = self.sts_tokens.keys().map(String::as_str).collect();
        sts.sort_unstable();
        f.debug_struct("Verifier")
            .field("access_ids", &ids)
            .field("sts_required_for", &sts)
            .field("clock_skew", &self.clock_skew)
            .finish()
    }
}

/// A parsed `Authorization` header.
struct ParsedAuth<'a> {
    access_id: &'a str,
    scheme: ParsedScheme<'a>,
    signature: Vec<u8>,
}

enum ParsedScheme<'a> {
    Legacy,
    V4 {
        d8: &'a str,
        region: &'a str,
        prefix: &'a str,
    },
}

/// A request whose headers passed every check that does not depend on the URL.
struct Prepared<'a> {
    auth: ParsedAuth<'a>,
    secret: &'a str,
}

fn unauthenticated(code: &'static str, message: impl Into<String>) -> Error {
    Error::Unauthenticated {
        code,
        message: message.into(),
    }
}

/// Equality that takes the same time for all inputs of a given length.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Verifier {
    /// A verifier with no keys that accepts a `Date` up to `clock_skew` before or after
    /// the server's time.
    pub fn new(clock_skew: Duration) -> Self {
        Self {
            secrets: HashMap::new(),
            sts_tokens: HashMap::new(),
            clock_skew,
        }
    }

    /// Adds (or replaces) an access id and its secret.
    pub fn with_key(mut self, access_id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.secrets.insert(access_id.into(), secret.into());
        self
    }

    /// Requires requests of `access_id` to carry [`STS_TOKEN_HEADER`] equal to `token`.
    pub fn with_sts_token(
        mut self,
        access_id: impl Into<String>,
        token: impl Into<String>,
    ) -> Self {
        self.sts_tokens.insert(access_id.into(), token.into());
        self
    }

    /// Adds the key of `creds` and, when it has one, its STS token.
    pub fn with_credentials(self, creds: &Credentials) -> Self {
        let this = self.with_key(creds.access_id.clone(), creds.access_key.clone());
        match &creds.sts_token {
            Some(token) => this.with_sts_token(creds.access_id.clone(), token.clone()),
            None => this,
        }
    }

    /// The clock-skew window.
    pub fn clock_skew(&self) -> Duration {
        self.clock_skew
    }

    /// Verifies a signed request.
    ///
    /// `relative_url` must be what the client signed: the raw request target (path and
    /// query, still percent-encoded) with the path prefix of the endpoint the client was
    /// configured with already stripped by the caller — `/api` for REST calls on
    /// `http://h:p/api`, nothing for storage calls on a tunnel endpoint (§3.6). Use
    /// [`verify_with_prefixes`](Self::verify_with_prefixes) when that is not known.
    ///
    /// Checks, in this order:
    ///
    /// * no signed header ([`is_signed_header`]) occurs twice, else
    ///   [`Error::InvalidArgument`] naming it;
    /// * `Authorization` is present and is `ODPS id:sig` or
    ///   `ODPS id/yyyymmdd/region/odps/{prefix}_request:sig`, else
    ///   [`AUTHORIZATION_REQUIRED`];
    /// * `Date` is present, parses (RFC 1123, RFC 850 or asctime) and lies within the
    ///   clock-skew window of `now` in either direction, else
    ///   [`AUTHENTICATION_REQUEST_EXPIRED`];
    /// * the access id is known, a V4 credential date is the UTC date of `Date`, and the
    ///   signature matches (compared in constant time), else [`SIGNATURE_NOT_MATCH`];
    /// * where an STS token is configured for the id, [`STS_TOKEN_HEADER`] is present
    ///   ([`AUTHORIZATION_REQUIRED`]) and equal to it ([`SIGNATURE_NOT_MATCH`]).
    pub fn verify(
        &self,
        method: &str,
        relative_url: &str,
        headers: &[(String, String)],
        now: SystemTime,
    ) -> Result<VerifiedIdentity> {
        self.verify_with_prefixes(method, relative_url, headers, now, &[])
    }

    /// Like [`verify`](Self::verify), for a server that does not know which endpoint the
    /// client signed against: tries `path_and_query` as it is, then with each of `prefixes`
    /// (e.g. `"/api"`) stripped from its start, and succeeds if any of them verifies.
    ///
    /// A prefix is stripped only at a path-segment boundary (`/api/x` and `/api?x` lose
    /// `/api`, `/apix` does not). When nothing verifies, the error is the one for the path
    /// as it is.
    pub fn verify_with_prefixes(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(String, String)],
        now: SystemTime,
        prefixes: &[&str],
    ) -> Result<VerifiedIdentity> {
        let prepared = self.prepare(headers, now)?;
        let candidates = std::iter::once(path_and_query).chain(
            prefixes
                .iter()
                .filter_map(|p| strip_endpoint_prefix(path_and_query, p)),
        );
        let mut first_error = None;
        for candidate in candidates {
            match check_signature(&prepared, method, candidate, headers) {
                Ok(()) => return self.finish(&prepared, headers),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error
            .unwrap_or_else(|| unauthenticated(SIGNATURE_NOT_MATCH, "no candidate path")))
    }

    /// Every check that does not depend on the URL: header syntax, date, access id.
    fn prepare<'a>(
        &'a self,
        headers: &'a [(String, String)],
        now: SystemTime,
    ) -> Result<Prepared<'a>> {
        if let Some(name) = repeated_signed_header(headers) {
            return Err(Error::invalid(
                "request headers",
                format!("the signed header {name} occurs more than once; send it once"),
            ));
        }
        let value = header_value(headers, AUTHORIZATION_HEADER).ok_or_else(|| {
            unauthenticated(AUTHORIZATION_REQUIRED, "missing Authorization header")
        })?;
        let auth = parse_authorization(value)?;

        let date = header_value(headers, DATE_HEADER)
            .filter(|d| !d.trim().is_empty())
            .ok_or_else(|| {
                unauthenticated(AUTHENTICATION_REQUEST_EXPIRED, "missing Date header")
            })?;
        let date_time = httpdate::parse_http_date(date.trim()).map_err(|_| {
            unauthenticated(
                AUTHENTICATION_REQUEST_EXPIRED,
                format!("malformed Date header {date:?}"),
            )
        })?;
        let skew = match date_time.duration_since(now) {
            Ok(ahead) => ahead,
            Err(behind) => behind.duration(),
        };
        if skew > self.clock_skew {
            return Err(unauthenticated(
                AUTHENTICATION_REQUEST_EXPIRED,
                format!(
                    "Date {date:?} is {}s away from the server time, more than the allowed {}s",
                    skew.as_secs(),
                    self.clock_skew.as_secs()
                ),
            ));
        }

        let secret = self.secrets.get(auth.access_id).ok_or_else(|| {
            unauthenticated(
                SIGNATURE_NOT_MATCH,
                format!("access id {:?} is unknown", auth.access_id),
            )
        })?;

        if let ParsedScheme::V4 { d8, .. } = auth.scheme {
            let expected = utc_yyyymmdd(date_time);
            if d8 != expected {
                return Err(unauthenticated(
                    SIGNATURE_NOT_MATCH,
                    format!(
                        "credential date {d8} is not the UTC date {expected} of the Date header"
                    ),
                ));
            }
        }
        Ok(Prepared { auth, secret })
    }

    /// The checks after a matching signature: the STS token.
    fn finish(
        &self,
        prepared: &Prepared<'_>,
        headers: &[(String, String)],
    ) -> Result<VerifiedIdentity> {
        let access_id = prepared.auth.access_id;
        if let Some(expected) = self.sts_tokens.get(access_id) {
            let presented = header_value(headers, STS_TOKEN_HEADER).ok_or_else(|| {
                unauthenticated(
                    AUTHORIZATION_REQUIRED,
                    format!("access id {access_id:?} needs the {STS_TOKEN_HEADER} header"),
                )
            })?;
            if !constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
                return Err(unauthenticated(
                    SIGNATURE_NOT_MATCH,
                    format!("the STS token of access id {access_id:?} does not match"),
                ));
            }
        }
        let version = match prepared.auth.scheme {
            ParsedScheme::Legacy => SignatureVersion::Legacy,
            ParsedScheme::V4 { region, .. } => SignatureVersion::V4 {
                region: region.to_owned(),
            },
        };
        Ok(VerifiedIdentity {
            access_id: access_id.to_owned(),
            version,
        })
    }
}

/// Recomputes the signature over the canonical string and compares it in constant time.
fn check_signature(
    prepared: &Prepared<'_>,
    method: &str,
    relative_url: &str,
    headers: &[(String, String)],
) -> Result<()> {
    let canonical = canonical_string(method, relative_url, headers);
    let mut mac = match prepared.auth.scheme {
        ParsedScheme::Legacy => legacy_mac(prepared.secret),
        ParsedScheme::V4 { d8, region, prefix } => v4_mac(prefix, prepared.secret, d8, region),
    };
    mac.update(canonical.as_bytes());
    mac.verify_slice(&prepared.auth.signature).map_err(|_| {
        unauthenticated(
            SIGNATURE_NOT_MATCH,
            format!(
                "the request signature does not match; the server's string to sign is {canonical:?}"
            ),
        )
    })
}

/// `path_and_query` without `prefix`, if it starts with it at a segment boundary.
fn strip_endpoint_prefix<'a>(path_and_query: &'a str, prefix: &str) -> Option<&'a str> {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return None;
    }
    let rest = if prefix.starts_with('/') {
        path_and_query.strip_prefix(prefix)?
    } else {
        path_and_query.strip_prefix('/')?.strip_prefix(prefix)?
    };
    (rest.is_empty() || rest.starts_with(['/', '?'])).then_some(rest)
}

/// Parses `ODPS id:sig` or `ODPS id/yyyymmdd/region/odps/{prefix}_request:sig`.
fn parse_authorization(value: &str) -> Result<ParsedAuth<'_>> {
    let malformed = |why: &str| {
        unauthenticated(
            AUTHORIZATION_REQUIRED,
            format!("malformed Authorization header: {why}"),
        )
    };
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case(AUTH_SCHEME) {
        return Err(malformed("the scheme is not ODPS"));
    }
    let (credential, signature) = rest
        .trim()
        .rsplit_once(':')
        .ok_or_else(|| malformed("no `:signature` part"))?;
    if credential.is_empty() {
        return Err(malformed("no access id"));
    }
    if signature.is_empty() {
        return Err(malformed("empty signature"));
    }
    let signature = BASE64
        .decode(signature)
        .map_err(|_| unauthenticated(SIGNATURE_NOT_MATCH, "the signature is not valid base64"))?;

    if !credential.contains('/') {
        return Ok(ParsedAuth {
            access_id: credential,
            scheme: ParsedScheme::Legacy,
            signature,
        });
    }
    let mut parts = credential.rsplitn(5, '/');
    let (Some(terminator), Some(service), Some(region), Some(d8), Some(access_id)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(malformed(
            "a V4 credential needs id/yyyymmdd/region/odps/{prefix}_request",
        ));
    };
    let prefix = terminator.strip_suffix("_request").unwrap_or_default();
    if access_id.is_empty() {
        return Err(malformed("no access id"));
    }
    if d8.len() != 8 || !d8.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("the credential date is not yyyymmdd"));
    }
    if region.is_empty() {
        return Err(malformed("no region"));
    }
    if service != V4_SERVICE {
        return Err(malformed("the credential service is not odps"));
    }
    if prefix.is_empty() {
        return Err(malformed(
            "the credential scope does not end in {prefix}_request",
        ));
    }
    Ok(ParsedAuth {
        access_id,
        scheme: ParsedScheme::V4 { d8, region, prefix },
        signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: &str = "AKID_EXAMPLE";
    const SECRET: &str = "SECRET_EXAMPLE";
    const DATE: &str = "Thu, 01 Jan 2026 00:00:00 GMT";
    const UA: &str = "pyodps/0.13.2";
    /// 2026-01-01T00:00:00Z.
    const EPOCH_2026: u64 = 1_767_225_600;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn now() -> SystemTime {
        at(EPOCH_2026)
    }

    fn creds() -> Credentials {
        Credentials::new(ID, SECRET)
    }

    /// Signs a request with `SignatureVersion::Legacy`.
    fn sign_legacy(
        creds: &Credentials,
        method: &str,
        url: &str,
        headers: &mut Vec<(String, String)>,
        t: SystemTime,
    ) {
        sign_request(creds, &SignatureVersion::Legacy, method, url, headers, t);
    }

    fn verifier() -> Verifier {
        Verifier::default().with_key(ID, SECRET)
    }

    fn hdrs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn code_of(err: &Error) -> &'static str {
        match err {
            Error::Unauthenticated { code, .. } => code,
            other => panic!("expected Unauthenticated, got {other:?}"),
        }
    }

    fn assert_code(result: Result<VerifiedIdentity>, code: &str, what: &str) {
        match result {
            Ok(id) => panic!("{what}: expected {code}, but verification succeeded as {id:?}"),
            Err(e) => assert_eq!(code_of(&e), code, "{what}: {e}"),
        }
    }

    const A_URL: &str = "/api/storage/v2?Action=TableRead&Target=projects.demo.schemas.default.tables.t1&SessionId=rs-1&Index=0&curr_project=demo";
    const A_CANONICAL: &str = "POST\n\napplication/json; charset=utf-8\nThu, 01 Jan 2026 00:00:00 GMT\nx-odps-max-storage-route-token:rt-abc\nx-odps-user-agent:pyodps/0.13.2\n/api/storage/v2?Action=TableRead&Index=0&SessionId=rs-1&Target=projects.demo.schemas.default.tables.t1&curr_project=demo";

    fn a_headers() -> Vec<(String, String)> {
        hdrs(&[
            ("Content-Type", "application/json; charset=utf-8"),
            ("x-odps-max-storage-route-token", "rt-abc"),
            ("x-odps-user-agent", UA),
            ("Date", DATE),
        ])
    }

    const B_URL: &str = "/api/storage/v1/projects/demo/schemas/default/tables/t1/sessions?session_type=batch_read&curr_project=demo";
    const B_CANONICAL: &str = "POST\n99914b932bd37a50b983c5e7c90ae93b\napplication/json\nThu, 01 Jan 2026 00:00:00 GMT\nx-odps-user-agent:pyodps/0.13.2\n/api/storage/v1/projects/demo/schemas/default/tables/t1/sessions?curr_project=demo&session_type=batch_read";

    fn b_headers() -> Vec<(String, String)> {
        hdrs(&[
            ("Content-MD5", &content_md5_hex(b"{}")),
            ("Content-Type", "application/json"),
            ("x-odps-user-agent", UA),
            ("Date", DATE),
        ])
    }

    const C_URL: &str = "/projects/demo/tunnel?service&curr_project=demo";
    const C_CANONICAL: &str = "GET\n\n\nThu, 01 Jan 2026 00:00:00 GMT\nx-odps-user-agent:pyodps/0.13.2\n/projects/demo/tunnel?curr_project=demo&service";

    fn c_headers() -> Vec<(String, String)> {
        hdrs(&[("x-odps-user-agent", UA), ("Date", DATE)])
    }

    fn with_auth(mut headers: Vec<(String, String)>, auth: &str) -> Vec<(String, String)> {
        headers.push(("Authorization".to_owned(), auth.to_owned()));
        headers
    }

    // ---- §3.5 worked examples ----

    #[test]
    fn example_a_v2_table_read_legacy() {
        let canonical = canonical_string("POST", A_URL, &a_headers());
        assert_eq!(canonical, A_CANONICAL);
        let auth = sign(&creds(), &SignatureVersion::Legacy, &canonical, "20260101");
        assert_eq!(auth, "ODPS AKID_EXAMPLE:Z4mMJIxlVB3a5QrnjNGhEtjxjz0=");
        let who = verifier()
            .verify("POST", A_URL, &with_auth(a_headers(), &auth), now())
            .unwrap();
        assert_eq!(
            who,
            VerifiedIdentity {
                access_id: ID.into(),
                version: SignatureVersion::Legacy
            }
        );
    }

    #[test]
    fn example_b_v1_create_session_with_content_md5() {
        assert_eq!(content_md5_hex(b"{}"), "99914b932bd37a50b983c5e7c90ae93b");
        let canonical = canonical_string("POST", B_URL, &b_headers());
        assert_eq!(canonical, B_CANONICAL);
        let auth = sign(&creds(), &SignatureVersion::Legacy, &canonical, "20260101");
        assert_eq!(auth, "ODPS AKID_EXAMPLE:xw75zFEosGBdkj0C8WmxBiiCxzk=");
        verifier()
            .verify("POST", B_URL, &with_auth(b_headers(), &auth), now())
            .unwrap();
    }

    #[test]
    fn example_c_discovery_relative_to_api_prefix() {
        let canonical = canonical_string("GET", C_URL, &c_headers());
        assert_eq!(canonical, C_CANONICAL);
        let auth = sign(&creds(), &SignatureVersion::Legacy, &canonical, "20260101");
        assert_eq!(auth, "ODPS AKID_EXAMPLE:HzxgUo+7J52Vhx8MmHhE2di/kts=");
        let headers = with_auth(c_headers(), &auth);
        verifier().verify("GET", C_URL, &headers, now()).unwrap();

        // The server sees the full path; the client signed relative to `http://h:p/api`.
        let full = "/api/projects/demo/tunnel?service&curr_project=demo";
        assert_code(
            verifier().verify("GET", full, &headers, now()),
            SIGNATURE_NOT_MATCH,
            "unstripped",
        );
        verifier()
            .verify_with_prefixes("GET", full, &headers, now(), &["/api"])
            .unwrap();
        verifier()
            .verify_with_prefixes("GET", full, &headers, now(), &["/other", "api/"])
            .unwrap();
        // Storage calls signed against the tunnel endpoint verify as they are.
        let a = with_auth(
            a_headers(),
            "ODPS AKID_EXAMPLE:Z4mMJIxlVB3a5QrnjNGhEtjxjz0=",
        );
        verifier()
            .verify_with_prefixes("POST", A_URL, &a, now(), &["/api"])
            .unwrap();
    }

    #[test]
    fn example_d_v4() {
        let version = SignatureVersion::V4 {
            region: "cn-hangzhou".into(),
        };
        let auth = sign(&creds(), &version, A_CANONICAL, "20260101");
        assert_eq!(
            auth,
            "ODPS AKID_EXAMPLE/20260101/cn-hangzhou/odps/aliyun_v4_request:/9BAH8ToOTxv4ecKPLWHYmR4tGQ="
        );
        let who = verifier()
            .verify("POST", A_URL, &with_auth(a_headers(), &auth), now())
            .unwrap();
        assert_eq!(who.version, version);

        // sign_request produces the same header from the same inputs.
        let mut headers = a_headers();
        sign_request(&creds(), &version, "POST", A_URL, &mut headers, now());
        assert_eq!(header_value(&headers, "authorization"), Some(auth.as_str()));
    }

    #[test]
    fn v4_with_a_custom_prefix_verifies() {
        let mut mac = v4_mac("custom_v4", SECRET, "20260101", "cn-shanghai");
        mac.update(A_CANONICAL.as_bytes());
        let sig = BASE64.encode(mac.finalize().into_bytes());
        let auth = format!("ODPS {ID}/20260101/cn-shanghai/odps/custom_v4_request:{sig}");
        let who = verifier()
            .verify("POST", A_URL, &with_auth(a_headers(), &auth), now())
            .unwrap();
        assert_eq!(
            who.version,
            SignatureVersion::V4 {
                region: "cn-shanghai".into()
            }
        );
        // The prefix is part of the key: claiming another one fails.
        let wrong = auth.replace("custom_v4_request", "aliyun_v4_request");
        assert_code(
            verifier().verify("POST", A_URL, &with_auth(a_headers(), &wrong), now()),
            SIGNATURE_NOT_MATCH,
            "prefix",
        );
    }

    #[test]
    fn v4_credential_date_must_be_the_date_of_the_date_header() {
        let version = SignatureVersion::V4 {
            region: "cn-hangzhou".into(),
        };
        let auth = sign(&creds(), &version, A_CANONICAL, "20251231");
        assert_code(
            verifier().verify("POST", A_URL, &with_auth(a_headers(), &auth), now()),
            SIGNATURE_NOT_MATCH,
            "d8",
        );
        // The same request signed a second before midnight carries the previous day.
        let mut headers = a_headers();
        headers.retain(|(k, _)| k != "Date");
        let t = at(EPOCH_2026 - 1);
        sign_request(&creds(), &version, "POST", A_URL, &mut headers, t);
        assert!(
            header_value(&headers, "authorization")
                .unwrap()
                .contains("/20251231/")
        );
        verifier().verify("POST", A_URL, &headers, now()).unwrap();
    }

    // ---- mutations of every signed field ----

    const M_URL: &str = "/api/storage/v1/projects/p/tables/t/sessions?b=2&A=1&flag&x-odps-q=qv&c=3";

    fn signed_request(version: &SignatureVersion) -> Vec<(String, String)> {
        let mut headers = hdrs(&[
            ("Content-Type", "application/json"),
            ("Content-MD5", "0123456789abcdef0123456789abcdef"),
            ("x-odps-user-agent", UA),
            ("X-ODPS-Namespace-Id", "ns"),
            ("x-odps-max-storage-route-token", "rt"),
            ("User-Agent", "not signed"),
        ]);
        sign_request(&creds(), version, "POST", M_URL, &mut headers, now());
        headers
    }

    fn set(headers: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
        let mut out: Vec<_> = headers
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case(name))
            .cloned()
            .collect();
        out.push((name.to_owned(), value.to_owned()));
        out
    }

    fn remove(headers: &[(String, String)], name: &str) -> Vec<(String, String)> {
        headers
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case(name))
            .cloned()
            .collect()
    }

    #[test]
    fn mutating_any_signed_field_fails() {
        for version in [
            SignatureVersion::Legacy,
            SignatureVersion::V4 {
                region: "cn-beijing".into(),
            },
        ] {
            let base = signed_request(&version);
            let v = verifier();
            v.verify("POST", M_URL, &base, now()).unwrap();

            let rejected = |method: &str, url: &str, headers: Vec<(String, String)>, what: &str| {
                assert_code(
                    v.verify(method, url, &headers, now()),
                    SIGNATURE_NOT_MATCH,
                    what,
                );
            };
            rejected("GET", M_URL, base.clone(), "method");
            for name in ["Content-MD5", "Content-Type"] {
                rejected("POST", M_URL, set(&base, name, "changed"), name);
                rejected("POST", M_URL, remove(&base, name), name);
            }
            rejected(
                "POST",
                M_URL,
                set(&base, "Date", "Thu, 01 Jan 2026 00:01:00 GMT"),
                "date",
            );
            for name in [
                "x-odps-user-agent",
                "x-odps-namespace-id",
                "x-odps-max-storage-route-token",
            ] {
                rejected("POST", M_URL, set(&base, name, "changed"), name);
                rejected("POST", M_URL, remove(&base, name), name);
            }
            rejected(
                "POST",
                M_URL,
                set(&base, "x-odps-new", "1"),
                "added x-odps header",
            );
            rejected(
                "POST",
                &M_URL.replace("tables/t", "tables/u"),
                base.clone(),
                "path",
            );
            for (param, changed) in [
                ("b=2", "b=3"),
                ("A=1", "A=2"),
                ("flag", "flag=1"),
                ("x-odps-q=qv", "x-odps-q=qw"),
                ("c=3", "c="),
            ] {
                rejected("POST", &M_URL.replace(param, changed), base.clone(), param);
                let removed = if M_URL.contains(&format!("?{param}&")) {
                    M_URL.replace(&format!("{param}&"), "")
                } else {
                    M_URL.replace(&format!("&{param}"), "")
                };
                assert_ne!(removed, M_URL);
                rejected("POST", &removed, base.clone(), param);
            }
            rejected("POST", &format!("{M_URL}&d=4"), base.clone(), "added param");
            rejected(
                "POST",
                &M_URL.replace('?', "?z&"),
                base.clone(),
                "added blank param",
            );

            let auth = header_value(&base, "Authorization").unwrap();
            let other_id = auth.replacen(ID, "AKID_OTHER", 1);
            rejected(
                "POST",
                M_URL,
                set(&base, "Authorization", &other_id),
                "unknown id",
            );
            let wrong_key = Verifier::default().with_key(ID, "WRONG_SECRET");
            assert_code(
                wrong_key.verify("POST", M_URL, &base, now()),
                SIGNATURE_NOT_MATCH,
                "key",
            );

            // Unsigned headers and header-name case do not matter.
            v.verify("POST", M_URL, &set(&base, "User-Agent", "other"), now())
                .unwrap();
            v.verify("POST", M_URL, &set(&base, "odps-tunnel-tags", "t"), now())
                .unwrap();
            let upper: Vec<_> = base
                .iter()
                .map(|(k, val)| (k.to_uppercase(), val.clone()))
                .collect();
            v.verify("POST", M_URL, &upper, now()).unwrap();
            // Parameter order does not matter.
            let reordered =
                "/api/storage/v1/projects/p/tables/t/sessions?c=3&x-odps-q=qv&flag&A=1&b=2";
            v.verify("POST", reordered, &base, now()).unwrap();
        }
    }

    #[test]
    fn a_repeated_signed_header_is_refused() {
        let v = verifier();
        for version in [
            SignatureVersion::Legacy,
            SignatureVersion::V4 {
                region: "cn-test".into(),
            },
        ] {
            let base = signed_request(&version);
            v.verify("POST", M_URL, &base, now())
                .expect("the request as signed verifies");
            for name in [
                "x-odps-user-agent",
                "Content-Type",
                "content-md5",
                "Date",
                "Authorization",
            ] {
                let value = base
                    .iter()
                    .rev()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                // The repeat goes first: the signature covers the last value.
                let mut headers = vec![(name.to_owned(), value)];
                headers.extend(base.iter().cloned());
                let err = v.verify("POST", M_URL, &headers, now()).unwrap_err();
                assert!(
                    matches!(err, Error::InvalidArgument { .. }),
                    "{name}: {err}"
                );
                assert!(
                    err.to_string().contains(&name.to_ascii_lowercase()),
                    "{name}: {err}"
                );
            }
            // Unsigned headers may repeat.
            let mut headers = base.clone();
            headers.push(("Accept".to_owned(), "a".to_owned()));
            headers.push(("accept".to_owned(), "b".to_owned()));
            v.verify("POST", M_URL, &headers, now())
                .expect("repeated unsigned headers are fine");
        }
        assert!(is_signed_header("X-ODPS-Foo") && is_signed_header("x-odpsfoo"));
        assert!(!is_signed_header("x-od") && !is_signed_header("content-length"));
    }

    #[test]
    fn unknown_access_id_message_names_it() {
        let headers = signed_request(&SignatureVersion::Legacy);
        let err = Verifier::default()
            .verify("POST", M_URL, &headers, now())
            .unwrap_err();
        assert_eq!(code_of(&err), SIGNATURE_NOT_MATCH);
        assert!(err.to_string().contains("AKID_EXAMPLE") && err.to_string().contains("unknown"));
    }

    #[test]
    fn clock_skew_window() {
        let v = verifier();
        for (offset, ok) in [
            (0i64, true),
            (899, true),
            (900, true),
            (-900, true),
            (901, false),
            (-901, false),
            (3600, false),
        ] {
            let mut headers = hdrs(&[("x-odps-user-agent", UA)]);
            let t = at(EPOCH_2026.checked_add_signed(offset).unwrap());
            sign_legacy(&creds(), "GET", C_URL, &mut headers, t);
            let result = v.verify("GET", C_URL, &headers, now());
            if ok {
                result.unwrap();
            } else {
                assert_code(
                    result,
                    AUTHENTICATION_REQUEST_EXPIRED,
                    &format!("offset {offset}"),
                );
            }
        }
        // A narrower window.
        let mut headers = vec![];
        sign_legacy(&creds(), "GET", C_URL, &mut headers, at(EPOCH_2026 - 61));
        let narrow = Verifier::new(Duration::from_secs(60)).with_key(ID, SECRET);
        assert_eq!(narrow.clock_skew(), Duration::from_secs(60));
        assert_code(
            narrow.verify("GET", C_URL, &headers, now()),
            AUTHENTICATION_REQUEST_EXPIRED,
            "narrow",
        );
    }

    #[test]
    fn missing_or_malformed_date() {
        let base = signed_request(&SignatureVersion::Legacy);
        let v = verifier();
        assert_code(
            v.verify("POST", M_URL, &remove(&base, "date"), now()),
            AUTHENTICATION_REQUEST_EXPIRED,
            "missing",
        );
        for bad in [
            "",
            "  ",
            "yesterday",
            "Thu, 32 Jan 2026 00:00:00 GMT",
            "\u{1F600}",
        ] {
            assert_code(
                v.verify("POST", M_URL, &set(&base, "Date", bad), now()),
                AUTHENTICATION_REQUEST_EXPIRED,
                bad,
            );
        }
    }

    #[test]
    fn rfc850_and_asctime_dates_are_accepted() {
        for date in [
            "Thursday, 01-Jan-26 00:00:00 GMT",
            "Thu Jan  1 00:00:00 2026",
        ] {
            let mut headers = hdrs(&[("Date", date), ("x-odps-user-agent", UA)]);
            sign_legacy(&creds(), "GET", C_URL, &mut headers, now());
            assert_eq!(
                header_value(&headers, "date"),
                Some(date),
                "an existing Date is kept"
            );
            verifier().verify("GET", C_URL, &headers, now()).unwrap();
        }
    }

    #[test]
    fn missing_authorization() {
        let headers = remove(&signed_request(&SignatureVersion::Legacy), "authorization");
        assert_code(
            verifier().verify("POST", M_URL, &headers, now()),
            AUTHORIZATION_REQUIRED,
            "missing",
        );
    }

    #[test]
    fn malformed_authorization_headers_are_rejected() {
        let base = signed_request(&SignatureVersion::Legacy);
        let v = verifier();
        for bad in [
            "",
            "ODPS",
            "ODPS ",
            "Basic x",
            "Basic QUtJRDpTRUNSRVQ=",
            "ODPS id",
            "ODPS :sig",
            "ODPS id:",
            "ODPS :",
            "ODPS AKID_EXAMPLE:!!!",
            "ODPS AKID_EXAMPLE:Z4mMJIxlVB3a5QrnjNGhEtjxjz0",
            "ODPS AKID_EXAMPLE:Z4mMJIxlVB3a5QrnjNGhEtjxjz0=",
            "ODPS AKID_EXAMPLE/x:Z4mMJIxlVB3a5QrnjNGhEtjxjz0=",
            "ODPS AKID_EXAMPLE/2026/r/odps/aliyun_v4_request:Z4mMJIxlVB3a5QrnjNGhEtjxjz0=",
            "ODPS AKID_EXAMPLE/20260101//odps/aliyun_v4_request:Z4mMJIxlVB3a5QrnjNGhEtjxjz0=",
            "ODPS AKID_EXAMPLE/20260101/r/oss/aliyun_v4_request:Z4mMJIxlVB3a5QrnjNGhEtjxjz0=",
            "ODPS AKID_EXAMPLE/20260101/r/odps/_request:Z4mMJIxlVB3a5QrnjNGhEtjxjz0=",
            "ODPS AKID_EXAMPLE/20260101/r/odps/aliyun_v4:Z4mMJIxlVB3a5QrnjNGhEtjxjz0=",
            "ODPS /20260101/r/odps/aliyun_v4_request:Z4mMJIxlVB3a5QrnjNGhEtjxjz0=",
            "ODPS ２０２６/20260101/r/odps/aliyun_v4_request:Z4mMJIxlVB3a5QrnjNGhEtjxjz0=",
            "ODPS AKID_EXAMPLE/２０２６０１０１/r/odps/aliyun_v4_request:x",
            "ODPS \u{0}:\u{0}",
        ] {
            match v.verify("POST", M_URL, &set(&base, "Authorization", bad), now()) {
                Ok(id) => panic!("{bad:?} verified as {id:?}"),
                Err(e) => assert!(
                    [AUTHORIZATION_REQUIRED, SIGNATURE_NOT_MATCH].contains(&code_of(&e)),
                    "{bad:?}: {e}"
                ),
            }
        }
        for bad in ["ODPS", "Basic x", "ODPS id", "ODPS :sig", "ODPS id:"] {
            assert_code(
                v.verify("POST", M_URL, &set(&base, "Authorization", bad), now()),
                AUTHORIZATION_REQUIRED,
                bad,
            );
        }
        // The scheme word is case-insensitive and surrounding spaces are tolerated.
        let auth = header_value(&base, "authorization").unwrap();
        let relaxed = format!("  odps  {} ", auth.trim_start_matches("ODPS "));
        v.verify("POST", M_URL, &set(&base, "Authorization", &relaxed), now())
            .unwrap();
    }

    #[test]
    fn sts_token_required_mismatch_ok() {
        let sts = Credentials::new("STS.tmp", "tmp-secret").with_sts_token("token-1");
        let v = Verifier::default().with_credentials(&sts);
        let mut headers = hdrs(&[("x-odps-user-agent", UA)]);
        sign_legacy(&sts, "POST", A_URL, &mut headers, now());
        assert_eq!(header_value(&headers, STS_TOKEN_HEADER), Some("token-1"));
        assert_eq!(
            v.verify("POST", A_URL, &headers, now()).unwrap().access_id,
            "STS.tmp"
        );

        // The token is not signed: the Authorization equals that of the same key without one.
        let mut plain = hdrs(&[("x-odps-user-agent", UA)]);
        let unscoped = Credentials::new("STS.tmp", "tmp-secret");
        sign_legacy(&unscoped, "POST", A_URL, &mut plain, now());
        assert_eq!(
            header_value(&plain, "authorization"),
            header_value(&headers, "authorization")
        );

        assert_code(
            v.verify("POST", A_URL, &plain, now()),
            AUTHORIZATION_REQUIRED,
            "missing token",
        );
        assert_code(
            v.verify(
                "POST",
                A_URL,
                &set(&headers, STS_TOKEN_HEADER, "token-2"),
                now(),
            ),
            SIGNATURE_NOT_MATCH,
            "wrong token",
        );
        // A token is ignored for an id that needs none.
        let lax = Verifier::default().with_key("STS.tmp", "tmp-secret");
        lax.verify("POST", A_URL, &headers, now()).unwrap();
        // A Verifier built by hand behaves the same.
        let manual = Verifier::default()
            .with_key("STS.tmp", "tmp-secret")
            .with_sts_token("STS.tmp", "token-1");
        manual.verify("POST", A_URL, &headers, now()).unwrap();
    }

    // ---- canonical string quirks ----

    fn resource(url: &str) -> String {
        let c = canonical_string("GET", url, &[] as &[(&str, &str)]);
        c.rsplit('\n').next().unwrap().to_owned()
    }

    /// Asserts the canonical resource of each url.
    #[track_caller]
    fn assert_resources(cases: &[(&str, &str)]) {
        for (url, want) in cases {
            assert_eq!(resource(url), *want, "{url}");
        }
    }

    #[test]
    fn double_decoding_and_plus_as_space() {
        assert_resources(&[
            ("/p?k=a%2520b", "/p?k=a b"),
            ("/p?k=a+b", "/p?k=a b"),
            ("/p?k=a%2Bb", "/p?k=a b"),
            ("/p?k=a%252Bb", "/p?k=a+b"),
            ("/p?k=a%26b=c", "/p?b=c&k=a"),
            ("/a%20b/c%2Fd", "/a b/c/d"),
            // A `+` in the path stays.
            ("/a+b", "/a+b"),
            ("/p?k=%E4%B8%AD", "/p?k=中"),
            ("/p?k=%ZZ%4", "/p?k=%ZZ%4"),
            ("/p?k=%FF", "/p?k=\u{FFFD}"),
        ]);
    }

    #[test]
    fn query_parsing_rules() {
        assert_resources(&[
            ("/p", "/p"),
            ("/p?", "/p"),
            ("/p?&", "/p?"),
            ("/p?&&b=1&&a", "/p?a&b=1"),
            ("/p?k=1&k=2", "/p?k=2"),
            ("/p?k=&j", "/p?j&k"),
            ("/p?a=b=c", "/p?a=b=c"),
            (
                "/p?session_refresh=1&curr_project=p&Target=t&SessionId=s&Index=0&Action=A",
                "/p?Action=A&Index=0&SessionId=s&Target=t&curr_project=p&session_refresh=1",
            ),
            ("/p?a=1?b=2", "/p?a=1?b=2"),
            ("/p?a=1#frag", "/p?a=1#frag"),
        ]);
    }

    #[test]
    fn urlparse_quirks() {
        assert_resources(&[
            ("/a/b;c?x=1", "/a/b?x=1"),
            ("/a;b/c", "/a;b/c"),
            ("//host/x?y", "/x?y"),
            ("http://h:1/x?y", "/x?y"),
            ("/a%0Ab?k=1%0D%0A2", "/ab?k=12"),
            ("%20%01/p", "/p"),
            ("", ""),
        ]);
    }

    #[test]
    fn signed_headers_rules() {
        let c = canonical_string(
            "get",
            "/p?x-odps-param=pv&X-Odps-Upper=no",
            &[
                ("X-ODPS-B", "2"),
                ("x-odps-a", "1"),
                ("x-odps-a", "1b"),
                ("x-odpsfoo", "quirk"),
                ("x-odps-param", "from-header"),
                ("content-type", "ct"),
                ("date", "d"),
                ("User-Agent", "ua"),
                ("authorization-sts-token", "t"),
            ],
        );
        assert_eq!(
            c,
            "GET\n\nct\nd\nx-odps-a:1b\nx-odps-b:2\nx-odps-param:pv\nquirk\n/p?X-Odps-Upper=no&x-odps-param=pv"
        );
    }

    #[test]
    fn sign_request_adds_date_and_replaces_old_signatures() {
        let mut headers = hdrs(&[
            ("authorization", "ODPS old:c2ln"),
            ("Date", ""),
            (STS_TOKEN_HEADER, "old"),
        ]);
        sign_legacy(&creds(), "GET", C_URL, &mut headers, now());
        assert_eq!(header_value(&headers, "date"), Some(DATE));
        assert_eq!(
            headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .count(),
            1
        );
        assert_eq!(header_value(&headers, STS_TOKEN_HEADER), None);
        assert_eq!(headers.len(), 2);
        verifier().verify("GET", C_URL, &headers, now()).unwrap();
        // Absurd clocks do not panic.
        let mut h = vec![];
        sign_legacy(
            &creds(),
            "GET",
            "/",
            &mut h,
            UNIX_EPOCH - Duration::from_secs(5),
        );
        assert_eq!(
            header_value(&h, "date"),
            Some("Thu, 01 Jan 1970 00:00:00 GMT")
        );
        assert_eq!(utc_yyyymmdd(at(u64::from(u32::MAX) * 1000)), "99991231");
    }

    #[test]
    fn credentials_debug_redacts_secrets() {
        let c = Credentials::new("my-id", "super-secret-key").with_sts_token("secret-token");
        let dbg = format!("{c:?}");
        assert!(dbg.contains("my-id"));
        assert!(
            !dbg.contains("super-secret-key") && !dbg.contains("secret-token"),
            "{dbg}"
        );
        let v = Verifier::default().with_credentials(&c);
        let dbg = format!("{v:?}");
        assert!(dbg.contains("my-id"));
        assert!(
            !dbg.contains("super-secret-key") && !dbg.contains("secret-token"),
            "{dbg}"
        );
    }

    #[test]
    fn prefix_stripping_respects_segments() {
        assert_eq!(strip_endpoint_prefix("/api/x", "/api"), Some("/x"));
        assert_eq!(strip_endpoint_prefix("/api/x", "/api/"), Some("/x"));
        assert_eq!(strip_endpoint_prefix("/api/x", "api"), Some("/x"));
        assert_eq!(strip_endpoint_prefix("/api?x", "/api"), Some("?x"));
        assert_eq!(strip_endpoint_prefix("/api", "/api"), Some(""));
        assert_eq!(strip_endpoint_prefix("/apix", "/api"), None);
        assert_eq!(strip_endpoint_prefix("/x", "/api"), None);
        assert_eq!(strip_endpoint_prefix("/x", "/"), None);
        assert_eq!(strip_endpoint_prefix("/x", ""), None);
    }

    // ---- property tests ----

    fn method() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "HEAD"]).prop_map(str::to_owned)
    }

    prop_compose! {
        fn request()(
            method in method(),
            segments in prop::collection::vec("[a-zA-Z0-9_.-]{1,8}", 1..4),
            params in prop::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,6}", "[A-Za-z0-9_.-]{0,8}", 0..5),
            odps in prop::collection::btree_map("[a-z]{1,8}", "[!-~][ -~]{0,14}[!-~]", 1..5),
            content_type in prop::option::of("[a-z]{1,8}/[a-z]{1,8}"),
            upper in any::<bool>(),
        ) -> (String, String, Vec<(String, String)>) {
            let mut url = format!("/{}", segments.join("/"));
            if !params.is_empty() {
                let q: Vec<String> = params.iter().map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k}={v}") }).collect();
                url.push('?');
                url.push_str(&q.join("&"));
            }
            let mut headers: Vec<(String, String)> = odps
                .into_iter()
                .map(|(k, v)| {
                    let name = format!("x-odps-{k}");
                    (if upper { name.to_uppercase() } else { name }, v)
                })
                .collect();
            if let Some(ct) = content_type {
                headers.push(("Content-Type".into(), ct));
            }
            (method, url, headers)
        }
    }

    proptest! {
        #[test]
        fn sign_then_verify_and_flip_one_header(
            (method, url, mut headers) in request(),
            v4 in any::<bool>(),
            skew in -900i64..=900,
            pick in any::<prop::sample::Index>(),
        ) {
            let version = if v4 { SignatureVersion::V4 { region: "cn-test".into() } } else { SignatureVersion::Legacy };
            let t = at(EPOCH_2026.checked_add_signed(skew).unwrap());
            sign_request(&creds(), &version, &method, &url, &mut headers, t);
            let who = verifier().verify(&method, &url, &headers, now()).unwrap();
            prop_assert_eq!(who.version, version);

            let signed: Vec<usize> = headers
                .iter()
                .enumerate()
                .filter(|(_, (k, _))| {
                    let k = k.to_lowercase();
                    k.starts_with("x-odps-") || k == "content-type"
                })
                .map(|(i, _)| i)
                .collect();
            let i = signed[pick.index(signed.len())];
            headers[i].1.push('x');
            let err = verifier().verify(&method, &url, &headers, now()).unwrap_err();
            prop_assert_eq!(code_of(&err), SIGNATURE_NOT_MATCH);
        }

        #[test]
        fn arbitrary_input_never_panics(
            method in ".{0,8}",
            url in ".{0,64}",
            auth in prop::option::of(".{0,64}"),
            date in prop::option::of(".{0,40}"),
            extra in prop::collection::vec((".{0,12}", ".{0,12}"), 0..4),
        ) {
            let mut headers = extra;
            if let Some(a) = auth {
                headers.push(("Authorization".into(), a));
            }
            if let Some(d) = date {
                headers.push(("Date".into(), d));
            }
            let _ = canonical_string(&method, &url, &headers);
            let _ = verifier().verify_with_prefixes(&method, &url, &headers, now(), &["/api", "", "/"]);
        }

        #[test]
        fn arbitrary_signed_urls_round_trip(url in "/[ -~]{0,40}", method in method()) {
            let mut headers = vec![];
            sign_legacy(&creds(), &method, &url, &mut headers, now());
            verifier().verify(&method, &url, &headers, now()).unwrap();
        }
    }
}
