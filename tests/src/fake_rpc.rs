//! A stand-in for a validator client's JSON-RPC endpoint, for the engine-signer tests: it
//! records each call's method, first parameter and `CLOCK_MONOTONIC` time, and answers
//! `true`. Loopback only; it lives as long as the test process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

/// One JSON-RPC call as the stand-in saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: String,
    /// The first parameter, as text (the key, for `parity_setEngineSignerSecret`).
    pub param: String,
    /// When it arrived, on `CLOCK_MONOTONIC` in nanoseconds (the sign log's clock).
    pub at: u64,
}

/// Every call so far, in arrival order.
pub type Calls = Arc<Mutex<Vec<Call>>>;

/// Starts the stand-in on a free loopback port; its address and its call record.
pub fn start() -> (SocketAddr, Calls) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let calls: Calls = Calls::default();
    let seen = calls.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let Ok(read_half) = conn.try_clone() else {
                continue;
            };
            let mut reader = BufReader::new(read_half);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            seen.lock().unwrap_or_else(|e| e.into_inner()).push(Call {
                method: v["method"].as_str().unwrap_or_default().to_string(),
                param: v["params"][0].as_str().unwrap_or_default().to_string(),
                at: crate::cluster::mono_now(),
            });
            let answer = r#"{"jsonrpc":"2.0","id":1,"result":true}"#;
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (addr, calls)
}
