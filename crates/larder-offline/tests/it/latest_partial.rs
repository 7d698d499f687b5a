//! `PartialLatestExec` on its own: whatever its memory share, every key's winner comes out
//! (the rows it drops have lost), and with room enough exactly one row per key does; for
//! integer keys (held as such) and string keys (in the row format), nulls a key of their own.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::SessionConfig;
use larder_offline::latest::PartialLatestExec;

const ROWS: i64 = 40_000;
const KEYS: i64 = 2_000;
/// A prime above `ROWS`: `i * 7919 % P` differs for every row, so every key has one winner.
const P: i64 = 1_000_003;

/// The key of row `i`: `i % KEYS`, null for every 101st row.
fn key_of(i: i64) -> Option<i64> {
    (i % 101 != 0).then_some(i % KEYS)
}

/// Two partitions of (key, ts, value = row number) in batches of 500 rows, the key an
/// integer or its text.
fn input(text_keys: bool) -> (Arc<Schema>, Vec<Vec<RecordBatch>>) {
    let key_type = if text_keys {
        DataType::Utf8
    } else {
        DataType::Int64
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", key_type, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("value", DataType::Int64, false),
    ]));
    let batch = |rows: std::ops::Range<i64>| {
        RecordBatch::try_new(
            schema.clone(),
            vec![
                if text_keys {
                    Arc::new(StringArray::from_iter(
                        rows.clone().map(|i| key_of(i).map(|k| format!("k{k}"))),
                    ))
                } else {
                    Arc::new(Int64Array::from_iter(rows.clone().map(key_of)))
                },
                Arc::new(
                    arrow::array::TimestampMicrosecondArray::from_iter_values(
                        rows.clone().map(|i| i * 7919 % P),
                    )
                    .with_timezone("UTC"),
                ),
                Arc::new(Int64Array::from_iter_values(rows)),
            ],
        )
        .expect("batch")
    };
    let partitions = (0..2)
        .map(|p| {
            (0..ROWS / 1000)
                .map(|b| {
                    let start = (b * 2 + p) * 500;
                    batch(start..start + 500)
                })
                .collect()
        })
        .collect();
    (schema, partitions)
}

struct Run {
    /// Row number of every output row.
    values: Vec<i64>,
    flushes: usize,
    compactions: usize,
}

async fn run(memory: usize, text_keys: bool) -> Run {
    let (schema, partitions) = input(text_keys);
    let source = MemorySourceConfig::try_new_exec(&partitions, schema, None).expect("source");
    let partial: Arc<dyn ExecutionPlan> =
        Arc::new(PartialLatestExec::try_new(source, vec![0], vec![1]).expect("operator"));
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(memory)))
        .build_arc()
        .expect("runtime");
    let task = TaskContext::default()
        .with_session_config(SessionConfig::new().with_batch_size(300))
        .with_runtime(runtime);
    let batches = collect(partial.clone(), Arc::new(task))
        .await
        .expect("partial run");
    let values = batches
        .iter()
        .flat_map(|b| {
            b.column(2)
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .copied()
                .collect::<Vec<_>>()
        })
        .collect();
    let metrics = partial.metrics().expect("metrics");
    let count = |name: &str| metrics.sum_by_name(name).map(|v| v.as_usize()).unwrap_or(0);
    Run {
        values,
        flushes: count("flushes"),
        compactions: count("compactions"),
    }
}

/// The winning row number of each key.
fn winners() -> HashMap<Option<i64>, i64> {
    let mut best: HashMap<Option<i64>, i64> = HashMap::new();
    for i in 0..ROWS {
        let entry = best.entry(key_of(i)).or_insert(i);
        if i * 7919 % P > *entry * 7919 % P {
            *entry = i;
        }
    }
    best
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_every_winner_under_any_memory_share() {
    for text_keys in [false, true] {
        check_winners(text_keys).await;
    }
}

async fn check_winners(text_keys: bool) {
    let winners = winners();
    let run = |memory| run(memory, text_keys);
    // Ample room: one row per key (each partition holds half of the keys), nothing flushed
    // early.
    let ample = run(64 << 20).await;
    assert_eq!((ample.flushes, ample.compactions), (0, 0));
    // The null key is one more key, in each partition.
    assert_eq!(ample.values.len(), KEYS as usize + 2);
    // Room for the table but not for every batch: compactions keep the dedup exact.
    let compacting = run(2 << 20).await;
    assert!(compacting.compactions > 0, "no compaction under 2 MiB");
    assert_eq!(compacting.flushes, 0);
    assert_eq!(compacting.values.len(), KEYS as usize + 2);
    // Less room: winners go downstream early.
    let flushing = run(384 << 10).await;
    assert!(flushing.flushes > 0, "no flush under 384 KiB");
    // No room at all: every batch goes through.
    let starved = run(64 << 10).await;
    for (name, run) in [
        ("ample", &ample),
        ("compacting", &compacting),
        ("flushing", &flushing),
        ("starved", &starved),
    ] {
        let mut seen = run.values.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), run.values.len(), "{name}: a row came out twice");
        assert!(seen.iter().all(|v| (0..ROWS).contains(v)), "{name}");
        for (key, winner) in &winners {
            assert!(
                seen.binary_search(winner).is_ok(),
                "{name}: the winner of key {key:?} (row {winner}) was dropped"
            );
        }
    }
}
