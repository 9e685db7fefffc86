//! The chain checker against scripted chains served by a stand-in JSON-RPC node: it must
//! see a double sign that a reorganisation later hid, read a deep reorganisation again
//! from the bottom, and count a take-over's missed blocks right.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shared::Address;

use super::{ChainChecker, Rpc};

/// (hash, signer, difficulty) per height from 1; the genesis is implied.
type Chain = Vec<(String, Address, u64)>;

/// A stand-in node whose chain the test replaces at will. Answers `eth_blockNumber`,
/// `eth_getBlockByNumber` and `clique_getSigner` (for any block it ever held), single or
/// batched.
struct FakeNode {
    chain: Arc<Mutex<Chain>>,
    rpc: Rpc,
}

impl FakeNode {
    fn start(chain: Chain) -> FakeNode {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let rpc = Rpc {
            addr: listener.local_addr().expect("its address"),
        };
        let chain = Arc::new(Mutex::new(chain));
        let served = chain.clone();
        std::thread::spawn(move || {
            let mut signers: HashMap<String, Address> = HashMap::new();
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let _ = serve(conn, &served, &mut signers);
            }
        });
        FakeNode { chain, rpc }
    }

    fn set(&self, chain: Chain) {
        *self.chain.lock().unwrap() = chain;
    }
}

fn serve(
    conn: std::net::TcpStream,
    chain: &Mutex<Chain>,
    signers: &mut HashMap<String, Address>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let chain = chain.lock().unwrap().clone();
    for (hash, signer, _) in &chain {
        signers.insert(hash.clone(), *signer);
    }
    let answer = match request {
        Value::Array(calls) => Value::Array(
            calls
                .iter()
                .map(|c| answer_one(c, &chain, signers))
                .collect(),
        ),
        call => answer_one(&call, &chain, signers),
    }
    .to_string();
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
        answer.len()
    )
}

fn answer_one(call: &Value, chain: &Chain, signers: &HashMap<String, Address>) -> Value {
    let result = match call["method"].as_str().unwrap_or_default() {
        "eth_blockNumber" => json!(format!("{:#x}", chain.len())),
        "eth_getBlockByNumber" => {
            let number = call["params"][0]
                .as_str()
                .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
                .unwrap_or(0) as usize;
            match number.checked_sub(1).and_then(|i| chain.get(i)) {
                Some((hash, _, difficulty)) => json!({
                    "number": format!("{number:#x}"),
                    "hash": hash,
                    "parentHash": if number == 1 { "0xgenesis".to_owned() } else { chain[number - 2].0.clone() },
                    "difficulty": format!("{difficulty:#x}"),
                }),
                None => Value::Null,
            }
        }
        "clique_getSigner" => {
            let hash = call["params"][0].as_str().unwrap_or_default();
            json!(format!("0x{}", signers[hash].to_plain_hex()))
        }
        other => panic!("the stand-in node does not know {other}"),
    };
    json!({ "jsonrpc": "2.0", "id": call["id"], "result": result })
}

fn signer(n: u8) -> Address {
    Address([n; 20])
}

/// A chain whose blocks are named `{tag}{height}` and sealed by `sealers` in turn.
fn chain(tag: &str, len: usize, sealers: &[Address]) -> Chain {
    (1..=len)
        .map(|n| (format!("0x{tag}{n}"), sealers[n % sealers.len()], 2))
        .collect()
}

#[test]
fn a_double_sign_later_reorganised_away_is_still_an_equivocation() {
    let (p, s, q) = (signer(1), signer(2), signer(3));
    let a = FakeNode::start(vec![("0xa1".into(), p, 2), ("0xstray2".into(), s, 1)]);
    let b = FakeNode::start(vec![("0xa1".into(), p, 2), ("0xb2".into(), s, 2)]);
    let mut checker = ChainChecker::new();
    checker.sample("a", &a.rpc).unwrap();
    checker.sample("b", &b.rpc).unwrap();
    // Node a gives its stray block up for b's chain; its current view no longer holds it.
    a.set(vec![
        ("0xa1".into(), p, 2),
        ("0xb2".into(), s, 2),
        ("0xb3".into(), q, 2),
    ]);
    checker.sample("a", &a.rpc).unwrap();
    assert!(checker.chain("a").iter().all(|b| b.hash != "0xstray2"));

    let found = checker.equivocations();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].signer, found[0].number), (s, 2));
    let mut blocks = found[0].blocks.clone();
    blocks.sort();
    assert_eq!(
        blocks,
        vec![
            ("0xb2".to_owned(), vec!["a".to_owned(), "b".to_owned()]),
            ("0xstray2".to_owned(), vec!["a".to_owned()]),
        ]
    );
}

#[test]
fn one_chain_seen_by_every_node_has_no_equivocation() {
    let sealers = [signer(1), signer(2), signer(3)];
    let a = FakeNode::start(chain("c", 30, &sealers));
    let b = FakeNode::start(chain("c", 28, &sealers));
    let mut checker = ChainChecker::new();
    for _ in 0..3 {
        checker.sample("a", &a.rpc).unwrap();
        checker.sample("b", &b.rpc).unwrap();
    }
    assert!(checker.equivocations().is_empty());
    assert_eq!((checker.height("a"), checker.height("b")), (30, 28));
    assert_eq!(checker.last_seals("a")[&sealers[0]], 30);
}

#[test]
fn a_reorganisation_deeper_than_the_window_is_read_again_from_the_bottom() {
    let sealers = [signer(1), signer(2), signer(3)];
    let node = FakeNode::start(chain("old", 40, &sealers));
    let mut checker = ChainChecker::new();
    checker.sample("n", &node.rpc).unwrap();
    // Another branch from height 5 up, longer than the old one.
    let mut branch = chain("old", 4, &sealers);
    branch.extend(chain("new", 45, &[signer(4)]).into_iter().skip(4));
    node.set(branch.clone());
    checker.sample("n", &node.rpc).unwrap();
    let held: Vec<String> = checker.chain("n").iter().map(|b| b.hash.clone()).collect();
    let expected: Vec<String> = branch.iter().map(|b| b.0.clone()).collect();
    assert_eq!(held, expected);
}

#[test]
fn a_take_over_counts_the_blocks_and_the_turns_missed() {
    let sealers = [signer(1), signer(2), signer(3)];
    // signer(2) seals every third block up to 7, dies, and seals again at 13.
    let mut blocks = chain("t", 7, &sealers);
    for n in 8..=12u8 {
        let other = if n % 2 == 0 { signer(1) } else { signer(3) };
        blocks.push((format!("0xt{n}"), other, 1));
    }
    blocks.push(("0xt13".into(), signer(2), 2));
    // Blocks 1..=6 were seen before the death; the dead sealer's own block 7 spread just
    // after it, before the replacement was unlocked; the rest came after the unlock.
    let node = FakeNode::start(blocks[..6].to_vec());
    let mut checker = ChainChecker::new();
    checker.sample("n", &node.rpc).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let died = Instant::now();
    node.set(blocks[..7].to_vec());
    checker.sample("n", &node.rpc).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let unlocked = Instant::now();
    node.set(blocks);
    checker.sample("n", &node.rpc).unwrap();
    let takeover = checker
        .takeover("n", signer(2), &sealers, died, unlocked)
        .expect("sealed again");
    assert_eq!(takeover.head_at_death, 6);
    assert_eq!(takeover.first_seal, 13);
    // 8..=12; block 7 is its own.
    assert_eq!(takeover.blocks_between, 5);
    // Sorted signers: signer(2) is second, in turn at heights n % 3 == 1: 10 of 8..=12.
    assert_eq!(takeover.in_turn_missed, 1);
    assert!(takeover.latency >= Duration::from_millis(20));
    // Nothing of the signer's first seen after a later unlock: no take-over yet.
    assert!(checker
        .takeover("n", signer(2), &sealers, died, Instant::now())
        .is_none());
}
