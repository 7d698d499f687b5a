//! Registry blob in an object store (memory, S3, GCS), with compare-and-swap through
//! object_store conditional puts.
//!
//! A first commit uses `PutMode::Create`, later ones `PutMode::Update` with the e_tag and
//! version the caller loaded. Stores differ in what they compare: S3 and memory the e_tag,
//! GCS the object generation (object_store's `version`), so a [`Generation`] carries both.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::{Generation, RegistryLocation, RegistryStore, StoreError, StoredBlob};

/// A registry stored as one object in an [`ObjectStore`] that supports conditional puts
/// (`PutMode::Create` and `PutMode::Update`).
///
/// Over a store without them (object_store's `LocalFileSystem`, S3 with conditional put
/// disabled) commits fail with [`StoreError::InvalidLocation`]; use
/// [`LocalFileStore`](super::LocalFileStore) for local files.
#[derive(Clone, Debug)]
pub struct ObjectStoreRegistry {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    location: String,
}

impl ObjectStoreRegistry {
    /// The registry at `path` in `store`; `location` names it in messages (no credentials).
    pub fn new(store: Arc<dyn ObjectStore>, path: ObjectPath, location: impl Into<String>) -> Self {
        Self {
            store,
            path,
            location: location.into(),
        }
    }

    /// Builds the object store for a parsed `memory://`, `s3://` or `gs://` location; `text`
    /// is the location as the user wrote it. Cloud credentials come from the environment.
    pub fn open(text: &str, location: &RegistryLocation) -> Result<Self, StoreError> {
        let (store, key) = match location {
            RegistryLocation::Local(_) => {
                return Err(StoreError::InvalidLocation {
                    location: text.to_string(),
                    reason: "is a local path; open it as a `LocalFileStore`".to_string(),
                });
            }
            RegistryLocation::Memory { name, key } => (shared_memory_store(name), key),
            RegistryLocation::S3 { bucket, key } => (open_s3(text, bucket)?, key),
            RegistryLocation::Gcs { bucket, key } => (open_gcs(text, bucket)?, key),
        };
        Ok(Self::new(store, key.clone(), text))
    }

    fn error(&self, err: object_store::Error) -> StoreError {
        map_error(&self.location, err)
    }

    fn conflict(&self) -> StoreError {
        StoreError::Conflict {
            location: self.location.clone(),
        }
    }

    fn generation(
        &self,
        e_tag: Option<&str>,
        version: Option<&str>,
    ) -> Result<Generation, StoreError> {
        encode_generation(e_tag, version).ok_or_else(|| StoreError::Internal {
            location: self.location.clone(),
            message: "the object store returned neither an e_tag nor a version".to_string(),
        })
    }
}

#[async_trait::async_trait]
impl RegistryStore for ObjectStoreRegistry {
    fn location(&self) -> &str {
        &self.location
    }

    async fn load(&self) -> Result<Option<StoredBlob>, StoreError> {
        let result = match self.store.get(&self.path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(err) => return Err(self.error(err)),
        };
        let generation =
            self.generation(result.meta.e_tag.as_deref(), result.meta.version.as_deref())?;
        let bytes = result.bytes().await.map_err(|err| self.error(err))?;
        Ok(Some(StoredBlob { bytes, generation }))
    }

    async fn commit(
        &self,
        expected: Option<&Generation>,
        bytes: Bytes,
    ) -> Result<Generation, StoreError> {
        let mode = match expected {
            None => PutMode::Create,
            Some(generation) => {
                PutMode::Update(decode_generation(generation).ok_or_else(|| {
                    StoreError::Internal {
                        location: self.location.clone(),
                        message: format!(
                            "generation `{generation}` was not issued by an object store"
                        ),
                    }
                })?)
            }
        };
        let result = self
            .store
            .put_opts(&self.path, PutPayload::from(bytes), PutOptions::from(mode))
            .await;
        match result {
            Ok(put) => self.generation(put.e_tag.as_deref(), put.version.as_deref()),
            // Create on an existing object; Update on a changed or missing one (S3's NotFound
            // for a missing object is already turned into Precondition by object_store).
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Err(self.conflict()),
            Err(err) => Err(self.error(err)),
        }
    }

    async fn delete(&self) -> Result<(), StoreError> {
        match self.store.delete(&self.path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(self.error(err)),
        }
    }
}

/// The in-memory store named `name`, created on first use and shared for the life of the
/// process, so that two opens of `memory://name/...` see the same blobs.
fn shared_memory_store(name: &str) -> Arc<dyn ObjectStore> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    // A panic while holding the lock cannot leave the map half-updated.
    let mut stores = STORES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let store = stores
        .entry(name.to_string())
        .or_insert_with(|| Arc::new(InMemory::new()));
    Arc::clone(store) as Arc<dyn ObjectStore>
}

#[cfg(feature = "aws")]
fn open_s3(text: &str, bucket: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
    use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
    // Conditional put is what makes commits safe; force it on even if the environment
    // (`AWS_CONDITIONAL_PUT`) says otherwise.
    let store = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_conditional_put(S3ConditionalPut::ETagMatch)
        .build()
        .map_err(|err| StoreError::InvalidLocation {
            location: text.to_string(),
            reason: format!("cannot be opened: {err}"),
        })?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "aws"))]
fn open_s3(text: &str, _bucket: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
    Err(feature_off(text, "aws"))
}

#[cfg(feature = "gcp")]
fn open_gcs(text: &str, bucket: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
    use object_store::gcp::GoogleCloudStorageBuilder;
    let store = GoogleCloudStorageBuilder::from_env()
        .with_bucket_name(bucket)
        .build()
        .map_err(|err| StoreError::InvalidLocation {
            location: text.to_string(),
            reason: format!("cannot be opened: {err}"),
        })?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "gcp"))]
fn open_gcs(text: &str, _bucket: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
    Err(feature_off(text, "gcp"))
}

#[cfg(not(all(feature = "aws", feature = "gcp")))]
fn feature_off(text: &str, feature: &str) -> StoreError {
    StoreError::InvalidLocation {
        location: text.to_string(),
        reason: format!("needs Larder built with the `{feature}` feature"),
    }
}

/// Sorts object_store errors by who must act.
fn map_error(location: &str, err: object_store::Error) -> StoreError {
    use object_store::Error as E;
    let location = location.to_string();
    match err {
        E::AlreadyExists { .. } | E::Precondition { .. } => StoreError::Conflict { location },
        E::NotFound { .. } | E::InvalidPath { .. } | E::UnknownConfigurationKey { .. } => {
            StoreError::InvalidLocation {
                location,
                reason: format!("cannot be used: {err}"),
            }
        }
        E::NotSupported { .. } | E::NotImplemented { .. } => StoreError::InvalidLocation {
            location,
            reason: format!("is on a store without compare-and-swap writes: {err}"),
        },
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => StoreError::AccessDenied {
            location,
            source: Box::new(err),
        },
        E::JoinError { .. } | E::NotModified { .. } => StoreError::Internal {
            location,
            message: err.to_string(),
        },
        // `Generic` and any variant added later: object_store has already retried.
        err => StoreError::Unavailable {
            location,
            retryable: true,
            source: Box::new(err),
        },
    }
}

const E_TAG_PREFIX: &str = "etag:";
const VERSION_PREFIX: &str = "version:";

/// Packs what a store returned into one opaque string: `etag:<e_tag>`, `version:<version>`
/// or `version:<version>;etag:<e_tag>` (`%` and `;` in the version are escaped, so the first
/// `;` ends it). None when the store returned neither.
fn encode_generation(e_tag: Option<&str>, version: Option<&str>) -> Option<Generation> {
    let text = match (e_tag, version) {
        (None, None) => return None,
        (Some(e_tag), None) => format!("{E_TAG_PREFIX}{e_tag}"),
        (e_tag, Some(version)) => {
            let version = version.replace('%', "%25").replace(';', "%3B");
            match e_tag {
                Some(e_tag) => format!("{VERSION_PREFIX}{version};{E_TAG_PREFIX}{e_tag}"),
                None => format!("{VERSION_PREFIX}{version}"),
            }
        }
    };
    Some(Generation(text))
}

/// The inverse of [`encode_generation`]; None for a generation it did not produce.
fn decode_generation(generation: &Generation) -> Option<UpdateVersion> {
    let text = generation.0.as_str();
    if let Some(e_tag) = text.strip_prefix(E_TAG_PREFIX) {
        return Some(UpdateVersion {
            e_tag: Some(e_tag.to_string()),
            version: None,
        });
    }
    let rest = text.strip_prefix(VERSION_PREFIX)?;
    let (version, e_tag) = match rest.split_once(';') {
        Some((version, e_tag)) => (version, Some(e_tag.strip_prefix(E_TAG_PREFIX)?)),
        None => (rest, None),
    };
    Some(UpdateVersion {
        e_tag: e_tag.map(str::to_string),
        version: Some(version.replace("%3B", ";").replace("%25", "%")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_round_trip() {
        let cases = [
            (Some("\"abc\""), None),
            (None, Some("1712345678901234")),
            (Some("\"x;y\""), Some("v;1%3B")),
            (Some(""), Some("")),
        ];
        for (e_tag, version) in cases {
            let generation = encode_generation(e_tag, version).expect("something to encode");
            let decoded = decode_generation(&generation).expect("own encoding decodes");
            assert_eq!(decoded.e_tag.as_deref(), e_tag, "{generation}");
            assert_eq!(decoded.version.as_deref(), version, "{generation}");
        }
        assert!(encode_generation(None, None).is_none());
        assert!(decode_generation(&Generation("fnv1a128-00-0".into())).is_none());
    }
}
