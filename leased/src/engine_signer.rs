//! The engine-signer JSON-RPC of OpenEthereum and Nethermind: `parity_setEngineSignerSecret`
//! gives a running client the key to seal with, `parity_clearEngineSigner` takes it away.
//! With `client.engine_signer_rpc` set, the daemon sets the signer once the client runs and
//! clears it first when fencing, before the guard's SIGTERM.
//!
//! A minimal HTTP/1.1 POST over loopback (the configuration only accepts loopback URLs,
//! since the set call carries the key). The request body that holds the key is a zeroizing
//! buffer, and no error message ever includes a request body.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zeroize::Zeroizing;

/// Largest answer read.
const MAX_RESPONSE: u64 = 64 * 1024;

/// `parity_setEngineSignerSecret(0x<key>)`.
pub async fn set_signer(url: &str, key_hex: &str, timeout: Duration) -> Result<(), String> {
    let mut body = Zeroizing::new(String::with_capacity(128));
    body.push_str(
        r#"{"jsonrpc":"2.0","id":1,"method":"parity_setEngineSignerSecret","params":["0x"#,
    );
    body.push_str(key_hex);
    body.push_str(r#""]}"#);
    call(url, &body, timeout).await
}

/// `parity_clearEngineSigner()`.
pub async fn clear_signer(url: &str, timeout: Duration) -> Result<(), String> {
    let body =
        json!({"jsonrpc": "2.0", "id": 1, "method": "parity_clearEngineSigner", "params": []})
            .to_string();
    call(url, &body, timeout).await
}

async fn call(url: &str, body: &str, timeout: Duration) -> Result<(), String> {
    tokio::time::timeout(timeout, post(url, body))
        .await
        .map_err(|_| format!("no answer from {url} within {timeout:?}"))?
}

async fn post(url: &str, body: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("engine_signer_rpc must be http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = TcpStream::connect(authority)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let mut request = Zeroizing::new(format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    request.push_str(body);
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let mut answer = Vec::new();
    stream
        .take(MAX_RESPONSE)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, payload) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{url}: not an HTTP answer"))?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!(
            "{url}: answered {:?}",
            status.chars().take(60).collect::<String>()
        ));
    }
    let v: Value = serde_json::from_str(payload.trim())
        .map_err(|_| format!("{url}: the answer is not JSON-RPC"))?;
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
        _ => Ok(()),
    }
}
