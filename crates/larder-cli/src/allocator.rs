//! The allocator: mimalloc for the whole binary, with settings per command applied by
//! re-executing the process.
//!
//! Why mimalloc: a feature-server request allocates and frees a few hundred blocks (JSON,
//! Arrow arrays, the response), and glibc's malloc spent about a third of a one-entity
//! request's instructions (callgrind) even with a deeper per-thread cache. With mimalloc,
//! `bench/server` on one machine, 1 entity x 15 features: 26.1k-26.7k to 29.9k-31.4k
//! requests/s at concurrency 8, 26k-35k to 36k-40k at 64, and a peak RSS of 72 MB instead
//! of 109 MB with glibc (`GLIBC_TUNABLES=glibc.malloc.tcache_count=1024`, the setting
//! before).
//!
//! mimalloc reads its options from the environment when the process starts, so the
//! commands that need other settings replace themselves, once, with the same command line
//! under them:
//!
//! - `larder materialize` and `materialize-incremental` ([`BATCH_SETTINGS`]): large Arrow
//!   buffers are allocated on one thread and freed on another; with mimalloc's defaults the
//!   freed pages stay committed for a while and peak RSS on the Feast peer's data at 10x
//!   (12M rows) was 676 MB (1x: 356 MB). Purging freed memory at once and committing arena
//!   memory on demand: 240 MB at 10x and 201-204 MB at 1x, at the same speed (0.74-0.77 s
//!   at 1x, glibc with its own tuning: 0.90 s and 186 MB). Purging at once has a price,
//!   though: memory freed by one batch is handed back and the next batch faults it in
//!   again, and with writes to Redis made cheap (`RESTORE`) page faults and `madvise` were
//!   a quarter of the process's samples (`perf`). A purge delay of 20 ms keeps memory for
//!   the next batch: at 10x into Redis 17.4 s and 270 MB instead of 21.0 s and 252 MB
//!   (50 ms: 18.6 s but 311 MB), at 1x 0.73-1.05 s and 201-210 MB instead of 0.86-1.13 s
//!   and 188-199 MB (this VM's runs vary by a quarter).
//! - `larder get-historical-features` ([`QUERY_SETTINGS`]): the join allocates its inputs,
//!   narrow sort entries and the output, about 1.45 GB at peak for 10M x 10M rows, and
//!   frees much of it phase by phase. With mimalloc's default purge delay
//!   (10 ms) freed memory went back to the OS and the next phase faulted fresh, zeroed pages
//!   in again: on this project's VM, where first-touch page faults cost several microseconds,
//!   half of the process's CPU time was the kernel clearing pages (`perf`). Never purging
//!   during the one-shot command: 4.8-5.4 s instead of 6.1-7.3 s, in alternating runs (peak
//!   RSS 1.88 GB instead of 1.84 GB; measured while the join still copied the features into
//!   a row store). With a memory limit that makes the join spill (50M x 50M rows, 4 GiB):
//!   127 s and 4.18 GB, against 137 s and 4.06 GB with mimalloc's defaults.
//!   Without transparent huge pages: this VM hands memory freed a second or two earlier back
//!   to its host, and a fresh huge page then costs the next process far more than small
//!   pages do (the kernel takes whole 2 MB blocks, the ones handed back; small pages come
//!   from memory freed moments ago). 10M x 10M right after a DuckDB run: 3.5-3.95 s (sys
//!   1.1-1.3 s) instead of 4.2-5.1 s (sys 3.0-3.5 s); back to back 3.5 s instead of
//!   3.1-3.3 s, and a peak RSS of 1.23 GB instead of 1.34-1.37 GB. A query is usually its
//!   own process after others, so its first touches are the common case.
//! - `larder serve` runs with mimalloc's defaults.
//!
//! Nothing happens when one of the settings is already in the environment (the operator's
//! settings win; the re-executed process sees ours, so it runs on), when [`OPT_OUT_VAR`] is
//! set, or when the executable cannot be found again (then the command runs with
//! mimalloc's defaults). C libraries (SQLite) keep the system's malloc.

/// The mimalloc settings a batch command (materialization) runs under.
pub const BATCH_SETTINGS: &[(&str, &str)] = &[
    ("MIMALLOC_PURGE_DELAY", "20"),
    ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
];

/// The mimalloc settings of a one-shot query (`get-historical-features`): freed memory is
/// kept for the next phase instead of being returned to the OS and faulted in again, in
/// small pages.
pub const QUERY_SETTINGS: &[(&str, &str)] =
    &[("MIMALLOC_PURGE_DELAY", "-1"), ("MIMALLOC_ALLOW_THP", "0")];

/// Set (to anything) to keep mimalloc's defaults.
pub const OPT_OUT_VAR: &str = "LARDER_NO_MALLOC_TUNING";

/// Re-executes this process under `settings` unless one of the module's exceptions applies;
/// returns only when it did not (or could not) re-execute.
pub fn tune(settings: &'static [(&'static str, &'static str)]) {
    if !should_tune(settings, |name| std::env::var_os(name).is_some()) {
        return;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;

        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let mut args = std::env::args_os();
        let mut command = std::process::Command::new(exe);
        if let Some(arg0) = args.next() {
            command.arg0(arg0);
        }
        command.args(args).envs(settings.iter().copied());
        // `exec` returns only on failure (e.g. the binary was replaced while running).
        let error = command.exec();
        eprintln!("warning: running with mimalloc's default settings: cannot re-execute: {error}");
    }
}

/// Whether to re-execute, given which environment variables are set.
fn should_tune(settings: &[(&str, &str)], is_set: impl Fn(&str) -> bool) -> bool {
    cfg!(unix) && !is_set(OPT_OUT_VAR) && !settings.iter().any(|(name, _)| is_set(name))
}

/// Logs the settings in effect (at debug level), so a run's log shows whether `settings`
/// applied.
pub fn log_settings(settings: &[(&str, &str)]) {
    let current: Vec<(&str, Option<String>)> = settings
        .iter()
        .map(|&(name, _)| (name, std::env::var(name).ok()))
        .collect();
    let text = |values: &[(&str, Option<String>)]| {
        values
            .iter()
            .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={v}")))
            .collect::<Vec<_>>()
            .join(" ")
    };
    if current
        .iter()
        .zip(settings)
        .all(|((_, value), (_, ours))| value.as_deref() == Some(*ours))
    {
        tracing::debug!(
            settings = text(&current),
            "allocator tuned for this command"
        );
    } else if current.iter().any(|(_, value)| value.is_some()) {
        tracing::debug!(
            settings = text(&current),
            "allocator settings from the environment"
        );
    } else {
        tracing::debug!("mimalloc's default settings");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operator_setting_or_the_opt_out_wins() {
        let tunes = |set: &[&str]| should_tune(BATCH_SETTINGS, |name| set.contains(&name));
        assert!(!tunes(&["MIMALLOC_PURGE_DELAY"]), "a setting already set");
        assert!(
            !tunes(&["MIMALLOC_ARENA_EAGER_COMMIT"]),
            "a setting already set"
        );
        assert!(!tunes(&[OPT_OUT_VAR]), "opted out");
        assert_eq!(tunes(&["MIMALLOC_VERBOSE"]), cfg!(unix), "another option");
        assert_eq!(tunes(&[]), cfg!(unix));
    }
}
