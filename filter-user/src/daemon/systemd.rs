//! Telling systemd how the daemon is doing (sd_notify, for `Type=notify` in the packaged
//! unit). Without `NOTIFY_SOCKET` (a terminal, the tests) every call does nothing.

use sd_notify::NotifyState;

fn notify(what: &str, states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not tell systemd we are {what}");
    }
}

/// Attached and the control socket listening: `systemctl start` returns now.
pub fn ready(status: &str) {
    notify("ready", &[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A SIGHUP reload begins; [`ready`] ends it. (The timestamp is what systemd ≥ 253 wants
/// with RELOADING=1; older ones ignore it.)
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    states.extend(NotifyState::monotonic_usec_now().ok());
    notify("reloading", &states);
}

/// Detaching and exiting.
pub fn stopping() {
    notify("stopping", &[NotifyState::Stopping]);
}
