//! `larder materialize` and `larder materialize-incremental`: runs a materialization and
//! reports its progress, as bars on a terminal and as plain log lines otherwise.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use larder::config::BatchEngineConfig;
use larder::materialize_engine::{Phase, Shard, ViewProgress, ViewReport};
use larder::{FeatureStore, MaterializeOptions, Window};
use tokio::sync::oneshot;

use crate::cli::MaterializeArgs;
use crate::print;

/// Parses a time as Feast's CLI does: RFC 3339, or a naive date-time / date read as UTC.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    Err(format!(
        "`{text}` is not a time; use RFC 3339 (`2025-06-01T00:00:00Z`), a UTC date-time \
         (`2025-06-01T00:00:00`) or a date (`2025-06-01`)"
    ))
}

fn show(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub async fn run(
    store: &FeatureStore,
    window: Window,
    args: &MaterializeArgs,
    shard: Option<Shard>,
) -> Result<ExitCode> {
    let memory_limit = args
        .memory_limit
        .as_deref()
        .map(crate::output::parse_size)
        .transpose()?;
    let plan = store
        .plan_materialization(
            window,
            MaterializeOptions {
                views: (!args.views.is_empty()).then(|| args.views.clone()),
                memory_limit,
                parallelism: args.parallelism,
                shard,
            },
        )
        .await?;
    let store_kind = store
        .config()
        .online_store
        .as_ref()
        .map_or("online", |s| s.type_name());
    let how = match (shard, &store.config().batch_engine) {
        (Some(shard), _) => format!(" (shard {shard}: its entity keys only)"),
        (None, BatchEngineConfig::K8s(_)) => " with Kubernetes Jobs".to_owned(),
        (None, BatchEngineConfig::Local) => String::new(),
    };
    match window {
        Window::Range { start, end } => print(format_args!(
            "Materializing {} feature views from {} to {} into the {store_kind} online store{how}.",
            plan.views.len(),
            show(start),
            show(end),
        ))?,
        Window::Incremental { end } => {
            print(format_args!(
                "Materializing {} feature views to {} into the {store_kind} online store{how}.",
                plan.views.len(),
                show(end),
            ))?;
            for view in &plan.views {
                print(format_args!(
                    "  {} from {} to {}",
                    view.view.name,
                    show(view.start),
                    show(view.end)
                ))?;
            }
            for (view, start) in &plan.up_to_date {
                print(format_args!(
                    "  {view}: up to date (its window would start at {})",
                    show(*start)
                ))?;
            }
        }
    }
    if plan.views.is_empty() {
        print("No online feature views to materialize.")?;
        return Ok(ExitCode::SUCCESS);
    }
    let progress: Vec<Arc<ViewProgress>> = plan.views.iter().map(|v| v.progress.clone()).collect();
    let reporter = Reporter::start(
        progress,
        std::io::stderr().is_terminal() && !args.no_progress,
    );
    let started = Instant::now();
    let report = store.run_materialization(plan).await;
    reporter.stop().await;
    let report = report?;
    let mut failed = 0;
    let mut submitted = 0;
    for (view, result) in &report.views {
        match result {
            Ok(ViewReport {
                submitted: Some(what),
                ..
            }) => {
                submitted += 1;
                print(format_args!("{}: submitted as {what}", view.view.name))?;
            }
            Ok(done) => print(format_args!(
                "{}: {} source rows read, {} entity keys written in {:.2}s",
                done.view,
                done.rows_read,
                done.rows_written,
                view.progress
                    .started()
                    .map_or(0.0, |t| t.elapsed().as_secs_f64())
            ))?,
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    if failed > 0 {
        eprintln!(
            "error: {failed} of {} feature views failed; their windows were not recorded (rerunning is safe)",
            report.views.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    if submitted > 0 {
        print(format_args!(
            "Submitted {submitted} Kubernetes Jobs without waiting (`synchronous: false`): their windows are not recorded in the registry; follow them with `kubectl get jobs -l larder.dev/project={}`.",
            store.project()
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    if shard.is_some() {
        print("The window is not recorded (a shard's run; the run that started it records it).")?;
    }
    print(format_args!(
        "Done in {:.2}s.",
        started.elapsed().as_secs_f64()
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// Reports progress until stopped: bars on a terminal, a log line per view every few
/// seconds and when it finishes otherwise.
struct Reporter {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Reporter {
    fn start(views: Vec<Arc<ViewProgress>>, terminal: bool) -> Reporter {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut display = if terminal {
                Display::bars(&views)
            } else {
                Display::Lines {
                    last_line: Instant::now(),
                    finished: vec![false; views.len()],
                }
            };
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = tick.tick() => display.update(&views, false),
                    _ = &mut stopped => break,
                }
            }
            display.update(&views, true);
        });
        Reporter { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

enum Display {
    Bars {
        _multi: MultiProgress,
        bars: Vec<ProgressBar>,
    },
    Lines {
        last_line: Instant,
        finished: Vec<bool>,
    },
}

/// Log lines for runs that are not on a terminal.
const LINE_EVERY: Duration = Duration::from_secs(10);

impl Display {
    fn bars(views: &[Arc<ViewProgress>]) -> Display {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let width = views.iter().map(|v| v.view.len()).max().unwrap_or(0);
        let style = ProgressStyle::with_template(&format!(
            "{{prefix:<{width}}} [{{bar:30}}] {{human_pos}}/{{human_len}} rows read ({{rate}}, ETA {{eta}}) {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = write!(out, "{:.0} rows/s", state.per_sec());
            },
        )
        .progress_chars("=> ");
        let bars = views
            .iter()
            .map(|v| {
                let bar = multi.add(ProgressBar::new(0).with_style(style.clone()));
                bar.set_prefix(v.view.clone());
                bar.set_message("queued");
                bar
            })
            .collect();
        Display::Bars {
            _multi: multi,
            bars,
        }
    }

    fn update(&mut self, views: &[Arc<ViewProgress>], last: bool) {
        match self {
            Display::Bars { bars, .. } => {
                for (view, bar) in views.iter().zip(bars.iter()) {
                    let read = view.rows_read();
                    bar.set_length(view.source_rows().unwrap_or(read).max(read));
                    bar.set_position(read);
                    let phase = view.phase();
                    bar.set_message(match phase {
                        Phase::Queued => "queued".to_string(),
                        Phase::Reading => "deduplicating".to_string(),
                        Phase::Writing => format!("{} keys written", view.rows_written()),
                        Phase::Done => format!("done, {} keys written", view.rows_written()),
                        Phase::Failed => "failed".to_string(),
                    });
                    if last || matches!(phase, Phase::Done | Phase::Failed) {
                        if phase == Phase::Done {
                            bar.set_length(read);
                        }
                        bar.finish();
                    }
                }
            }
            Display::Lines {
                last_line,
                finished,
            } => {
                let periodic = last_line.elapsed() >= LINE_EVERY;
                for (view, done) in views.iter().zip(finished.iter_mut()) {
                    let phase = view.phase();
                    let ended = matches!(phase, Phase::Done | Phase::Failed);
                    if *done || (!ended && !periodic) || (phase == Phase::Queued && !last) {
                        continue;
                    }
                    let total = view
                        .source_rows()
                        .map_or(String::new(), |t| format!(" of {t}"));
                    let rate = view.started().map_or(String::new(), |t| {
                        let secs = t.elapsed().as_secs_f64().max(1e-3);
                        format!(", {:.0} rows/s", view.rows_read() as f64 / secs)
                    });
                    eprintln!(
                        "{}: {:?}, {}{total} rows read{rate}, {} keys written",
                        view.view,
                        phase,
                        view.rows_read(),
                        view.rows_written()
                    );
                    *done = ended;
                }
                if periodic {
                    *last_line = Instant::now();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_like_feast() {
        let t = |s| parse_time(s).map(show);
        assert_eq!(t("2025-06-01T00:00:00Z"), Ok("2025-06-01T00:00:00Z".into()));
        assert_eq!(
            t("2025-06-01T02:00:00+02:00"),
            Ok("2025-06-01T00:00:00Z".into())
        );
        assert_eq!(t("2025-06-01T00:00:00"), Ok("2025-06-01T00:00:00Z".into()));
        assert_eq!(
            t("2025-06-01 12:30:00.5"),
            Ok("2025-06-01T12:30:00.500Z".into())
        );
        assert_eq!(t("2025-06-01"), Ok("2025-06-01T00:00:00Z".into()));
        assert!(
            t("yesterday")
                .unwrap_err()
                .contains("`yesterday` is not a time")
        );
    }
}
