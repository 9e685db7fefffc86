//! The doppelganger watch: before the key is handed over, the chain is watched for blocks
//! sealed by the identity since its lease was acquired. The lease is the first line of
//! defence; this is the second, for a signer the lease cannot see (a zombie VM resumed from
//! a pause, a break gone wrong, a key used by hand). Blocks are read over JSON-RPC (a peer's,
//! or the local client's as a follower) and their sealers recovered with
//! [`shared::seal`]; the node serving them is not trusted to name the sealer.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use shared::key::Address;
use shared::seal::{self, Engine, RpcHeader};

/// Every request of [`RpcChain`], from connecting to the last byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Where blocks are read from.
#[async_trait]
pub trait Chain: Send + Sync {
    /// The number of the newest block.
    async fn head(&self) -> Result<u64, String>;
    /// Block `number`'s header, `None` if the node does not have it (yet).
    async fn header(&self, number: u64) -> Result<Option<RpcHeader>, String>;
}

/// A chain read over JSON-RPC at `url`.
#[derive(Debug)]
pub struct RpcChain {
    url: String,
    client: reqwest::Client,
}

impl RpcChain {
    pub fn new(url: &str) -> Result<Self, String> {
        let client = shared::net::loopback_http_client(Duration::from_secs(1), REQUEST_TIMEOUT)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            url: url.to_string(),
            client,
        })
    }

    pub(super) fn url(&self) -> &str {
        &self.url
    }

    pub(super) async fn call(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let body =
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        crate::engine_signer::exchange(
            &self.client,
            &self.url,
            body.to_string().into_bytes(),
            REQUEST_TIMEOUT,
        )
        .await
        .map_err(|e| format!("{method}: {e}"))
    }
}

#[async_trait]
impl Chain for RpcChain {
    async fn head(&self) -> Result<u64, String> {
        let n = self.call("eth_blockNumber", serde_json::json!([])).await?;
        let text = n.as_str().ok_or("eth_blockNumber: not a quantity")?;
        u64::from_str_radix(text.trim_start_matches("0x"), 16)
            .map_err(|_| format!("eth_blockNumber: {text:?} is not a quantity"))
    }

    async fn header(&self, number: u64) -> Result<Option<RpcHeader>, String> {
        let block = self
            .call(
                "eth_getBlockByNumber",
                serde_json::json!([format!("0x{number:x}"), false]),
            )
            .await?;
        if block.is_null() {
            return Ok(None);
        }
        serde_json::from_value(block)
            .map(Some)
            .map_err(|e| format!("eth_getBlockByNumber: {e}"))
    }
}

/// How the chain is watched.
#[derive(Clone)]
pub struct Watch {
    pub chain: Arc<dyn Chain>,
    pub engine: Engine,
    /// How long after acquiring the chain must show no seal by the identity.
    pub window: Duration,
    /// How often new blocks are looked for.
    pub poll: Duration,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("engine", &self.engine)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

/// What the watch saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No seal by the identity for the whole window.
    Clear,
    /// Block `number` (`hash`), sealed by the identity after the lease was acquired.
    Sealed { number: u64, hash: String },
    /// The chain could not be read: nothing can be said, and the key is not handed over.
    Blind(String),
}

impl Watch {
    /// Watches for `self.window` from now for a block sealed by `address` that is newer
    /// than the head at the start and than `acquired_unix` (the lease's acquisition, in
    /// seconds since the epoch: a block the previous holder sealed before it fenced, seen
    /// late, is not a doppelganger).
    pub async fn run(&self, address: Address, acquired_unix: u64) -> Verdict {
        let start = match self.chain.head().await {
            Ok(n) => n,
            Err(e) => return Verdict::Blind(e),
        };
        let until = tokio::time::Instant::now() + self.window;
        let mut next = start + 1;
        loop {
            let head = match self.chain.head().await {
                Ok(n) => n,
                Err(e) => return Verdict::Blind(e),
            };
            while next <= head {
                let header = match self.chain.header(next).await {
                    Ok(Some(h)) => h,
                    Ok(None) => break,
                    Err(e) => return Verdict::Blind(e),
                };
                let sealer = match seal::sealer(self.engine, &header) {
                    Ok(a) => a,
                    Err(e) => return Verdict::Blind(e.to_string()),
                };
                let time = u64::from_str_radix(header.timestamp.trim_start_matches("0x"), 16)
                    .unwrap_or(u64::MAX);
                if sealer == address && time >= acquired_unix {
                    return Verdict::Sealed {
                        number: next,
                        hash: header.hash,
                    };
                }
                next += 1;
            }
            if tokio::time::Instant::now() >= until {
                return Verdict::Clear;
            }
            tokio::time::sleep(self.poll.min(until - tokio::time::Instant::now())).await;
        }
    }
}

/// The address `secret` is for: a raw-hex key's, or the one a keystore names (read without
/// its password; the hand-off checks the key against it). The key is wiped on return.
fn stated_address(secret: &shared::secret::Secret) -> Result<Address, String> {
    let value = secret.value.expose();
    match secret.properties.content_type.as_deref() {
        Some(shared::keystore::CONTENT_TYPE) => shared::keystore::stated_address(value.as_bytes())
            .ok_or_else(|| "the keystore names no address to watch for".to_string()),
        _ => shared::ValidatorKey::from_hex(value)
            .map(|k| k.address())
            .map_err(|e| e.to_string()),
    }
}

/// The quarantine of `lease` with a watch: at least `min_wait`, and the watch's window
/// with no seal by the identity, before the key may be handed over. The identity's
/// address comes from its secret (the key is dropped, wiped, at once).
pub(super) async fn quarantine(
    watch: Watch,
    secret: impl std::future::Future<Output = Result<shared::secret::Secret, String>>,
    lease: crate::machine::Lease,
    min_wait: Duration,
    telemetry: Arc<crate::telemetry::Telemetry>,
) -> crate::machine::Event {
    use crate::machine::Event;
    let ticket = lease.ticket;
    let started = tokio::time::Instant::now();
    let acquired_unix = super::stores::unix_now();
    let address = match secret.await.and_then(|s| stated_address(&s)) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(
                "quarantine of {}: cannot read its address: {e}",
                lease.identity
            );
            telemetry.metrics(|m| m.doppelgangers.inc());
            return Event::SealSeen { ticket };
        }
    };
    let verdict = watch.run(address, acquired_unix).await;
    match verdict {
        Verdict::Clear => {
            tokio::time::sleep_until(started + min_wait).await;
            Event::QuarantineDone { ticket }
        }
        Verdict::Sealed { number, hash } => {
            tracing::warn!(
                block = number,
                hash = %hash,
                "{} ({address}) is sealing elsewhere since this node acquired it: a \
                 doppelganger; the key is not handed over, the lease is given up",
                lease.identity
            );
            telemetry.metrics(|m| m.doppelgangers.inc());
            Event::SealSeen { ticket }
        }
        Verdict::Blind(e) => {
            tracing::warn!(
                "quarantine of {}: the chain cannot be watched ({e}); the key is not handed \
                 over, the lease is given up",
                lease.identity
            );
            telemetry.metrics(|m| m.doppelgangers.inc());
            Event::SealSeen { ticket }
        }
    }
}
