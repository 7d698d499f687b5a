//! Finding, reading and parsing `feature_store.yaml`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_saphyr::MessageFormatter as _;

use crate::env::substitute;
use crate::error::{ConfigError, YAML_BASE64_VAR};
use crate::model::RepoConfig;
use crate::node::Node;
use crate::parse::build;

/// File name of the config inside a repo.
pub const CONFIG_FILE_NAME: &str = "feature_store.yaml";

/// Looks up an environment variable; `None` when unset.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, for [`load`]. A variable whose value is not UTF-8 counts
/// as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Where to look for the config (from the CLI's `-c/--chdir` and `-f/--feature-store-yaml`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoadOptions {
    /// The feature repo; relative paths in the config resolve against it. Empty means
    /// the current directory.
    pub repo_dir: PathBuf,
    /// An explicit config file, relative to the current directory as given.
    pub yaml_file: Option<PathBuf>,
}

impl LoadOptions {
    pub fn new(repo_dir: impl Into<PathBuf>) -> Self {
        Self {
            repo_dir: repo_dir.into(),
            yaml_file: None,
        }
    }

    pub fn with_yaml_file(mut self, yaml_file: impl Into<PathBuf>) -> Self {
        self.yaml_file = Some(yaml_file.into());
        self
    }
}

/// Loads the repo config: `opts.yaml_file` if given, else `FEATURE_STORE_YAML_BASE64`
/// if set and not empty, else `<repo_dir>/feature_store.yaml`. See the crate docs.
pub fn load(opts: &LoadOptions, env: Env<'_>) -> Result<RepoConfig, ConfigError> {
    let repo_dir = absolute_dir(&opts.repo_dir)?;
    if let Some(file) = &opts.yaml_file {
        let text = read_file(file)?;
        return parse_str(&text, &file.display().to_string(), &repo_dir, env);
    }
    if let Some(encoded) = env(YAML_BASE64_VAR).filter(|v| !v.trim().is_empty()) {
        let text = decode_base64(&encoded)?;
        return parse_str(&text, YAML_BASE64_VAR, &repo_dir, env);
    }
    let file = repo_dir.join(CONFIG_FILE_NAME);
    let text = read_file(&file)?;
    parse_str(&text, &file.display().to_string(), &repo_dir, env)
}

/// The text of a loaded config as written, before environment substitution, read again
/// from [`RepoConfig::config_source`] (a file, or [`YAML_BASE64_VAR`] in `env`): what a
/// process elsewhere (a Kubernetes materialization pod) loads with its own environment.
pub fn read_source(config: &RepoConfig, env: Env<'_>) -> Result<String, ConfigError> {
    if config.config_source == YAML_BASE64_VAR {
        let encoded = env(YAML_BASE64_VAR).unwrap_or_default();
        return decode_base64(&encoded);
    }
    let text = read_file(Path::new(&config.config_source))?;
    Ok(text.strip_prefix('\u{feff}').unwrap_or(&text).to_owned())
}

/// Parses config text: substitutes environment variables, parses YAML, validates.
///
/// `source_name` prefixes every message (`feature_store.yaml:5: ...`) and becomes
/// [`RepoConfig::config_source`]; relative paths resolve against `repo_dir`, used as is.
pub fn parse_str(
    text: &str,
    source_name: &str,
    repo_dir: &Path,
    env: Env<'_>,
) -> Result<RepoConfig, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let substituted = substitute(text, env).map_err(|errors| ConfigError::Substitution {
        source_name: source_name.to_owned(),
        errors,
    })?;
    let root = Node::parse(&substituted).map_err(|err| yaml_error(source_name, &err))?;
    build(&root, source_name, repo_dir)
}

fn yaml_error(source_name: &str, err: &serde_saphyr::Error) -> ConfigError {
    let location = err.location();
    let known = |n: u64| usize::try_from(n).ok().filter(|n| *n > 0);
    let message = serde_saphyr::UserMessageFormatter.format_message(err);
    ConfigError::Yaml {
        source_name: source_name.to_owned(),
        line: location.and_then(|l| known(l.line())),
        column: location.and_then(|l| known(l.column())),
        // The formatter's text may hold control characters from the input.
        message: message.escape_debug().to_string(),
    }
}

fn absolute_dir(dir: &Path) -> Result<PathBuf, ConfigError> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::path::absolute(dir).map_err(|source| ConfigError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ConfigError::NotFound {
            path: path.to_path_buf(),
        },
        _ => ConfigError::Io {
            path: path.to_path_buf(),
            source,
        },
    })?;
    String::from_utf8(bytes).map_err(|_| ConfigError::NotUtf8 {
        source_name: path.display().to_string(),
    })
}

/// Decodes the variable like Python's `base64.b64decode`: whitespace (line wrapping)
/// is ignored, padding is optional.
fn decode_base64(encoded: &str) -> Result<String, ConfigError> {
    const ENGINE: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let compact: String = encoded.split_ascii_whitespace().collect();
    let bytes = ENGINE
        .decode(compact)
        .map_err(|source| ConfigError::Base64 { source })?;
    String::from_utf8(bytes).map_err(|_| ConfigError::NotUtf8 {
        source_name: YAML_BASE64_VAR.to_owned(),
    })
}
