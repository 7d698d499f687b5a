//! The URLs of a SQL registry (`registry.path`, `registry.read_path`), parsed and checked.
//!
//! URLs are written as Feast users write SQLAlchemy URLs:
//!
//! - `sqlite:///relative/path.db` (relative to the repo directory), `sqlite:////abs/path.db`;
//! - `postgresql://user:password@host:port/database?sslmode=...`, also spelled `postgres://`
//!   or `postgresql+psycopg://` (any `postgresql+driver://`).
//!
//! Larder's own query options name where the registry row lives, so that several
//! registries can share one database: `table` (default [`DEFAULT_TABLE`]), `schema`
//! (Postgres only; default: the connection's `search_path`) and `name` (the row's key,
//! default [`DEFAULT_NAME`]). Every other query option of a Postgres URL is handed to
//! the driver (`sslmode`, `connect_timeout`, `application_name`, `options`, ...).

use std::path::{Path, PathBuf};

use super::super::StoreError;

/// The table holding registry rows unless the URL says `table=`.
pub const DEFAULT_TABLE: &str = "larder_registry";
/// The key of the registry row unless the URL says `name=`.
pub const DEFAULT_NAME: &str = "default";

/// What the URL forms are, for error messages.
const FORMS: &str = "use `sqlite:///relative/path.db`, `sqlite:////absolute/path.db` or \
                     `postgresql://user:password@host:port/database`";

/// Where in a database the registry row lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Naming {
    /// Postgres schema; `None`: the first schema of the connection's `search_path`.
    pub schema: Option<String>,
    pub table: String,
    /// The row's primary key: registries sharing a table differ by name.
    pub name: String,
}

impl Naming {
    fn default_naming() -> Self {
        Naming {
            schema: None,
            table: DEFAULT_TABLE.to_string(),
            name: DEFAULT_NAME.to_string(),
        }
    }

    /// `table=`, `schema=`, `name=` as a query string (only the non-default ones), for
    /// locations.
    fn query(&self) -> String {
        let mut parts = Vec::new();
        if let Some(schema) = &self.schema {
            parts.push(format!("schema={schema}"));
        }
        if self.table != DEFAULT_TABLE {
            parts.push(format!("table={}", self.table));
        }
        if self.name != DEFAULT_NAME {
            let name: String = url::form_urlencoded::byte_serialize(self.name.as_bytes()).collect();
            parts.push(format!("name={name}"));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }

    /// The table as SQL: `"schema"."table"` or `"table"` (identifiers are checked to be
    /// lowercase ASCII words, so quoting cannot be escaped).
    pub fn qualified_table(&self) -> String {
        match &self.schema {
            Some(schema) => format!("\"{schema}\".\"{}\"", self.table),
            None => format!("\"{}\"", self.table),
        }
    }
}

/// A parsed SQLite registry URL.
#[derive(Clone, Debug)]
pub struct SqliteUrl {
    /// The database file, resolved against the repo directory.
    pub path: PathBuf,
    pub naming: Naming,
    /// The URL with the resolved path, for messages.
    pub location: String,
    /// `location` without the naming options.
    base_location: String,
}

/// How a Postgres connection uses TLS (libpq's `sslmode`).
#[cfg(feature = "postgres")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// `disable`: never.
    Disable,
    /// `allow`, `prefer` (the default): when the server offers it; certificates are not
    /// checked unless `sslrootcert` is given.
    Prefer,
    /// `require`: always; certificates are not checked unless `sslrootcert` is given.
    Require,
    /// `verify-ca`: always, and the server certificate must chain to a trusted root.
    VerifyCa,
    /// `verify-full`: as `verify-ca`, and the certificate must name the host.
    VerifyFull,
}

/// Which roots certify the server (libpq's `sslrootcert`).
#[cfg(feature = "postgres")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootCerts {
    /// Not given: `~/.postgresql/root.crt` if it exists (required for `verify-*`).
    Default,
    /// `sslrootcert=system`: the operating system's trusted roots.
    System,
    /// `sslrootcert=path`: PEM certificates (relative paths: against the repo directory).
    File(PathBuf),
}

/// A parsed Postgres registry URL.
#[cfg(feature = "postgres")]
#[derive(Clone, Debug)]
pub struct PostgresUrl {
    pub config: tokio_postgres::Config,
    pub ssl_mode: SslMode,
    pub root_certs: RootCerts,
    pub naming: Naming,
    /// `postgresql://user@host:port/database` plus non-default naming; never the password.
    pub location: String,
    /// `location` without the naming options.
    base_location: String,
}

/// A parsed SQL registry URL.
#[derive(Clone, Debug)]
pub enum SqlUrl {
    Sqlite(SqliteUrl),
    #[cfg(feature = "postgres")]
    Postgres(Box<PostgresUrl>),
}

impl SqlUrl {
    pub fn naming(&self) -> &Naming {
        match self {
            Self::Sqlite(url) => &url.naming,
            #[cfg(feature = "postgres")]
            Self::Postgres(url) => &url.naming,
        }
    }

    pub fn location(&self) -> &str {
        match self {
            Self::Sqlite(url) => &url.location,
            #[cfg(feature = "postgres")]
            Self::Postgres(url) => &url.location,
        }
    }

    /// Makes a replica URL read the primary's row: a replica URL without naming options
    /// takes the primary's; one with other options than the primary's is an error, since
    /// it would serve another registry than the one written.
    pub fn read_same_row_as(self, primary: &SqlUrl) -> Result<Self, StoreError> {
        let wanted = primary.naming();
        if self.naming() == wanted {
            return Ok(self);
        }
        if *self.naming() != Naming::default_naming() {
            return Err(StoreError::InvalidLocation {
                location: self.location().to_string(),
                reason: format!(
                    "(`read_path`) names another registry than `path` (`{}`); give it the \
                     same `schema`, `table` and `name` options, or none",
                    primary.location()
                ),
            });
        }
        let naming = wanted.clone();
        Ok(match self {
            Self::Sqlite(mut url) => {
                url.location = format!("{}{}", url.base_location, naming.query());
                url.naming = naming;
                Self::Sqlite(url)
            }
            #[cfg(feature = "postgres")]
            Self::Postgres(mut url) => {
                url.location = format!("{}{}", url.base_location, naming.query());
                url.naming = naming;
                Self::Postgres(url)
            }
        })
    }

    /// Parses `text`; relative SQLite paths and `sslrootcert` files are resolved against
    /// `base_dir` (the directory of `feature_store.yaml`). Does no I/O.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Self, StoreError> {
        let text = text.trim();
        let shown = redact(text);
        let invalid = |reason: String| StoreError::InvalidLocation {
            location: shown.clone(),
            reason,
        };
        let Some((scheme, rest)) = text.split_once(':') else {
            return Err(invalid(format!("is not a SQL registry URL; {FORMS}")));
        };
        let scheme = scheme.to_ascii_lowercase();
        if scheme == "sqlite" {
            return parse_sqlite(rest, base_dir)
                .map_err(invalid)
                .map(Self::Sqlite);
        }
        let is_postgres = scheme == "postgresql"
            || scheme == "postgres"
            || scheme.starts_with("postgresql+")
            || scheme.starts_with("postgres+");
        if !is_postgres {
            return Err(invalid(format!(
                "has unsupported scheme `{scheme}` for `registry_type: sql`; {FORMS}"
            )));
        }
        let Some(after_slashes) = rest.strip_prefix("//") else {
            return Err(invalid(format!("is not a valid Postgres URL; {FORMS}")));
        };
        parse_postgres(after_slashes, base_dir, &invalid)
    }
}

#[cfg(not(feature = "postgres"))]
fn parse_postgres(
    _rest: &str,
    _base_dir: &Path,
    invalid: &dyn Fn(String) -> StoreError,
) -> Result<SqlUrl, StoreError> {
    Err(invalid(
        "needs Larder built with the `postgres` feature".to_string(),
    ))
}

#[cfg(feature = "postgres")]
fn parse_postgres(
    rest: &str,
    base_dir: &Path,
    invalid: &dyn Fn(String) -> StoreError,
) -> Result<SqlUrl, StoreError> {
    use std::str::FromStr;

    let (authority_and_path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut naming = Naming::default_naming();
    let mut ssl_mode = SslMode::Prefer;
    let mut root_certs = RootCerts::Default;
    // Options the driver understands pass through untouched (raw, still percent-encoded).
    let mut driver_options = Vec::new();
    for item in query.split('&').filter(|item| !item.is_empty()) {
        let Some((key, value)) = url::form_urlencoded::parse(item.as_bytes()).next() else {
            continue;
        };
        match key.as_ref() {
            "table" => naming.table = identifier("table", &value).map_err(invalid)?,
            "schema" => naming.schema = Some(identifier("schema", &value).map_err(invalid)?),
            "name" => naming.name = row_name(&value).map_err(invalid)?,
            "sslmode" => {
                ssl_mode = match value.as_ref() {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(invalid(format!(
                            "has unknown `sslmode={other}`; use `disable`, `allow`, `prefer`, \
                             `require`, `verify-ca` or `verify-full`"
                        )));
                    }
                }
            }
            "sslrootcert" => {
                root_certs = if value == "system" {
                    RootCerts::System
                } else {
                    RootCerts::File(base_dir.join(value.as_ref()))
                }
            }
            "sslcert" | "sslkey" | "sslpassword" | "sslcrl" => {
                return Err(invalid(format!(
                    "sets `{key}`, which Larder does not support (no client certificates); \
                     authenticate with a password"
                )));
            }
            _ => driver_options.push(item),
        }
    }
    let driver_url = if driver_options.is_empty() {
        format!("postgresql://{authority_and_path}")
    } else {
        format!(
            "postgresql://{authority_and_path}?{}",
            driver_options.join("&")
        )
    };
    // The driver's messages never echo the password; they may name an option or a value.
    let mut config = tokio_postgres::Config::from_str(&driver_url)
        .map_err(|err| invalid(format!("is not a valid Postgres URL: {err}")))?;
    if config.get_hosts().is_empty() {
        return Err(invalid(
            "names no host; write `postgresql://user:password@host:port/database`".to_string(),
        ));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(std::time::Duration::from_secs(10));
    }
    config.ssl_mode(match ssl_mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    });
    let base_location = postgres_location(&config);
    Ok(SqlUrl::Postgres(Box::new(PostgresUrl {
        config,
        ssl_mode,
        root_certs,
        location: format!("{base_location}{}", naming.query()),
        base_location,
        naming,
    })))
}

/// `postgresql://user@host:port/database` (several hosts joined by commas).
#[cfg(feature = "postgres")]
fn postgres_location(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;

    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) if name.contains(':') => format!("[{name}]:{port}"),
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    let user = config.get_user().unwrap_or_default();
    let database = config.get_dbname().unwrap_or(user);
    let user = if user.is_empty() {
        String::new()
    } else {
        format!("{user}@")
    };
    format!("postgresql://{user}{}/{database}", hosts.join(","))
}

fn parse_sqlite(rest: &str, base_dir: &Path) -> Result<SqliteUrl, String> {
    let Some(after) = rest.strip_prefix("///") else {
        return Err(format!(
            "is not a SQLite URL Larder accepts; {FORMS} (three slashes, a fourth for an \
             absolute path)"
        ));
    };
    let (raw_path, query) = after.split_once('?').unwrap_or((after, ""));
    let path = percent_decode(raw_path)?;
    if path.is_empty() || path == ":memory:" {
        return Err(
            "names an in-memory SQLite database, which would vanish with the process; name a \
             file, as in `sqlite:///data/registry.db`"
                .to_string(),
        );
    }
    if path.ends_with('/') {
        return Err("names a directory; name the database file, as in \
                    `sqlite:///data/registry.db`"
            .to_string());
    }
    let mut naming = Naming::default_naming();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "table" => naming.table = identifier("table", &value)?,
            "name" => naming.name = row_name(&value)?,
            "schema" => {
                return Err(
                    "sets `schema`, which SQLite does not have; use `table=` to keep \
                     registries apart"
                        .to_string(),
                );
            }
            other => {
                return Err(format!(
                    "has unknown query option `{other}`; a SQLite registry URL takes `table` \
                     and `name`"
                ));
            }
        }
    }
    let path = Path::new(&path);
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    };
    let base_location = format!("sqlite:///{}", path.display());
    Ok(SqliteUrl {
        path,
        location: format!("{base_location}{}", naming.query()),
        base_location,
        naming,
    })
}

/// A table or schema name: lowercase ASCII letters, digits and `_`, not starting with a
/// digit, at most 63 bytes (Postgres' limit). Lowercase only, so that the name means the
/// same quoted and unquoted.
fn identifier(key: &str, value: &str) -> Result<String, String> {
    let mut chars = value.chars();
    let valid = value.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(value.to_string())
    } else {
        Err(format!(
            "has invalid `{key}={value}`: use lowercase letters, digits and `_`, starting with \
             a letter or `_`, at most 63 characters"
        ))
    }
}

fn row_name(value: &str) -> Result<String, String> {
    if value.is_empty() || value.len() > 200 || value.chars().any(char::is_control) {
        return Err(format!(
            "has invalid `name={value}`: use 1 to 200 printable characters"
        ));
    }
    Ok(value.to_string())
}

fn percent_decode(text: &str) -> Result<String, String> {
    // form_urlencoded decodes `%XX`; `+` and `&` keep their literal meaning in a path.
    let escaped = format!("p={}", text.replace('+', "%2B").replace('&', "%26"));
    let decoded = url::form_urlencoded::parse(escaped.as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    if decoded.contains('\u{fffd}') && !text.contains('\u{fffd}') {
        return Err("has a path that is not UTF-8 once decoded".to_string());
    }
    Ok(decoded)
}

/// The URL with any password replaced by `***`, for messages about URLs that may not parse.
pub fn redact(text: &str) -> String {
    let authority_start = match text.find("://") {
        Some(i) => i + 3,
        None => match text.find(':') {
            Some(i) => i + 1,
            None => return text.to_string(),
        },
    };
    let rest = &text[authority_start..];
    let authority_len = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let masked = match authority.rfind('@') {
        Some(at) if authority[..at].contains(':') => {
            let colon = authority[..at].find(':').unwrap_or(at);
            format!(
                "{}{}:***{}",
                &text[..authority_start],
                &authority[..colon],
                &text[authority_start + at..]
            )
        }
        _ => text.to_string(),
    };
    // `password=` in the query too.
    match masked.split_once('?') {
        None => masked,
        Some((base, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|item| {
                    if item.starts_with("password=") {
                        "password=***".to_string()
                    } else {
                        item.to_string()
                    }
                })
                .collect();
            format!("{base}?{}", query.join("&"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SqlUrl, String> {
        SqlUrl::parse(text, Path::new("/repo")).map_err(|err| err.to_string())
    }

    fn sqlite(text: &str) -> SqliteUrl {
        match parse(text) {
            Ok(SqlUrl::Sqlite(url)) => url,
            other => panic!("`{text}` gave {other:?}"),
        }
    }

    #[test]
    fn sqlite_paths_relative_and_absolute() {
        let relative = sqlite("sqlite:///data/registry.db");
        assert_eq!(relative.path, Path::new("/repo/data/registry.db"));
        assert_eq!(relative.location, "sqlite:////repo/data/registry.db");
        let absolute = sqlite("sqlite:////var/lib/larder/r.db");
        assert_eq!(absolute.path, Path::new("/var/lib/larder/r.db"));
        let spaced = sqlite("sqlite:///my%20data/r.db?table=reg_a&name=prod");
        assert_eq!(spaced.path, Path::new("/repo/my data/r.db"));
        assert_eq!(spaced.naming.table, "reg_a");
        assert_eq!(spaced.naming.name, "prod");
        assert_eq!(
            spaced.location,
            "sqlite:////repo/my data/r.db?table=reg_a&name=prod"
        );
    }

    #[test]
    fn bad_urls_are_explained() {
        let cases = [
            ("sqlite:data.db", "three slashes"),
            ("sqlite://", "three slashes"),
            ("sqlite:///", "in-memory"),
            ("sqlite:///:memory:", "in-memory"),
            ("sqlite:///data/", "names a directory"),
            ("sqlite:///r.db?mode=ro", "unknown query option `mode`"),
            ("sqlite:///r.db?schema=x", "SQLite does not have"),
            ("sqlite:///r.db?table=Reg", "invalid `table=Reg`"),
            ("sqlite:///r.db?table=1x", "invalid `table=1x`"),
            ("mysql://u@h/db", "unsupported scheme `mysql`"),
            ("registry.db", "is not a SQL registry URL"),
        ];
        for (url, expected) in cases {
            let message = parse(url).expect_err(url);
            assert!(message.contains(expected), "{url}: {message}");
        }
    }

    #[cfg(feature = "postgres")]
    fn postgres(text: &str) -> PostgresUrl {
        match parse(text) {
            Ok(SqlUrl::Postgres(url)) => *url,
            other => panic!("`{text}` gave {other:?}"),
        }
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn postgres_spellings_and_options() {
        for scheme in [
            "postgresql",
            "postgres",
            "postgresql+psycopg",
            "postgresql+psycopg2",
        ] {
            let url = postgres(&format!(
                "{scheme}://reg:s3cr%40t@db.internal:6543/features?sslmode=require&application_name=larder"
            ));
            assert_eq!(url.location, "postgresql://reg@db.internal:6543/features");
            assert_eq!(url.config.get_password(), Some(&b"s3cr@t"[..]));
            assert_eq!(url.config.get_application_name(), Some("larder"));
            assert_eq!(url.ssl_mode, SslMode::Require);
        }
        let url = postgres("postgresql://u@h/db?schema=feast_reg&table=reg&name=staging");
        assert_eq!(url.naming.qualified_table(), "\"feast_reg\".\"reg\"");
        assert_eq!(
            url.location,
            "postgresql://u@h:5432/db?schema=feast_reg&table=reg&name=staging"
        );
        assert_eq!(url.ssl_mode, SslMode::Prefer);
        assert!(url.config.get_connect_timeout().is_some());
        let url = postgres("postgresql://u@h/db?sslmode=verify-full&sslrootcert=certs/ca.pem");
        assert_eq!(url.ssl_mode, SslMode::VerifyFull);
        assert_eq!(
            url.root_certs,
            RootCerts::File(PathBuf::from("/repo/certs/ca.pem"))
        );
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn postgres_errors_never_show_the_password() {
        let cases = [
            (
                "postgresql://u:hunter2@h/db?sslmode=sometimes",
                "unknown `sslmode=sometimes`",
            ),
            (
                "postgresql://u:hunter2@h/db?bogus=1",
                "is not a valid Postgres URL",
            ),
            (
                "postgresql://u:hunter2@h/db?sslcert=c.pem",
                "no client certificates",
            ),
            (
                "postgresql://u:hunter2@h:notaport/db",
                "is not a valid Postgres URL",
            ),
            ("postgresql:u:hunter2@h/db", "is not a valid Postgres URL"),
            ("postgresql://u:hunter2@/db", "names no host"),
        ];
        for (url, expected) in cases {
            let message = parse(url).expect_err(url);
            assert!(message.contains(expected), "{url}: {message}");
            assert!(!message.contains("hunter2"), "{url}: {message}");
        }
    }

    #[test]
    fn a_replica_reads_the_primary_row() {
        let primary = SqlUrl::parse("sqlite:///p.db?table=reg&name=staging", Path::new("/r"))
            .expect("primary");
        let replica = SqlUrl::parse("sqlite:///q.db", Path::new("/r")).expect("replica");
        let replica = replica.read_same_row_as(&primary).expect("inherits");
        assert_eq!(replica.naming(), primary.naming());
        assert_eq!(
            replica.location(),
            "sqlite:////r/q.db?table=reg&name=staging"
        );
        let other = SqlUrl::parse("sqlite:///q.db?name=prod", Path::new("/r")).expect("other");
        let message = other
            .read_same_row_as(&primary)
            .expect_err("another registry")
            .to_string();
        assert!(
            message.contains("names another registry than `path`"),
            "{message}"
        );
    }

    #[test]
    fn redact_masks_passwords() {
        assert_eq!(
            redact("postgresql://u:pw@h:5432/db?x=1"),
            "postgresql://u:***@h:5432/db?x=1"
        );
        assert_eq!(
            redact("postgresql://h/db?password=pw"),
            "postgresql://h/db?password=***"
        );
        assert_eq!(redact("sqlite:///r.db"), "sqlite:///r.db");
        assert_eq!(redact("postgresql:u:pw@h/db"), "postgresql:u:***@h/db");
    }
}
