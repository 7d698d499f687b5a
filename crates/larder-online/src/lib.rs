//! Online stores: the latest feature values per entity key, read at serving time.
//!
//! [`OnlineStore`] is the trait every backend implements; data crosses it as Arrow record
//! batches of serialized entity keys and serialized `feast.types.Value`s, so backends never
//! see feature types. Writes are newest-wins per entity key on every backend.
//!
//! [`SqliteOnlineStore`] is the embedded default: one SQLite file in WAL mode, shared by
//! the feature server and materialization processes, in Larder's own read-optimised layout
//! (one row per entity key). `PostgresOnlineStore` (cargo feature `postgres`, on by default)
//! keeps Feast's Postgres layout. [`batch`] and [`read`] hold the request validation,
//! in-batch deduplication and result alignment every backend shares.

pub mod batch;
mod error;
mod kept;
#[cfg(feature = "postgres")]
mod postgres;
pub mod read;
#[cfg(feature = "redis")]
mod redis;
mod sqlite;
mod store;

#[cfg(feature = "redis")]
pub use self::redis::{
    RedisConfig, RedisNode, RedisOnlineStore, RedisTopology, redis_key, ts_field,
};
pub use error::{BoxError, OnlineError};
#[cfg(feature = "postgres")]
pub use postgres::{ConnType, PostgresConfig, PostgresOnlineStore, SslMode, postgres_table_name};
pub use sqlite::{SqliteConfig, SqliteOnlineStore, sqlite_key_slot, sqlite_table_name};
pub use store::{
    CREATED_TS, ENTITY_KEY, EVENT_TS, FoundRow, OnlineCapabilities, OnlineStore, PreparedRead,
    ReadRequest, RowVisitor, ViewTable, WriteOrderFn, read_schema, timestamp_type, visit_batches,
    write_schema,
};
