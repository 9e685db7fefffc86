//! Who sealed a block: read from the block as a client's JSON-RPC returns it
//! (`eth_getBlockByNumber`), for each consensus the product renders a genesis for.
//!
//! - **Clique:** the signer is recovered from the seal, the last 65 bytes of `extraData`
//!   (r, s, v), over the Keccak-256 of the header's RLP with `extraData` cut before the seal.
//!   That is what `clique_getSigner` answers, computed here without trusting the node.
//! - **AuRa:** the block's `author` (OpenEthereum's and Nethermind's name), else `miner`.
//! - **QBFT:** the header's beneficiary (`miner`): Besu sets it to the block's proposer.
//!   Not checked against a QBFT client on these machines.
//!
//! Before it believes a Clique header, [`sealer`] hashes the whole header again and checks
//! the block's own `hash`: a field this code does not know (a later fork's) would change the
//! hash, and a wrong reading must fail, never name a signer.

use alloy_rlp::Encodable;
use serde::Deserialize;
use sha3::{Digest, Keccak256};

use crate::key::Address;

/// The consensus engines whose seals can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Clique,
    Aura,
    Qbft,
}

/// Why a block's sealer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("block {number}: {reason}")]
pub struct SealError {
    /// The block's number as the node gave it, or `?`.
    pub number: String,
    pub reason: String,
}

/// The header fields a sealer is read from, as JSON-RPC returns them (hex strings).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RpcHeader {
    pub hash: String,
    pub parent_hash: String,
    pub sha3_uncles: String,
    pub miner: String,
    pub state_root: String,
    pub transactions_root: String,
    pub receipts_root: String,
    pub logs_bloom: String,
    pub difficulty: String,
    pub number: String,
    pub gas_limit: String,
    pub gas_used: String,
    pub timestamp: String,
    pub extra_data: String,
    pub mix_hash: String,
    pub nonce: String,
    #[serde(default)]
    pub base_fee_per_gas: Option<String>,
    #[serde(default)]
    pub withdrawals_root: Option<String>,
    #[serde(default)]
    pub blob_gas_used: Option<String>,
    #[serde(default)]
    pub author: Option<String>,
}

/// Length of a Clique seal: r, s (32 bytes each) and the recovery id.
const SEAL: usize = 65;
/// Length of the vanity prefix of a Clique `extraData`.
const VANITY: usize = 32;

/// The address that sealed `header` under `engine`.
pub fn sealer(engine: Engine, header: &RpcHeader) -> Result<Address, SealError> {
    let fail = |reason: String| SealError {
        number: header.number.clone(),
        reason,
    };
    match engine {
        Engine::Aura => parse_address(header.author.as_deref().unwrap_or(&header.miner))
            .map_err(|e| fail(format!("author: {e}"))),
        Engine::Qbft => parse_address(&header.miner).map_err(|e| fail(format!("miner: {e}"))),
        Engine::Clique => clique_signer(header).map_err(fail),
    }
}

fn clique_signer(header: &RpcHeader) -> Result<Address, String> {
    if header.withdrawals_root.is_some() || header.blob_gas_used.is_some() {
        return Err("a post-Shanghai header: Clique chains stop at London".into());
    }
    let extra = bytes(&header.extra_data).map_err(|e| format!("extraData: {e}"))?;
    if extra.len() < VANITY + SEAL {
        return Err(format!(
            "extraData holds {} bytes; a Clique header has at least {}",
            extra.len(),
            VANITY + SEAL
        ));
    }
    let hash = bytes(&header.hash).map_err(|e| format!("hash: {e}"))?;
    if Keccak256::digest(header_rlp(header, &extra)?).as_slice() != hash.as_slice() {
        return Err(
            "the header does not hash to the block's hash (fields this code does not know?)".into(),
        );
    }
    let (unsealed, seal) = extra.split_at(extra.len() - SEAL);
    let digest = Keccak256::digest(header_rlp(header, unsealed)?);
    let signature = k256::ecdsa::Signature::from_slice(&seal[..64])
        .map_err(|_| "the seal is not a signature".to_string())?;
    let recovery = k256::ecdsa::RecoveryId::from_byte(seal[64])
        .ok_or_else(|| format!("the seal's recovery id is {}", seal[64]))?;
    let key = k256::ecdsa::VerifyingKey::recover_from_prehash(&digest, &signature, recovery)
        .map_err(|_| "no key recovers from the seal".to_string())?;
    let point = key.to_encoded_point(false);
    let hash = Keccak256::digest(&point.as_bytes()[1..]);
    let mut address = [0u8; 20];
    address.copy_from_slice(&hash[12..]);
    Ok(Address(address))
}

/// The header's RLP list with `extra` as its `extraData`.
fn header_rlp(h: &RpcHeader, extra: &[u8]) -> Result<Vec<u8>, String> {
    let mut payload = Vec::new();
    let data = |name: &str, text: &str, out: &mut Vec<u8>| -> Result<(), String> {
        bytes(text)
            .map_err(|e| format!("{name}: {e}"))?
            .as_slice()
            .encode(out);
        Ok(())
    };
    let number = |name: &str, text: &str, out: &mut Vec<u8>| -> Result<(), String> {
        quantity(text)
            .map_err(|e| format!("{name}: {e}"))?
            .encode(out);
        Ok(())
    };
    data("parentHash", &h.parent_hash, &mut payload)?;
    data("sha3Uncles", &h.sha3_uncles, &mut payload)?;
    data("miner", &h.miner, &mut payload)?;
    data("stateRoot", &h.state_root, &mut payload)?;
    data("transactionsRoot", &h.transactions_root, &mut payload)?;
    data("receiptsRoot", &h.receipts_root, &mut payload)?;
    data("logsBloom", &h.logs_bloom, &mut payload)?;
    number("difficulty", &h.difficulty, &mut payload)?;
    number("number", &h.number, &mut payload)?;
    number("gasLimit", &h.gas_limit, &mut payload)?;
    number("gasUsed", &h.gas_used, &mut payload)?;
    number("timestamp", &h.timestamp, &mut payload)?;
    extra.encode(&mut payload);
    data("mixHash", &h.mix_hash, &mut payload)?;
    data("nonce", &h.nonce, &mut payload)?;
    if let Some(fee) = &h.base_fee_per_gas {
        number("baseFeePerGas", fee, &mut payload)?;
    }
    let mut out = Vec::with_capacity(payload.len() + 4);
    alloy_rlp::Header {
        list: true,
        payload_length: payload.len(),
    }
    .encode(&mut out);
    out.extend(payload);
    Ok(out)
}

/// A JSON-RPC quantity (`0x1a`).
fn quantity(text: &str) -> Result<u128, String> {
    let digits = text
        .strip_prefix("0x")
        .ok_or_else(|| format!("{text:?} is not a 0x quantity"))?;
    u128::from_str_radix(digits, 16).map_err(|_| format!("{text:?} is not a quantity below 2^128"))
}

/// JSON-RPC data (`0x…`, whole bytes).
fn bytes(text: &str) -> Result<Vec<u8>, String> {
    let digits = text
        .strip_prefix("0x")
        .ok_or_else(|| format!("{:?} is not 0x data", short(text)))?;
    hex::decode(digits).map_err(|_| format!("{:?} is not hex", short(text)))
}

fn parse_address(text: &str) -> Result<Address, String> {
    let b = bytes(text)?;
    let a: [u8; 20] = b
        .try_into()
        .map_err(|_| format!("{:?} is not 20 bytes", short(text)))?;
    Ok(Address(a))
}

fn short(text: &str) -> String {
    text.chars().take(24).collect()
}

#[cfg(test)]
mod tests;
