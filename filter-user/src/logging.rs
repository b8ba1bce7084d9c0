//! Log output: `tracing` to stderr, filtered by `RUST_LOG` (default `info`), as plain
//! `key=value` lines or one JSON object per line; under systemd, plain output goes to the
//! journal with every field as a structured one instead ([`journal`]).

mod journal;

use std::io::IsTerminal as _;

use tracing_subscriber::{EnvFilter, layer::SubscriberExt as _, util::SubscriberInitExt as _};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // stderr is the journal (JOURNAL_STREAM names it): send structured entries instead.
    // `--log-format json` asked for JSON lines and keeps them.
    if format == LogFormat::Plain && libsystemd::logging::connected_to_journal() {
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(journal::layer())
            .try_init();
        return;
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Plain => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
