//! The sync gate: a replacement client must not seal before it has caught up with the
//! chain. A fresh geth given an unlocked key seals its own block 1 before it syncs: one
//! identity, two blocks at one height, with no overlap of leases at all. So the signer is
//! enabled (the engine signer set, or geth's account unlocked) only once the local client
//! has a peer, has no blocks left to download, and holds the head block of every reference in
//! `client.sync_with` that answers, at least one of which must.
//!
//! Each check is one attempt of the machine's signer step: a closed gate fails the attempt
//! with the reason, and the machine tries again until the hand-off's start timeout.

use super::chain::{Chain, RpcChain};

/// The local client and the peers whose heads it must have.
pub(super) struct SyncGate {
    local: RpcChain,
    references: Vec<RpcChain>,
}

impl SyncGate {
    /// `None` without references: the signer is enabled as soon as the client answers.
    pub(super) fn new(local: &str, references: &[String]) -> Result<Option<Self>, String> {
        if references.is_empty() {
            return Ok(None);
        }
        Ok(Some(Self {
            local: RpcChain::new(local)?,
            references: references
                .iter()
                .map(|u| RpcChain::new(u))
                .collect::<Result<_, _>>()?,
        }))
    }

    /// `Ok(head)` once the local client is in sync; else why not.
    pub(super) async fn check(&self) -> Result<u64, String> {
        let local = self.local.url();
        let peers = self
            .local
            .call("net_peerCount", serde_json::json!([]))
            .await
            .and_then(|v| quantity(&v))
            .map_err(|e| format!("{local}: {e}"))?;
        if peers == 0 {
            return Err(format!("{local} has no peers yet"));
        }
        let syncing = self
            .local
            .call("eth_syncing", serde_json::json!([]))
            .await
            .map_err(|e| format!("{local}: {e}"))?;
        // geth answers with its progress while the transaction index catches up too, with
        // no download going on: only blocks still to fetch count here.
        if let Some(progress) = syncing.as_object() {
            let at = |key: &str| progress.get(key).and_then(|v| quantity(v).ok());
            if let (Some(current), Some(highest)) = (at("currentBlock"), at("highestBlock")) {
                if current < highest {
                    return Err(format!(
                        "{local} is syncing: at block {current} of {highest}"
                    ));
                }
            }
        }
        let own = self
            .local
            .head()
            .await
            .map_err(|e| format!("{local}: {e}"))?;
        let mut answered = 0;
        let mut silent = Vec::new();
        for reference in &self.references {
            let url = reference.url();
            let theirs = match reference.head().await {
                Ok(n) => match reference.header(n).await {
                    Ok(Some(h)) => (n, h.hash),
                    Ok(None) => continue,
                    Err(e) => {
                        silent.push(format!("{url}: {e}"));
                        continue;
                    }
                },
                Err(e) => {
                    silent.push(format!("{url}: {e}"));
                    continue;
                }
            };
            answered += 1;
            match self.local.header(theirs.0).await {
                Ok(Some(h)) if h.hash.eq_ignore_ascii_case(&theirs.1) => {}
                Ok(Some(_)) => {
                    return Err(format!(
                        "{local} is on another branch than {url} at block {}",
                        theirs.0
                    ))
                }
                Ok(None) => {
                    return Err(format!(
                        "{local} is behind {url}: at block {own}, it is at {}",
                        theirs.0
                    ))
                }
                Err(e) => return Err(format!("{local}: {e}")),
            }
        }
        if answered == 0 {
            return Err(format!(
                "no client.sync_with peer answers ({})",
                silent.join("; ")
            ));
        }
        Ok(own)
    }
}

fn quantity(v: &serde_json::Value) -> Result<u64, String> {
    v.as_str()
        .and_then(|t| u64::from_str_radix(t.trim_start_matches("0x"), 16).ok())
        .ok_or_else(|| format!("{v} is not a quantity"))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::{json, Value};

    use super::*;
    use crate::test_rpc::{serve, FakeRpc};

    /// A node's chain as the fake serves it: block n's hash is `branch` and n.
    #[derive(Clone)]
    struct Node {
        head: u64,
        branch: u8,
        peers: u64,
        syncing: Value,
    }

    fn hash(branch: u8, n: u64) -> String {
        format!("0x{branch:02x}{n:062x}")
    }

    fn header(branch: u8, n: u64) -> Value {
        let zero = format!("0x{}", "0".repeat(64));
        json!({
            "hash": hash(branch, n), "parentHash": zero, "sha3Uncles": zero,
            "miner": "0x0000000000000000000000000000000000000000", "stateRoot": zero,
            "transactionsRoot": zero, "receiptsRoot": zero,
            "logsBloom": format!("0x{}", "0".repeat(512)), "difficulty": "0x2",
            "number": format!("0x{n:x}"), "gasLimit": "0x0", "gasUsed": "0x0",
            "timestamp": "0x0", "extraData": "0x", "mixHash": zero, "nonce": "0x0000000000000000",
        })
    }

    async fn node(state: Arc<Mutex<Node>>) -> FakeRpc {
        serve(Box::new(move |method, params| {
            let n = state.lock().unwrap().clone();
            match method {
                "net_peerCount" => Ok(json!(format!("0x{:x}", n.peers))),
                "eth_syncing" => Ok(n.syncing.clone()),
                "eth_blockNumber" => Ok(json!(format!("0x{:x}", n.head))),
                "eth_getBlockByNumber" => {
                    let text = params[0].as_str().unwrap_or_default();
                    let at = u64::from_str_radix(text.trim_start_matches("0x"), 16).unwrap();
                    Ok(match at <= n.head {
                        true => header(n.branch, at),
                        false => Value::Null,
                    })
                }
                other => Err(format!("no method {other}")),
            }
        }))
        .await
    }

    fn synced(head: u64) -> Arc<Mutex<Node>> {
        Arc::new(Mutex::new(Node {
            head,
            branch: 1,
            peers: 2,
            syncing: json!(false),
        }))
    }

    async fn gate(local: &FakeRpc, references: &[&FakeRpc]) -> SyncGate {
        let refs: Vec<String> = references.iter().map(|r| r.url.clone()).collect();
        SyncGate::new(&local.url, &refs).unwrap().expect("a gate")
    }

    #[tokio::test]
    async fn the_gate_opens_only_at_every_answering_references_head() {
        let local = synced(3);
        let (a, b) = (synced(5), synced(4));
        let (l, ra, rb) = (node(local.clone()).await, node(a).await, node(b).await);
        let g = gate(&l, &[&ra, &rb]).await;
        let e = g.check().await.unwrap_err();
        assert!(
            e.contains("is behind") && e.contains("at block 3, it is at 5"),
            "{e}"
        );
        local.lock().unwrap().head = 5;
        assert_eq!(g.check().await, Ok(5));
        // Ahead of a reference that lags is in sync with it.
        local.lock().unwrap().head = 6;
        assert_eq!(g.check().await, Ok(6));
    }

    #[tokio::test]
    async fn no_peers_another_branch_or_blocks_to_fetch_keep_the_gate_shut() {
        let local = synced(5);
        let (l, r) = (node(local.clone()).await, node(synced(5)).await);
        let g = gate(&l, &[&r]).await;
        local.lock().unwrap().peers = 0;
        assert!(g.check().await.unwrap_err().contains("has no peers yet"));
        local.lock().unwrap().peers = 1;
        local.lock().unwrap().branch = 2;
        let e = g.check().await.unwrap_err();
        assert!(
            e.contains("on another branch than") && e.contains("at block 5"),
            "{e}"
        );
        local.lock().unwrap().branch = 1;
        local.lock().unwrap().syncing = json!({"currentBlock": "0x5", "highestBlock": "0x9"});
        let e = g.check().await.unwrap_err();
        assert!(e.contains("is syncing: at block 5 of 9"), "{e}");
        // geth reports progress while only its transaction index catches up: no download.
        local.lock().unwrap().syncing = json!({
            "currentBlock": "0x5", "highestBlock": "0x5", "txIndexRemainingBlocks": "0x1"
        });
        assert_eq!(g.check().await, Ok(5));
    }

    #[tokio::test]
    async fn without_an_answering_reference_the_gate_stays_shut() {
        let l = node(synced(5)).await;
        // A port nobody listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", closed.local_addr().unwrap());
        drop(closed);
        let g = SyncGate::new(&l.url, &[url]).unwrap().expect("a gate");
        let e = g.check().await.unwrap_err();
        assert!(e.starts_with("no client.sync_with peer answers"), "{e}");
        // With no references there is no gate at all.
        assert!(SyncGate::new(&l.url, &[]).unwrap().is_none());
    }
}
