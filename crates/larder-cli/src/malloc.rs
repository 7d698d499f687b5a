//! glibc malloc settings for the batch commands, applied by re-executing the process.
//!
//! glibc gives every thread that allocates its own arena, up to 8 per core. A
//! materialization hands buffers between many threads (the async workers, the blocking
//! pool reading files, the writer), so freed memory lingers in arenas other threads no
//! longer use: on the Feast peer's data at 10x (12M rows), peak RSS was 272-309 MB with
//! glibc's defaults, 222-242 MB with two arenas and 203 MB when free memory above 16 MiB
//! is also returned to the system, at the same speed (`bench/online`). These settings can
//! only be given to glibc before the process starts (`GLIBC_TUNABLES`), and the workspace
//! has no `unsafe` code to call `mallopt`, so `larder materialize` and
//! `materialize-incremental` replace themselves, once, with the same command under
//! [`BATCH_TUNABLES`]. The feature server keeps glibc's defaults: it answers faster with an
//! arena per thread.
//!
//! Nothing happens when `GLIBC_TUNABLES` is already set (the operator's settings win; the
//! re-executed process sees ours, so it runs on), when [`OPT_OUT_VAR`] is set, off glibc, or when the
//! executable cannot be found again (then the command runs with glibc's defaults).

/// The tunables a batch command runs under.
pub const BATCH_TUNABLES: &str = "glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=16777216";

/// Set (to anything) to keep glibc's defaults.
pub const OPT_OUT_VAR: &str = "LARDER_NO_MALLOC_TUNING";

/// The environment variable glibc reads its settings from at start-up.
const TUNABLES_VAR: &str = "GLIBC_TUNABLES";

/// Re-executes this process under [`BATCH_TUNABLES`] unless one of the module's exceptions
/// applies; returns only when it did not (or could not) re-execute.
pub fn tune_for_batch() {
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
        let error = command.args(args).env(TUNABLES_VAR, BATCH_TUNABLES).exec();
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

/// Logs the settings in effect (at debug level), so a run's log shows whether they applied.
pub fn log_settings() {
    match std::env::var(TUNABLES_VAR) {
        Ok(value) if value == BATCH_TUNABLES => {
            tracing::debug!(tunables = value, "malloc tuned for a batch run")
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
