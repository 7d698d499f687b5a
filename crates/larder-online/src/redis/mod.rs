//! The Redis online store, byte-compatible with Feast's (feast-behaviour.md §10.2): Feast
//! reads what Larder writes and the reverse.
//!
//! Reads send one `HGETALL` or `HMGET` per (view, distinct key) for a whole request in one
//! round trip: on a standalone server without TLS over its thread's pipelined
//! [direct connection](self::direct), elsewhere over the shared multiplexed connection.
//! Writes are newest-wins and atomic per key: a Lua script compares the stored `_ts:{view}`
//! with the row's event time and writes the view's fields only if the row is not older, so
//! two writers never race (Feast reads then writes, and skips equal times; Larder lets an
//! equal time overwrite, DESIGN.md §3). In a large write (a materialization's), a key that
//! does not exist yet is created with a `RESTORE` of the finished hash instead (no `REPLACE`: Redis refuses it atomically when
//! the key exists, and that row goes through the script), which costs Redis about a third
//! of the script's time; see [`dump`](self::dump). See [`layout`](self::layout) for the
//! bytes.

mod config;
mod conn;
mod direct;
mod dump;
mod layout;
mod resp;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arrow::array::RecordBatch;
use async_trait::async_trait;
use futures::StreamExt;
use larder_types::feast::redis_field_hash;
use redis::Cmd;

pub use self::config::{RedisConfig, RedisNode, RedisTopology};
use self::conn::Connector;
use self::direct::DirectPool;
use self::layout::{UPSERT_SCRIPT, belongs_to_project, decode_ts, encode_ts, glob_escape};
pub use self::layout::{redis_key, ts_field};
use self::resp::{Commands, Reply};
use crate::batch::WriteRows;
use crate::error::OnlineError;
use crate::read::{FeatureSlots, KeyIndex, ReadBatchBuilder};
use crate::store::{
    OnlineCapabilities, OnlineStore, PreparedRead, ReadRequest, RowVisitor, ViewTable,
};

/// Rows per `EVALSHA` on a standalone or sentinel deployment (one script call upserts this
/// many keys; a cluster sends one key per call, since a script's keys must share a slot).
const ROWS_PER_SCRIPT: usize = 64;
/// Script calls per pipeline: bounds the bytes in flight per round trip.
const SCRIPTS_PER_ROUND_TRIP: usize = 64;
/// Fewest rows in a write that tries `RESTORE` for new keys: a materialization's batches,
/// not a push, whose keys usually exist (a refused `RESTORE` would cost it a round trip).
const MIN_ROWS_TO_RESTORE: usize = 1024;
/// Write round trips in flight at once.
const ROUND_TRIPS_IN_FLIGHT: usize = 4;
/// Keys per `HDEL` round trip when dropping a view.
const DELETES_PER_ROUND_TRIP: usize = 1000;

/// Feast's Redis layout on a standalone server, a cluster or a sentinel-managed primary.
/// Cheap to build: the connection is made on first use (or by [`connect`](Self::connect)).
#[derive(Debug)]
pub struct RedisOnlineStore {
    conn: Arc<Connector>,
    /// Reads on a standalone server without TLS go through direct connections.
    direct: Option<DirectPool>,
    script_sha: String,
    /// Set when the server refused a `RESTORE` for another reason than an existing key
    /// (an ACL without `@dangerous`, a server older than Redis 7.0, `RESTORE` renamed):
    /// new keys then go through the script too.
    restore_refused: AtomicBool,
}

/// One view's write: the batch and what every round of it shares.
struct ViewWrite<'a> {
    table: &'a ViewTable,
    batch: &'a WriteRows,
    /// The hash field of each of the view's features.
    fields: &'a [[u8; 4]],
    ts_field: &'a str,
    /// Keys per script call (1 on a cluster, whose script keys must share a slot).
    rows_per_script: usize,
    /// Whether new keys may be created by `RESTORE` (large writes on a single primary).
    restore: bool,
    restores: RestoreTally,
}

impl ViewWrite<'_> {
    /// The Redis key of `row`.
    fn key(&self, row: usize) -> Vec<u8> {
        redis_key(self.batch.key(row), &self.table.project)
    }
}

/// How this write's `RESTORE`s went so far.
#[derive(Default)]
struct RestoreTally {
    created: AtomicU64,
    /// Refused because the key exists.
    existing: AtomicU64,
}

impl RedisOnlineStore {
    pub fn new(config: RedisConfig) -> Self {
        let direct = (config.topology == RedisTopology::Standalone && !config.tls)
            .then(|| DirectPool::new(config.clone()));
        RedisOnlineStore {
            direct,
            conn: Arc::new(Connector::new(config)),
            script_sha: redis::Script::new(UPSERT_SCRIPT).get_hash().to_owned(),
            restore_refused: AtomicBool::new(false),
        }
    }

    /// Connects now; errors name the server (never the password).
    pub async fn connect(&self) -> Result<(), OnlineError> {
        self.conn.connect().await
    }

    fn config(&self) -> &RedisConfig {
        self.conn.config()
    }

    /// One `EVALSHA` upserting `rows` (indexes into the batch) of one view.
    fn upsert_command(&self, write: &ViewWrite<'_>, rows: &[usize]) -> Cmd {
        let (batch, fields, ts_field) = (write.batch, write.fields, write.ts_field);
        let config = self.config();
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.script_sha).arg(rows.len());
        for &row in rows {
            cmd.arg(write.key(row));
        }
        cmd.arg(config.key_ttl.map_or(0, |t| t.as_secs().max(1)))
            .arg(if config.skip_dedup { "0" } else { "1" })
            .arg(ts_field);
        // This row's cells by feature, read once: the script wants the present ones as
        // HSET pairs and the absent ones as fields to delete.
        let mut cells: Vec<Option<&[u8]>> = Vec::with_capacity(fields.len());
        for &row in rows {
            cells.clear();
            cells.extend((0..fields.len()).map(|f| batch.value(f, row)));
            let present = cells.iter().filter(|c| c.is_some()).count();
            let (ts, seconds, nanos) = encode_ts(batch.event_ts(row));
            cmd.arg(seconds)
                .arg(nanos)
                .arg(2 + 2 * present)
                .arg(fields.len() - present)
                .arg(ts_field)
                .arg(ts);
            for (field, cell) in fields.iter().zip(&cells) {
                if let Some(value) = cell {
                    cmd.arg(&field[..]).arg(*value);
                }
            }
            for (field, cell) in fields.iter().zip(&cells) {
                if cell.is_none() {
                    cmd.arg(&field[..]);
                }
            }
        }
        cmd
    }

    /// Writes one round of rows: first as `RESTORE`s creating the keys that do not exist
    /// yet (see [`dump`](self::dump)), then the rest through the newest-wins script.
    async fn write_round(&self, write: &ViewWrite<'_>, rows: &[usize]) -> Result<u64, OnlineError> {
        let mut written = 0;
        let mut rest = Cow::Borrowed(rows);
        if self.restores_worth_trying(write) {
            let (created, left) = self.restore_round(write, rows).await?;
            written += created;
            rest = Cow::Owned(left);
        }
        if !rest.is_empty() {
            let mut pipe = redis::pipe();
            for chunk in rest.chunks(write.rows_per_script) {
                pipe.add_command(self.upsert_command(write, chunk));
            }
            let counts: Vec<u64> = self.conn.run_script(UPSERT_SCRIPT, &pipe).await?;
            written += counts.iter().sum::<u64>();
        }
        Ok(written)
    }

    /// Whether this round should try `RESTORE` first: only in a large write on a single
    /// primary, not once the server refused `RESTORE` itself, and not once most keys of
    /// this write already existed (an incremental run: every `RESTORE` would be refused).
    fn restores_worth_trying(&self, write: &ViewWrite<'_>) -> bool {
        if !write.restore || self.restore_refused.load(Ordering::Relaxed) {
            return false;
        }
        let created = write.restores.created.load(Ordering::Relaxed);
        let existing = write.restores.existing.load(Ordering::Relaxed);
        existing <= created
    }

    /// Sends a `RESTORE` (without `REPLACE`) for each row: Redis creates the keys that do
    /// not exist, atomically, and refuses the others. Returns the keys created and the rows
    /// left for the script (existing keys, and hashes too big for a listpack).
    async fn restore_round(
        &self,
        write: &ViewWrite<'_>,
        rows: &[usize],
    ) -> Result<(u64, Vec<usize>), OnlineError> {
        let (batch, fields, ts_field) = (write.batch, write.fields, write.ts_field);
        let ttl_ms = self
            .config()
            .key_ttl
            .map_or(0, |t| t.as_secs().max(1) * 1000);
        let mut left = Vec::new();
        let mut sent = Vec::with_capacity(rows.len());
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        // The row's present features, then its event time first in the hash (as the
        // script's `HSET` would write them).
        let mut present: Vec<(&[u8], &[u8])> = Vec::with_capacity(fields.len());
        let mut payload = Vec::new();
        for &row in rows {
            let (ts, _, _) = encode_ts(batch.event_ts(row));
            present.clear();
            present.extend(
                fields
                    .iter()
                    .enumerate()
                    .filter_map(|(f, field)| Some((&field[..], batch.value(f, row)?))),
            );
            let pairs =
                std::iter::once((ts_field.as_bytes(), &ts[..])).chain(present.iter().copied());
            if !dump::hash_payload(1 + present.len(), pairs, &mut payload) {
                left.push(row);
                continue;
            }
            pipe.cmd("RESTORE")
                .arg(write.key(row))
                .arg(ttl_ms)
                .arg(&payload[..]);
            sent.push(row);
        }
        if sent.is_empty() {
            return Ok((0, left));
        }
        let replies: Vec<redis::Value> = self.conn.run(&pipe).await?;
        if replies.len() != sent.len() {
            return Err(OnlineError::internal(format!(
                "redis answered {} of {} RESTORE commands",
                replies.len(),
                sent.len()
            )));
        }
        let (mut created, mut existing) = (0u64, 0u64);
        for (row, reply) in sent.into_iter().zip(replies) {
            match reply {
                redis::Value::ServerError(e) if e.code() == "BUSYKEY" => {
                    existing += 1;
                    left.push(row);
                }
                // `RESTORE` itself refused: no permission, an unknown command, a payload
                // this server cannot read (older than Redis 7.0). Other errors (out of
                // memory, a read-only replica) pass; the script meets them again and
                // reports them.
                redis::Value::ServerError(e) if matches!(e.code(), "NOPERM" | "ERR") => {
                    if !self.restore_refused.swap(true, Ordering::Relaxed) {
                        tracing::info!(
                            store = %self.config().describe(),
                            error = %e.code(),
                            detail = e.details().unwrap_or(""),
                            "redis refused RESTORE; new keys are written with the upsert script"
                        );
                    }
                    left.push(row);
                }
                redis::Value::ServerError(_) => left.push(row),
                _ => created += 1,
            }
        }
        write.restores.created.fetch_add(created, Ordering::Relaxed);
        write
            .restores
            .existing
            .fetch_add(existing, Ordering::Relaxed);
        Ok((created, left))
    }

    /// Sends the commands of `plans` in one round trip and hands their replies to
    /// `consume`: every value (`None` for a nil), and per reply its `(first, len)` in them,
    /// in the order the plans sent their commands.
    async fn with_replies<T>(
        &self,
        plans: &[ReadPlan<'_>],
        consume: impl FnOnce(&[Option<&[u8]>], &[(usize, usize)]) -> Result<T, OnlineError> + Send,
    ) -> Result<T, OnlineError> {
        match &self.direct {
            Some(direct) => {
                let mut commands = Commands::with_capacity(plans.iter().map(ReadPlan::bytes).sum());
                for plan in plans {
                    plan.encode(&mut commands);
                }
                let answer = direct.round_trip(&commands).await?;
                let buf = answer.buf();
                let mut values: Vec<Option<&[u8]>> = Vec::with_capacity(answer.replies.items.len());
                values.extend(
                    answer
                        .replies
                        .items
                        .iter()
                        .map(|r| r.as_ref().map(|r| &buf[r.clone()])),
                );
                let mut spans = Vec::with_capacity(answer.replies.replies.len());
                for reply in &answer.replies.replies {
                    match reply {
                        Reply::Array { first, len } => spans.push((*first, *len)),
                        Reply::Error(range) => {
                            return Err(OnlineError::Corrupt {
                                message: format!(
                                    "reading an entity's hash failed: {}",
                                    String::from_utf8_lossy(&buf[range.clone()])
                                ),
                            });
                        }
                        other => {
                            return Err(OnlineError::internal(format!(
                                "a hash read answered {other:?}, not an array"
                            )));
                        }
                    }
                }
                consume(&values, &spans)
            }
            None => {
                let mut pipe = redis::pipe();
                for plan in plans {
                    plan.pipeline(&mut pipe);
                }
                let replies: Vec<Vec<Option<Vec<u8>>>> = self.conn.run(&pipe).await?;
                let mut values: Vec<Option<&[u8]>> = Vec::new();
                let mut spans = Vec::with_capacity(replies.len());
                for reply in &replies {
                    spans.push((values.len(), reply.len()));
                    values.extend(reply.iter().map(|v| v.as_deref()));
                }
                consume(&values, &spans)
            }
        }
    }

    /// Deletes `table`'s fields from every key of its project.
    async fn delete_view(&self, table: &ViewTable) -> Result<(), OnlineError> {
        let mut fields: Vec<Vec<u8>> = vec![ts_field(&table.view).into_bytes()];
        fields.extend(
            table
                .features
                .iter()
                .map(|f| redis_field_hash(&table.view, f).to_vec()),
        );
        let pattern = format!("*{}", glob_escape(&table.project));
        let conn = self.conn.clone();
        let fields = &fields;
        self.conn
            .scan(&pattern, |keys| {
                let conn = conn.clone();
                async move {
                    let ours: Vec<&Vec<u8>> = keys
                        .iter()
                        .filter(|k| belongs_to_project(k, &table.project))
                        .collect();
                    for chunk in ours.chunks(DELETES_PER_ROUND_TRIP) {
                        let mut pipe = redis::pipe();
                        for key in chunk {
                            pipe.cmd("HDEL").arg(key.as_slice()).arg(fields);
                        }
                        conn.run::<i64>(&pipe).await?;
                    }
                    Ok(())
                }
            })
            .await
    }
}

#[async_trait]
impl OnlineStore for RedisOnlineStore {
    fn capabilities(&self) -> OnlineCapabilities {
        OnlineCapabilities {
            newest_wins: !self.config().skip_dedup,
            ttl_on_read: false,
            cross_process: true,
            max_keys_per_read: None,
        }
    }

    async fn write_batch(&self, table: &ViewTable, rows: RecordBatch) -> Result<u64, OnlineError> {
        let batch = WriteRows::new(table, &rows)?;
        if batch.is_empty() {
            return Ok(0);
        }
        let winners = batch.newest_per_key();
        let fields: Vec<[u8; 4]> = table
            .features
            .iter()
            .map(|f| redis_field_hash(&table.view, f))
            .collect();
        let ts_field = ts_field(&table.view);
        let rows_per_script = match self.config().topology {
            RedisTopology::Cluster => 1,
            RedisTopology::Standalone | RedisTopology::Sentinel { .. } => ROWS_PER_SCRIPT,
        };
        let write = ViewWrite {
            table,
            batch: &batch,
            fields: &fields,
            ts_field: &ts_field,
            rows_per_script,
            restore: rows_per_script > 1 && winners.len() >= MIN_ROWS_TO_RESTORE,
            restores: RestoreTally::default(),
        };
        // A few round trips in flight at once: Larder encodes the next while Redis runs one.
        let mut in_flight = futures::stream::FuturesOrdered::new();
        let mut written = 0u64;
        for round in winners.chunks(rows_per_script * SCRIPTS_PER_ROUND_TRIP) {
            in_flight.push_back(self.write_round(&write, round));
            if in_flight.len() >= ROUND_TRIPS_IN_FLIGHT
                && let Some(done) = in_flight.next().await
            {
                written += done?;
            }
        }
        while let Some(done) = in_flight.next().await {
            written += done?;
        }
        Ok(written)
    }

    async fn read(
        &self,
        table: &ViewTable,
        keys: &[&[u8]],
        features: &[&str],
    ) -> Result<RecordBatch, OnlineError> {
        let request = ReadRequest {
            table,
            keys,
            features,
            prepared: None,
        };
        let mut out = self.read_many(std::slice::from_ref(&request)).await?;
        out.pop()
            .ok_or_else(|| OnlineError::internal("a one-view read returned no result"))
    }

    async fn read_many(
        &self,
        requests: &[ReadRequest<'_>],
    ) -> Result<Vec<RecordBatch>, OnlineError> {
        let plans: Vec<ReadPlan<'_>> = requests.iter().map(ReadPlan::new).collect();
        let mut builders: Vec<ReadBatchBuilder> = requests
            .iter()
            .zip(&plans)
            .map(|(r, p)| ReadBatchBuilder::new(&p.slots, r.features, r.keys.len()))
            .collect();
        self.with_replies(&plans, |values, spans| {
            // Keys are walked in request order, so each builder's rows follow its keys.
            walk(requests, &plans, values, spans, |r, _, found| {
                match found {
                    Some((ts, values)) => builders[r].push_found(ts, values),
                    None => builders[r].push_missing(),
                }
                Ok(())
            })
        })
        .await?;
        builders.into_iter().map(ReadBatchBuilder::finish).collect()
    }

    /// The view's field hashes, `_ts` field and reply lookup, worked out once.
    fn prepare_read(&self, table: &ViewTable, features: &[&str]) -> Option<PreparedRead> {
        let slots = FeatureSlots::new(features);
        Some(Arc::new(ViewFields::new(table, features, slots.names())))
    }

    async fn read_rows(
        &self,
        requests: &[ReadRequest<'_>],
        visit: &mut RowVisitor<'_>,
    ) -> Result<(), OnlineError> {
        let plans: Vec<ReadPlan<'_>> = requests.iter().map(ReadPlan::new).collect();
        self.with_replies(&plans, |values, spans| {
            walk(requests, &plans, values, spans, |r, key, found| {
                plans[r].slots.visit(visit, r, key, found)
            })
        })
        .await
    }

    async fn update_infra(
        &self,
        _keep: &[ViewTable],
        delete: &[ViewTable],
    ) -> Result<(), OnlineError> {
        // Hashes appear on first write: nothing to create for the views kept.
        if !self.config().full_scan_for_deletion {
            return Ok(());
        }
        for table in delete {
            self.delete_view(table).await?;
        }
        Ok(())
    }

    async fn teardown(&self, tables: &[ViewTable]) -> Result<(), OnlineError> {
        for table in tables {
            self.delete_view(table).await?;
        }
        Ok(())
    }
}

/// The commands of one view's read: one per distinct key, `HGETALL` when the request
/// wants most of the view's features (Redis parses one argument instead of one per field:
/// about 1.2 against 1.6 us of its time per key for a driver hash of 11 fields), else
/// `HMGET` of the wanted features' fields and then `_ts:{view}`.
struct ReadPlan<'a> {
    index: KeyIndex<'a>,
    slots: FeatureSlots<'a>,
    project: &'a str,
    fields: Cow<'a, ViewFields>,
}

/// What reads of some features of one view send and look for, worked out once per
/// feature list ([`OnlineStore::prepare_read`]) or per read.
#[derive(Clone, Debug)]
struct ViewFields {
    /// What it was worked out for: a prepared read is used only for the same request.
    view: String,
    features: Vec<String>,
    /// The field of each distinct requested feature, by slot.
    fields: Vec<[u8; 4]>,
    /// `fields` as big-endian numbers, sorted, with their slots: finds a field of an
    /// `HGETALL` reply (empty for `HMGET`).
    by_field: Vec<(u32, usize)>,
    ts: String,
    hgetall: bool,
}

impl ViewFields {
    /// For the distinct `names` (in slot order) of `table`'s features `features`.
    fn new(table: &ViewTable, features: &[&str], names: &[&str]) -> Self {
        let fields: Vec<[u8; 4]> = names
            .iter()
            .map(|f| redis_field_hash(&table.view, f))
            .collect();
        let hgetall = !fields.is_empty() && fields.len() * 4 >= table.features.len() * 3;
        let mut by_field: Vec<(u32, usize)> = Vec::new();
        if hgetall {
            by_field.extend(
                fields
                    .iter()
                    .enumerate()
                    .map(|(i, f)| (u32::from_be_bytes(*f), i)),
            );
            by_field.sort_unstable();
        }
        ViewFields {
            view: table.view.clone(),
            features: features.iter().map(|f| (*f).to_owned()).collect(),
            fields,
            by_field,
            ts: ts_field(&table.view),
            hgetall,
        }
    }

    /// Whether these fields were worked out for `request`'s view and features.
    fn serves(&self, request: &ReadRequest<'_>) -> bool {
        self.view == request.table.view
            && self.features.len() == request.features.len()
            && self
                .features
                .iter()
                .zip(request.features)
                .all(|(a, b)| a == b)
    }
}

impl<'a> ReadPlan<'a> {
    fn new(request: &ReadRequest<'a>) -> Self {
        let index = KeyIndex::new(request.keys.iter().copied());
        let slots = FeatureSlots::new(request.features);
        let prepared = request
            .prepared
            .and_then(|p| p.downcast_ref::<ViewFields>())
            .filter(|fields| fields.serves(request));
        let fields = match prepared {
            Some(fields) => Cow::Borrowed(fields),
            None => Cow::Owned(ViewFields::new(
                request.table,
                request.features,
                slots.names(),
            )),
        };
        ReadPlan {
            index,
            slots,
            project: &request.table.project,
            fields,
        }
    }

    /// Roughly the bytes of this plan's commands (a capacity hint).
    fn bytes(&self) -> usize {
        let per_key =
            32 + self.project.len() + 10 * self.fields.fields.len() + self.fields.ts.len();
        self.index.unique().iter().map(|k| per_key + k.len()).sum()
    }

    fn encode(&self, commands: &mut Commands) {
        for key in self.index.unique() {
            if self.fields.hgetall {
                commands
                    .command(2)
                    .arg(b"HGETALL")
                    .arg2(key, self.project.as_bytes());
                continue;
            }
            commands
                .command(self.fields.fields.len() + 3)
                .arg(b"HMGET")
                .arg2(key, self.project.as_bytes());
            for field in &self.fields.fields {
                commands.arg(field);
            }
            commands.arg(self.fields.ts.as_bytes());
        }
    }

    fn pipeline(&self, pipe: &mut redis::Pipeline) {
        for key in self.index.unique() {
            if self.fields.hgetall {
                pipe.cmd("HGETALL").arg(redis_key(key, self.project));
                continue;
            }
            let hmget = pipe.cmd("HMGET").arg(redis_key(key, self.project));
            for field in &self.fields.fields {
                hmget.arg(&field[..]);
            }
            hmget.arg(&self.fields.ts);
        }
    }

    /// One key's reply as its values by feature slot, then its `_ts` (into `out`, `n + 1`
    /// entries); fields of other views in an `HGETALL` reply are skipped.
    fn pick<'v>(
        &self,
        reply: &[Option<&'v [u8]>],
        out: &mut Vec<Option<&'v [u8]>>,
    ) -> Result<(), OnlineError> {
        let n = self.slots.len();
        if !self.fields.hgetall {
            if reply.len() != n + 1 {
                return Err(OnlineError::internal(format!(
                    "HMGET of {} fields answered {} values",
                    n + 1,
                    reply.len()
                )));
            }
            out.extend_from_slice(reply);
            return Ok(());
        }
        if !reply.len().is_multiple_of(2) {
            return Err(OnlineError::internal(format!(
                "HGETALL answered an odd number ({}) of items",
                reply.len()
            )));
        }
        let start = out.len();
        out.resize(start + n + 1, None);
        for pair in reply.chunks_exact(2) {
            let (Some(name), value) = (pair[0], pair[1]) else {
                continue;
            };
            // Feature fields are 4 bytes; `_ts:{view}` is longer.
            if let Ok(field) = <[u8; 4]>::try_from(name) {
                let by_field = &self.fields.by_field;
                if let Ok(at) = by_field.binary_search_by_key(&u32::from_be_bytes(field), |f| f.0) {
                    out[start + by_field[at].1] = value;
                }
            } else if name == self.fields.ts.as_bytes() {
                out[start + n] = value;
            }
        }
        Ok(())
    }
}

/// A stored row: its event time and its values by feature slot.
type Found<'r, 'v> = (i64, &'r [Option<&'v [u8]>]);

/// Walks the replies to `plans` (`spans[i]` is reply `i`'s `(first, len)` in `values`, the
/// replies in the order the plans sent them): `row(request, key position, found)` for every
/// key of every request, in request order, `None` for a key not found.
fn walk<'v>(
    requests: &[ReadRequest<'_>],
    plans: &[ReadPlan<'_>],
    values: &[Option<&'v [u8]>],
    spans: &[(usize, usize)],
    mut row: impl FnMut(usize, usize, Option<Found<'_, 'v>>) -> Result<(), OnlineError>,
) -> Result<(), OnlineError> {
    let sent: usize = plans.iter().map(|p| p.index.unique().len()).sum();
    if spans.len() != sent {
        return Err(OnlineError::internal(format!(
            "{sent} commands answered {} replies",
            spans.len()
        )));
    }
    let mut replies = spans.iter();
    let mut picked: Vec<Option<&'v [u8]>> = Vec::new();
    let mut found: Vec<Option<i64>> = Vec::new();
    for (r, (request, plan)) in requests.iter().zip(plans).enumerate() {
        let n = plan.slots.len();
        let keys = plan.index.unique().len();
        // Per distinct key: its values by feature slot, then its `_ts`.
        picked.clear();
        picked.reserve(keys * (n + 1));
        for &(first, len) in replies.by_ref().take(keys) {
            plan.pick(&values[first..first + len], &mut picked)?;
        }
        found.clear();
        for cells in picked.chunks_exact(n + 1) {
            found.push(match cells[n] {
                None => None,
                Some(ts) => Some(decode_ts(ts).ok_or_else(|| OnlineError::Corrupt {
                    message: format!(
                        "field `_ts:{}` of a redis hash is not a protobuf timestamp",
                        request.table.view
                    ),
                })?),
            });
        }
        for (key, &slot) in plan.index.slots().iter().enumerate() {
            let stored = found[slot].map(|ts| (ts, &picked[slot * (n + 1)..slot * (n + 1) + n]));
            row(r, key, stored)?;
        }
    }
    Ok(())
}
