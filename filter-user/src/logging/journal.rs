//! Logging into the systemd journal over its native protocol, used when the daemon's stderr
//! is the journal (systemd sets `JOURNAL_STREAM`). Each event becomes one entry:
//!
//! - `MESSAGE`: the event's fields as the terminal shows them (`mxscreen-verdict
//!   action="drop" ip=203.0.113.7 ...`: tracing-subscriber's own field formatting, so the two
//!   never differ), so `journalctl -u mxscreen` reads like the terminal;
//! - one journal field per event field, named `MXSCREEN_` + the field in upper case, with
//!   its bare value: `journalctl -u mxscreen MXSCREEN_ACTION=drop` finds the drop verdicts;
//! - `PRIORITY` from the level (error 3, warn 4, info 6, debug and trace 7), `TARGET`,
//!   `CODE_FILE`, `CODE_LINE` and `SYSLOG_IDENTIFIER=mxscreen`.
//!
//! tracing-journald was the first choice, but it sends only the message text as `MESSAGE`
//! (the fields only as separate ones), which would leave a verdict line reading just
//! `mxscreen-verdict` in `journalctl`; the transport is libsystemd's `journal_send`.

use std::fmt::{self, Write as _};

use libsystemd::logging::{Priority, journal_send};
use tracing::{Event, Level, Subscriber, field::Field};
use tracing_subscriber::{
    field::Visit,
    fmt::{
        FormatFields as _,
        format::{DefaultFields, Writer},
    },
    layer::{Context, Layer},
};

/// The prefix of every event field in the journal.
pub const FIELD_PREFIX: &str = "MXSCREEN_";

pub struct JournalLayer {
    fields: DefaultFields,
}

pub fn layer() -> JournalLayer {
    JournalLayer {
        fields: DefaultFields::new(),
    }
}

const fn priority(level: &Level) -> Priority {
    match *level {
        Level::ERROR => Priority::Error,
        Level::WARN => Priority::Warning,
        Level::INFO => Priority::Info,
        _ => Priority::Debug,
    }
}

/// `action` → `MXSCREEN_ACTION`; anything a journal field name cannot hold becomes `_`.
pub fn field_name(name: &str) -> String {
    let mut out = String::from(FIELD_PREFIX);
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    out
}

/// Collects `(MXSCREEN_NAME, bare value)` for every field but the message.
#[derive(Default)]
struct Fields(Vec<(String, String)>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() != "message" {
            self.0.push((field_name(field.name()), value.to_owned()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() != "message" {
            let mut text = String::new();
            let _ = write!(text, "{value:?}");
            self.0.push((field_name(field.name()), text));
        }
    }
}

impl<S: Subscriber> Layer<S> for JournalLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut message = String::new();
        if self
            .fields
            .format_fields(Writer::new(&mut message), event)
            .is_err()
        {
            message = meta.name().to_owned();
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut vars = fields.0;
        vars.push(("SYSLOG_IDENTIFIER".into(), "mxscreen".into()));
        vars.push(("TARGET".into(), meta.target().into()));
        if let Some(file) = meta.file() {
            vars.push(("CODE_FILE".into(), file.into()));
        }
        if let Some(line) = meta.line() {
            vars.push(("CODE_LINE".into(), line.to_string()));
        }
        if let Err(e) = journal_send(priority(meta.level()), &message, vars.into_iter()) {
            // The journal went away: keep the line on stderr, which systemd also collects.
            eprintln!(
                "{} {}: {message} (journal: {e})",
                meta.level(),
                meta.target()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names() {
        assert_eq!(field_name("action"), "MXSCREEN_ACTION");
        assert_eq!(field_name("log.target"), "MXSCREEN_LOG_TARGET");
    }
}
