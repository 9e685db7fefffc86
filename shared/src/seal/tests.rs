use super::*;

use k256::ecdsa::SigningKey;

/// A London-era Clique header (every field as JSON-RPC shows it), sealed by `key`.
fn sealed_header(key: &SigningKey, number: u64) -> RpcHeader {
    let mut h = RpcHeader {
        hash: String::new(),
        parent_hash: format!("0x{}", "11".repeat(32)),
        sha3_uncles: format!("0x{}", "1d".repeat(32)),
        miner: format!("0x{}", "00".repeat(20)),
        state_root: format!("0x{}", "22".repeat(32)),
        transactions_root: format!("0x{}", "56".repeat(32)),
        receipts_root: format!("0x{}", "57".repeat(32)),
        logs_bloom: format!("0x{}", "00".repeat(256)),
        difficulty: "0x2".into(),
        number: format!("0x{number:x}"),
        gas_limit: "0x1c9c380".into(),
        gas_used: "0x0".into(),
        timestamp: "0x6567a1b0".into(),
        extra_data: String::new(),
        mix_hash: format!("0x{}", "00".repeat(32)),
        nonce: "0x0000000000000000".into(),
        base_fee_per_gas: Some("0x7".into()),
        withdrawals_root: None,
        blob_gas_used: None,
        author: None,
    };
    let vanity = [0xabu8; VANITY];
    let unsealed = header_rlp(&h, &vanity).unwrap();
    let digest = Keccak256::digest(unsealed);
    let (signature, recovery) = key.sign_prehash_recoverable(&digest).unwrap();
    let mut extra = vanity.to_vec();
    extra.extend_from_slice(&signature.to_bytes());
    extra.push(recovery.to_byte());
    h.extra_data = format!("0x{}", hex::encode(&extra));
    h.hash = format!(
        "0x{}",
        hex::encode(Keccak256::digest(header_rlp(&h, &extra).unwrap()))
    );
    h
}

fn address_of(key: &SigningKey) -> Address {
    let point = key.verifying_key().to_encoded_point(false);
    let hash = Keccak256::digest(&point.as_bytes()[1..]);
    Address(hash[12..].try_into().unwrap())
}

fn key(byte: u8) -> SigningKey {
    SigningKey::from_slice(&[byte; 32]).unwrap()
}

#[test]
fn a_clique_seal_names_the_key_that_made_it() {
    for (byte, number) in [(1u8, 1u64), (7, 300), (42, 70_000)] {
        let h = sealed_header(&key(byte), number);
        assert_eq!(sealer(Engine::Clique, &h).unwrap(), address_of(&key(byte)));
        assert_ne!(
            sealer(Engine::Clique, &h).unwrap(),
            address_of(&key(byte + 1))
        );
    }
}

#[test]
fn a_header_that_does_not_hash_to_its_hash_names_no_signer() {
    let mut h = sealed_header(&key(3), 5);
    h.gas_used = "0x1".into();
    let e = sealer(Engine::Clique, &h).unwrap_err();
    assert!(e.reason.contains("does not hash"), "{e}");
    // A field of a later fork is refused outright.
    let mut h = sealed_header(&key(3), 5);
    h.withdrawals_root = Some(format!("0x{}", "00".repeat(32)));
    assert!(sealer(Engine::Clique, &h).is_err());
}

#[test]
fn a_short_or_damaged_seal_is_an_error() {
    let mut h = sealed_header(&key(3), 5);
    h.extra_data = format!("0x{}", "00".repeat(96));
    assert!(sealer(Engine::Clique, &h)
        .unwrap_err()
        .reason
        .contains("at least 97"));
    let mut h = sealed_header(&key(3), 5);
    h.extra_data = "0xzz".into();
    assert!(sealer(Engine::Clique, &h).is_err());
}

#[test]
fn aura_reads_the_author_and_qbft_the_beneficiary() {
    let mut h = sealed_header(&key(3), 5);
    h.miner = format!("0x{}", "ab".repeat(20));
    assert_eq!(sealer(Engine::Qbft, &h).unwrap(), Address([0xab; 20]));
    assert_eq!(sealer(Engine::Aura, &h).unwrap(), Address([0xab; 20]));
    h.author = Some(format!("0x{}", "cd".repeat(20)));
    assert_eq!(sealer(Engine::Aura, &h).unwrap(), Address([0xcd; 20]));
}

#[test]
fn rpc_json_reads_into_a_header() {
    let h = sealed_header(&key(9), 12);
    let json = serde_json::json!({
        "hash": h.hash, "parentHash": h.parent_hash, "sha3Uncles": h.sha3_uncles,
        "miner": h.miner, "stateRoot": h.state_root, "transactionsRoot": h.transactions_root,
        "receiptsRoot": h.receipts_root, "logsBloom": h.logs_bloom,
        "difficulty": h.difficulty, "number": h.number, "gasLimit": h.gas_limit,
        "gasUsed": h.gas_used, "timestamp": h.timestamp, "extraData": h.extra_data,
        "mixHash": h.mix_hash, "nonce": h.nonce, "baseFeePerGas": h.base_fee_per_gas,
        "totalDifficulty": "0x19", "size": "0x261", "transactions": [], "uncles": []
    });
    let read: RpcHeader = serde_json::from_value(json).unwrap();
    assert_eq!(sealer(Engine::Clique, &read).unwrap(), address_of(&key(9)));
}

/// Block 2 of a one-signer Clique chain sealed by geth 1.13.15 (the tools' own build), as
/// its `eth_getBlockByNumber` returned it; its `clique_getSigner` answered
/// 0x2c7536e3605d9c16a7a3d7b1898e529396a65c23.
#[test]
fn a_block_sealed_by_geth_names_the_signer_geth_names() {
    let text = include_str!("geth-1.13.15-clique-block-2.json");
    let header: RpcHeader = serde_json::from_str(text).unwrap();
    let signer = sealer(Engine::Clique, &header).unwrap();
    assert_eq!(
        signer.as_bytes(),
        &hex::decode("2c7536e3605d9c16a7a3d7b1898e529396a65c23").unwrap()[..]
    );
}
