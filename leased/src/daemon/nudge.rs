//! The release nudge: a daemon that releases a lease tells the standbys at once, so that
//! one of them acquires it within milliseconds instead of at its next look.
//!
//! Each standby binds a UDP socket (`lease.nudge_listen`) and announces its address in
//! the lease store beside the records ([`LeaseStore::announce_standby`]). A release that
//! succeeded reads those entries and sends every other node one datagram naming the
//! identity. A nudge is only a hint: the standby still acquires through the store, which
//! alone decides who holds what, so a lost, late, repeated or forged datagram can cost
//! at most one acquire request, never a second holder. Received nudges are rate-limited,
//! so a flood of forged ones cannot turn into a flood of store requests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shared::lease::LeaseStore;
use shared::Name;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::stores::within;
use super::Msg;
use crate::machine::Event;

/// What a nudge datagram starts with; the identity follows.
const MAGIC: &str = "leased-nudge/1 ";

/// The longest datagram read: the magic and an identity name.
const MAX_DATAGRAM: usize = 512;

/// At most this many nudges a second reach the machine; the rest are dropped.
const NUDGES_PER_SECOND: u32 = 5;

/// How often a standby announces itself again: the store may have lost its entry (a
/// container re-created, a file removed by hand).
pub(super) const ANNOUNCE_EVERY: Duration = Duration::from_secs(300);

/// A bound nudge socket and the address it is announced under.
#[derive(Debug)]
pub(super) struct Nudger {
    socket: UdpSocket,
    node: String,
    pub(super) advertised: SocketAddr,
}

impl Nudger {
    /// Binds `listen`; the port chosen is the one announced.
    pub(super) async fn bind(listen: SocketAddr, node: &str) -> std::io::Result<Arc<Self>> {
        let socket = UdpSocket::bind(listen).await?;
        let advertised = socket.local_addr()?;
        Ok(Arc::new(Self {
            socket,
            node: node.to_string(),
            advertised,
        }))
    }

    /// Sends every standby but this node a nudge for `identity`; returns how many were
    /// sent. Entries that are not socket addresses are skipped.
    pub(super) async fn nudge(&self, standbys: &[(String, String)], identity: &Name) -> usize {
        let datagram = format!("{MAGIC}{identity}");
        let mut sent = 0;
        for (node, address) in standbys {
            if *node == self.node {
                continue;
            }
            let Ok(to) = address.parse::<SocketAddr>() else {
                continue;
            };
            if self.socket.send_to(datagram.as_bytes(), to).await.is_ok() {
                sent += 1;
            }
        }
        sent
    }

    /// Reads nudges until the loop is gone, passing at most [`NUDGES_PER_SECOND`] on.
    pub(super) async fn receive(self: Arc<Self>, tx: mpsc::UnboundedSender<Msg>) {
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut window = tokio::time::Instant::now();
        let mut passed = 0u32;
        loop {
            let Ok((n, _from)) = self.socket.recv_from(&mut buf).await else {
                // A transient socket error (an ICMP error of an earlier send): go on.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let Some(identity) = parse(&buf[..n]) else {
                continue;
            };
            let now = tokio::time::Instant::now();
            if now.duration_since(window) >= Duration::from_secs(1) {
                window = now;
                passed = 0;
            }
            if passed == NUDGES_PER_SECOND {
                continue;
            }
            passed += 1;
            if tx.send(Msg::Machine(Event::Nudge { identity })).is_err() {
                return;
            }
        }
    }
}

/// The identity a nudge datagram names; `None` for anything else.
fn parse(datagram: &[u8]) -> Option<Name> {
    let text = std::str::from_utf8(datagram).ok()?;
    Name::new(text.strip_prefix(MAGIC)?).ok()
}

/// Announces this node when it stands by (`standing_by` is true), at most once every
/// [`ANNOUNCE_EVERY`] after a success, retrying a failure after `retry`; logs a failure
/// once until it works again. A node that holds an identity does not need nudges, so in
/// a herd that finds an identity for everyone nothing is written. The entry is left in
/// place when the node acquires (the next release's datagram costs it nothing) and
/// withdrawn on a clean stop.
pub(super) async fn announce(
    store: Arc<dyn LeaseStore>,
    node: String,
    address: SocketAddr,
    timeout: Duration,
    retry: Duration,
    mut standing_by: watch::Receiver<bool>,
) {
    let address = address.to_string();
    let mut failing = false;
    loop {
        if standing_by.wait_for(|s| *s).await.is_err() {
            return;
        }
        let call = store.announce_standby(&node, &address);
        let wait = match within(timeout, call).await {
            Some(Ok(())) => {
                if failing {
                    tracing::info!("announced this standby's nudge address {address} again");
                }
                failing = false;
                ANNOUNCE_EVERY
            }
            outcome => {
                if !failing {
                    let why = match outcome {
                        Some(Err(e)) => e.to_string(),
                        _ => "timed out".into(),
                    };
                    tracing::info!(
                        "cannot announce this standby's nudge address (releases elsewhere \
                         reach it at its next look instead): {why}"
                    );
                }
                failing = true;
                retry
            }
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_nudges_name_an_identity() {
        assert_eq!(
            parse(b"leased-nudge/1 m0-v3"),
            Some(Name::new("m0-v3").unwrap())
        );
        assert_eq!(parse(b"leased-nudge/1 "), None);
        assert_eq!(parse(b"leased-nudge/2 m0-v3"), None);
        assert_eq!(parse(b"m0-v3"), None);
        assert_eq!(parse(b"leased-nudge/1 m0 v3"), None);
        assert_eq!(parse(&[0xff, 0xfe]), None);
    }

    #[tokio::test]
    async fn a_nudge_reaches_every_other_standby_and_a_flood_is_cut_to_the_rate() {
        let a = Nudger::bind("127.0.0.1:0".parse().unwrap(), "vm-1")
            .await
            .unwrap();
        let b = Nudger::bind("127.0.0.1:0".parse().unwrap(), "vm-2")
            .await
            .unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(b.clone().receive(tx));
        let standbys = vec![
            ("vm-1".to_string(), a.advertised.to_string()),
            ("vm-2".to_string(), b.advertised.to_string()),
            ("vm-3".to_string(), "not an address".to_string()),
        ];
        let id = Name::new("m0-v1").unwrap();
        // Not to itself, not to an entry that is no address.
        assert_eq!(a.nudge(&standbys, &id).await, 1);
        match rx.recv().await {
            Some(Msg::Machine(Event::Nudge { identity })) => assert_eq!(identity, id),
            _ => panic!("no nudge"),
        }
        for _ in 0..200 {
            a.nudge(&standbys, &id).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut passed = 0;
        while rx.try_recv().is_ok() {
            passed += 1;
        }
        assert!(
            (1..=NUDGES_PER_SECOND).contains(&passed),
            "{passed} nudges passed"
        );
    }
}
