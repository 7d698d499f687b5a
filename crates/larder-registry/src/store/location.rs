//! Parsing of registry paths (`registry.path` in `feature_store.yaml`) into a checked location.

use std::path::{Path, PathBuf};

use object_store::path::Path as ObjectPath;

use super::StoreError;

/// The schemes `open_store` accepts, for error messages.
pub const SUPPORTED_SCHEMES: &str =
    "a local path, `file://`, `memory://`, `s3://` (feature `aws`) or `gs://` (feature `gcp`)";

/// A registry path that has been parsed and validated, but not opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryLocation {
    /// A file on the local file system, already resolved against the base directory.
    Local(PathBuf),
    /// `memory://name/key`: an in-process store shared by every open of the same `name`.
    Memory { name: String, key: ObjectPath },
    /// `s3://bucket/key`.
    S3 { bucket: String, key: ObjectPath },
    /// `gs://bucket/key`.
    Gcs { bucket: String, key: ObjectPath },
}

impl RegistryLocation {
    /// Parses `path`: a local path (relative paths are resolved against `base_dir`, usually the
    /// directory of `feature_store.yaml`) or a URL with one of the [`SUPPORTED_SCHEMES`].
    pub fn parse(path: &str, base_dir: &Path) -> Result<Self, StoreError> {
        let text = path.trim();
        if text.is_empty() {
            return Err(invalid(text, "is empty".to_string()));
        }
        let Some(scheme) = url_scheme(text) else {
            let path = Path::new(text);
            return Ok(Self::Local(if path.is_absolute() {
                path.to_path_buf()
            } else {
                base_dir.join(path)
            }));
        };
        let lower = scheme.to_ascii_lowercase();
        if matches!(lower.as_str(), "sqlite" | "postgres" | "postgresql")
            || lower.starts_with("postgresql+")
        {
            return Err(invalid(
                &redact(text),
                "is a SQL database URL; write the registry as a mapping with \
                 `registry_type: sql` and `path: <URL>`"
                    .to_string(),
            ));
        }
        let url = url::Url::parse(text)
            .map_err(|err| invalid(&redact(text), format!("is not a valid URL: {err}")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                &redact(text),
                "must not contain credentials; pass them through the environment".to_string(),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(
                text,
                "must not have a query or a fragment".to_string(),
            ));
        }
        match scheme.to_ascii_lowercase().as_str() {
            "file" => url
                .to_file_path()
                .map(Self::Local)
                .map_err(|()| invalid(text, "is not an absolute local `file://` URL".to_string())),
            "memory" => {
                let (name, key) = authority_and_key(text, &url)?;
                Ok(Self::Memory { name, key })
            }
            "s3" | "s3a" => {
                let (bucket, key) = bucket_and_key(text, &url)?;
                Ok(Self::S3 { bucket, key })
            }
            "gs" => {
                let (bucket, key) = bucket_and_key(text, &url)?;
                Ok(Self::Gcs { bucket, key })
            }
            other => Err(invalid(
                text,
                format!("has unsupported scheme `{other}`; use {SUPPORTED_SCHEMES}"),
            )),
        }
    }
}

/// The scheme of `text` when it starts with `scheme://`; anything else is a local path
/// (including Windows paths such as `C:\registry.json`).
fn url_scheme(text: &str) -> Option<&str> {
    let (scheme, _) = text.split_once("://")?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

fn authority_and_key(text: &str, url: &url::Url) -> Result<(String, ObjectPath), StoreError> {
    let authority = url.host_str().unwrap_or_default().to_string();
    let raw_key = url.path();
    if raw_key.trim_start_matches('/').is_empty() {
        return Err(invalid(
            text,
            "has no object key; name the blob, as in `memory://test/registry.json`".to_string(),
        ));
    }
    if raw_key.ends_with('/') {
        return Err(invalid(
            text,
            "names a directory; name the blob, as in `.../registry.json`".to_string(),
        ));
    }
    let key = ObjectPath::from_url_path(raw_key)
        .map_err(|err| invalid(text, format!("has an invalid object key: {err}")))?;
    Ok((authority, key))
}

fn bucket_and_key(text: &str, url: &url::Url) -> Result<(String, ObjectPath), StoreError> {
    let (bucket, key) = authority_and_key(text, url)?;
    if bucket.is_empty() {
        return Err(invalid(text, "has no bucket name".to_string()));
    }
    Ok((bucket, key))
}

/// Drops any `user:password@` part so that error messages never show credentials.
fn redact(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => text.to_string(),
    }
}

fn invalid(location: &str, reason: String) -> StoreError {
    StoreError::InvalidLocation {
        location: location.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RegistryLocation, StoreError> {
        RegistryLocation::parse(text, Path::new("/base"))
    }

    #[test]
    fn parses_locations() {
        let key = |k: &str| ObjectPath::from(k);
        let cases: &[(&str, RegistryLocation)] = &[
            (
                "data/r.json",
                RegistryLocation::Local("/base/data/r.json".into()),
            ),
            ("/abs/r.json", RegistryLocation::Local("/abs/r.json".into())),
            (
                "file:///abs/r.json",
                RegistryLocation::Local("/abs/r.json".into()),
            ),
            (
                "memory://t/a/r.json",
                RegistryLocation::Memory {
                    name: "t".into(),
                    key: key("a/r.json"),
                },
            ),
            (
                "s3://bucket/dir/r%20x.json",
                RegistryLocation::S3 {
                    bucket: "bucket".into(),
                    key: key("dir/r x.json"),
                },
            ),
            (
                "gs://bucket/r.json",
                RegistryLocation::Gcs {
                    bucket: "bucket".into(),
                    key: key("r.json"),
                },
            ),
        ];
        for (text, expected) in cases {
            match parse(text) {
                Ok(location) => assert_eq!(&location, expected, "{text}"),
                Err(err) => panic!("{text}: {err}"),
            }
        }
    }

    #[test]
    fn rejects_bad_locations_with_clear_messages() {
        let cases: &[(&str, &str)] = &[
            ("", "registry path `` is empty"),
            (
                "ftp://x/r.json",
                "has unsupported scheme `ftp`; use a local path, `file://`",
            ),
            ("s3://bucket", "has no object key"),
            ("s3://bucket/dir/", "names a directory"),
            ("gs:///r.json", "has no bucket name"),
            ("s3://b/r.json?versionId=1", "must not have a query"),
            (
                "file://host/r.json",
                "is not an absolute local `file://` URL",
            ),
        ];
        for (text, fragment) in cases {
            match parse(text) {
                Ok(location) => panic!("{text} parsed as {location:?}"),
                Err(err) => assert!(err.to_string().contains(fragment), "{text}: {err}"),
            }
        }
    }

    #[test]
    fn never_echoes_credentials() {
        let err = match parse("s3://AKIA:s3cr3t@bucket/r.json") {
            Ok(location) => panic!("parsed as {location:?}"),
            Err(err) => err.to_string(),
        };
        assert!(!err.contains("s3cr3t") && !err.contains("AKIA"), "{err}");
        assert!(err.contains("must not contain credentials"), "{err}");
    }
}
