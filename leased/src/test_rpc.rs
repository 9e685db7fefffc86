//! A JSON-RPC endpoint for the unit tests of the client RPCs: each request is answered by
//! a closure from its method and parameters, and recorded. Loopback only; one request per
//! connection.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What answers a call: `Ok(result)` or `Err(error message)`.
pub(crate) type Answer = Box<dyn Fn(&str, &Value) -> Result<Value, String> + Send + Sync>;

/// A running endpoint.
pub(crate) struct FakeRpc {
    pub(crate) url: String,
    calls: Arc<Mutex<Vec<(String, Value)>>>,
}

impl FakeRpc {
    /// Every call so far: method and parameters.
    pub(crate) fn calls(&self) -> Vec<(String, Value)> {
        self.calls.lock().unwrap().clone()
    }

    /// The methods called so far, in order.
    pub(crate) fn methods(&self) -> Vec<String> {
        self.calls().into_iter().map(|(m, _)| m).collect()
    }
}

/// Starts an endpoint on a free loopback port; it lives as long as the runtime.
pub(crate) async fn serve(answer: Answer) -> FakeRpc {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let calls: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let seen = calls.clone();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then as much body as Content-Length says.
                let body = loop {
                    let Ok(n) = conn.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).into_owned();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break request[end + 4..end + 4 + length].to_vec();
                    }
                };
                let call: Value = serde_json::from_slice(&body).unwrap_or_default();
                let method = call["method"].as_str().unwrap_or_default().to_string();
                let params = call["params"].clone();
                seen.lock().unwrap().push((method.clone(), params.clone()));
                let reply = match answer(&method, &params) {
                    Ok(result) => json!({"jsonrpc": "2.0", "id": 1, "result": result}),
                    Err(message) => json!({"jsonrpc": "2.0", "id": 1,
                        "error": {"code": -32000, "message": message}}),
                }
                .to_string();
                let _ = conn
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                            reply.len()
                        )
                        .as_bytes(),
                    )
                    .await;
                let _ = conn.shutdown().await;
            });
        }
    });
    FakeRpc { url, calls }
}
