//! enode URLs, and the live bootnode list that the lease store keeps.
//!
//! A holder whose config names its client's enode (`[client] enode` in `leased.toml`)
//! writes it into its lease's metadata under [`crate::lease::meta::ENODE`] with the rest of
//! its holder fields, and drops it when it gives the lease up. The store is then the
//! registry: the enodes of the held leases are the nodes that run now. A holder that died
//! stops counting when its lease ends, within D. Metadata is written by whoever holds a
//! record, so every value is checked again on the way out.

use crate::lease::{meta, LeaseRecord, LeaseState};
use crate::name::Name;

/// `enode://<128 lowercase or uppercase hex>@<host>:<port>`, host without spaces or `@`,
/// port 1–65535 in decimal digits: the network-info schema's bootnode pattern, plus the
/// port's range.
pub fn is_enode_url(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("enode://") else {
        return false;
    };
    let Some((id, addr)) = rest.split_once('@') else {
        return false;
    };
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    id.len() == 128
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        && is_port(port)
}

fn is_port(text: &str) -> bool {
    (1..=5).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_digit())
        && text.parse::<u16>().is_ok_and(|p| p != 0)
}

/// The enodes of the held leases among `records`, by identity: each well-formed
/// [`meta::ENODE`] of a record in state `leased`. Others (a lease that ended, a value that
/// is not an enode URL) are left out.
pub fn live(records: &[LeaseRecord]) -> Vec<(Name, String)> {
    let mut out: Vec<(Name, String)> = records
        .iter()
        .filter(|r| r.state == LeaseState::Leased)
        .filter_map(|r| {
            let enode = r.metadata.get(meta::ENODE)?.trim();
            is_enode_url(enode).then(|| (r.identity.clone(), enode.to_string()))
        })
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.1 == b.1);
    out
}

/// How a client takes a list of enodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// geth's and Besu's `--bootnodes a,b`.
    Bootnodes,
    /// `static-nodes.json`: a JSON array (geth before 1.14, Besu, Nethermind's
    /// `Data/static-nodes.json`).
    StaticNodes,
    /// Nethermind's `--Network.StaticPeers a,b`.
    Nethermind,
}

impl Form {
    pub const ALL: [Form; 3] = [Form::Bootnodes, Form::StaticNodes, Form::Nethermind];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bootnodes => "bootnodes",
            Self::StaticNodes => "static-nodes",
            Self::Nethermind => "nethermind",
        }
    }

    /// `enodes` in this form, one line (a JSON array for [`Form::StaticNodes`]).
    pub fn render(self, enodes: &[String]) -> String {
        match self {
            Self::Bootnodes => format!("--bootnodes={}", enodes.join(",")),
            Self::StaticNodes => serde_json::to_string(enodes).expect("a list of strings is JSON"),
            Self::Nethermind => format!("--Network.StaticPeers={}", enodes.join(",")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::Metadata;

    fn id() -> String {
        "ab".repeat(64)
    }

    #[test]
    fn enode_urls_are_checked_strictly() {
        for good in [
            format!("enode://{}@10.0.1.5:30303", id()),
            format!("enode://{}@node-1.example:1", id()),
            format!("enode://{}@[::1]:30303", id()),
        ] {
            assert!(is_enode_url(&good), "{good}");
        }
        for bad in [
            format!("enode://{}@10.0.1.5:30303", "ab".repeat(63)),
            format!("enode://{}@10.0.1.5:0", id()),
            format!("enode://{}@10.0.1.5", id()),
            format!("enode://{}@10.0.1.5:30303?discport=0", id()),
            format!("enode://{}@10.0.1.5:30303\n", id()),
            format!("enode://{}@ev il:30303", id()),
            format!("http://{}@10.0.1.5:30303", id()),
        ] {
            assert!(!is_enode_url(&bad), "{bad:?}");
        }
    }

    fn record(identity: &str, state: LeaseState, enode: Option<&str>) -> LeaseRecord {
        let metadata = Metadata::from_store(
            enode
                .map(|e| (meta::ENODE.to_string(), e.to_string()))
                .into_iter()
                .collect(),
        );
        LeaseRecord {
            identity: Name::new(identity).unwrap(),
            state,
            duration: None,
            remaining: None,
            metadata,
        }
    }

    #[test]
    fn only_held_leases_with_a_well_formed_enode_are_live() {
        let a = format!("enode://{}@10.0.1.5:30303", id());
        let b = format!("enode://{}@10.0.1.6:30303", "cd".repeat(64));
        let records = [
            record("m0-v1", LeaseState::Leased, Some(&b)),
            record("m0-v0", LeaseState::Leased, Some(&a)),
            record("m0-v2", LeaseState::Expired, Some("enode://stale")),
            record("m0-v3", LeaseState::Available, Some(&a)),
            record("m0-v4", LeaseState::Leased, Some("enode://x@y:1; rm -rf /")),
            record("m0-v5", LeaseState::Leased, None),
        ];
        let live = live(&records);
        let names: Vec<&str> = live.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["m0-v0", "m0-v1"]);
        let enodes: Vec<String> = live.into_iter().map(|(_, e)| e).collect();
        assert_eq!(
            Form::Bootnodes.render(&enodes),
            format!("--bootnodes={a},{b}")
        );
        assert_eq!(
            Form::StaticNodes.render(&enodes),
            format!("[\"{a}\",\"{b}\"]")
        );
        assert_eq!(
            Form::Nethermind.render(&enodes),
            format!("--Network.StaticPeers={a},{b}")
        );
    }
}
