//! Registry blob in a local file, with compare-and-swap through an advisory lock file.
//!
//! object_store's `LocalFileSystem` cannot do `PutMode::Update`, so commits take an exclusive
//! lock on `<path>.lock`, compare the current content's generation with the expected one,
//! write a temporary file in the same directory, fsync it and rename it over the target.
//! Readers take no lock: the rename is atomic, so they see the old blob or the new one.
//!
//! The generation is a hash of the content (FNV-1a 128 plus the length), so separate
//! processes agree on it without sharing any state, and it is stable across Rust versions.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{Generation, RegistryStore, StoreError, StoredBlob};

/// A registry stored in one local file.
///
/// Any number of instances and processes may use the same path; the lock file serializes
/// their commits. The lock is advisory (`flock`), so it is reliable on local file systems
/// and may not be on some network file systems.
#[derive(Clone, Debug)]
pub struct LocalFileStore {
    path: PathBuf,
    lock_path: PathBuf,
    location: String,
}

impl LocalFileStore {
    /// A store for the blob at `path` (relative paths are relative to the working directory).
    /// Does no I/O; the parent directories are created by the first commit.
    pub fn new(path: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let path = path.into();
        let location = path.display().to_string();
        let Some(file_name) = path.file_name() else {
            return Err(StoreError::InvalidLocation {
                location,
                reason: "does not name a file".to_string(),
            });
        };
        let mut lock_name = file_name.to_os_string();
        lock_name.push(".lock");
        let lock_path = path.with_file_name(lock_name);
        Ok(Self {
            path,
            lock_path,
            location,
        })
    }

    /// The file holding the blob.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sidecar file locked during commits and deletes.
    pub fn lock_path(&self) -> &Path {
        &self.lock_path
    }

    fn io_error(&self, operation: &'static str) -> impl FnOnce(io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            location: self.location.clone(),
            operation,
            source,
        }
    }

    /// The directory holding the blob; `.` for a bare relative file name.
    fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        }
    }

    fn load_blocking(&self) -> Result<Option<StoredBlob>, StoreError> {
        Ok(read_if_exists(&self.path)
            .map_err(self.io_error("read"))?
            .map(|bytes| StoredBlob {
                generation: content_generation(&bytes),
                bytes: Bytes::from(bytes),
            }))
    }

    fn commit_blocking(
        &self,
        expected: Option<&Generation>,
        bytes: &[u8],
    ) -> Result<Generation, StoreError> {
        fs::create_dir_all(self.dir()).map_err(self.io_error("create the parent directory of"))?;
        let _lock = self.lock().map_err(self.io_error("lock"))?;
        let current = read_if_exists(&self.path).map_err(self.io_error("read"))?;
        let current = current.as_deref().map(content_generation);
        if current.as_ref() != expected {
            return Err(StoreError::Conflict {
                location: self.location.clone(),
            });
        }
        self.replace(bytes).map_err(self.io_error("write"))?;
        self.sync_dir();
        Ok(content_generation(bytes))
    }

    fn delete_blocking(&self) -> Result<(), StoreError> {
        let lock = match self.lock() {
            Ok(lock) => lock,
            // No directory, hence no blob.
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(self.io_error("lock")(err)),
        };
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(self.io_error("delete")(err)),
        }
        // Removing the lock file is safe only where `lock` can tell that the file it locked
        // was unlinked meanwhile (inode check); elsewhere the lock file stays.
        if cfg!(unix) {
            match fs::remove_file(&self.lock_path) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(self.io_error("delete the lock file of")(err)),
            }
        }
        drop(lock);
        self.sync_dir();
        Ok(())
    }

    /// Takes the exclusive lock, blocking until other writers release it. The lock is held
    /// until the returned file is dropped (also when the process dies).
    fn lock(&self) -> io::Result<File> {
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.lock_path)?;
            file.lock()?;
            if is_current_lock_file(&file, &self.lock_path)? {
                return Ok(file);
            }
            // `delete` unlinked the file while we waited; lock the new one instead.
        }
    }

    /// Writes `bytes` to a fresh temporary file next to the target and renames it over the
    /// target. The temporary file is removed again when anything fails.
    fn replace(&self, bytes: &[u8]) -> io::Result<()> {
        let file_name = self
            .path
            .file_name()
            .map(|name| name.to_string_lossy())
            .unwrap_or_default();
        let temp = self.dir().join(format!(
            ".{file_name}.{}.tmp",
            uuid::Uuid::new_v4().simple()
        ));
        let result = write_new_synced(&temp, bytes).and_then(|()| fs::rename(&temp, &self.path));
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    /// Makes the rename durable. A failure here does not undo the commit, which readers
    /// already see, so it is logged rather than returned.
    fn sync_dir(&self) {
        #[cfg(unix)]
        if let Err(error) = File::open(self.dir()).and_then(|dir| dir.sync_all()) {
            tracing::warn!(
                location = %self.location,
                error = %error,
                "cannot fsync the registry directory; the last change may not survive a crash"
            );
        }
    }
}

#[async_trait::async_trait]
impl RegistryStore for LocalFileStore {
    fn location(&self) -> &str {
        &self.location
    }

    async fn load(&self) -> Result<Option<StoredBlob>, StoreError> {
        let store = self.clone();
        run_blocking(&self.location, move || store.load_blocking()).await
    }

    async fn commit(
        &self,
        expected: Option<&Generation>,
        bytes: Bytes,
    ) -> Result<Generation, StoreError> {
        let store = self.clone();
        let expected = expected.cloned();
        run_blocking(&self.location, move || {
            store.commit_blocking(expected.as_ref(), &bytes)
        })
        .await
    }

    async fn delete(&self) -> Result<(), StoreError> {
        let store = self.clone();
        run_blocking(&self.location, move || store.delete_blocking()).await
    }
}

async fn run_blocking<T: Send + 'static>(
    location: &str,
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| StoreError::Internal {
            location: location.to_string(),
            message: format!("blocking file task failed: {err}"),
        })?
}

fn read_if_exists(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

fn write_new_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Whether `file` is still the file at `path` (not unlinked or replaced since it was opened).
#[cfg(unix)]
fn is_current_lock_file(file: &File, path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let locked = file.metadata()?;
    match fs::metadata(path) {
        Ok(current) => Ok(current.dev() == locked.dev() && current.ino() == locked.ino()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err),
    }
}

/// Lock files are never removed off unix, so the locked file is always the current one.
#[cfg(not(unix))]
fn is_current_lock_file(_file: &File, _path: &Path) -> io::Result<bool> {
    Ok(true)
}

/// The generation of a local blob: FNV-1a 128 of the content and its length, in hex.
/// Defined here rather than taken from `std::hash` so that every Larder build agrees.
pub(crate) fn content_generation(bytes: &[u8]) -> Generation {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let hash = bytes.iter().fold(OFFSET, |hash, &byte| {
        (hash ^ u128::from(byte)).wrapping_mul(PRIME)
    });
    Generation(format!("fnv1a128-{hash:032x}-{}", bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_generation_matches_fnv1a_128_vectors() {
        // Reference values of FNV-1a 128 (draft-eastlake-fnv).
        let cases: &[(&[u8], &str)] = &[
            (b"", "fnv1a128-6c62272e07bb014262b821756295c58d-0"),
            (b"a", "fnv1a128-d228cb696f1a8caf78912b704e4a8964-1"),
            (b"foobar", "fnv1a128-343e1662793c64bf6f0d3597ba446f18-6"),
        ];
        for (input, expected) in cases {
            assert_eq!(content_generation(input).0, *expected);
        }
    }

    #[test]
    fn replace_removes_its_temp_file_when_the_rename_fails() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("registry.json");
        // A non-empty directory cannot be renamed over.
        std::fs::create_dir_all(path.join("inside")).expect("create dir");
        let store = LocalFileStore::new(&path).expect("store");
        assert!(store.replace(b"{}").is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read dir")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["registry.json"]);
    }
}
