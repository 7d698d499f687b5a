//! Training data: point-in-time-correct feature values for entity rows.

use std::sync::Arc;

use larder_config::OfflineStoreConfig;
use larder_offline::{
    EntityInput, EntitySelectMode, FileOfflineStore, FileStoreOptions, HistoricalRequest,
    OfflineStore, PostgresOfflineConfig, PostgresOfflineStore, SendableRecordBatchStream,
};
use larder_spec::{FeatureSelection, resolve_features};

use crate::error::Error;
use crate::store::FeatureStore;

/// A `get_historical_features` call.
#[derive(Clone, Debug)]
pub struct HistoricalFeaturesRequest {
    pub entities: EntityInput,
    pub features: FeatureSelection,
    /// Name output columns `view__feature` instead of `feature`.
    pub full_feature_names: bool,
}

impl FeatureStore {
    /// Builds the configured offline store.
    pub(crate) fn build_offline_store(
        config: &larder_config::RepoConfig,
        memory_limit: Option<usize>,
    ) -> Result<Arc<dyn OfflineStore>, Error> {
        match &config.offline_store {
            OfflineStoreConfig::File => {
                let mut options = FileStoreOptions::new(config.repo_dir.clone());
                options.memory_limit = memory_limit;
                Ok(Arc::new(FileOfflineStore::new(options)?))
            }
            OfflineStoreConfig::Postgres(postgres) => {
                let connection = &postgres.connection;
                let options = PostgresOfflineConfig {
                    host: connection.host.clone(),
                    port: connection.port,
                    database: connection.database.clone(),
                    db_schema: connection.db_schema.clone(),
                    user: connection.user.clone(),
                    password: connection.password.as_ref().map(|p| p.expose().to_string()),
                    sslmode: connection.sslmode.clone(),
                    sslkey_path: connection.sslkey_path.clone(),
                    sslcert_path: connection.sslcert_path.clone(),
                    sslrootcert_path: connection.sslrootcert_path.clone(),
                    max_conn: connection.max_conn,
                    keepalives_idle: connection.keepalives_idle,
                    entity_select_mode: match postgres.entity_select_mode {
                        larder_config::EntitySelectMode::TempTable => EntitySelectMode::TempTable,
                        larder_config::EntitySelectMode::EmbedQuery => EntitySelectMode::EmbedQuery,
                    },
                    repo_dir: config.repo_dir.clone(),
                    memory_limit,
                    ..PostgresOfflineConfig::default()
                };
                Ok(Arc::new(PostgresOfflineStore::new(options)?))
            }
        }
    }

    /// For every entity row, the requested features as they were at the row's event time.
    /// The stream yields the entity columns then the features, in entity row order.
    ///
    /// Definitions come from the registry (what was applied), not from the repo files.
    pub async fn get_historical_features(
        &self,
        request: HistoricalFeaturesRequest,
    ) -> Result<SendableRecordBatchStream, Error> {
        let (snapshot, project) = self.project_state().await?;
        let Some(state) = snapshot.project(&project) else {
            return Err(Error::Registry(
                larder_registry::RegistryError::ProjectNotFound { project },
            ));
        };
        let definitions = Arc::new(state.definitions());
        let views = resolve_features(&definitions, &request.features, request.full_feature_names)?;
        let offline = self.offline_store()?;
        Ok(offline
            .get_historical_features(HistoricalRequest {
                definitions,
                views,
                entities: request.entities,
            })
            .await?)
    }
}
