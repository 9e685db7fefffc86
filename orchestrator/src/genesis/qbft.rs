//! The Besu QBFT genesis, and its `extraData` codec.
//!
//! QBFT `extraData` is one RLP list of five items, as Besu's QBFT codec writes it:
//! `[vanity (32 bytes), [validator addresses], vote, round, [commit seals]]`, where "no
//! vote" is the empty list and the round is an RLP scalar (so round 0 is `0x80`). At
//! genesis the vote is absent, the round 0 and the seals empty.
//!
//! In validator-contract mode Besu reads the validators of every block, genesis included,
//! from the contract's `getValidators()`. The genesis `extraData` still lists the initial
//! validators, in the contract's order: a reader of the file (and our own check) can see
//! the set without an EVM, and Besu ignores the list in contract mode with one startup
//! warning ("genesis block signers will not be used"). Later contract-mode headers carry
//! none; that is Besu's business, not the genesis'.

use serde_json::{json, Map, Value};
use shared::Address;

use super::rlp::{self, Item, RlpError};
use super::{
    header_and_alloc, hex_address, hex_data, Builder, Compare, Consortium, Owner, QbftValidatorMode,
};

/// The mix hash every Besu BFT block carries ("ctical byzantine fault tolerance").
const BFT_MIX_HASH: &str = "0x63746963616c2062797a616e74696e65206661756c7420746f6c6572616e6365";

/// geth/Besu fork names, all at block 0, through London.
pub(super) const FORK_BLOCKS: &[&str] = &[
    "homesteadBlock",
    "eip150Block",
    "eip155Block",
    "eip158Block",
    "byzantiumBlock",
    "constantinopleBlock",
    "petersburgBlock",
    "istanbulBlock",
    "muirGlacierBlock",
    "berlinBlock",
    "londonBlock",
];

/// The QBFT `extraData` of a genesis block naming `validators`.
pub(crate) fn encode_qbft_extra_data(validators: &[Address]) -> Vec<u8> {
    let mut payload = Vec::new();
    rlp::encode_bytes(&mut payload, &[0u8; 32]);
    let mut list = Vec::new();
    for v in validators {
        rlp::encode_bytes(&mut list, v.as_bytes());
    }
    rlp::encode_list(&mut payload, &list);
    rlp::encode_list(&mut payload, &[]); // no vote
    rlp::encode_uint(&mut payload, 0); // round
    rlp::encode_list(&mut payload, &[]); // no seals
    let mut out = Vec::new();
    rlp::encode_list(&mut out, &payload);
    out
}

/// Why bytes are not QBFT `extraData`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QbftExtraDataError {
    #[error(transparent)]
    Rlp(#[from] RlpError),
    #[error("qbft extraData: {0}")]
    Shape(&'static str),
}

/// The validator addresses listed in QBFT `extraData`, in order. Checks the whole
/// structure (vanity, vote, round, seals), not just the list.
pub fn decode_qbft_extra_data(bytes: &[u8]) -> Result<Vec<Address>, QbftExtraDataError> {
    use QbftExtraDataError::Shape;
    let item = rlp::decode(bytes)?;
    let [vanity, validators, vote, round, seals] =
        item.as_list().ok_or(Shape("not an RLP list"))?
    else {
        return Err(Shape(
            "expected 5 items: vanity, validators, vote, round, seals",
        ));
    };
    if vanity.as_bytes().map(<[u8]>::len) != Some(32) {
        return Err(Shape("vanity is not 32 bytes"));
    }
    let addresses = validators
        .as_list()
        .ok_or(Shape("validators is not a list"))?
        .iter()
        .map(|v| {
            v.as_bytes()
                .and_then(|b| <[u8; 20]>::try_from(b).ok())
                .map(Address)
                .ok_or(Shape("a validator is not a 20-byte address"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    match vote.as_list() {
        Some([]) => {}
        Some([recipient, kind]) if is_address(recipient) && is_vote_kind(kind) => {}
        _ => return Err(Shape("vote is neither empty nor [address, add/drop]")),
    }
    if round.as_uint().is_none_or(|r| r > u64::from(u32::MAX)) {
        return Err(Shape("round is not a 32-bit scalar"));
    }
    let seals = seals.as_list().ok_or(Shape("seals is not a list"))?;
    if seals
        .iter()
        .any(|s| s.as_bytes().map(<[u8]>::len) != Some(65))
    {
        return Err(Shape("a seal is not 65 bytes"));
    }
    Ok(addresses)
}

fn is_address(item: &Item<'_>) -> bool {
    item.as_bytes().is_some_and(|b| b.len() == 20)
}

/// Besu writes an add vote as the byte 0xff and a drop vote as the empty string.
fn is_vote_kind(item: &Item<'_>) -> bool {
    matches!(item.as_bytes(), Some([] | [0xff]))
}

pub(super) fn render(c: &Consortium, b: &mut Builder) -> Map<String, Value> {
    let mut doc = b.start(c);
    let contract_mode = c.qbft.validator_mode == QbftValidatorMode::Contract;

    if let Some(config) = b.object(&mut doc, "", "config") {
        b.refuse_engines(config, "config", &["clique", "ethash", "ibft2", "ibft"]);
        b.owned(config, "config", "chainId", json!(c.network_id));
        for key in FORK_BLOCKS {
            b.fill(config, "config", key, json!(0));
        }
        if let Some(qbft) = b.object(config, "config", "qbft") {
            const PATH: &str = "config.qbft";
            let period = json!(c.block_period_secs);
            b.owned(qbft, PATH, "blockperiodseconds", period);
            b.owned(qbft, PATH, "epochlength", json!(c.epoch));
            let (timeout, owner) = match c.qbft.request_timeout_secs {
                Some(t) => (t, Owner::Consortium),
                None => (c.block_period_secs.saturating_mul(2), Owner::Default),
            };
            b.set(
                qbft,
                PATH,
                "requesttimeoutseconds",
                json!(timeout),
                owner,
                Compare::Loose,
            );
            if contract_mode {
                let address = json!(hex_address(&c.contract.address));
                b.owned(qbft, PATH, "validatorcontractaddress", address);
            } else {
                b.forbid(qbft, PATH, "validatorcontractaddress");
            }
        }
    }

    let extra = json!(hex_data(&encode_qbft_extra_data(&c.validators)));
    b.set(
        &mut doc,
        "",
        "extraData",
        extra,
        Owner::Consortium,
        Compare::Bytes,
    );
    // Besu's alloc has no constructor form: the contract's state is written directly.
    header_and_alloc(c, b, &mut doc, json!(BFT_MIX_HASH));
    doc
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;
    use super::*;
    use serde_json::json;

    fn extra_of(genesis: &Value) -> Vec<u8> {
        hex::decode(&genesis["extraData"].as_str().unwrap()[2..]).unwrap()
    }

    #[test]
    fn genesis_extra_data_has_besu_layout() {
        let v = vec![addr(1), addr(2)];
        let enc = encode_qbft_extra_data(&v);
        // 79-byte payload: long list header, 0xa0 + 32 zero bytes, 0xd6 (0x94 addr) x2,
        // then no vote, round 0, no seals.
        assert_eq!(&enc[..3], &[0xf8, 79, 0xa0]);
        assert_eq!(&enc[3..35], &[0u8; 32]);
        assert_eq!(&enc[35..37], &[0xc0 + 42, 0x94]);
        assert_eq!(&enc[enc.len() - 3..], &[0xc0, 0x80, 0xc0]);
        assert_eq!(decode_qbft_extra_data(&enc).unwrap(), v);
        // Besu's own contract-mode genesis: no validators at all.
        let empty = hex::decode(format!("e5a0{}c0c080c0", "00".repeat(32))).unwrap();
        assert_eq!(encode_qbft_extra_data(&[]), empty);
    }

    #[test]
    fn decoder_accepts_a_vote_and_seals_and_rejects_malformed_structures() {
        let mut payload = Vec::new();
        rlp::encode_bytes(&mut payload, &[0u8; 32]);
        let mut list = Vec::new();
        rlp::encode_bytes(&mut list, addr(9).as_bytes());
        rlp::encode_list(&mut payload, &list);
        let mut vote = Vec::new();
        rlp::encode_bytes(&mut vote, addr(8).as_bytes());
        rlp::encode_bytes(&mut vote, &[0xff]);
        rlp::encode_list(&mut payload, &vote);
        rlp::encode_uint(&mut payload, 3);
        let mut seals = Vec::new();
        rlp::encode_bytes(&mut seals, &[7u8; 65]);
        rlp::encode_list(&mut payload, &seals);
        let mut enc = Vec::new();
        rlp::encode_list(&mut enc, &payload);
        assert_eq!(decode_qbft_extra_data(&enc).unwrap(), vec![addr(9)]);

        // Clique-style raw bytes are not RLP of this shape.
        let clique = [0u8; 32 + 20 + 65];
        assert!(decode_qbft_extra_data(&clique).is_err());
        // Four items (IBFT 1.0 / missing seals).
        let mut four = Vec::new();
        rlp::encode_bytes(&mut four, &[0u8; 32]);
        rlp::encode_list(&mut four, &[]);
        rlp::encode_list(&mut four, &[]);
        rlp::encode_uint(&mut four, 0);
        let mut enc = Vec::new();
        rlp::encode_list(&mut enc, &four);
        assert!(matches!(
            decode_qbft_extra_data(&enc),
            Err(QbftExtraDataError::Shape(_))
        ));
        // Short vanity.
        let mut short = Vec::new();
        rlp::encode_bytes(&mut short, &[0u8; 31]);
        rlp::encode_list(&mut short, &[]);
        rlp::encode_list(&mut short, &[]);
        rlp::encode_uint(&mut short, 0);
        rlp::encode_list(&mut short, &[]);
        let mut enc = Vec::new();
        rlp::encode_list(&mut enc, &short);
        assert_eq!(
            decode_qbft_extra_data(&enc),
            Err(QbftExtraDataError::Shape("vanity is not 32 bytes"))
        );
    }

    #[test]
    fn contract_mode_points_at_the_contract_and_still_lists_the_validators() {
        let c = consortium();
        let g = render_qbft(&c).unwrap();
        let qbft = &g["config"]["qbft"];
        assert_eq!(
            qbft["validatorcontractaddress"],
            json!("0x4242424242424242424242424242424242424242")
        );
        assert_eq!(qbft["blockperiodseconds"], json!(5));
        assert_eq!(qbft["epochlength"], json!(30000));
        assert_eq!(qbft["requesttimeoutseconds"], json!(10));
        assert_eq!(g["config"]["chainId"], json!(10101010));
        assert_eq!(g["config"]["londonBlock"], json!(0));
        assert_eq!(g["mixHash"], json!(BFT_MIX_HASH));
        assert_eq!(decode_qbft_extra_data(&extra_of(&g)).unwrap(), c.validators);
        let contract = &g["alloc"]["0x4242424242424242424242424242424242424242"];
        assert_eq!(contract["code"], json!("0x60006000f3"));
        assert!(contract.get("constructor").is_none());
    }

    #[test]
    fn block_header_mode_lists_validators_in_order() {
        let mut c = consortium();
        c.qbft.validator_mode = QbftValidatorMode::BlockHeader;
        let g = render_qbft(&c).unwrap();
        assert!(g["config"]["qbft"]
            .get("validatorcontractaddress")
            .is_none());
        assert_eq!(
            decode_qbft_extra_data(&extra_of(&g)).unwrap(),
            c.validators,
            "order as given, not sorted"
        );

        c.base = Some(json!({ "config": { "qbft": { "validatorcontractaddress": "0x01" } } }));
        let err = render_qbft(&c).unwrap_err().to_string();
        assert!(
            err.contains("config.qbft.validatorcontractaddress"),
            "{err}"
        );
    }
}
