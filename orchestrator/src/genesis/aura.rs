//! The AuRa chainspec, in the JSON format OpenEthereum defined and Nethermind reads.
//!
//! Only field names OpenEthereum's strict parser knows are written (it refuses unknown
//! fields), chosen so that Nethermind derives the same forks: Nethermind reads Istanbul's
//! EIP-2200 from `eip1283Transition` + `eip1706Transition`, and EIP-152/1108/2565 from the
//! builtins' pricing entries, so those entries use the per-activation form both accept
//! (`"pricing": { "0": { "price": { ... } } }`). Every fork up to London is active from
//! block 0; nothing later, so the contracts compile for `evmVersion` london.

use serde_json::{json, Map, Value};
use shared::Address;

use super::{
    contract_code_account, gas_limit, hex_address, hex_data, hex_quantity, place_admin,
    AuraContractForm, AuraValidatorKind, Builder, Compare, Consortium, INITIAL_BASE_FEE,
    MIN_GAS_LIMIT,
};

/// The 65-byte signature of the genesis seal: nobody signs block 0.
const EMPTY_SIGNATURE: [u8; 65] = [0; 65];

/// Every fork transition through London, at block 0. Grouped by fork for review:
/// Tangerine Whistle, Spurious Dragon, Byzantium, Constantinople/Petersburg, Istanbul,
/// Berlin, London, and EIP-3607 (applied retroactively by every client).
const TRANSITIONS: &[&str] = &[
    "eip150Transition",
    "eip155Transition",
    "eip160Transition",
    "eip161abcTransition",
    "eip161dTransition",
    "eip140Transition",
    "eip211Transition",
    "eip214Transition",
    "eip658Transition",
    "eip145Transition",
    "eip1014Transition",
    "eip1052Transition",
    // EIP-2200 (Istanbul's SSTORE metering) = EIP-1283 enabled + EIP-1706, with no
    // Petersburg-style disable since it is never on before Istanbul here.
    "eip1283Transition",
    "eip1283ReenableTransition",
    "eip1706Transition",
    "eip1344Transition",
    "eip1884Transition",
    "eip2028Transition",
    "eip2929Transition",
    "eip2930Transition",
    "eip1559Transition",
    "eip3198Transition",
    "eip3529Transition",
    "eip3541Transition",
    "eip3607Transition",
    "validateChainIdTransition",
    "validateReceiptsTransition",
    "maxCodeSizeTransition",
];

/// The precompiles active at London with their London prices, as (address byte, name,
/// price object).
fn builtins() -> [(u8, &'static str, Value); 9] {
    [
        (
            1,
            "ecrecover",
            json!({ "linear": { "base": 3000, "word": 0 } }),
        ),
        (2, "sha256", json!({ "linear": { "base": 60, "word": 12 } })),
        (
            3,
            "ripemd160",
            json!({ "linear": { "base": 600, "word": 120 } }),
        ),
        (
            4,
            "identity",
            json!({ "linear": { "base": 15, "word": 3 } }),
        ),
        // EIP-2565 (Berlin) repricing.
        (5, "modexp", json!({ "modexp2565": {} })),
        // EIP-1108 (Istanbul) prices.
        (
            6,
            "alt_bn128_add",
            json!({ "alt_bn128_const_operations": { "price": 150 } }),
        ),
        (
            7,
            "alt_bn128_mul",
            json!({ "alt_bn128_const_operations": { "price": 6000 } }),
        ),
        (
            8,
            "alt_bn128_pairing",
            json!({ "alt_bn128_pairing": { "base": 45000, "pair": 34000 } }),
        ),
        // EIP-152 (Istanbul).
        (9, "blake2_f", json!({ "blake2_f": { "gas_per_round": 1 } })),
    ]
}

pub(super) fn render(c: &Consortium, b: &mut Builder) -> Map<String, Value> {
    let mut doc = b.start(c);
    b.fill(
        &mut doc,
        "",
        "name",
        json!(format!("consortium-{}", c.network_id)),
    );

    if let Some(engine) = b.object(&mut doc, "", "engine") {
        b.refuse_engines(
            engine,
            "engine",
            &[
                "ethash",
                "basicAuthority",
                "instantSeal",
                "clique",
                "null",
                "tendermint",
            ],
        );
        if let Some(params) = b
            .object(engine, "engine", "authorityRound")
            .and_then(|ar| b.object(ar, "engine.authorityRound", "params"))
        {
            engine_params(c, b, params);
        }
    }

    if let Some(params) = b.object(&mut doc, "", "params") {
        chain_params(c, b, params);
    }

    if let Some(genesis) = b.object(&mut doc, "", "genesis") {
        if let Some(seal) = b.object(genesis, "genesis", "seal") {
            b.refuse_engines(seal, "genesis.seal", &["ethereum", "tendermint", "generic"]);
            let ours = json!({ "step": "0x0", "signature": hex_data(&EMPTY_SIGNATURE) });
            b.fill(seal, "genesis.seal", "authorityRound", ours);
        }
        // AuRa's difficulty is computed per block from steps; the genesis value is the
        // conventional one from OpenEthereum's AuRa chainspecs.
        b.fill(genesis, "genesis", "difficulty", json!("0x20000"));
        let (gas, owner) = gas_limit(c);
        b.set(genesis, "genesis", "gasLimit", gas, owner, Compare::Loose);
    }

    if let Some(accounts) = b.object(&mut doc, "", "accounts") {
        for (n, name, price) in builtins() {
            let mut address = [0u8; 20];
            address[19] = n;
            let mut account = Map::new();
            // A balance keeps the precompile's account from being an "empty account" that
            // EIP-161 would delete when touched.
            account.insert("balance".into(), json!("0x1"));
            account.insert(
                "builtin".into(),
                json!({ "name": name, "pricing": { "0": { "price": price } } }),
            );
            b.default_account(accounts, &Address(address), account);
        }
        let contract = match c.aura.contract_form {
            AuraContractForm::Constructor => {
                let mut account = Map::new();
                account.insert("balance".into(), json!("0x0"));
                let init = c.contract.constructor.as_deref().unwrap_or_default();
                account.insert("constructor".into(), json!(hex_data(init)));
                account
            }
            AuraContractForm::CodeAndStorage => contract_code_account(&c.contract),
        };
        b.account(
            accounts,
            &c.contract.address,
            "validator-set contract",
            contract,
        );
        place_admin(b, accounts, c);
    }
    doc
}

fn engine_params(c: &Consortium, b: &mut Builder, params: &mut Map<String, Value>) {
    const PATH: &str = "engine.authorityRound.params";
    b.owned(params, PATH, "stepDuration", json!(c.block_period_secs));
    let kind = match c.aura.validator_kind {
        AuraValidatorKind::SafeContract => "safeContract",
        AuraValidatorKind::Contract => "contract",
    };
    let validators = json!({ kind: hex_address(&c.contract.address) });
    b.owned(params, PATH, "validators", validators);
    // A permissioned chain mints nothing and has no uncles.
    b.fill(params, PATH, "blockReward", json!("0x0"));
    for key in ["maximumUncleCountTransition", "maximumUncleCount"] {
        b.fill(params, PATH, key, json!(0));
    }
}

fn chain_params(c: &Consortium, b: &mut Builder, params: &mut Map<String, Value>) {
    const PATH: &str = "params";
    let id = json!(hex_quantity(c.network_id.into()));
    b.owned(params, PATH, "networkID", id.clone());
    b.owned(params, PATH, "chainID", id);
    let defaults = [
        ("gasLimitBoundDivisor", json!("0x400")),
        ("maximumExtraDataSize", json!("0x20")),
        ("minGasLimit", json!(hex_quantity(MIN_GAS_LIMIT.into()))),
        // EIP-170's 24 KiB code size limit.
        ("maxCodeSize", json!("0x6000")),
        ("eip1559BaseFeeMaxChangeDenominator", json!("0x8")),
        ("eip1559ElasticityMultiplier", json!("0x2")),
        (
            "eip1559BaseFeeInitialValue",
            json!(hex_quantity(INITIAL_BASE_FEE.into())),
        ),
    ];
    for (key, value) in defaults {
        b.fill(params, PATH, key, value);
    }
    for key in TRANSITIONS {
        b.fill(params, PATH, key, json!("0x0"));
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;
    use serde_json::json;

    #[test]
    fn chainspec_has_engine_seal_builtins_and_constructor_contract() {
        let c = consortium();
        let spec = render_aura(&c).unwrap();
        let params = &spec["engine"]["authorityRound"]["params"];
        assert_eq!(params["stepDuration"], json!(5));
        assert_eq!(
            params["validators"],
            json!({ "safeContract": "0x4242424242424242424242424242424242424242" })
        );
        assert_eq!(spec["params"]["networkID"], json!("0x9a2112"));
        assert_eq!(spec["params"]["chainID"], json!("0x9a2112"));
        assert_eq!(spec["params"]["eip1559Transition"], json!("0x0"));
        let seal = &spec["genesis"]["seal"]["authorityRound"];
        assert_eq!(seal["step"], json!("0x0"));
        assert_eq!(seal["signature"].as_str().unwrap().len(), 2 + 130);
        assert_eq!(spec["genesis"]["gasLimit"], json!("0x1c9c380"));
        let accounts = spec["accounts"].as_object().unwrap();
        let names: Vec<_> = (1..=9)
            .map(|n| {
                let key = format!("0x{:040x}", n);
                accounts[&key]["builtin"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            [
                "ecrecover",
                "sha256",
                "ripemd160",
                "identity",
                "modexp",
                "alt_bn128_add",
                "alt_bn128_mul",
                "alt_bn128_pairing",
                "blake2_f"
            ]
        );
        let contract = &accounts["0x4242424242424242424242424242424242424242"];
        assert_eq!(contract["constructor"], json!("0x6005600c600039"));
        assert!(contract.get("code").is_none() && contract.get("storage").is_none());
        assert_eq!(
            accounts["0x11111111111111111111111111111111111111aa"]["balance"],
            json!("0xde0b6b3a7640000")
        );
    }

    #[test]
    fn code_and_storage_form_and_reporting_contract_kind() {
        let mut c = consortium();
        c.aura.contract_form = AuraContractForm::CodeAndStorage;
        c.aura.validator_kind = AuraValidatorKind::Contract;
        let spec = render_aura(&c).unwrap();
        let contract = &spec["accounts"]["0x4242424242424242424242424242424242424242"];
        assert_eq!(contract["code"], json!("0x60006000f3"));
        assert!(contract.get("constructor").is_none());
        let slot0 = format!("0x{}", "00".repeat(32));
        let three = format!("0x{}03", "00".repeat(31));
        assert_eq!(contract["storage"][&slot0], json!(three));
        assert_eq!(
            spec["engine"]["authorityRound"]["params"]["validators"],
            json!({ "contract": "0x4242424242424242424242424242424242424242" })
        );
    }

    #[test]
    fn base_chainspec_keeps_its_defaults_and_refuses_other_engines() {
        let mut c = consortium();
        c.base = Some(json!({
            "name": "mine",
            "params": { "gasLimitBoundDivisor": "0x800", "networkID": 10101010 },
            "accounts": { "0x0000000000000000000000000000000000000001": { "balance": "0x5" } }
        }));
        let spec = render_aura(&c).unwrap();
        assert_eq!(spec["name"], json!("mine"));
        assert_eq!(spec["params"]["gasLimitBoundDivisor"], json!("0x800"));
        assert_eq!(
            spec["params"]["networkID"],
            json!(10101010),
            "same id, base spelling kept"
        );
        let ecrecover = &spec["accounts"]["0x0000000000000000000000000000000000000001"];
        assert_eq!(ecrecover["balance"], json!("0x5"));
        assert_eq!(ecrecover["builtin"]["name"], json!("ecrecover"));

        c.base = Some(json!({ "engine": { "ethash": {} }, "params": { "chainID": "0x1" } }));
        let err = render_aura(&c).unwrap_err().to_string();
        assert!(err.contains("engine selects ethash"), "{err}");
        assert!(err.contains("params.chainID is \"0x1\""), "{err}");
    }
}
