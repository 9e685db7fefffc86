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
//! it as hostile: a size limit before parsing, then the committed schema itself (the
//! `jsonschema` crate, with no remote or file references and a linear-time regex engine),
//! then the rules the schema cannot say: EIP-55 checksums, the JSON carried as text, port
//! numbers, and the rules between fields (the address list is the members' validators,
//! nobody appears twice, no member above the first member's validator count).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::{Location, LocationSegment};
use jsonschema::{Draft, PatternOptions, ValidationError, Validator};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use shared::Address;

/// The committed JSON Schema (draft 2020-12) of the document.
pub const SCHEMA: &str = include_str!("../schema/networkinfo.schema.json");

/// The document format version we write and accept.
pub const MAJOR_VERSION: u64 = 1;
pub const MINOR_VERSION: u64 = 0;

/// Largest document accepted, checked before parsing.
pub const MAX_BYTES: usize = 1 << 20;
/// Most problems listed for one document; the count of the rest follows them.
const MAX_PROBLEMS: usize = 20;

/// [`SCHEMA`], compiled once.
static VALIDATOR: LazyLock<Validator> = LazyLock::new(|| {
    let schema: Value = serde_json::from_str(SCHEMA).expect("the committed schema is JSON");
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        // The regex crate matches in linear time, whatever a hostile string holds.
        .with_pattern_options(PatternOptions::regex())
        .build(&schema)
        .expect("the committed schema compiles")
});

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

/// Parses and checks a document from another member. Every problem found is listed (up to
/// [`MAX_PROBLEMS`]), each naming its place in the document; the messages quote only short,
/// printable pieces of the input, never a whole value.
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
    if !value.is_object() {
        return Err(vec!["is not a JSON object".into()]);
    }
    let mut problems: Vec<String> = VALIDATOR.iter_errors(&value).flat_map(describe).collect();
    if problems.is_empty() {
        check_text_fields(&value, &mut problems);
    }
    if !problems.is_empty() {
        return Err(capped(problems));
    }
    let info: NetworkInfo = serde_json::from_value(value).map_err(|e| {
        vec![format!(
            "does not fit the schema: {}",
            printable(&e.to_string())
        )]
    })?;
    check_meaning(&info, &mut problems);
    if problems.is_empty() {
        Ok(info)
    } else {
        Err(capped(problems))
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

/// The first [`MAX_PROBLEMS`] problems, and how many more there were.
fn capped(mut problems: Vec<String>) -> Vec<String> {
    if problems.len() > MAX_PROBLEMS {
        let more = problems.len() - MAX_PROBLEMS;
        problems.truncate(MAX_PROBLEMS);
        problems.push(format!("and {more} more problems"));
    }
    problems
}

/// One schema violation as lines of our own, from its place and kind. A `jsonschema`
/// error's own text can quote the offending value, which may be long or unprintable.
fn describe(e: ValidationError<'_>) -> Vec<String> {
    let at = path(e.instance_path());
    // "members[0] lacks …", or "lacks …" for the document itself.
    let subject = |text: String| {
        if at.is_empty() {
            text
        } else {
            format!("{at} {text}")
        }
    };
    let one = match e.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            return unexpected
                .iter()
                .map(|k| subject(format!("has an unknown field {}", quote(k))))
                .collect()
        }
        ValidationErrorKind::Required { property } => subject(format!(
            "lacks the required field {}",
            property.as_str().map_or_else(|| short(property), printable)
        )),
        ValidationErrorKind::Type { kind } => format!("{at} must be {}", type_name(kind)),
        ValidationErrorKind::Constant { expected_value } => {
            format!("{at} must be {}", short(expected_value))
        }
        ValidationErrorKind::Pattern { pattern } if pattern.starts_with("^enode://") => {
            format!("{at} is not an enode://<128 hex digits>@host:port URL")
        }
        ValidationErrorKind::Pattern { pattern } if pattern.starts_with("^0x") => {
            format!("{at} is not an address: 0x and 40 hex digits")
        }
        ValidationErrorKind::Pattern { pattern } => {
            format!("{at} does not match {}", printable(pattern))
        }
        ValidationErrorKind::Minimum { limit } => format!("{at} must be at least {limit}"),
        ValidationErrorKind::Maximum { limit } => format!("{at} must be at most {limit}"),
        ValidationErrorKind::MinItems { limit } => {
            format!("{at} must have at least {limit} entries")
        }
        ValidationErrorKind::MaxItems { limit } => {
            format!("{at} has more than {limit} entries")
        }
        ValidationErrorKind::MinLength { limit } => {
            format!("{at} must be at least {limit} characters long")
        }
        ValidationErrorKind::MaxLength { limit } => {
            format!("{at} is longer than {limit} characters")
        }
        ValidationErrorKind::MinProperties { limit } => {
            format!("{at} must have at least {limit} fields")
        }
        kind => subject(format!("breaks the schema's {} rule", kind.keyword())),
    };
    vec![one]
}

/// An instance location as a reader writes it: `members[0].validators[1]`.
fn path(location: &Location) -> String {
    let mut out = String::new();
    for segment in location.iter() {
        match segment {
            LocationSegment::Index(i) => out.push_str(&format!("[{i}]")),
            LocationSegment::Property(name) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&printable(&name));
            }
        }
    }
    out
}

fn type_name(kind: &TypeKind) -> String {
    let article = |t: String| {
        if t.starts_with(['a', 'e', 'i', 'o', 'u']) {
            format!("an {t}")
        } else {
            format!("a {t}")
        }
    };
    match kind {
        TypeKind::Single(t) => article(t.to_string()),
        TypeKind::Multiple(set) => set
            .iter()
            .map(|t| article(t.to_string()))
            .collect::<Vec<_>>()
            .join(" or "),
    }
}

/// What the schema cannot say about a schema-valid document's fields: EIP-55 checksums,
/// the JSON carried as text, and bootnode ports.
fn check_text_fields(top: &Value, problems: &mut Vec<String>) {
    let text = |key: &str| top[key].as_str().unwrap_or_default();
    for (i, b) in top["bootnodes"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if !b.as_str().is_some_and(is_enode_url) {
            problems.push(format!(
                "bootnodes[{i}] is not an enode://<128 hex digits>@host:port URL"
            ));
        }
    }
    for key in ["valSetContract", "adminContract"] {
        check_address(key, &top[key], problems);
    }
    for (i, a) in top["addressList"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        check_address(&format!("addressList.addresses[{i}]"), a, problems);
    }
    for (i, m) in top["members"].as_array().into_iter().flatten().enumerate() {
        check_address(&format!("members[{i}].admin"), &m["admin"], problems);
        for (j, a) in m["validators"].as_array().into_iter().flatten().enumerate() {
            check_address(&format!("members[{i}].validators[{j}]"), a, problems);
        }
    }
    if serde_json::from_str::<Vec<Value>>(text("adminContractABI")).is_err() {
        problems.push("adminContractABI must be a JSON array, as text".into());
    }
    let spec = text("paritySpec");
    if !spec.is_empty() && !is_json_object_text(spec) {
        problems.push("paritySpec must be \"\" or a JSON object, as text".into());
    }
    for (name, genesis) in top["genesis"].as_object().into_iter().flatten() {
        if !genesis.as_str().is_some_and(is_json_object_text) {
            problems.push(format!("genesis.{name} must be a JSON object, as text"));
        }
    }
}

/// An address the schema accepted (`0x` and 40 hex digits): its EIP-55 checksum, if mixed case.
fn check_address(path: &str, v: &Value, problems: &mut Vec<String>) {
    if let Some(Err(e)) = v.as_str().map(str::parse::<Address>) {
        problems.push(format!("{path}: {e}"));
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

pub use shared::enode::is_enode_url;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Value {
        let a = |n: u8| Address([n; 20]);
        let info = NetworkInfo {
            major_version: MAJOR_VERSION,
            minor_version: MINOR_VERSION,
            bootnodes: vec![format!("enode://{}@127.0.0.1:30303", "ab".repeat(64))],
            val_set_contract: a(0x42),
            admin_contract: a(0x42),
            admin_contract_abi: "[]".into(),
            parity_spec: String::new(),
            error_message: String::new(),
            address_list: AddressList {
                addresses: vec![a(1), a(2)],
            },
            network_id: 10101010,
            members: vec![MemberInfo {
                member: 0,
                admin: a(9),
                validators: vec![a(1), a(2)],
            }],
            genesis: [("qbft".to_string(), "{}".to_string())].into(),
        };
        serde_json::to_value(&info).unwrap()
    }

    /// A change to a valid document.
    type Mutation = Box<dyn Fn(&mut Value)>;

    fn problems(doc: &Value) -> Vec<String> {
        parse_untrusted(&serde_json::to_vec(doc).unwrap()).unwrap_err()
    }

    /// The schema is the one statement of the document's limits; these must agree with the
    /// limits `init` and `join` apply to their own settings.
    #[test]
    fn the_schemas_limits_are_the_commands_limits() {
        use crate::genesis::{Flavour, NETWORK_ID_RANGE};
        use crate::provision::{MAX_VALIDATORS, MIN_VALIDATORS};
        let schema: Value = serde_json::from_str(SCHEMA).unwrap();
        let props = &schema["properties"];
        assert_eq!(props["majorVersion"]["const"], MAJOR_VERSION);
        assert_eq!(props["networkId"]["minimum"], *NETWORK_ID_RANGE.start());
        assert_eq!(props["networkId"]["maximum"], *NETWORK_ID_RANGE.end());
        let validators = &props["members"]["items"]["properties"]["validators"];
        assert_eq!(validators["minItems"], MIN_VALIDATORS);
        assert_eq!(validators["maxItems"], MAX_VALIDATORS);
        let flavours: Vec<&str> = props["genesis"]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut ours: Vec<&str> = Flavour::ALL.iter().map(|f| f.as_str()).collect();
        ours.sort();
        assert_eq!(flavours, ours);
    }

    #[test]
    fn a_valid_document_parses() {
        let info = parse_untrusted(&serde_json::to_vec(&valid()).unwrap()).unwrap();
        assert_eq!(info.network_id, 10101010);
    }

    #[test]
    fn schema_problems_name_their_place_and_never_echo_the_value() {
        let long = format!("\u{7}\u{1b}[31m{}", "x".repeat(100_000));
        let mut doc = valid();
        doc["valSetContract"] = long.clone().into();
        doc["members"][0]["validators"][1] = long.clone().into();
        doc["errorMessage"] = long.clone().into();
        doc["majorVersion"] = long.clone().into();
        doc[long.as_str()] = true.into();
        doc["members"][0].as_object_mut().unwrap().remove("admin");
        let ps = problems(&doc);
        for needle in [
            "valSetContract is not an address",
            "members[0].validators[1] is not an address",
            "errorMessage is longer than 1024 characters",
            "majorVersion must be 1",
            "has an unknown field \"[31mxxx",
            "members[0] lacks the required field admin",
        ] {
            assert!(ps.iter().any(|p| p.contains(needle)), "{needle}: {ps:?}");
        }
        for p in &ps {
            assert!(p.len() < 200, "too long: {p}");
            assert!(!p.chars().any(char::is_control), "unprintable: {p:?}");
        }
    }

    #[test]
    fn a_flood_of_problems_is_cut_short() {
        let mut doc = valid();
        for i in 0..1000 {
            doc[format!("extra{i}")] = i.into();
        }
        let ps = problems(&doc);
        assert_eq!(ps.len(), MAX_PROBLEMS + 1);
        assert_eq!(ps[MAX_PROBLEMS], "and 980 more problems");
    }

    /// What the schema cannot say: checksums, JSON carried as text, port numbers, the rules
    /// between fields.
    #[test]
    fn schema_valid_documents_are_still_checked() {
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "members[0].admin: ",
                // A published EIP-55 example with one letter's case flipped.
                Box::new(|d| {
                    d["members"][0]["admin"] = "0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".into()
                }),
            ),
            (
                "bootnodes[0] is not an enode",
                Box::new(|d| d["bootnodes"][0] = format!("enode://{}@h:0", "ab".repeat(64)).into()),
            ),
            (
                "adminContractABI must be a JSON array",
                Box::new(|d| d["adminContractABI"] = "{}".into()),
            ),
            (
                "paritySpec must be",
                Box::new(|d| d["paritySpec"] = "not json".into()),
            ),
            (
                "genesis.qbft must be a JSON object",
                Box::new(|d| d["genesis"]["qbft"] = "[1]".into()),
            ),
            (
                "paritySpec is set but genesis.aura is missing",
                Box::new(|d| d["paritySpec"] = "{}".into()),
            ),
            (
                "not the members' validators",
                Box::new(|d| {
                    d["addressList"]["addresses"]
                        .as_array_mut()
                        .unwrap()
                        .reverse()
                }),
            ),
            (
                "appears more than once",
                Box::new(|d| d["members"][0]["admin"] = d["members"][0]["validators"][0].clone()),
            ),
            (
                "the publisher reports an error: down",
                Box::new(|d| d["errorMessage"] = "down\n".into()),
            ),
            (
                "does not fit the schema",
                Box::new(|d| d["networkId"] = serde_json::json!(10101010.0)),
            ),
        ];
        let validator = &*VALIDATOR;
        for (needle, mutate) in cases {
            let mut doc = valid();
            mutate(&mut doc);
            assert!(validator.is_valid(&doc), "{needle}: expected schema-valid");
            let ps = problems(&doc);
            assert!(ps.iter().any(|p| p.contains(needle)), "{needle}: {ps:?}");
        }
    }
}
