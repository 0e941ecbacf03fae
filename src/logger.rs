//! A minimal line-oriented logger for stderr.
//!
//! Every record is written as one line with a single `write` (stderr is unbuffered), so logs
//! captured by podman or rootlesskit are complete even if the process is killed. The level is
//! `info` by default, `debug` with `--debug`, or whatever `TAPIR_LOG` says
//! (`error|warn|info|debug|trace`).

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = match record.level() {
            Level::Error => format!("tapir: ERROR: {}\n", record.args()),
            Level::Warn => format!("tapir: WARNING: {}\n", record.args()),
            Level::Info => format!("tapir: {}\n", record.args()),
            Level::Debug | Level::Trace => {
                format!("tapir: [{}] {}\n", record.target(), record.args())
            }
        };
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

/// Install the logger. `debug` forces debug level; otherwise `TAPIR_LOG` or `info`.
pub fn init(debug: bool) {
    let level = if debug {
        LevelFilter::Debug
    } else {
        std::env::var("TAPIR_LOG")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(LevelFilter::Info)
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}
