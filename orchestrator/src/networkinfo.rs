//! The network-info document: what one member publishes and the next member joins from.
//!
//! It follows the consortium Data API's field names (`majorVersion`, `minorVersion`,
//! `bootnodes`, `valSetContract`, `adminContract`, `adminContractABI`, `paritySpec`,
//! `errorMessage`, `addressList.addresses`) and adds what a joiner needs to start clients
//! and to check its own request: the network id, the members with their admins and
//! validators, and the genesis of every rendered flavour as text, so that every member runs
//! byte-identical genesis files. The JSON Schema is committed beside this crate
//! ([`SCHEMA`]); a test checks our output and our refusals against it with a real JSON
//! Schema validator.
//!
//! A joiner reads this document from another organisation, so [`parse_untrusted`] treats
//! it as hostile: a size limit before parsing, the schema's shape, EIP-55 checksums, and the
//! cross-field rules the schema cannot say (the address list is the members' validators,
//! nobody appears twice, the embedded genesis is JSON).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use shared::Address;

use crate::genesis::{Flavour, NETWORK_ID_RANGE};
use crate::provision::{MAX_VALIDATORS, MIN_VALIDATORS};

/// The committed JSON Schema (draft 2020-12) of the document.
pub const SCHEMA: &str = include_str!("../schema/networkinfo.schema.json");

/// The document format version we write and accept.
pub const MAJOR_VERSION: u64 = 1;
pub const MINOR_VERSION: u64 = 0;

/// Largest document accepted, checked before parsing.
pub const MAX_BYTES: usize = 1 << 20;
/// Most members and bootnodes accepted.
pub const MAX_MEMBERS: usize = 64;
pub const MAX_BOOTNODES: usize = 64;
/// Longest `errorMessage` accepted.
pub const MAX_ERROR_MESSAGE: usize = 1024;

/// One member's part of the consortium.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberInfo {
    pub member: u32,
    pub admin: Address,
    pub validators: Vec<Address>,
}

/// `addressList`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressList {
    pub addresses: Vec<Address>,
}

/// The document. Field order is the order written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInfo {
    pub major_version: u64,
    pub minor_version: u64,
    /// `enode://<node id>@<host>:<port>` URLs of nodes that accept peers.
    pub bootnodes: Vec<String>,
    /// Address of the validator-set contract (`getValidators`, `finalizeChange`).
    pub val_set_contract: Address,
    /// Address of the admin-governance contract; the same contract here.
    pub admin_contract: Address,
    /// The governance contract's ABI, as JSON text.
    #[serde(rename = "adminContractABI")]
    pub admin_contract_abi: String,
    /// The AuRa chainspec as JSON text, or "" when the network has no AuRa genesis.
    pub parity_spec: String,
    /// "" when the publisher is healthy; otherwise why its data should not be used.
    pub error_message: String,
    /// Every member's validators, member by member.
    pub address_list: AddressList,
    pub network_id: u64,
    pub members: Vec<MemberInfo>,
    /// Every rendered flavour's genesis, as JSON text, keyed by flavour name.
    pub genesis: BTreeMap<String, String>,
}

impl NetworkInfo {
    /// The first member: the one whose validator count caps everyone's.
    pub fn first_member(&self) -> &MemberInfo {
        &self.members[0]
    }

    /// Pretty JSON with a trailing newline, as written to `networkinfo.json`.
    pub fn to_pretty_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("network info serialises");
        s.push('\n');
        s
    }
}

/// Parses and checks a document from another member. Every problem found is listed; the
/// messages quote positions and field names, and only short, printable pieces of the input.
pub fn parse_untrusted(bytes: &[u8]) -> Result<NetworkInfo, Vec<String>> {
    if bytes.len() > MAX_BYTES {
        return Err(vec![format!(
            "is {} bytes; at most {MAX_BYTES} are accepted",
            bytes.len()
        )]);
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        vec![format!(
            "is not JSON (line {}, column {}: {})",
            e.line(),
            e.column(),
            category(&e)
        )]
    })?;
    let mut problems = Vec::new();
    let Some(top) = value.as_object() else {
        return Err(vec!["is not a JSON object".into()]);
    };
    check_shape(top, &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    let info: NetworkInfo = match serde_json::from_value(value) {
        Ok(info) => info,
        Err(e) => return Err(vec![format!("does not fit the schema: {e}")]),
    };
    check_meaning(&info, &mut problems);
    if problems.is_empty() {
        Ok(info)
    } else {
        Err(problems)
    }
}

fn category(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "data error",
        serde_json::error::Category::Eof => "unexpected end",
    }
}

const REQUIRED: [&str; 12] = [
    "majorVersion",
    "minorVersion",
    "bootnodes",
    "valSetContract",
    "adminContract",
    "adminContractABI",
    "paritySpec",
    "errorMessage",
    "addressList",
    "networkId",
    "members",
    "genesis",
];

/// The schema's rules, checked on the raw JSON so that every violation is reported with its
/// path (serde would stop at the first).
fn check_shape(top: &Map<String, Value>, problems: &mut Vec<String>) {
    for key in REQUIRED {
        if !top.contains_key(key) {
            problems.push(format!("lacks the required field {key}"));
        }
    }
    for key in top.keys() {
        if !REQUIRED.contains(&key.as_str()) {
            problems.push(format!("has an unknown field {}", quote(key)));
        }
    }
    match top.get("majorVersion") {
        None => {}
        Some(v) if v.as_u64() == Some(MAJOR_VERSION) => {}
        Some(v) => problems.push(format!(
            "majorVersion is {}, but only {MAJOR_VERSION} is understood",
            short(v)
        )),
    }
    if let Some(v) = top.get("minorVersion") {
        if v.as_u64().is_none() {
            problems.push("minorVersion must be a non-negative integer".into());
        }
    }
    if let Some(v) = top.get("networkId") {
        match v.as_u64() {
            Some(id) if NETWORK_ID_RANGE.contains(&id) => {}
            _ => problems.push(format!(
                "networkId must be an integer in {}..={}",
                NETWORK_ID_RANGE.start(),
                NETWORK_ID_RANGE.end()
            )),
        }
    }
    if let Some(v) = top.get("bootnodes") {
        match v.as_array() {
            Some(list) if list.len() <= MAX_BOOTNODES => {
                for (i, b) in list.iter().enumerate() {
                    if !b.as_str().is_some_and(is_enode_url) {
                        problems.push(format!(
                            "bootnodes[{i}] is not an enode://<128 hex digits>@host:port URL"
                        ));
                    }
                }
            }
            Some(list) => problems.push(format!(
                "bootnodes has {} entries; at most {MAX_BOOTNODES} are accepted",
                list.len()
            )),
            None => problems.push("bootnodes must be an array".into()),
        }
    }
    for key in ["valSetContract", "adminContract"] {
        if let Some(v) = top.get(key) {
            check_address(key, v, problems);
        }
    }
    if let Some(v) = top.get("adminContractABI") {
        match v.as_str() {
            Some(s) if serde_json::from_str::<Vec<Value>>(s).is_ok() => {}
            _ => problems.push("adminContractABI must be a JSON array, as text".into()),
        }
    }
    if let Some(v) = top.get("paritySpec") {
        match v.as_str() {
            Some("") => {}
            Some(s) if is_json_object_text(s) => {}
            _ => problems.push("paritySpec must be \"\" or a JSON object, as text".into()),
        }
    }
    if let Some(v) = top.get("errorMessage") {
        match v.as_str() {
            Some(s) if s.len() <= MAX_ERROR_MESSAGE => {}
            Some(_) => problems.push(format!(
                "errorMessage is longer than {MAX_ERROR_MESSAGE} bytes"
            )),
            None => problems.push("errorMessage must be a string".into()),
        }
    }
    if let Some(v) = top.get("addressList") {
        match v.as_object() {
            Some(obj) => {
                for key in obj.keys().filter(|k| *k != "addresses") {
                    problems.push(format!("addressList has an unknown field {}", quote(key)));
                }
                match obj.get("addresses").and_then(Value::as_array) {
                    Some(list) if !list.is_empty() => {
                        for (i, a) in list.iter().enumerate() {
                            check_address(&format!("addressList.addresses[{i}]"), a, problems);
                        }
                    }
                    _ => problems.push("addressList.addresses must be a non-empty array".into()),
                }
            }
            None => problems.push("addressList must be an object".into()),
        }
    }
    if let Some(v) = top.get("members") {
        match v.as_array() {
            Some(list) if !list.is_empty() && list.len() <= MAX_MEMBERS => {
                for (i, m) in list.iter().enumerate() {
                    check_member(i, m, problems);
                }
            }
            _ => problems.push(format!(
                "members must be an array of 1 to {MAX_MEMBERS} members"
            )),
        }
    }
    if let Some(v) = top.get("genesis") {
        match v.as_object() {
            Some(obj) => {
                for (name, text) in obj {
                    if name.parse::<Flavour>().is_err() {
                        problems.push(format!(
                            "genesis has an unknown flavour {}; expected aura, qbft or clique",
                            quote(name)
                        ));
                    } else if !text.as_str().is_some_and(is_json_object_text) {
                        problems.push(format!("genesis.{name} must be a JSON object, as text"));
                    }
                }
            }
            None => problems.push("genesis must be an object".into()),
        }
    }
}

fn check_member(i: usize, m: &Value, problems: &mut Vec<String>) {
    let Some(obj) = m.as_object() else {
        problems.push(format!("members[{i}] must be an object"));
        return;
    };
    for key in obj.keys() {
        if !["member", "admin", "validators"].contains(&key.as_str()) {
            problems.push(format!("members[{i}] has an unknown field {}", quote(key)));
        }
    }
    if obj
        .get("member")
        .and_then(Value::as_u64)
        .is_none_or(|n| u32::try_from(n).is_err())
    {
        problems.push(format!(
            "members[{i}].member must be a non-negative integer"
        ));
    }
    match obj.get("admin") {
        Some(a) => check_address(&format!("members[{i}].admin"), a, problems),
        None => problems.push(format!("members[{i}] lacks admin")),
    }
    match obj.get("validators").and_then(Value::as_array) {
        Some(list) if (MIN_VALIDATORS as usize..=MAX_VALIDATORS as usize).contains(&list.len()) => {
            for (j, a) in list.iter().enumerate() {
                check_address(&format!("members[{i}].validators[{j}]"), a, problems);
            }
        }
        _ => problems.push(format!(
            "members[{i}].validators must be an array of {MIN_VALIDATORS} to {MAX_VALIDATORS} addresses"
        )),
    }
}

fn check_address(path: &str, v: &Value, problems: &mut Vec<String>) {
    match v.as_str().map(str::parse::<Address>) {
        Some(Ok(_)) => {}
        Some(Err(e)) => problems.push(format!("{path}: {e}")),
        None => problems.push(format!("{path} must be an address string")),
    }
}

/// The rules between fields.
fn check_meaning(info: &NetworkInfo, problems: &mut Vec<String>) {
    if !info.error_message.is_empty() {
        problems.push(format!(
            "the publisher reports an error: {}",
            printable(&info.error_message)
        ));
    }
    let listed: Vec<Address> = info
        .members
        .iter()
        .flat_map(|m| m.validators.iter().copied())
        .collect();
    if listed != info.address_list.addresses {
        problems
            .push("addressList.addresses is not the members' validators, member by member".into());
    }
    let mut seen = BTreeSet::new();
    for a in info
        .members
        .iter()
        .flat_map(|m| std::iter::once(&m.admin).chain(&m.validators))
    {
        if !seen.insert(*a) {
            problems.push(format!(
                "{a} appears more than once among admins and validators"
            ));
        }
    }
    let mut ids = BTreeSet::new();
    for m in &info.members {
        if !ids.insert(m.member) {
            problems.push(format!("member {} is listed twice", m.member));
        }
    }
    let cap = info.first_member().validators.len();
    for m in &info.members[1..] {
        if m.validators.len() > cap {
            problems.push(format!(
                "member {} has {} validators, more than the first member's {cap}",
                m.member,
                m.validators.len()
            ));
        }
    }
    if info.genesis.is_empty() {
        problems.push("genesis names no flavour; a joiner could not start a client".into());
    }
    match (info.genesis.get("aura"), info.parity_spec.as_str()) {
        (Some(aura), spec) if aura != spec => {
            problems.push("paritySpec and genesis.aura differ".into())
        }
        (None, spec) if !spec.is_empty() => {
            problems.push("paritySpec is set but genesis.aura is missing".into())
        }
        _ => {}
    }
}

fn is_json_object_text(s: &str) -> bool {
    serde_json::from_str::<Value>(s).is_ok_and(|v| v.is_object())
}

/// `enode://<128 lowercase or uppercase hex>@<host>:<port>`, host without spaces or `@`.
pub fn is_enode_url(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("enode://") else {
        return false;
    };
    let Some((id, addr)) = rest.split_once('@') else {
        return false;
    };
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    id.len() == 128
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        && port.parse::<u16>().is_ok_and(|p| p != 0)
}

/// A field name from the input, quoted and cut short.
fn quote(s: &str) -> String {
    format!("{:?}", printable(s))
}

/// A piece of untrusted text fit for an error message: control characters dropped, cut
/// at 120 characters.
pub(crate) fn printable(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(120).collect();
    if s.chars().count() > 120 {
        out.push('…');
    }
    out
}

fn short(v: &Value) -> String {
    printable(&v.to_string())
}
