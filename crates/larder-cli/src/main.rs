//! The `larder` command-line tool.
//!
//! Exit codes: 0 success; 1 an operation failed (the error is on stderr); 2 `plan
//! --detailed-exitcode` found changes; 64 the command line itself is wrong.

mod allocator;
mod cli;
mod direct;
mod flat;
mod init;
mod materialize;
mod objects;
mod online;
mod output;
mod serve;

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use crate::cli::{Cli, Command};

/// `plan --detailed-exitcode` found changes (Terraform's convention).
const EXIT_CHANGES: u8 = 2;
/// The command line could not be parsed (BSD `EX_USAGE`); distinct from `EXIT_CHANGES`.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let settings = match cli.command {
        Command::Materialize(_) | Command::MaterializeIncremental(_) => {
            Some(allocator::BATCH_SETTINGS)
        }
        Command::GetHistoricalFeatures(_) => Some(allocator::QUERY_SETTINGS),
        _ => None,
    };
    if let Some(settings) = settings {
        allocator::tune(settings);
    }
    init_logging(&cli.log_level, cli.log_format);
    if let Some(settings) = settings {
        allocator::log_settings(settings);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, skipping a cause whose text its parent already shows (library
/// errors often embed their source in their own message).
fn error_chain(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn init_logging(level: &str, format: cli::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LARDER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        cli::LogFormat::Text => builder.try_init(),
        // One JSON object per line: `timestamp`, `level`, `fields` (message and the event's
        // structured fields) and the enclosing spans.
        cli::LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

fn print(text: impl std::fmt::Display) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").context("cannot write to stdout")
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let open = cli.open_options();
    match cli.command {
        Command::Init(args) => {
            let end_time = match args.end_time {
                Some(t) => t,
                None => init::default_end_time(chrono::Utc::now()),
            };
            let parent_dir =
                std::env::current_dir().context("cannot read the current directory")?;
            let parent_dir = match &cli.chdir {
                Some(dir) => parent_dir.join(dir),
                None => parent_dir,
            };
            let report = init::init_repo(&init::InitOptions {
                name: args.name.clone(),
                parent_dir,
                end_time,
                force: args.force,
            })?;
            print(format_args!(
                "Created the demo feature repository `{}` in {}",
                args.name,
                report.repo_dir.display()
            ))?;
            for (file, size) in &report.files {
                let unit = if file.extension().is_some_and(|e| e == "parquet") {
                    "rows"
                } else {
                    "bytes"
                };
                print(format_args!("  {} ({size} {unit})", file.display()))?;
            }
            print(format_args!(
                "\nNext: cd {} && larder plan && larder apply",
                report.repo_dir.display()
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan(args) => {
            let store = larder::FeatureStore::open(&open)?;
            let plan = store.plan(&args.apply_options()).await?;
            if args.json {
                print(serde_json::to_string_pretty(&plan)?)?;
            } else {
                print(&plan)?;
            }
            if args.detailed_exitcode && !plan.is_empty() {
                return Ok(ExitCode::from(EXIT_CHANGES));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Apply(args) => {
            let store = larder::FeatureStore::open(&open)?;
            let outcome = store.apply(&args.apply_options()).await?;
            if args.json {
                print(serde_json::to_string_pretty(&serde_json::json!({
                    "plan": outcome.plan,
                    "registry_version": outcome.version,
                }))?)?;
            } else if outcome.plan.is_empty() {
                print(&outcome.plan)?;
            } else {
                print(&outcome.plan)?;
                print(format_args!(
                    "Applied to the registry at {} (version {}).",
                    store.registry().location(),
                    outcome.version
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Teardown => {
            let store = larder::FeatureStore::open(&open)?;
            let report = store.teardown().await?;
            match &report.removed {
                Some(state) => {
                    let objects = state.entities.len()
                        + state.data_sources.len()
                        + state.feature_views.len()
                        + state.on_demand_feature_views.len()
                        + state.feature_services.len();
                    print(format_args!(
                        "Removed project `{}` ({objects} objects, {} infrastructure records) from the registry at {}.",
                        report.project,
                        state.infra.len(),
                        store.registry().location()
                    ))?;
                }
                None => print(format_args!(
                    "Project `{}` is not in the registry; nothing to remove.",
                    report.project
                ))?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Materialize(args) => {
            let store = larder::FeatureStore::open(&open)?;
            let window = larder::Window::Range {
                start: args.start,
                end: args.end,
            };
            materialize::run(&store, window, &args.options, args.shard).await
        }
        Command::MaterializeIncremental(args) => {
            let store = larder::FeatureStore::open(&open)?;
            let window = larder::Window::Incremental { end: args.end };
            materialize::run(&store, window, &args.options, None).await
        }
        Command::GetHistoricalFeatures(args) => historical(open, args).await,
        Command::GetOnlineFeatures(args) => online::run(open, args).await,
        Command::RegistryDump => {
            let store = larder::FeatureStore::open(&open)?;
            let (snapshot, project) = store.project_state().await?;
            let state = snapshot.project(&project);
            print(serde_json::to_string_pretty(&serde_json::json!({
                "registry_version": snapshot.state.version,
                "last_updated": snapshot.state.last_updated,
                "project": state,
            }))?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => serve::run(open, args).await,
        Command::Entities(cmd) => objects::run(&open, objects::Kind::Entity, cmd).await,
        Command::DataSources(cmd) => objects::run(&open, objects::Kind::DataSource, cmd).await,
        Command::FeatureViews(cmd) => objects::run(&open, objects::Kind::FeatureView, cmd).await,
        Command::OnDemandFeatureViews(cmd) => {
            objects::run(&open, objects::Kind::OnDemandFeatureView, cmd).await
        }
        Command::FeatureServices(cmd) => {
            objects::run(&open, objects::Kind::FeatureService, cmd).await
        }
        Command::Version => {
            print(format_args!("larder {}", env!("CARGO_PKG_VERSION")))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn historical(mut open: larder::OpenOptions, args: cli::HistoricalArgs) -> Result<ExitCode> {
    if let Some(limit) = &args.memory_limit {
        open.offline_memory_limit = Some(output::parse_size(limit)?);
    }
    let store = larder::FeatureStore::open(&open)?;
    let entities = if let Some(path) = &args.entities {
        let format = if path.to_ascii_lowercase().ends_with(".csv") {
            larder::spec::FileFormat::Csv
        } else {
            larder::spec::FileFormat::Parquet
        };
        // Relative to where the command runs, as a user expects of a file argument.
        let path = if std::path::Path::new(path).is_absolute() || path.contains("://") {
            path.clone()
        } else {
            std::env::current_dir()
                .context("cannot read the current directory")?
                .join(path)
                .to_string_lossy()
                .into_owned()
        };
        larder::EntityInput::File { path, format }
    } else if let Some(sql) = &args.entity_sql {
        larder::EntityInput::Sql(sql.clone())
    } else {
        match (args.start, args.end) {
            (Some(start), Some(end)) => larder::EntityInput::Range { start, end },
            _ => anyhow::bail!("give --entities FILE, --entity-sql SQL, or --start and --end"),
        }
    };
    let features = match &args.feature_service {
        Some(name) => larder::FeatureSelection::Service(name.clone()),
        None => {
            let refs = args
                .features
                .iter()
                .map(|f| f.trim().parse())
                .collect::<Result<Vec<larder::types::FeatureRef>, _>>()?;
            larder::FeatureSelection::Refs(refs)
        }
    };
    let stream = store
        .get_historical_features(larder::HistoricalFeaturesRequest {
            entities,
            features,
            full_feature_names: args.full_feature_names,
        })
        .await?;
    match &args.output {
        Some(path) => {
            let started = std::time::Instant::now();
            let rows = output::write_file(stream, path, args.compression).await?;
            eprintln!(
                "Wrote {rows} rows to {} in {:.2}s.",
                path.display(),
                started.elapsed().as_secs_f64()
            );
        }
        None => output::print_table(stream, args.max_rows).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// See [`allocator`].
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
