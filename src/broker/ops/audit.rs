//! The audit log: one JSON line per credential call, to stderr or an append-only file.
//!
//! A call never waits for the log: lines go through a bounded channel to one writer
//! thread, off the runtime that serves workers, and a line that finds the channel full is
//! dropped and counted (`authbridge_broker_audit_dropped_total`). The record holds names,
//! a method, an outcome from a fixed vocabulary and a generation; it has no field a token
//! could travel in.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::metrics::Metrics;
use crate::unpoisoned::lock;

/// Lines waiting for the writer at most; beyond, lines are dropped.
const QUEUE: usize = 4096;
/// How long shutdown waits for the writer to flush what is queued.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// One line. Every field is a name or a word the broker chose, never a value a worker
/// sent beyond a checked credential name.
#[derive(Debug, Serialize)]
pub(crate) struct AuditRecord<'a> {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub principal: &'a str,
    pub credential: &'a str,
    pub method: &'a str,
    /// `ok`, or the stable name of the error (`data.authError` or the JSON-RPC kind).
    pub outcome: &'a str,
    /// The generation served, when the call succeeded.
    pub generation: Option<u64>,
}

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    Stderr,
    File(PathBuf),
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open the audit log {path}: {source}")]
pub struct AuditOpenError {
    path: PathBuf,
    source: std::io::Error,
}

pub(crate) struct AuditLog {
    queue: Mutex<Option<SyncSender<String>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    done: Mutex<Option<Receiver<()>>>,
    metrics: Arc<Metrics>,
}

/// Opens `path` for appending, created readable by its owner only: the log names who
/// asked for which credential, which is for the operator alone.
fn open_append(path: &Path) -> Result<std::fs::File, AuditOpenError> {
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(|source| AuditOpenError {
        path: path.to_owned(),
        source,
    })
}

impl AuditLog {
    /// Opens the target now (a file that cannot be opened stops start-up) and starts the
    /// writer thread.
    pub fn open(target: &AuditTarget, metrics: Arc<Metrics>) -> Result<Self, AuditOpenError> {
        let mut out: Box<dyn Write + Send> = match target {
            AuditTarget::Stderr => Box::new(std::io::stderr()),
            AuditTarget::File(path) => Box::new(open_append(path)?),
        };
        let (queue, lines) = mpsc::sync_channel::<String>(QUEUE);
        let (finished, done) = mpsc::sync_channel(1);
        let writer = std::thread::Builder::new()
            .name("authbridge-audit".into())
            .spawn(move || {
                for line in lines {
                    if let Err(e) = out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
                        tracing::warn!(error = %e, "cannot write the audit log");
                    }
                }
                let _ = finished.send(());
            })
            .map_err(|source| AuditOpenError {
                path: PathBuf::from("(writer thread)"),
                source,
            })?;
        Ok(Self {
            queue: Mutex::new(Some(queue)),
            writer: Mutex::new(Some(writer)),
            done: Mutex::new(Some(done)),
            metrics,
        })
    }

    /// Queues `record`'s line; never waits.
    pub fn record(&self, record: &AuditRecord<'_>) {
        let Ok(mut line) = serde_json::to_string(record) else {
            return;
        };
        line.push('\n');
        let sent = match &*lock(&self.queue) {
            Some(queue) => queue.try_send(line),
            None => Err(TrySendError::Disconnected(line)),
        };
        if sent.is_err() {
            self.metrics.audit_dropped()
        }
    }

    /// Stops taking lines and waits (bounded) for the writer to write the queued ones.
    pub fn close(&self) {
        lock(&self.queue).take();
        let done = lock(&self.done).take();
        if done.is_some_and(|done| done.recv_timeout(FLUSH_WAIT).is_ok())
            && let Some(writer) = lock(&self.writer).take()
        {
            let _ = writer.join();
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// Now, as the audit line writes it.
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(outcome: &'a str) -> AuditRecord<'a> {
        AuditRecord {
            time: now_rfc3339(),
            principal: "default",
            credential: "default",
            method: "credential/read",
            outcome,
            generation: Some(3),
        }
    }

    #[test]
    fn lines_are_appended_to_a_private_file_and_flushed_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, "earlier\n").unwrap();
        let metrics = Arc::new(Metrics::new());
        let log = AuditLog::open(&AuditTarget::File(path.clone()), metrics).unwrap();
        log.record(&record("ok"));
        log.record(&record("refreshTokenReused"));
        log.close();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "earlier");
        let second: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(second["outcome"], "refreshTokenReused");
        assert_eq!(second["generation"], 3);
        assert_eq!(lines.len(), 3);
    }

    #[cfg(unix)]
    #[test]
    fn a_new_audit_file_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let metrics = Arc::new(Metrics::new());
        drop(AuditLog::open(&AuditTarget::File(path.clone()), metrics).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let metrics = Arc::new(Metrics::new());
        // A writer that never drains: the queue fills.
        let (queue, _lines) = mpsc::sync_channel::<String>(2);
        let log = AuditLog {
            queue: Mutex::new(Some(queue)),
            writer: Mutex::new(None),
            done: Mutex::new(None),
            metrics: metrics.clone(),
        };
        for _ in 0..5 {
            log.record(&record("ok"));
        }
        assert!(
            metrics
                .render()
                .contains("authbridge_broker_audit_dropped_total 3"),
            "{}",
            metrics.render()
        );
    }

    #[test]
    fn an_unwritable_path_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("audit.log");
        let e = AuditLog::open(&AuditTarget::File(path), Arc::new(Metrics::new()))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("cannot open the audit log"), "{e}");
    }
}
