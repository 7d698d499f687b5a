//! Online read latency through the Rust API, on a materialized repo and a file of requests
//! (one JSON object per line: `{"features": [...], "entities": {column: [values]}}`, the
//! shape of the Feast peer's `sdk_requests_{1,100}.jsonl`). Used by `bench/online`.
//!
//! ```sh
//! cargo run --release -p larder --example online_latency -- REPO REQUESTS.jsonl [--calls N] [--warmup N] [--mode M]
//! ```
//!
//! Prints one line `RESULT {json}` with p50/p90/p99/mean/max in milliseconds. By default
//! (`--mode plan`) each call is a full `OnlineReader::read` (entity coercion, key
//! serialization, one store round trip, decoding, statuses) on a plan built once, as the
//! feature server does. `--mode sdk` calls `FeatureStore::get_online_features` instead (its
//! cached plan; the call takes a copy of the request's entity columns), and `--mode
//! compile` compiles the plan from the registry snapshot on every call, then reads (what
//! `get_online_features` did before it cached plans).

use std::time::Instant;

use larder::types::FeatureRef;
use larder::{
    EntityColumns, FeatureSelection, FeatureStore, OnlineFeaturesRequest, OnlinePlan, OpenOptions,
};

#[derive(serde::Deserialize)]
struct Request {
    features: Vec<String>,
    entities: EntityColumns,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: online_latency REPO REQUESTS.jsonl [--calls N] [--warmup N] [--no-split-reads] [--mode plan|sdk|compile]";
    let (repo, requests) = match (args.first(), args.get(1)) {
        (Some(repo), Some(requests)) => (repo.clone(), requests.clone()),
        _ => return Err(usage.into()),
    };
    let flag = |name: &str, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(args.get(i + 1).ok_or(usage)?.parse()?),
            None => Ok(default),
        }
    };
    let (calls, warmup) = (flag("--calls", 1000)?, flag("--warmup", 100)?);
    let mode = match args.iter().position(|a| a == "--mode") {
        Some(i) => args.get(i + 1).ok_or(usage)?.clone(),
        None => "plan".to_owned(),
    };
    if !matches!(mode.as_str(), "plan" | "sdk" | "compile") {
        return Err(format!("--mode {mode}: expected plan, sdk or compile").into());
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let store = FeatureStore::open(&OpenOptions::new(&repo))?;
        let text = std::fs::read_to_string(&requests)?;
        let requests: Vec<Request> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        let first = requests.first().ok_or("no requests in the file")?;
        let refs = first
            .features
            .iter()
            .map(|f| f.parse::<FeatureRef>())
            .collect::<Result<Vec<_>, _>>()?;
        let selection = FeatureSelection::Refs(refs);
        let defs = store.applied_definitions().await?;
        let plan = OnlinePlan::new(&defs, &selection, false)?;
        let split = !args.iter().any(|a| a == "--no-split-reads");
        let reader = store.online_reader()?.with_split_reads(split);
        let rows = first.entities.num_rows();
        let call = async |entities: &EntityColumns| match mode.as_str() {
            "sdk" => {
                store
                    .get_online_features(OnlineFeaturesRequest {
                        features: selection.clone(),
                        entities: entities.clone(),
                        full_feature_names: false,
                    })
                    .await
            }
            "compile" => {
                let defs = store.applied_definitions().await?;
                let plan = OnlinePlan::new(&defs, &selection, false)?;
                reader.read(&plan, entities, store.now()).await
            }
            _ => reader.read(&plan, entities, store.now()).await,
        };

        let mut found = 0usize;
        for request in requests.iter().take(warmup) {
            call(&request.entities).await?;
        }
        let measured: Vec<&Request> = requests.iter().skip(warmup).take(calls).collect();
        let measured = if measured.is_empty() {
            requests.iter().take(calls).collect()
        } else {
            measured
        };
        let mut latencies = Vec::with_capacity(measured.len());
        let started = Instant::now();
        for request in &measured {
            let t = Instant::now();
            let response = call(&request.entities).await?;
            latencies.push(t.elapsed().as_secs_f64() * 1e3);
            found += response.num_rows();
        }
        let total = started.elapsed().as_secs_f64();
        latencies.sort_by(f64::total_cmp);
        let mean = latencies.iter().sum::<f64>() / latencies.len() as f64;
        println!(
            "RESULT {}",
            serde_json::json!({
                "op": "online",
                "mode": mode,
                "entities_per_call": rows,
                "features_per_call": first.features.len(),
                "calls": latencies.len(),
                "warmup": warmup,
                "rows_returned": found,
                "p50_ms": percentile(&latencies, 50.0),
                "p90_ms": percentile(&latencies, 90.0),
                "p99_ms": percentile(&latencies, 99.0),
                "mean_ms": mean,
                "max_ms": latencies.last().copied().unwrap_or(0.0),
                "calls_per_s": latencies.len() as f64 / total,
            })
        );
        Ok(())
    })
}
