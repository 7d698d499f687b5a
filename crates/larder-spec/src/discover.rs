//! Which files of a repo are definition files.
//!
//! Every `*.yaml`/`*.yml` below the repo folder, except configuration files
//! (`feature_store.yaml`, `feature_store*.yaml`, the file given with `-f`), hidden folders,
//! the `data/` and `target/` folders at the repo root, and paths matching `.larderignore`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::error::DefinitionError;

/// Where to look and what to leave out.
#[derive(Clone, Debug, Default)]
pub struct DiscoverOptions {
    /// The config file in use, when it lies inside the repo (never read as definitions).
    pub config_file: Option<PathBuf>,
}

const IGNORE_FILE: &str = ".larderignore";
const SKIPPED_ROOT_FOLDERS: [&str; 2] = ["data", "target"];

/// The definition files of the repo at `root`, sorted by path.
pub fn definition_files(
    root: &Path,
    options: &DiscoverOptions,
) -> Result<Vec<PathBuf>, DefinitionError> {
    let ignore = load_ignore(root)?;
    let config_file = options
        .config_file
        .as_ref()
        .and_then(|p| fs::canonicalize(p).ok());
    let mut found = Vec::new();
    walk(root, root, &ignore, config_file.as_deref(), &mut found).map_err(|(path, e)| {
        DefinitionError {
            file: path,
            line: 0,
            object: String::new(),
            message: format!("cannot read: {e}"),
        }
    })?;
    found.sort();
    Ok(found)
}

fn load_ignore(root: &Path) -> Result<GlobSet, DefinitionError> {
    let path = root.join(IGNORE_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(DefinitionError {
                file: PathBuf::from(IGNORE_FILE),
                line: 0,
                object: String::new(),
                message: format!("cannot read: {e}"),
            });
        }
    };
    let mut builder = GlobSetBuilder::new();
    for (index, raw) in text.lines().enumerate() {
        let pattern = raw.trim();
        if pattern.is_empty() || pattern.starts_with('#') {
            continue;
        }
        let pattern = pattern.trim_start_matches('/').trim_end_matches('/');
        // A pattern matches the path itself and everything below it.
        for variant in [pattern.to_string(), format!("{pattern}/**")] {
            let glob = Glob::new(&variant).map_err(|e| DefinitionError {
                file: PathBuf::from(IGNORE_FILE),
                line: index as u64 + 1,
                object: String::new(),
                message: format!("invalid pattern `{pattern}`: {e}"),
            })?;
            builder.add(glob);
        }
    }
    builder.build().map_err(|e| DefinitionError {
        file: PathBuf::from(IGNORE_FILE),
        line: 0,
        object: String::new(),
        message: format!("invalid patterns: {e}"),
    })
}

fn is_config_name(name: &str) -> bool {
    name.starts_with("feature_store") && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

fn walk(
    root: &Path,
    dir: &Path,
    ignore: &GlobSet,
    config_file: Option<&Path>,
    found: &mut Vec<PathBuf>,
) -> Result<(), (PathBuf, io::Error)> {
    let entries = fs::read_dir(dir).map_err(|e| (dir.to_path_buf(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| (dir.to_path_buf(), e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let relative = path.strip_prefix(root).unwrap_or(&path);
        if name.starts_with('.') || ignore.is_match(relative) {
            continue;
        }
        let file_type = entry.file_type().map_err(|e| (path.clone(), e))?;
        // Follow links to folders/files as the user would expect.
        let is_dir = file_type.is_dir() || (file_type.is_symlink() && path.is_dir());
        if is_dir {
            if dir == root && SKIPPED_ROOT_FOLDERS.contains(&name.as_str()) {
                continue;
            }
            walk(root, &path, ignore, config_file, found)?;
        } else if (name.ends_with(".yaml") || name.ends_with(".yml")) && !is_config_name(&name) {
            let is_config = config_file
                .is_some_and(|c| fs::canonicalize(&path).is_ok_and(|p| p.as_path() == c));
            if !is_config {
                found.push(path);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, "").unwrap();
    }

    #[test]
    fn finds_definitions_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for rel in [
            "features.yaml",
            "teams/drivers.yml",
            "teams/data/inside.yaml",
            "feature_store.yaml",
            "feature_store.staging.yaml",
            "prod.config.yaml",
            ".hidden/x.yaml",
            "data/sample.yaml",
            "target/x.yaml",
            "scratch/tmp.yaml",
            "notes.txt",
        ] {
            touch(root, rel);
        }
        fs::write(root.join(".larderignore"), "# comment\nscratch/\n").unwrap();
        let options = DiscoverOptions {
            config_file: Some(root.join("prod.config.yaml")),
        };
        let found: Vec<String> = definition_files(root, &options)
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().display().to_string())
            .collect();
        assert_eq!(
            found,
            [
                "features.yaml",
                "teams/data/inside.yaml",
                "teams/drivers.yml"
            ]
        );
    }

    #[test]
    fn bad_ignore_pattern_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".larderignore"), "ok/\n[bad\n").unwrap();
        let err = definition_files(dir.path(), &DiscoverOptions::default()).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(
            err.to_string()
                .starts_with(".larderignore:2: invalid pattern `[bad`")
        );
    }
}
