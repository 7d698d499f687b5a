//! Command-line arguments, as clap definitions.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};

/// Larder: a fast, light feature store, compatible with Feast's repositories and APIs.
#[derive(Debug, Parser)]
#[command(name = "larder", version, about, propagate_version = true)]
pub struct Cli {
    /// Run as if started in this folder (the feature repository).
    #[arg(short = 'c', long, global = true, value_name = "DIR")]
    pub chdir: Option<PathBuf>,

    /// Read this config file instead of `feature_store.yaml` in the repository.
    #[arg(
        short = 'f',
        long = "feature-store-yaml",
        global = true,
        env = "FEAST_FS_YAML_FILE_PATH",
        value_name = "FILE"
    )]
    pub feature_store_yaml: Option<PathBuf>,

    /// Log level: error, warn, info, debug, trace (or a filter; `LARDER_LOG` overrides).
    #[arg(long, global = true, default_value = "warn", value_name = "LEVEL")]
    pub log_level: String,

    /// Log line format on stderr: `text` for people, `json` (one object per line, with the
    /// event's fields, e.g. `endpoint`, `status`, `latency_us` of each request) for log pipelines.
    #[arg(
        long,
        global = true,
        env = "LARDER_LOG_FORMAT",
        default_value = "text",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `--compression` of a Parquet output file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputCompression {
    /// Snappy, as DuckDB and pyarrow write by default.
    #[default]
    Snappy,
    /// Zstandard (level 1): smaller files, slower to write.
    Zstd,
    /// No compression: fastest to write, largest files.
    None,
}

impl Cli {
    pub fn open_options(&self) -> larder::OpenOptions {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let repo_dir = match &self.chdir {
            Some(dir) => cwd.join(dir),
            None => cwd,
        };
        larder::OpenOptions {
            repo_dir,
            yaml_file: self.feature_store_yaml.clone(),
            offline_memory_limit: None,
            long_running: matches!(self.command, Command::Serve(_)),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a demo feature repository with generated driver/customer data.
    Init(InitArgs),
    /// Show what `apply` would change in the registry and infrastructure.
    Plan(PlanArgs),
    /// Apply the repository's definitions to the registry (objects removed from the repo are deleted).
    Apply(ApplyArgs),
    /// Remove this project from the registry, with its infrastructure records.
    Teardown,
    /// Load the latest feature values of a time window into the online store.
    Materialize(MaterializeRangeArgs),
    /// Load the online store from where each view's last materialization ended up to END.
    MaterializeIncremental(MaterializeIncrementalArgs),
    /// Point-in-time-correct training data for entity rows (or a time range).
    GetHistoricalFeatures(HistoricalArgs),
    /// The latest feature values of entities, from the online store (JSON).
    GetOnlineFeatures(crate::online::OnlineArgs),
    /// Print this project's registry content as JSON.
    RegistryDump,
    /// Run the feature server: Feast's HTTP API (online features, push, materialize).
    Serve(ServeArgs),
    /// List or describe entities.
    #[command(subcommand)]
    Entities(ObjectCommand),
    /// List or describe data sources.
    #[command(subcommand)]
    DataSources(ObjectCommand),
    /// List or describe feature views.
    #[command(subcommand)]
    FeatureViews(ObjectCommand),
    /// List or describe on-demand feature views.
    #[command(subcommand)]
    OnDemandFeatureViews(ObjectCommand),
    /// List or describe feature services.
    #[command(subcommand)]
    FeatureServices(ObjectCommand),
    /// Print Larder's version.
    Version,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Project (and folder) name: letters, digits and underscores.
    #[arg(default_value = "my_project")]
    pub name: String,
    /// Write into an existing, non-empty folder, replacing the demo files.
    #[arg(long)]
    pub force: bool,
    /// End of the generated data's time range (RFC 3339); default: now, truncated to the hour.
    #[arg(long, value_name = "TIME")]
    pub end_time: Option<DateTime<Utc>>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Do not read file sources to check their columns and types.
    #[arg(long)]
    pub skip_source_validation: bool,
    /// Exit with 2 when there are changes (0: none, 1: error), for CI gates.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
}

impl PlanArgs {
    pub fn apply_options(&self) -> larder::ApplyOptions {
        larder::ApplyOptions {
            skip_source_validation: self.skip_source_validation,
        }
    }
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Do not read file sources to check their columns and types.
    #[arg(long)]
    pub skip_source_validation: bool,
    /// Print what was applied as JSON.
    #[arg(long)]
    pub json: bool,
}

impl ApplyArgs {
    pub fn apply_options(&self) -> larder::ApplyOptions {
        larder::ApplyOptions {
            skip_source_validation: self.skip_source_validation,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ObjectCommand {
    /// List the objects of this kind in the project.
    List {
        /// Keep objects with this tag (`key:value`); repeat to require several.
        #[arg(long = "tags", value_name = "KEY:VALUE")]
        tags: Vec<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print one object as stored in the registry (JSON).
    Describe {
        /// The object's name.
        name: String,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("rows").required(true).args(["entities", "entity_sql", "start"])))]
#[command(group(clap::ArgGroup::new("wanted").required(true).args(["features", "feature_service"])))]
pub struct HistoricalArgs {
    /// Entity rows: a Parquet or CSV file with the join keys and an event timestamp column.
    #[arg(long, value_name = "FILE")]
    pub entities: Option<String>,
    /// Entity rows: a SQL query, over the repo's file data sources (each a table by its name)
    /// with the file offline store, run in Postgres with the postgres offline store.
    #[arg(long, value_name = "SQL")]
    pub entity_sql: Option<String>,
    /// No entity rows: every feature row from this time on (RFC 3339), with --end.
    #[arg(long, value_name = "TIME", requires = "end")]
    pub start: Option<DateTime<Utc>>,
    /// End of the time range (RFC 3339), with --start.
    #[arg(long, value_name = "TIME", requires = "start")]
    pub end: Option<DateTime<Utc>>,
    /// Features to fetch, as `view:feature` (repeat, or separate with commas).
    #[arg(long = "features", short = 'F', value_name = "VIEW:FEATURE", value_delimiter = ',', num_args = 1..)]
    pub features: Vec<String>,
    /// Fetch the features of this feature service.
    #[arg(long, value_name = "NAME")]
    pub feature_service: Option<String>,
    /// Name feature columns `view__feature`.
    #[arg(long)]
    pub full_feature_names: bool,
    /// Write the result to this file (.parquet or .csv) instead of printing a table.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Compression of a Parquet --output file.
    #[arg(long, value_enum, value_name = "CODEC", requires = "output")]
    pub compression: Option<OutputCompression>,
    /// Memory the query may use before spilling to disk, e.g. `4GiB`, `512MB`.
    #[arg(long, value_name = "SIZE", env = "LARDER_MEMORY_LIMIT")]
    pub memory_limit: Option<String>,
    /// Rows printed at most when writing a table to stdout.
    #[arg(long, default_value_t = 100)]
    pub max_rows: usize,
}

#[derive(Debug, Args)]
pub struct MaterializeRangeArgs {
    /// First event time loaded (inclusive): RFC 3339, or a UTC date-time or date.
    #[arg(value_parser = crate::materialize::parse_time)]
    pub start: DateTime<Utc>,
    /// Last event time loaded (inclusive).
    #[arg(value_parser = crate::materialize::parse_time)]
    pub end: DateTime<Utc>,
    /// Worker mode: write only the entity keys of shard INDEX of COUNT (`0/4` to `3/4`
    /// together write everything), in this process whatever `batch_engine` says, and
    /// record nothing in the registry. What the Kubernetes engine's pods run.
    #[arg(long, value_name = "INDEX/COUNT", value_parser = parse_shard)]
    pub shard: Option<larder::materialize_engine::Shard>,
    #[command(flatten)]
    pub options: MaterializeArgs,
}

fn parse_shard(text: &str) -> Result<larder::materialize_engine::Shard, String> {
    text.parse()
        .map_err(|e: larder::materialize_engine::ShardError| e.to_string())
}

#[derive(Debug, Args)]
pub struct MaterializeIncrementalArgs {
    /// Last event time loaded (inclusive): RFC 3339, or a UTC date-time or date.
    #[arg(value_parser = crate::materialize::parse_time)]
    pub end: DateTime<Utc>,
    #[command(flatten)]
    pub options: MaterializeArgs,
}

#[derive(Debug, Args)]
pub struct MaterializeArgs {
    /// Only these feature views (repeat, or separate with commas); default: every online view.
    #[arg(long = "views", short = 'v', value_name = "VIEW", value_delimiter = ',', num_args = 1..)]
    pub views: Vec<String>,
    /// Memory the run may use to deduplicate before spilling to disk, e.g. `256MiB`
    /// (default 64 MiB; 1 GiB when the views' Parquet sources hold at most 2M rows).
    #[arg(long, value_name = "SIZE", env = "LARDER_MATERIALIZE_MEMORY_LIMIT")]
    pub memory_limit: Option<String>,
    /// Views materialized at once (default: the number of cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(usize))]
    pub parallelism: Option<usize>,
    /// No progress bars, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (`0.0.0.0` for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(short = 'p', long, default_value_t = larder_server::DEFAULT_PORT)]
    pub port: u16,
    /// Seconds between registry reloads; a new `apply` is served after at most this long.
    #[arg(
        short = 'r',
        long,
        alias = "registry_ttl_sec",
        default_value_t = 5,
        value_name = "SECONDS"
    )]
    pub registry_ttl_sec: u64,
    /// TLS private key (PEM); serves HTTPS with --cert.
    #[arg(short = 'k', long, requires = "cert", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// TLS certificate chain (PEM); serves HTTPS with --key.
    #[arg(long, requires = "key", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Longest an online read, push or write may take before it is answered with 503.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub request_timeout_sec: u64,
    /// Largest request body accepted, in MiB (413 beyond).
    #[arg(long, default_value_t = 16, value_name = "MIB")]
    pub max_body_mib: usize,
    /// On SIGTERM, keep serving (with /ready failing) this long before closing the listener,
    /// so a load balancer can stop routing here first (Kubernetes: a few seconds).
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    pub shutdown_delay_sec: u64,
    /// On SIGTERM, longest wait for in-flight requests and background materializations.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub drain_timeout_sec: u64,
    /// HTTP worker threads, each serving its connections on its own (default: one per
    /// core, two per core on the embedded SQLite store, whose reads block). Accepted as
    /// Feast's `--workers`; they are threads of one process, not processes.
    #[arg(short = 'w', long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,
}
