//! systemd's notify protocol through the `sd-notify` crate: READY, STATUS, STOPPING and
//! WATCHDOG to `$NOTIFY_SOCKET`. Without the variable every call does nothing, so the daemon
//! runs the same outside systemd. The client never sees the variable: it starts with a
//! clean environment (`daemon`).

use std::time::Duration;

use sd_notify::NotifyState;

/// A message for systemd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice<'a> {
    /// Start-up is done.
    Ready,
    /// The one-line status `systemctl status` shows.
    Status(&'a str),
    /// SIGTERM received: fencing, releasing, stopping.
    Stopping,
    /// The control loop is alive.
    Watchdog,
}

/// Sends `notice`; best-effort (a daemon that cannot reach systemd still runs).
pub fn send(notice: Notice<'_>) {
    let state = match notice {
        Notice::Ready => NotifyState::Ready,
        Notice::Status(line) => NotifyState::Status(line),
        Notice::Stopping => NotifyState::Stopping,
        Notice::Watchdog => NotifyState::Watchdog,
    };
    let _ = sd_notify::notify(false, &[state]);
}

/// The watchdog period systemd asked of this process (`$WATCHDOG_USEC`, and
/// `$WATCHDOG_PID` naming it), if any.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    (sd_notify::watchdog_enabled(false, &mut usec) && usec > 0).then(|| Duration::from_micros(usec))
}
