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

use super::{
    header_and_alloc, hex_address, hex_data, Builder, Compare, Consortium, Owner, QbftValidatorMode,
};
use alloy_rlp::{Encodable, Header, PayloadView};

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
    let vanity = [0u8; 32];
    let validators: Vec<[u8; 20]> = validators.iter().map(|a| a.0).collect();
    let empty_list = Header {
        list: true,
        payload_length: 0,
    };
    let round = 0u32;
    let payload_length = vanity.length()
        + validators.length()
        + empty_list.length_with_payload() // no vote
        + round.length()
        + empty_list.length_with_payload(); // no seals
    let list = Header {
        list: true,
        payload_length,
    };
    let mut out = Vec::with_capacity(list.length_with_payload());
    list.encode(&mut out);
    vanity.encode(&mut out);
    validators.encode(&mut out);
    empty_list.encode(&mut out);
    round.encode(&mut out);
    empty_list.encode(&mut out);
    out
}

/// Why bytes are not QBFT `extraData`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QbftExtraDataError {
    /// Not canonical RLP: truncated, a non-canonical length or scalar, trailing bytes.
    #[error("qbft extraData: not canonical RLP: {0}")]
    Rlp(#[from] alloy_rlp::Error),
    #[error("qbft extraData: {0}")]
    Shape(&'static str),
}

/// The validator addresses listed in QBFT `extraData`, in order. Checks the whole
/// structure (vanity, vote, round, seals), not just the list. The input may come from a
/// user-supplied base genesis, so only canonical RLP is accepted: every header is checked
/// by `alloy-rlp`, every item must be of the kind and size expected, and nothing may
/// follow the list.
pub fn decode_qbft_extra_data(bytes: &[u8]) -> Result<Vec<Address>, QbftExtraDataError> {
    use QbftExtraDataError::Shape;
    let mut rest = bytes;
    let items = match Header::decode_raw(&mut rest)? {
        PayloadView::List(items) => items,
        PayloadView::String(_) => return Err(Shape("not an RLP list")),
    };
    if !rest.is_empty() {
        return Err(alloy_rlp::Error::Custom("trailing bytes after the list").into());
    }
    let [vanity, validators, vote, round, seals] = items[..] else {
        return Err(Shape(
            "expected 5 items: vanity, validators, vote, round, seals",
        ));
    };
    if string(vanity)?.len() != 32 {
        return Err(Shape("vanity is not 32 bytes"));
    }
    let addresses = list(validators, Shape("validators is not a list"))?
        .into_iter()
        .map(|v| {
            <[u8; 20]>::try_from(string(v)?)
                .map(Address)
                .map_err(|_| Shape("a validator is not a 20-byte address"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let vote_shape = Shape("vote is neither empty nor [address, add/drop]");
    match list(vote, vote_shape.clone())?[..] {
        [] => {}
        [recipient, kind] if string(recipient)?.len() == 20 && is_vote_kind(string(kind)?) => {}
        _ => return Err(vote_shape),
    }
    alloy_rlp::decode_exact::<u32>(round).map_err(|_| Shape("round is not a 32-bit scalar"))?;
    for seal in list(seals, Shape("seals is not a list"))? {
        if string(seal)?.len() != 65 {
            return Err(Shape("a seal is not 65 bytes"));
        }
    }
    Ok(addresses)
}

/// The payload of `item`, one whole RLP string.
fn string(item: &[u8]) -> Result<&[u8], QbftExtraDataError> {
    match Header::decode_raw(&mut &item[..])? {
        PayloadView::String(payload) => Ok(payload),
        PayloadView::List(_) => Err(QbftExtraDataError::Shape("a list where bytes belong")),
    }
}

/// The items of `item`, one whole RLP list, each still encoded.
fn list(item: &[u8], not_a_list: QbftExtraDataError) -> Result<Vec<&[u8]>, QbftExtraDataError> {
    match Header::decode_raw(&mut &item[..])? {
        PayloadView::List(items) => Ok(items),
        PayloadView::String(_) => Err(not_a_list),
    }
}

/// Besu writes an add vote as the byte 0xff and a drop vote as the empty string.
fn is_vote_kind(kind: &[u8]) -> bool {
    matches!(kind, [] | [0xff])
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

    /// One RLP list of the already encoded `items`.
    fn rlp_list(items: &[Vec<u8>]) -> Vec<u8> {
        let payload = items.concat();
        let mut out = Vec::new();
        Header {
            list: true,
            payload_length: payload.len(),
        }
        .encode(&mut out);
        out.extend(payload);
        out
    }

    fn rlp<T: Encodable>(value: T) -> Vec<u8> {
        alloy_rlp::encode(value)
    }

    #[test]
    fn decoder_accepts_a_vote_and_seals_and_rejects_malformed_structures() {
        let vanity = rlp([0u8; 32]);
        let validators = rlp_list(&[rlp(addr(9).0)]);
        let vote = rlp_list(&[rlp(addr(8).0), rlp([0xffu8])]);
        let seals = rlp_list(&[rlp([7u8; 65])]);
        let enc = rlp_list(&[
            vanity.clone(),
            validators.clone(),
            vote.clone(),
            rlp(3u32),
            seals.clone(),
        ]);
        assert_eq!(decode_qbft_extra_data(&enc).unwrap(), vec![addr(9)]);

        // Clique-style raw bytes are not RLP of this shape.
        let clique = [0u8; 32 + 20 + 65];
        assert!(decode_qbft_extra_data(&clique).is_err());
        // Four items (IBFT 1.0 / missing seals).
        let empty = rlp_list(&[]);
        let four = rlp_list(&[vanity.clone(), empty.clone(), empty.clone(), rlp(0u32)]);
        assert!(matches!(
            decode_qbft_extra_data(&four),
            Err(QbftExtraDataError::Shape(_))
        ));
        // Short vanity.
        let short = rlp_list(&[
            rlp([0u8; 31]),
            empty.clone(),
            empty.clone(),
            rlp(0u32),
            empty.clone(),
        ]);
        assert_eq!(
            decode_qbft_extra_data(&short),
            Err(QbftExtraDataError::Shape("vanity is not 32 bytes"))
        );
    }

    /// The input may come from a user's base genesis: only canonical RLP, with nothing
    /// after it, is accepted.
    #[test]
    fn decoder_rejects_non_canonical_truncated_and_trailing_encodings() {
        let good = encode_qbft_extra_data(&[addr(1), addr(2)]);
        assert!(decode_qbft_extra_data(&good).is_ok());
        let with_round = |round: &[u8]| {
            rlp_list(&[
                rlp([0u8; 32]),
                rlp_list(&[rlp(addr(1).0)]),
                rlp_list(&[]),
                round.to_vec(),
                rlp_list(&[]),
            ])
        };
        assert!(decode_qbft_extra_data(&with_round(&[0x05])).is_ok());
        for (what, bad) in [
            (
                "a single byte below 0x80 as a string",
                with_round(&[0x81, 0x05]),
            ),
            (
                "a scalar with a leading zero",
                with_round(&[0x82, 0x00, 0x05]),
            ),
            ("a round above 32 bits", with_round(&[0x85, 1, 0, 0, 0, 0])),
            ("a list as the round", with_round(&[0xc0])),
            ("a trailing byte", [good.clone(), vec![0x80]].concat()),
            ("a truncated list", good[..good.len() - 1].to_vec()),
            ("nothing", vec![]),
        ] {
            assert!(decode_qbft_extra_data(&bad).is_err(), "{what} accepted");
        }
        // The long form for a length that fits the short one.
        let payload = &encode_qbft_extra_data(&[])[1..];
        let mut short_as_long = vec![0xf8, payload.len() as u8];
        short_as_long.extend_from_slice(payload);
        assert!(
            decode_qbft_extra_data(&short_as_long).is_err(),
            "a {}-byte payload in the long form accepted",
            payload.len()
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
