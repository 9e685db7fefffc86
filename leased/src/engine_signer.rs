//! The client's signer RPCs, over loopback JSON-RPC:
//!
//! - the engine-signer RPC of OpenEthereum and Nethermind: `parity_setEngineSignerSecret`
//!   gives a running client the key to seal with, `parity_clearEngineSigner` takes it away.
//!   With `client.engine_signer_rpc` set, the daemon sets the signer at every start of the
//!   client and clears it first when fencing, before the guard's SIGTERM;
//! - geth's unlock (`client.unlock_rpc`): geth starts mining with its keystore account
//!   locked, so it seals nothing; the daemon unlocks the account with
//!   `personal_unlockAccount` and restarts the miner ([`geth_unlock`]), and locks it again
//!   first when fencing ([`geth_lock`]). geth needs `--rpc.enabledeprecatedpersonal` and
//!   `--allow-insecure-unlock` for that, and `personal,miner,eth,net` in `--http.api`.
//!
//! The calls go over `reqwest` to loopback only (the configuration refuses any other URL,
//! since the set call carries the key and the unlock the password), with no proxy and a
//! whole-request timeout. The key or password is copied into the request body, which
//! reqwest owns and frees without wiping (README: "What stays in memory"); no error
//! message ever includes a request body.

use std::time::Duration;

use serde_json::{json, Value};
use zeroize::Zeroizing;

/// Largest answer read.
pub(crate) const MAX_RESPONSE: usize = 64 * 1024;

/// `parity_setEngineSignerSecret(0x<key>)`.
pub async fn set_signer(url: &str, key_hex: &str, timeout: Duration) -> Result<(), String> {
    let mut body = Zeroizing::new(String::with_capacity(128));
    body.push_str(
        r#"{"jsonrpc":"2.0","id":1,"method":"parity_setEngineSignerSecret","params":["0x"#,
    );
    body.push_str(key_hex);
    body.push_str(r#""]}"#);
    call(url, body.as_bytes().to_vec(), timeout).await.map(drop)
}

/// `parity_clearEngineSigner()`.
pub async fn clear_signer(url: &str, timeout: Duration) -> Result<(), String> {
    let body =
        json!({"jsonrpc": "2.0", "id": 1, "method": "parity_clearEngineSigner", "params": []})
            .to_string();
    call(url, body.into_bytes(), timeout).await.map(drop)
}

/// geth's `extraData` vanity is 32 bytes; `miner_setExtra` refuses more.
const MAX_EXTRA: usize = 32;

/// How long geth may take to unlock. It decrypts the keystore first: scrypt at geth's
/// standard cost (n = 2^18, 256 MiB) takes about a second on an idle core, and several on a
/// busy host. A shorter bound made every attempt time out while geth went on decrypting,
/// and each retry started one more decryption (found with 3 gethes starting at once on 2
/// cores: no identity was ever unlocked).
pub const UNLOCK_TIMEOUT: Duration = Duration::from_secs(20);

/// Unlocks `address` in the geth at `url` for good and restarts its miner, so that it
/// seals: `personal_unlockAccount`, `miner_stop`, a wait until `eth_mining` says it has
/// stopped (`miner_stop` returns before), `miner_setExtra(extra)` and `miner_start`. A
/// miner that tried to seal while the account was locked does not try again on an idle
/// Clique chain, hence the restart; geth does not retry sealing a block identical to one
/// it gave up on, hence an `extra` that differs from the last. The unlock is bounded by
/// [`UNLOCK_TIMEOUT`], every other call by `timeout`, the wait by twice that.
pub async fn geth_unlock(
    url: &str,
    address: &str,
    password: &str,
    extra: &str,
    timeout: Duration,
) -> Result<(), String> {
    // The password is escaped by serde_json into a buffer that is wiped on drop.
    let mut body = Zeroizing::new(String::with_capacity(160));
    body.push_str(r#"{"jsonrpc":"2.0","id":1,"method":"personal_unlockAccount","params":["#);
    body.push_str(&json!(address).to_string());
    body.push(',');
    body.push_str(&Zeroizing::new(
        serde_json::to_string(password).map_err(|_| "the password is not JSON text")?,
    ));
    body.push_str(",0]}");
    let unlocked = call(url, body.as_bytes().to_vec(), UNLOCK_TIMEOUT).await?;
    drop(body);
    if unlocked != Value::Bool(true) {
        return Err(format!(
            "{url}: personal_unlockAccount did not unlock {address}"
        ));
    }
    request(url, "miner_stop", json!([]), timeout).await?;
    let until = tokio::time::Instant::now() + timeout * 2;
    while request(url, "eth_mining", json!([]), timeout).await? != Value::Bool(false) {
        if tokio::time::Instant::now() >= until {
            return Err(format!(
                "{url}: the miner did not stop within {:?}",
                timeout * 2
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut extra = extra.to_string();
    while extra.len() > MAX_EXTRA {
        extra.pop();
    }
    request(url, "miner_setExtra", json!([extra]), timeout).await?;
    request(url, "miner_start", json!([]), timeout).await?;
    Ok(())
}

/// Locks `address` in the geth at `url` and stops its miner: the first step of a fence,
/// before the guard's SIGTERM. Both calls are tried; the first error is returned.
pub async fn geth_lock(url: &str, address: &str, timeout: Duration) -> Result<(), String> {
    let locked = request(url, "personal_lockAccount", json!([address]), timeout).await;
    let stopped = request(url, "miner_stop", json!([]), timeout).await;
    locked.and(stopped).map(drop)
}

/// One JSON-RPC call that carries no secret; its `result`.
pub async fn request(
    url: &str,
    method: &str,
    params: Value,
    timeout: Duration,
) -> Result<Value, String> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    call(url, body.into_bytes(), timeout)
        .await
        .map_err(|e| format!("{method}: {e}"))
}

/// Posts `body` to `url` on loopback; the answer's `result`, or its error's message.
async fn call(url: &str, body: Vec<u8>, timeout: Duration) -> Result<Value, String> {
    if !shared::net::is_loopback_http(url) {
        return Err(format!(
            "{url}: the engine-signer RPC must be http:// on loopback"
        ));
    }
    let client =
        shared::net::loopback_http_client(timeout, timeout).map_err(|e| format!("{url}: {e}"))?;
    exchange(&client, url, body, timeout).await
}

/// One JSON-RPC exchange on `client` (whose timeouts bound it; `timeout` is for the
/// message): the answer's `result`, or its error's message. Answers over [`MAX_RESPONSE`]
/// are refused. No message carries the request's body.
pub(crate) async fn exchange(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Value, String> {
    let answer = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| describe(url, e, timeout))?;
    let status = answer.status();
    if !status.is_success() {
        return Err(format!("{url}: answered {status}"));
    }
    let bytes = answer
        .bytes()
        .await
        .map_err(|e| describe(url, e, timeout))?;
    if bytes.len() > MAX_RESPONSE {
        return Err(format!("{url}: the answer is over {MAX_RESPONSE} bytes"));
    }
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|_| format!("{url}: the answer is not JSON-RPC"))?;
    match v.get("error") {
        Some(e) if !e.is_null() => Err(format!(
            "{url}: error {}",
            e.get("message")
                .and_then(Value::as_str)
                .unwrap_or("without a message")
                .chars()
                .take(120)
                .collect::<String>()
        )),
        _ => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
    }
}

/// A transport error in one line, without the request (which may hold the key).
fn describe(url: &str, e: reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("no answer from {url} within {timeout:?}")
    } else if e.is_connect() {
        format!("{url}: cannot connect")
    } else {
        format!("{url}: {}", e.without_url())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One connection answered with `reply` (raw HTTP); the request it got, as text.
    async fn serve_once(reply: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 4096];
            let n = conn.read(&mut buf).await.unwrap();
            conn.write_all(reply.as_bytes()).await.unwrap();
            conn.shutdown().await.unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        (url, task)
    }

    /// The hand-written client broke on a chunked reply; reqwest does not.
    #[tokio::test]
    async fn a_chunked_answer_is_read() {
        let (url, task) = serve_once(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
             1c\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"res\r\n\
             a\r\nult\":true}\r\n0\r\n\r\n",
        )
        .await;
        clear_signer(&url, Duration::from_secs(2)).await.unwrap();
        assert!(task.await.unwrap().contains("parity_clearEngineSigner"));
    }

    #[tokio::test]
    async fn a_json_rpc_error_is_an_error_without_the_key() {
        let (url, task) = serve_once(
            "HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n\
             {\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32000,\"message\":\"no\"}}  ",
        )
        .await;
        let key = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
        let e = set_signer(&url, key, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(e.contains("error no"), "{e}");
        assert!(!e.contains(&key[..16]), "{e}");
        assert!(
            task.await.unwrap().contains(key),
            "the call carries the key"
        );
    }

    #[tokio::test]
    async fn only_loopback_and_a_timeout_bound_the_call() {
        let e = clear_signer("http://10.0.0.1:8545", Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(e.contains("loopback"), "{e}");
        // A listener that never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", silent.local_addr().unwrap());
        let started = std::time::Instant::now();
        let e = clear_signer(&url, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(e.contains("no answer"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));
        drop(silent);
    }

    /// geth's unlock: the account first, then a miner restart that waits for the miner to
    /// stop, with a vanity of at most 32 bytes; the password is in the unlock call only and
    /// in no error.
    #[tokio::test]
    async fn geth_unlock_unlocks_then_restarts_the_miner() {
        let mining = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(2));
        let m = mining.clone();
        let rpc = crate::test_rpc::serve(Box::new(move |method, _| match method {
            "personal_unlockAccount" | "miner_stop" | "miner_setExtra" | "miner_start" => {
                Ok(json!(true))
            }
            // Still mining for two answers after miner_stop, as geth may be.
            "eth_mining" => Ok(json!(m
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |n| n.checked_sub(1)
                )
                .is_ok())),
            other => Err(format!("no method {other}")),
        }))
        .await;
        let address = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed";
        let extra = "leased a-rather-long-node-name-for-a-vm 17";
        geth_unlock(
            &rpc.url,
            address,
            "pass\"word",
            extra,
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        assert_eq!(
            rpc.methods(),
            [
                "personal_unlockAccount",
                "miner_stop",
                "eth_mining",
                "eth_mining",
                "eth_mining",
                "miner_setExtra",
                "miner_start"
            ]
        );
        let calls = rpc.calls();
        assert_eq!(calls[0].1, json!([address, "pass\"word", 0]));
        assert_eq!(calls[5].1, json!([&extra[..32]]));
        assert!(calls[1..]
            .iter()
            .all(|(_, p)| !p.to_string().contains("word")));
    }

    #[tokio::test]
    async fn a_wrong_password_fails_the_unlock_without_showing_it() {
        let rpc = crate::test_rpc::serve(Box::new(|method, _| match method {
            "personal_unlockAccount" => Err("could not decrypt key with given password".into()),
            _ => Ok(json!(true)),
        }))
        .await;
        let e = geth_unlock(
            &rpc.url,
            "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
            "hunter2-secret",
            "x",
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(e.contains("could not decrypt"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        assert_eq!(rpc.methods(), ["personal_unlockAccount"]);
        // The fence's lock: the account, then the miner.
        geth_lock(
            &rpc.url,
            "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        assert_eq!(rpc.methods()[1..], ["personal_lockAccount", "miner_stop"]);
    }

    /// geth decrypts the keystore before it answers the unlock, which takes seconds on a
    /// busy host: an unlock slower than the other calls' bound still succeeds.
    #[tokio::test]
    async fn a_slow_unlock_is_waited_for() {
        let rpc = crate::test_rpc::serve(Box::new(|method, _| {
            if method == "personal_unlockAccount" {
                std::thread::sleep(Duration::from_millis(1500));
            }
            Ok(json!(method != "eth_mining"))
        }))
        .await;
        geth_unlock(
            &rpc.url,
            "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
            "pw",
            "x",
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        assert_eq!(
            rpc.methods().last().map(String::as_str),
            Some("miner_start")
        );
    }
}
