//! glibc malloc settings per command, applied by re-executing the process.
//!
//! glibc reads its malloc settings only when the process starts (`GLIBC_TUNABLES`), and the
//! workspace has no `unsafe` code to call `mallopt`, so the commands that gain from other
//! settings replace themselves, once, with the same command line under their tunables:
//!
//! - `larder materialize` and `materialize-incremental` ([`BATCH_TUNABLES`]): glibc gives
//!   every thread that allocates its own arena, up to 8 per core, and a materialization
//!   hands buffers between many threads (the async workers, the blocking pool reading
//!   files, the writer), so freed memory lingered in arenas other threads no longer use. On
//!   the Feast peer's data at 10x (12M rows), peak RSS was 272-309 MB with glibc's defaults
//!   and 192-242 MB with two arenas and free memory above 16 MiB returned to the system, at
//!   the same speed (`bench/online`).
//! - `larder serve` ([`SERVER_TUNABLES`]): a request allocates and frees the same few
//!   hundred small blocks; with glibc's default of 7 cached blocks per size and thread most
//!   went back through the arena (malloc and free were a quarter of the server's CPU time).
//!   A per-thread cache of 1024 blocks per size gave, for 1 entity, 19.6k-23.6k to
//!   25.3k-25.9k requests/s at concurrency 64 and about the same (within a noise of
//!   ±15%) at 1 and 8, for a peak RSS under the whole benchmark of 138 MB instead of 98
//!   (`bench/server`). (glibc drops a tunable out of its range from the variable, e.g. a
//!   `tcache_max` above 1032 bytes on Debian 12's glibc 2.36.)
//!
//! Nothing happens when `GLIBC_TUNABLES` is already set (the operator's settings win; the
//! re-executed process sees ours, so it runs on), when [`OPT_OUT_VAR`] is set, off glibc, or
//! when the executable cannot be found again (then the command runs with glibc's defaults).

/// The tunables a batch command (materialization) runs under.
pub const BATCH_TUNABLES: &str = "glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=16777216";

/// The tunables the feature server runs under.
pub const SERVER_TUNABLES: &str = "glibc.malloc.tcache_count=1024";

/// Set (to anything) to keep glibc's defaults.
pub const OPT_OUT_VAR: &str = "LARDER_NO_MALLOC_TUNING";

/// The environment variable glibc reads its settings from at start-up.
const TUNABLES_VAR: &str = "GLIBC_TUNABLES";

/// Re-executes this process under `tunables` unless one of the module's exceptions applies;
/// returns only when it did not (or could not) re-execute.
pub fn tune(tunables: &'static str) {
    if !should_tune(|name| std::env::var_os(name).is_some()) {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
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
        // `exec` returns only on failure (e.g. the binary was replaced while running).
        let error = command.args(args).env(TUNABLES_VAR, tunables).exec();
        eprintln!(
            "warning: running with glibc's default malloc settings: cannot re-execute: {error}"
        );
    }
}

/// Whether to re-execute, given which environment variables are set.
fn should_tune(is_set: impl Fn(&str) -> bool) -> bool {
    cfg!(all(target_os = "linux", target_env = "gnu"))
        && !is_set(TUNABLES_VAR)
        && !is_set(OPT_OUT_VAR)
}

/// Logs the settings in effect (at debug level), so a run's log shows whether `tunables`
/// applied.
pub fn log_settings(tunables: &str) {
    match std::env::var(TUNABLES_VAR) {
        Ok(value) if value == tunables => {
            tracing::debug!(tunables = value, "malloc tuned for this command")
        }
        Ok(value) => tracing::debug!(tunables = value, "malloc settings from GLIBC_TUNABLES"),
        Err(_) => tracing::debug!("glibc's default malloc settings"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operator_setting_or_the_opt_out_wins() {
        let tunes = |set: &[&str]| should_tune(|name| set.contains(&name));
        assert!(!tunes(&[TUNABLES_VAR]), "GLIBC_TUNABLES already set");
        assert!(!tunes(&[OPT_OUT_VAR]), "opted out");
        assert_eq!(
            tunes(&[]),
            cfg!(all(target_os = "linux", target_env = "gnu")),
            "only glibc is tuned"
        );
    }
}
