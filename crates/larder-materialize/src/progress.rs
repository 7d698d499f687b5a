//! Live progress of one view's materialization, read by whoever reports it (a terminal
//! progress bar, log lines, server metrics) while the engine updates it.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// Where a view's materialization is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for its turn.
    Queued,
    /// Reading and deduplicating the source.
    Reading,
    /// Writing deduplicated rows to the online store.
    Writing,
    Done,
    Failed,
}

impl Phase {
    fn from_u8(value: u8) -> Phase {
        match value {
            0 => Phase::Queued,
            1 => Phase::Reading,
            2 => Phase::Writing,
            3 => Phase::Done,
            _ => Phase::Failed,
        }
    }
}

/// Counters of one view's run; cheap to update from the engine, lock-free to read.
#[derive(Debug)]
pub struct ViewProgress {
    pub view: String,
    phase: AtomicU8,
    started: OnceLock<Instant>,
    /// Rows read so far, counted by the offline store; set when the read starts.
    rows_read: OnceLock<Arc<AtomicU64>>,
    source_rows: OnceLock<Option<u64>>,
    rows_written: AtomicU64,
}

impl ViewProgress {
    pub fn new(view: impl Into<String>) -> Arc<Self> {
        Arc::new(ViewProgress {
            view: view.into(),
            phase: AtomicU8::new(0),
            started: OnceLock::new(),
            rows_read: OnceLock::new(),
            source_rows: OnceLock::new(),
            rows_written: AtomicU64::new(0),
        })
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    pub fn set_phase(&self, phase: Phase) {
        if phase == Phase::Reading {
            let _ = self.started.set(Instant::now());
        }
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// When the view started reading.
    pub fn started(&self) -> Option<Instant> {
        self.started.get().copied()
    }

    /// Attaches the offline read's row counter and its known total.
    pub fn reading(&self, rows_read: Arc<AtomicU64>, source_rows: Option<u64>) {
        let _ = self.rows_read.set(rows_read);
        let _ = self.source_rows.set(source_rows);
    }

    pub fn rows_read(&self) -> u64 {
        self.rows_read
            .get()
            .map_or(0, |counter| counter.load(Ordering::Relaxed))
    }

    /// Rows the source holds, when the offline store knows it cheaply.
    pub fn source_rows(&self) -> Option<u64> {
        self.source_rows.get().copied().flatten()
    }

    pub fn rows_written(&self) -> u64 {
        self.rows_written.load(Ordering::Relaxed)
    }

    pub(crate) fn add_written(&self, rows: u64) {
        self.rows_written.fetch_add(rows, Ordering::Relaxed);
    }
}
