//! The geth-style Clique genesis, restricted to fields `@ethereumjs/client` also reads.
//!
//! Clique `extraData` is raw bytes, not RLP: 32 bytes of vanity, the 20-byte signer
//! addresses back to back, and 65 zero bytes where a block's seal would go. Signers are
//! written in ascending byte order, the order geth and ethereumjs write on every checkpoint
//! block, so block 0 reads like any later checkpoint (the order carries no meaning to
//! Clique itself; the contract keeps the consortium's own order).
//!
//! ethereumjs requires `config`, `difficulty`, `gasLimit`, `nonce` and `alloc`, needs fork
//! blocks as JSON numbers and `eip155Block == eip158Block`, and refuses a terminal total
//! difficulty, so none is written.

use serde_json::{json, Map, Value};
use shared::Address;

use super::qbft::FORK_BLOCKS;
use super::{header_and_alloc, hex_data, Builder, Compare, Consortium, Owner};

const VANITY: usize = 32;
const SEAL: usize = 65;

/// The genesis `extraData` naming `signers`, sorted ascending.
pub(crate) fn clique_extra_data(signers: &[Address]) -> Vec<u8> {
    let mut sorted = signers.to_vec();
    sorted.sort();
    let mut out = vec![0u8; VANITY];
    for s in &sorted {
        out.extend_from_slice(s.as_bytes());
    }
    out.extend_from_slice(&[0u8; SEAL]);
    out
}

pub(super) fn render(c: &Consortium, b: &mut Builder) -> Map<String, Value> {
    let mut doc = b.start(c);

    if let Some(config) = b.object(&mut doc, "", "config") {
        b.refuse_engines(config, "config", &["ethash", "qbft", "ibft2", "ibft"]);
        b.owned(config, "config", "chainId", json!(c.network_id));
        for key in FORK_BLOCKS {
            b.fill(config, "config", key, json!(0));
        }
        if let Some(clique) = b.object(config, "config", "clique") {
            let period = json!(c.block_period_secs);
            b.owned(clique, "config.clique", "period", period);
            b.owned(clique, "config.clique", "epoch", json!(c.epoch));
        }
    }

    let extra = json!(hex_data(&clique_extra_data(&c.validators)));
    b.set(
        &mut doc,
        "",
        "extraData",
        extra,
        Owner::Consortium,
        Compare::Bytes,
    );
    // Block 0's difficulty is 1; later in-turn blocks carry 2 and out-of-turn ones 1.
    header_and_alloc(c, b, &mut doc, json!(hex_data(&[0u8; 32])));
    doc
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;
    use super::*;
    use serde_json::json;

    #[test]
    fn extra_data_is_vanity_sorted_signers_and_empty_seal() {
        let c = consortium();
        let g = render_clique(&c).unwrap();
        let extra = hex::decode(&g["extraData"].as_str().unwrap()[2..]).unwrap();
        assert_eq!(extra.len(), 32 + 20 * 3 + 65);
        assert_eq!(&extra[..32], &[0u8; 32]);
        // consortium() lists addr(3), addr(1), addr(2).
        for (i, want) in [addr(1), addr(2), addr(3)].iter().enumerate() {
            assert_eq!(&extra[32 + 20 * i..52 + 20 * i], want.as_bytes());
        }
        assert_eq!(&extra[92..], &[0u8; 65]);
    }

    #[test]
    fn config_is_what_geth_and_ethereumjs_read() {
        let g = render_clique(&consortium()).unwrap();
        let config = &g["config"];
        assert_eq!(config["chainId"], json!(10101010));
        assert_eq!(config["clique"], json!({ "period": 5, "epoch": 30000 }));
        for key in FORK_BLOCKS {
            assert_eq!(config[key], json!(0), "{key}");
        }
        assert_eq!(config["eip155Block"], config["eip158Block"]);
        assert!(config.get("terminalTotalDifficulty").is_none());
        for key in ["difficulty", "gasLimit", "nonce", "alloc", "timestamp"] {
            assert!(g.get(key).is_some(), "{key}");
        }
        assert_eq!(g["difficulty"], json!("0x1"));
        assert_eq!(g["baseFeePerGas"], json!("0x3b9aca00"));
    }
}
