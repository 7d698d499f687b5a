//! `larder init [NAME]`: creates a demo feature repository, ready for `larder apply`.
//!
//! The repository holds `feature_store.yaml` (SQLite online store, file offline store),
//! `features.yaml` (drivers and customers of a ride-hailing service), `.larderignore`,
//! `.gitignore`, `README.md`, and deterministic sample data under `data/` (see
//! [`data`] for its shape).

mod data;
mod templates;

#[cfg(test)]
mod tests;

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, TimeDelta, Timelike, Utc};

/// What `larder init` should create.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Project name, also the name of the new directory: `[A-Za-z0-9_]+`, not starting
    /// with `_`.
    pub name: String,
    /// Directory in which `<name>/` is created (with any missing parents).
    pub parent_dir: PathBuf,
    /// End of the generated data, truncated to the hour; see [`default_end_time`].
    pub end_time: DateTime<Utc>,
    /// Write into `<parent_dir>/<name>` even if it is not empty. Only the files `init`
    /// writes are replaced; others are left alone.
    pub force: bool,
}

/// What `larder init` created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    /// `<parent_dir>/<name>`.
    pub repo_dir: PathBuf,
    /// Every file written, relative to `repo_dir`, in writing order, with its row count
    /// for `.parquet` files and its size in bytes for the others.
    pub files: Vec<(PathBuf, u64)>,
}

/// Creates the demo repository `<parent_dir>/<name>`.
///
/// All content is generated before anything is written, so invalid options or a
/// generation failure leave the file system untouched. Each file is written to a
/// temporary name and renamed into place. If writing fails half-way, a directory created
/// by this call is removed again; a pre-existing one is left as is and the error says it
/// is incomplete.
///
/// # Errors
/// An invalid `name`; `<parent_dir>/<name>` existing as a non-directory, or as a
/// non-empty directory without `force`; any I/O failure (the error names the path).
pub fn init_repo(opts: &InitOptions) -> Result<InitReport> {
    validate_project_name(&opts.name)?;
    let repo_dir = opts.parent_dir.join(&opts.name);
    let files = render(&opts.name, default_end_time(opts.end_time))?;

    let created_dir = prepare_dir(&repo_dir, opts.force)?;
    if let Err(err) = write_files(&repo_dir, &files) {
        let shown = repo_dir.display();
        if created_dir {
            return Err(match fs::remove_dir_all(&repo_dir) {
                Ok(()) => err.context(format!("could not create `{shown}`; removed it again")),
                Err(_) => err.context(format!(
                    "could not create `{shown}`; it is incomplete, remove it and run \
                     `larder init` again"
                )),
            });
        }
        return Err(err.context(format!(
            "could not write the demo repo into `{shown}`; it is incomplete, fix the cause \
             and run `larder init --force` again"
        )));
    }

    Ok(InitReport {
        repo_dir,
        files: files
            .into_iter()
            .map(|file| (PathBuf::from(file.path), file.size))
            .collect(),
    })
}

/// The default end of the demo data: `now` truncated to the hour (UTC), so that the
/// newest driver events (`end - 1h`) are already in the past.
pub fn default_end_time(now: DateTime<Utc>) -> DateTime<Utc> {
    // Subtracting parts of `now` itself cannot overflow, unlike building a new DateTime.
    now - TimeDelta::minutes(i64::from(now.minute()))
        - TimeDelta::seconds(i64::from(now.second()))
        - TimeDelta::nanoseconds(i64::from(now.nanosecond()))
}

/// Checks a project name: the default SQLite online store puts it into table names, as
/// Feast does, which rules out hyphens and other punctuation.
fn validate_project_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && !name.starts_with('_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        bail!(
            "invalid project name `{name}`: use only letters, digits and underscores, not \
             starting with an underscore (no hyphens: the name is part of online store \
             table names)"
        );
    }
    Ok(())
}

/// One file of the repository, rendered in memory.
struct RenderedFile {
    /// Relative to the repository root, `/`-separated.
    path: &'static str,
    contents: Vec<u8>,
    /// Rows for Parquet files, bytes for the others (see [`InitReport::files`]).
    size: u64,
}

fn render(name: &str, end_time: DateTime<Utc>) -> Result<Vec<RenderedFile>> {
    let text = |path, contents: String| RenderedFile {
        path,
        size: contents.len() as u64,
        contents: contents.into_bytes(),
    };
    let mut files = vec![
        text("feature_store.yaml", templates::feature_store_yaml(name)),
        text("features.yaml", templates::FEATURES_YAML.to_owned()),
        text(".larderignore", templates::LARDERIGNORE.to_owned()),
        text(".gitignore", templates::GITIGNORE.to_owned()),
        text("README.md", templates::readme_md(name)),
    ];
    for file in data::generate(end_time)? {
        files.push(RenderedFile {
            path: file.path,
            size: file.rows,
            contents: file.bytes,
        });
    }
    Ok(files)
}

/// Makes sure `repo_dir` exists and may be written to; returns whether it was created.
fn prepare_dir(repo_dir: &Path, force: bool) -> Result<bool> {
    let shown = repo_dir.display();
    match fs::metadata(repo_dir) {
        Ok(meta) if !meta.is_dir() => bail!("`{shown}` already exists and is not a directory"),
        Ok(_) => {
            let mut entries =
                fs::read_dir(repo_dir).with_context(|| format!("failed to read `{shown}`"))?;
            if !force && entries.next().is_some() {
                bail!(
                    "directory `{shown}` already exists and is not empty; choose another \
                     name, or use --force to overwrite the demo files in it"
                );
            }
            Ok(false)
        }
        Err(err) if err.kind() == ErrorKind::NotFound => {
            fs::create_dir_all(repo_dir).with_context(|| format!("failed to create `{shown}`"))?;
            Ok(true)
        }
        Err(err) => Err(err).with_context(|| format!("failed to access `{shown}`")),
    }
}

fn write_files(repo_dir: &Path, files: &[RenderedFile]) -> Result<()> {
    for file in files {
        let path = repo_dir.join(file.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("failed to create `{}`", parent.display()))?;
        }
        write_atomic(&path, &file.contents)
            .with_context(|| format!("failed to write `{}`", path.display()))?;
    }
    Ok(())
}

/// Writes through a temporary sibling and a rename, so `path` is either its old version
/// or the complete new one.
fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(".larder-init.tmp");
    let tmp = path.with_file_name(tmp_name);
    let result = fs::write(&tmp, contents).and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
