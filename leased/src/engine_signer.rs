//! The engine-signer JSON-RPC of OpenEthereum and Nethermind: `parity_setEngineSignerSecret`
//! gives a running client the key to seal with, `parity_clearEngineSigner` takes it away.
//! With `client.engine_signer_rpc` set, the daemon sets the signer at every start of the
//! client and clears it first when fencing, before the guard's SIGTERM.
//!
//! The calls go over `reqwest` to loopback only (the configuration refuses any other URL,
//! since the set call carries the key), with no proxy and a whole-request timeout. The key
//! is copied into the request body, which reqwest owns and frees without wiping (README:
//! "What stays in memory"); no error message ever includes a request body.

use std::time::Duration;

use serde_json::{json, Value};
use zeroize::Zeroizing;

/// Largest answer read.
const MAX_RESPONSE: usize = 64 * 1024;

/// `parity_setEngineSignerSecret(0x<key>)`.
pub async fn set_signer(url: &str, key_hex: &str, timeout: Duration) -> Result<(), String> {
    let mut body = Zeroizing::new(String::with_capacity(128));
    body.push_str(
        r#"{"jsonrpc":"2.0","id":1,"method":"parity_setEngineSignerSecret","params":["0x"#,
    );
    body.push_str(key_hex);
    body.push_str(r#""]}"#);
    call(url, body.as_bytes().to_vec(), timeout).await
}

/// `parity_clearEngineSigner()`.
pub async fn clear_signer(url: &str, timeout: Duration) -> Result<(), String> {
    let body =
        json!({"jsonrpc": "2.0", "id": 1, "method": "parity_clearEngineSigner", "params": []})
            .to_string();
    call(url, body.into_bytes(), timeout).await
}

async fn call(url: &str, body: Vec<u8>, timeout: Duration) -> Result<(), String> {
    if !shared::net::is_loopback_http(url) {
        return Err(format!(
            "{url}: the engine-signer RPC must be http:// on loopback"
        ));
    }
    let client =
        shared::net::loopback_http_client(timeout, timeout).map_err(|e| format!("{url}: {e}"))?;
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
        _ => Ok(()),
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
}
