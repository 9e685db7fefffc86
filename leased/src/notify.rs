//! systemd's notify protocol, by hand: one datagram per message to `$NOTIFY_SOCKET`
//! (a path, or an abstract socket written `@name`). Without the variable every call does
//! nothing, so the daemon runs the same outside systemd.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends `message` (e.g. `READY=1`, `STATUS=…`, `WATCHDOG=1`); best-effort.
pub fn send(message: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = target.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(name) {
            let _ = socket.send_to_addr(message.as_bytes(), &addr);
        }
    } else {
        let _ = socket.send_to(message.as_bytes(), &target);
    }
}

/// The watchdog period systemd asked for (`$WATCHDOG_USEC`, for this pid), if any.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}
