//! Genesis rendering through the public API: the three flavours from one consortium,
//! extraData layouts, base-genesis injection and its refusals, determinism.

use std::collections::BTreeMap;

use orchestrator::genesis::{
    decode_qbft_extra_data, render, render_aura, render_clique, render_qbft, Admin,
    AuraContractForm, Consortium, ContractAccount, Flavour, Problem, QbftValidatorMode,
};
use serde_json::{json, Value};
use shared::Address;

/// The validators of the QBFT example genesis in Besu's documentation, with its
/// extraData: a known answer from outside this code base.
const BESU_DOC_VALIDATORS: [&str; 4] = [
    "0x64a702e6263b7297a96638cac6ae65e6541f4169",
    "0x3923390ad55e90c237593b3b0e401f3b08a03185",
    "0xaefdb9a738c9f433e5b6b212a6d62f6370c2f692",
    "0xc7eeb9a4e00ce683cf93039b212648e01c6c6b78",
];
const BESU_DOC_EXTRA_DATA: &str = concat!(
    "0xf87aa00000000000000000000000000000000000000000000000000000000000000000",
    "f854",
    "9464a702e6263b7297a96638cac6ae65e6541f4169",
    "943923390ad55e90c237593b3b0e401f3b08a03185",
    "94aefdb9a738c9f433e5b6b212a6d62f6370c2f692",
    "94c7eeb9a4e00ce683cf93039b212648e01c6c6b78",
    "c080c0"
);

const CONTRACT: &str = "0x0000000000000000000000000000000000c0ffee";
const ADMIN: &str = "0x00000000000000000000000000000000000ad000";

fn address(s: &str) -> Address {
    s.parse().unwrap()
}

fn validators(n: u8) -> Vec<Address> {
    // Deliberately not ascending, so ordering decisions show.
    (0..n).map(|i| Address([0xf0 - i * 0x10; 20])).collect()
}

fn consortium() -> Consortium {
    let mut storage = BTreeMap::new();
    let mut one = [0u8; 32];
    one[31] = 1;
    storage.insert([0u8; 32], one);
    let contract = ContractAccount {
        address: address(CONTRACT),
        runtime_code: vec![0x60, 0x2a, 0x60, 0x00, 0x52, 0x60, 0x20, 0x60, 0x00, 0xf3],
        storage,
        constructor: Some(vec![0xde, 0xad, 0xbe, 0xef]),
    };
    let mut c = Consortium::new(validators(4), contract);
    c.admin = Some(Admin {
        address: address(ADMIN),
        balance_wei: 10u128.pow(24),
    });
    c
}

fn bytes_of(hex_str: &Value) -> Vec<u8> {
    hex::decode(&hex_str.as_str().expect("hex string")[2..]).expect("valid hex")
}

fn problems(result: Result<Value, orchestrator::genesis::Problems>) -> Vec<Problem> {
    result.expect_err("rendering should fail").0
}

#[test]
fn qbft_extra_data_matches_besus_documented_example_and_decodes_back() {
    let mut c = consortium();
    c.validators = BESU_DOC_VALIDATORS.iter().map(|s| address(s)).collect();
    c.qbft.validator_mode = QbftValidatorMode::BlockHeader;
    let genesis = render_qbft(&c).unwrap();
    assert_eq!(genesis["extraData"], json!(BESU_DOC_EXTRA_DATA));
    let decoded = decode_qbft_extra_data(&bytes_of(&genesis["extraData"])).unwrap();
    assert_eq!(decoded, c.validators);
}

#[test]
fn qbft_contract_mode_names_the_contract_and_its_extra_data_decodes_to_the_validators() {
    let c = consortium();
    let genesis = render_qbft(&c).unwrap();
    assert_eq!(
        genesis["config"]["qbft"]["validatorcontractaddress"],
        json!(CONTRACT)
    );
    assert_eq!(
        decode_qbft_extra_data(&bytes_of(&genesis["extraData"])).unwrap(),
        c.validators
    );
    let contract = &genesis["alloc"][CONTRACT];
    assert_eq!(contract["code"], json!("0x602a60005260206000f3"));
    assert_eq!(
        contract["storage"][format!("0x{}", "00".repeat(32))],
        json!(format!("0x{}01", "00".repeat(31)))
    );
}

#[test]
fn qbft_decoder_refuses_clique_extra_data() {
    let clique = render_clique(&consortium()).unwrap();
    assert!(decode_qbft_extra_data(&bytes_of(&clique["extraData"])).is_err());
}

#[test]
fn clique_extra_data_is_vanity_signers_ascending_and_zero_seal() {
    for n in [1u8, 4] {
        let mut c = consortium();
        c.validators = validators(n);
        let genesis = render_clique(&c).unwrap();
        let extra = bytes_of(&genesis["extraData"]);
        let n = usize::from(n);
        assert_eq!(extra.len(), 32 + 20 * n + 65);
        assert!(extra[..32].iter().all(|b| *b == 0));
        assert!(extra[32 + 20 * n..].iter().all(|b| *b == 0));
        let mut expected = c.validators.clone();
        expected.sort();
        let signers: Vec<Address> = extra[32..32 + 20 * n]
            .chunks(20)
            .map(|s| Address(s.try_into().unwrap()))
            .collect();
        assert_eq!(signers, expected);
    }
    let genesis = render_clique(&consortium()).unwrap();
    assert_eq!(
        genesis["config"]["clique"],
        json!({ "period": 5, "epoch": 30000 })
    );
    assert_eq!(
        genesis["alloc"][ADMIN]["balance"],
        json!("0xd3c21bcecceda1000000")
    );
}

#[test]
fn aura_chainspec_has_builtins_and_the_contract_in_both_forms() {
    let mut c = consortium();
    let spec = render_aura(&c).unwrap();
    let accounts = spec["accounts"].as_object().unwrap();
    let builtins: Vec<(String, String)> = accounts
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v["builtin"]["name"].as_str()?.to_string())))
        .collect();
    assert_eq!(builtins.len(), 9);
    assert_eq!(
        builtins[4],
        (
            "0x0000000000000000000000000000000000000005".to_string(),
            "modexp".to_string()
        )
    );
    for (_, name) in &builtins {
        let pricing = &accounts
            .values()
            .find(|a| a["builtin"]["name"] == json!(name))
            .unwrap()["builtin"]["pricing"];
        assert!(
            pricing["0"]["price"].is_object(),
            "{name} priced from block 0"
        );
    }
    assert_eq!(accounts[CONTRACT]["constructor"], json!("0xdeadbeef"));
    assert!(accounts[CONTRACT].get("code").is_none());
    assert_eq!(
        spec["engine"]["authorityRound"]["params"]["validators"],
        json!({ "safeContract": CONTRACT })
    );

    c.aura.contract_form = AuraContractForm::CodeAndStorage;
    let spec = render_aura(&c).unwrap();
    let contract = &spec["accounts"][CONTRACT];
    assert_eq!(contract["code"], json!("0x602a60005260206000f3"));
    assert!(contract["storage"].is_object());
    assert!(contract.get("constructor").is_none());
}

#[test]
fn network_id_bounds_hold_for_every_flavour() {
    for flavour in Flavour::ALL {
        for (id, ok) in [
            (4u64, false),
            (5, true),
            (10_101_010, true),
            (999_999_999, true),
            (1_000_000_000, false),
        ] {
            let mut c = consortium();
            c.network_id = id;
            let result = render(&c, flavour);
            assert_eq!(result.is_ok(), ok, "{flavour} id {id}");
            if let Err(e) = result {
                assert_eq!(e.0, vec![Problem::NetworkIdOutOfRange { found: id }]);
            }
        }
    }
    let mut c = consortium();
    c.network_id = 77;
    assert_eq!(render_clique(&c).unwrap()["config"]["chainId"], json!(77));
    assert_eq!(
        render_aura(&c).unwrap()["params"]["networkID"],
        json!("0x4d")
    );
}

#[test]
fn bad_consortium_reports_every_problem_in_one_line() {
    let mut c = consortium();
    c.network_id = 0;
    c.validators = vec![];
    c.block_period_secs = 0;
    c.base = Some(json!("not a genesis"));
    let err = render_qbft(&c).unwrap_err();
    assert_eq!(err.0.len(), 4, "{err}");
    let line = err.to_string();
    assert!(!line.contains('\n'));
    assert!(line.contains("network id 0 is out of range"), "{line}");
    assert!(line.contains("no validators"), "{line}");
    assert!(
        line.contains("base genesis: (top level) must be a JSON object"),
        "{line}"
    );
}

#[test]
fn base_genesis_keeps_its_own_settings_and_gains_ours() {
    let mut c = consortium();
    c.base = Some(json!({
        "config": { "chainId": 10101010, "berlinBlock": 0, "londonBlock": 5 },
        "gasLimit": "0x47b760",
        "alloc": {
            "1111111111111111111111111111111111111111": { "balance": "0x64" }
        },
        "note": "kept"
    }));
    let genesis = render_clique(&c).unwrap();
    assert_eq!(genesis["note"], json!("kept"));
    assert_eq!(
        genesis["gasLimit"],
        json!("0x47b760"),
        "base gas limit wins over our default"
    );
    assert_eq!(
        genesis["config"]["londonBlock"],
        json!(5),
        "base fork schedule wins"
    );
    assert_eq!(
        genesis["config"]["istanbulBlock"],
        json!(0),
        "missing forks filled"
    );
    assert_eq!(
        genesis["alloc"]["1111111111111111111111111111111111111111"]["balance"],
        json!("0x64")
    );
    assert!(genesis["alloc"][CONTRACT]["code"].is_string());
    assert!(genesis["config"]["clique"].is_object());

    // An explicit gas limit must agree with the base.
    c.gas_limit = Some(30_000_000);
    let found = problems(render_clique(&c));
    assert!(
        matches!(&found[..], [Problem::BaseConflict { path, .. }] if path == "gasLimit"),
        "{found:?}"
    );
}

#[test]
fn base_genesis_may_already_hold_our_contract_and_admin() {
    let mut c = consortium();
    let checksummed_contract = address(CONTRACT).to_string();
    c.base = Some(json!({
        "alloc": {
            checksummed_contract.clone(): {
                "code": "0x602A60005260206000F3",
                "storage": { "0x00": "0x01" },
                "nonce": "0x1"
            },
            ADMIN: { "balance": "1000000000000000000000000" }
        }
    }));
    let genesis = render_qbft(&c).unwrap();
    let alloc = genesis["alloc"].as_object().unwrap();
    assert_eq!(
        alloc.len(),
        2,
        "no duplicate under another spelling: {alloc:?}"
    );
    assert_eq!(alloc[&checksummed_contract]["nonce"], json!("0x1"));
}

#[test]
fn base_genesis_conflicts_are_refused_and_all_reported() {
    let mut c = consortium();
    c.base = Some(json!({
        "config": { "chainId": 1, "clique": { "period": 5, "epoch": 30000 } },
        "extraData": "0x1234",
        "alloc": {
            CONTRACT: { "code": "0x6000" },
            ADMIN: { "balance": "0x1" }
        }
    }));
    let found = problems(render_qbft(&c));
    let text: Vec<String> = found.iter().map(ToString::to_string).collect();
    let joined = text.join("\n");
    assert!(joined.contains("config selects clique"), "{joined}");
    assert!(
        joined.contains("config.chainId is 1, but the consortium needs 10101010"),
        "{joined}"
    );
    assert!(joined.contains("extraData is \"0x1234\""), "{joined}");
    assert!(
        joined.contains(&format!(
            "account {CONTRACT} (validator-set contract) already has a different code"
        )),
        "{joined}"
    );
    assert!(
        joined.contains(&format!(
            "account {ADMIN} (admin) already has a different balance"
        )),
        "{joined}"
    );
    assert!(
        joined.contains(&format!(
            "account {CONTRACT} (validator-set contract) already has a different storage"
        )),
        "{joined}"
    );
    assert_eq!(found.len(), 6, "{joined}");
}

#[test]
fn base_genesis_of_the_wrong_shape_is_refused() {
    let cases = [
        (
            Flavour::Clique,
            json!({ "alloc": [] }),
            "alloc must be an object",
        ),
        (
            Flavour::Qbft,
            json!({ "config": { "qbft": 5 } }),
            "config.qbft must be an object",
        ),
        (
            Flavour::Aura,
            json!({ "engine": { "ethash": {} } }),
            "engine selects ethash",
        ),
        (
            Flavour::Aura,
            json!({ "accounts": "none" }),
            "accounts must be an object",
        ),
        (
            Flavour::Aura,
            json!({ "genesis": { "seal": { "ethereum": {} } } }),
            "genesis.seal selects ethereum",
        ),
    ];
    for (flavour, base, want) in cases {
        let mut c = consortium();
        c.base = Some(base);
        let err = render(&c, flavour).unwrap_err().to_string();
        assert!(err.contains(want), "{flavour}: {err}");
    }
}

#[test]
fn a_rendered_genesis_is_a_fixed_point_as_base() {
    for flavour in Flavour::ALL {
        let mut c = consortium();
        let first = render(&c, flavour).unwrap();
        c.base = Some(first.clone());
        assert_eq!(render(&c, flavour).unwrap(), first, "{flavour}");
    }
}

#[test]
fn rendering_is_deterministic_to_the_byte() {
    for flavour in Flavour::ALL {
        let a = serde_json::to_vec_pretty(&render(&consortium(), flavour).unwrap()).unwrap();
        let b = serde_json::to_vec_pretty(&render(&consortium(), flavour).unwrap()).unwrap();
        assert_eq!(a, b, "{flavour}");
        assert!(!a.is_empty());
    }
}
