//! What the Azure backends share: the HTTP transport, the credential, the storage
//! emulator's connection string, and turning the SDK's errors into messages that carry no
//! token, key or signature.
//!
//! # Transport
//!
//! Every SDK client gets the same kind of transport ([`crate::net::https_client_builder`]):
//! reqwest with rustls on the `ring` provider, trusting the system's roots plus an optional
//! extra CA file (`ca_file`), with a connect timeout and a whole-request timeout chosen by
//! the caller. The SDK's own
//! default (20 s to connect, 60 s to read, and a 60 s retry budget on top) is longer than
//! a lease, so the lease path never uses it (docs/architecture.md: every storage call has a
//! client-side timeout ≤ R/2 and a retry budget that ends before the next renew).
//!
//! # Credentials
//!
//! Entra ID only, chosen by [`CredentialKind`]: a managed identity on the VMs
//! (system-assigned, or user-assigned by client id), the developer-tools credential
//! (Azure CLI / Azure Developer CLI login) or a client secret read from a file for the
//! deployment pipeline. The storage emulator is the one exception: with a connection string
//! (`connection_string` or `AZURE_STORAGE_CONNECTION_STRING`) and a loopback endpoint, blob
//! requests are signed with an account SAS made from the emulator's account key.

pub mod sas;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, ExponentialRetryOptions, RetryOptions, Transport};
use azure_identity::{
    ClientSecretCredential, ClientSecretCredentialOptions, DeveloperToolsCredential,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::config::{Field, Report, Section};
use crate::fsutil;

/// The environment variable Azure's tools read a storage connection string from.
pub const CONNECTION_STRING_ENV: &str = "AZURE_STORAGE_CONNECTION_STRING";

/// How the backends authenticate to Azure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialKind {
    /// The VM's managed identity (IMDS): system-assigned, or user-assigned when
    /// `managed_identity_client_id` is set. The default: what `leased` uses on a VM.
    #[default]
    ManagedIdentity,
    /// The signed-in Azure CLI (`az login`) or Azure Developer CLI (`azd auth login`).
    DeveloperTools,
    /// An app registration's client secret, read from `client_secret_file`, with
    /// `tenant_id` and `client_id`: for a deployment pipeline.
    ClientSecret,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ManagedIdentity => "managed-identity",
            Self::DeveloperTools => "developer-tools",
            Self::ClientSecret => "client-secret",
        }
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `[azure]` settings shared by `orchestrator` and `leased`. Everything is optional:
/// the defaults suit a VM with a system-assigned managed identity. Read from a file with
/// [`AzureOptions::read`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AzureOptions {
    pub credential: CredentialKind,
    /// The client id of a user-assigned managed identity.
    pub managed_identity_client_id: Option<String>,
    /// For `client-secret`: the directory (tenant) id.
    pub tenant_id: Option<String>,
    /// For `client-secret`: the application (client) id.
    pub client_id: Option<String>,
    /// For `client-secret`: a file holding the secret (one line; keep it 0600).
    pub client_secret_file: Option<PathBuf>,
    /// The Entra ID authority, for sovereign clouds or a test token endpoint
    /// (default `https://login.microsoftonline.com`).
    pub authority_host: Option<String>,
    /// A PEM file of extra CAs to trust besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The storage emulator's connection string (it holds the account key: prefer the
    /// `AZURE_STORAGE_CONNECTION_STRING` variable or a 0600 config file).
    pub connection_string: Option<String>,
}

impl fmt::Debug for AzureOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureOptions")
            .field("credential", &self.credential)
            .field(
                "managed_identity_client_id",
                &self.managed_identity_client_id,
            )
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret_file", &self.client_secret_file)
            .field("authority_host", &self.authority_host)
            .field("ca_file", &self.ca_file)
            .field(
                "connection_string",
                &self.connection_string.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The `[azure]` table as a configuration file writes it ([`crate::config`]): each setting
/// read on its own, so that every wrong one is reported.
#[derive(Default, Deserialize)]
pub struct AzureTable {
    credential: Field<CredentialKind>,
    managed_identity_client_id: Field<String>,
    tenant_id: Field<String>,
    client_id: Field<String>,
    client_secret_file: Field<PathBuf>,
    authority_host: Field<String>,
    ca_file: Field<PathBuf>,
    connection_string: Field<String>,
}

impl fmt::Debug for AzureTable {
    // The connection string holds an account key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureTable").finish_non_exhaustive()
    }
}

impl AzureOptions {
    /// The `[azure]` table at `key` (`azure`): each wrong type and unknown key is reported
    /// to `report` as `azure.NAME`, and then there are no options (`None`). How the settings
    /// combine is [`AzureOptions::problems`]' to check, where a store is on Azure.
    pub fn read(report: &mut Report, key: &str, section: Section<AzureTable>) -> Option<Self> {
        let (t, unknown) = report.open(key, section);
        let k = |name: &str| format!("{key}.{name}");
        let credential = report.or(&k("credential"), t.credential, CredentialKind::default());
        let managed_identity_client_id = report.optional(
            &k("managed_identity_client_id"),
            t.managed_identity_client_id,
        );
        let tenant_id = report.optional(&k("tenant_id"), t.tenant_id);
        let client_id = report.optional(&k("client_id"), t.client_id);
        let client_secret_file = report.optional(&k("client_secret_file"), t.client_secret_file);
        let authority_host = report.optional(&k("authority_host"), t.authority_host);
        let ca_file = report.optional(&k("ca_file"), t.ca_file);
        let connection_string = report.optional(&k("connection_string"), t.connection_string);
        report.finish(unknown);
        Some(Self {
            credential: credential?,
            managed_identity_client_id: managed_identity_client_id?,
            tenant_id: tenant_id?,
            client_id: client_id?,
            client_secret_file: client_secret_file?,
            authority_host: authority_host?,
            ca_file: ca_file?,
            connection_string: connection_string?,
        })
    }

    /// The problems with these settings, each as (dotted key, what is wrong), for a config
    /// check that lists every problem.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut add = |key: &str, message: String| out.push((format!("azure.{key}"), message));
        let secret_keys = [
            ("tenant_id", self.tenant_id.is_some()),
            ("client_id", self.client_id.is_some()),
            ("client_secret_file", self.client_secret_file.is_some()),
        ];
        for (key, set) in secret_keys {
            if self.credential == CredentialKind::ClientSecret && !set {
                add(
                    key,
                    "is required with credential = \"client-secret\"".into(),
                );
            }
            if self.credential != CredentialKind::ClientSecret && set {
                add(
                    key,
                    format!(
                        "applies only to credential = \"client-secret\", not \"{}\"",
                        self.credential
                    ),
                );
            }
        }
        if self.managed_identity_client_id.is_some()
            && self.credential != CredentialKind::ManagedIdentity
        {
            add(
                "managed_identity_client_id",
                format!(
                    "applies only to credential = \"managed-identity\", not \"{}\"",
                    self.credential
                ),
            );
        }
        if let Some(host) = &self.authority_host {
            if !host.starts_with("https://") {
                add(
                    "authority_host",
                    format!("must be an https:// URL, got {host:?}"),
                );
            }
        }
        if let Some(cs) = &self.connection_string {
            if let Err(e) = ConnectionString::parse(cs) {
                add("connection_string", e);
            }
        }
        out
    }

    /// [`AzureOptions::problems`] as one line each.
    pub fn problem_lines(&self) -> Vec<String> {
        self.problems()
            .into_iter()
            .map(|(k, m)| format!("{k}: {m}"))
            .collect()
    }

    /// The connection string from the settings, else from `AZURE_STORAGE_CONNECTION_STRING`.
    pub(crate) fn connection_string(&self) -> Result<Option<ConnectionString>, String> {
        let text = match &self.connection_string {
            Some(s) => Zeroizing::new(s.clone()),
            None => match std::env::var(CONNECTION_STRING_ENV) {
                Ok(s) if !s.trim().is_empty() => Zeroizing::new(s),
                _ => return Ok(None),
            },
        };
        ConnectionString::parse(&text).map(Some)
    }
}

// --- transport ----------------------------------------------------------------------------

/// Time limits for one HTTP request and its retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Whole request: connect, send, headers and body.
    pub request_timeout: Duration,
    /// Extra attempts after the first, for transient failures (5xx, 429, resets).
    pub retries: u32,
    /// No retry starts after this much time since the first attempt.
    pub total: Duration,
}

impl Budget {
    /// The lease path: one attempt bounded by `op_timeout`; the daemon's own loop retries
    /// transient failures until its fence deadline.
    pub fn lease_path(op_timeout: Duration) -> Self {
        Self {
            request_timeout: op_timeout,
            retries: 0,
            total: op_timeout,
        }
    }

    /// One-shot tools (orchestrator, on-call commands): a few retries, honouring
    /// `Retry-After`, within half a minute.
    pub fn interactive() -> Self {
        Self {
            request_timeout: Duration::from_secs(15),
            retries: 4,
            total: Duration::from_secs(30),
        }
    }
}

/// How long an idle pooled connection is kept (see `transport`).
const POOL_IDLE: Duration = Duration::from_secs(4);

/// The longest a TCP and TLS connect may take, whatever the request budget.
const MAX_CONNECT: Duration = Duration::from_secs(5);

/// One reqwest client for the SDK, built as the module docs describe.
pub(crate) fn transport(budget: Budget, ca_file: Option<&Path>) -> Result<Transport, String> {
    let client = crate::net::https_client_builder(
        ca_file,
        budget.request_timeout.min(MAX_CONNECT),
        budget.request_timeout,
    )
    // Without a CA file, the one failure is an empty trust store: name the setting.
    .map_err(|e| match ca_file {
        None => format!("{e} (azure.ca_file)"),
        Some(_) => e,
    })?
    // Below the 5 s after which the storage emulator drops idle keep-alive connections
    // without notice: a pooled connection it has closed would fail the next renew.
    .pool_idle_timeout(POOL_IDLE)
    .build()
    .map_err(|e| format!("HTTP client set-up failed: {}", redact(&e.to_string())))?;
    Ok(Transport::new(Arc::new(client)))
}

/// SDK client options with our transport and retry budget.
pub(crate) fn client_options(
    budget: Budget,
    ca_file: Option<&Path>,
) -> Result<ClientOptions, String> {
    let retry = if budget.retries == 0 {
        RetryOptions::none()
    } else {
        RetryOptions::exponential(ExponentialRetryOptions {
            initial_delay: azure_core::time::Duration::milliseconds(250),
            max_retries: budget.retries,
            max_total_elapsed: to_time(budget.total),
            max_delay: azure_core::time::Duration::seconds(8),
        })
    };
    Ok(ClientOptions {
        transport: Some(transport(budget, ca_file)?),
        retry,
        ..Default::default()
    })
}

fn to_time(d: Duration) -> azure_core::time::Duration {
    azure_core::time::Duration::milliseconds(d.as_millis().min(i64::MAX as u128) as i64)
}

// --- credentials --------------------------------------------------------------------------

/// The Entra ID credential the settings name, fetching tokens within the same `budget` as
/// the store calls that need them: a token fetched inside a renew must not outlast it.
pub(crate) fn credential(
    opts: &AzureOptions,
    budget: Budget,
) -> Result<Arc<dyn TokenCredential>, String> {
    let problems = opts.problem_lines();
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let mut client_options = client_options(budget, opts.ca_file.as_deref())?;
    if let Some(host) = &opts.authority_host {
        let mut custom = CustomConfiguration::default();
        custom.authority_host = host.trim_end_matches('/').to_string();
        client_options.cloud = Some(Arc::new(CloudConfiguration::Custom(custom)));
    }
    let fail = |what: &str, e: azure_core::Error| format!("{what}: {}", describe(&e));
    Ok(match opts.credential {
        CredentialKind::ManagedIdentity => {
            let options = ManagedIdentityCredentialOptions {
                user_assigned_id: opts
                    .managed_identity_client_id
                    .clone()
                    .map(UserAssignedId::ClientId),
                client_options,
            };
            ManagedIdentityCredential::new(Some(options))
                .map_err(|e| fail("managed identity credential", e))?
        }
        CredentialKind::DeveloperTools => DeveloperToolsCredential::new(None)
            .map_err(|e| fail("developer tools credential", e))?,
        CredentialKind::ClientSecret => {
            let (Some(tenant), Some(client), Some(file)) = (
                opts.tenant_id.as_deref(),
                opts.client_id.clone(),
                opts.client_secret_file.as_deref(),
            ) else {
                unreachable!("problems() checked the client-secret settings");
            };
            let secret = fsutil::read_password_file(file)
                .map_err(|e| format!("azure.client_secret_file: {e}"))?;
            let secret = std::str::from_utf8(&secret)
                .map_err(|_| {
                    format!(
                        "azure.client_secret_file {} is not UTF-8 text",
                        file.display()
                    )
                })?
                .to_string();
            let options = ClientSecretCredentialOptions { client_options };
            ClientSecretCredential::new(tenant, client, Secret::new(secret), Some(options))
                .map_err(|e| fail("client secret credential", e))?
        }
    })
}

// --- the storage emulator's connection string ---------------------------------------------

/// The account name and key Azurite ships with (published in Azure's emulator docs).
const DEV_ACCOUNT: &str = "devstoreaccount1";
const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const DEV_BLOB_ENDPOINT: &str = "http://127.0.0.1:10000/devstoreaccount1";

/// An Azure Storage connection string, restricted to what the emulator needs.
#[derive(Clone)]
pub(crate) struct ConnectionString {
    pub(crate) account: String,
    pub(crate) key: Zeroizing<Vec<u8>>,
    pub(crate) blob_endpoint: String,
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionString")
            .field("account", &self.account)
            .field("key", &"<redacted>")
            .field("blob_endpoint", &self.blob_endpoint)
            .finish()
    }
}

impl ConnectionString {
    /// Parses `UseDevelopmentStorage=true` or
    /// `[DefaultEndpointsProtocol=http;]AccountName=…;AccountKey=…;BlobEndpoint=…`.
    /// Errors never quote the string: it holds the key.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut account = None;
        let mut key = None;
        let mut endpoint = None;
        let mut protocol = None;
        let mut suffix = None;
        let mut dev = false;
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                return Err("connection string has a part without `=`".into());
            };
            match k.trim() {
                "UseDevelopmentStorage" => dev = v.trim().eq_ignore_ascii_case("true"),
                "DevelopmentStorageProxyUri" => {
                    return Err("DevelopmentStorageProxyUri is not supported".into())
                }
                "AccountName" => account = Some(v.trim().to_string()),
                "AccountKey" => key = Some(Zeroizing::new(v.trim().to_string())),
                "BlobEndpoint" => endpoint = Some(v.trim().trim_end_matches('/').to_string()),
                "DefaultEndpointsProtocol" => protocol = Some(v.trim().to_string()),
                "EndpointSuffix" => suffix = Some(v.trim().to_string()),
                "SharedAccessSignature" => {
                    return Err(
                        "SharedAccessSignature connection strings are not supported; give AccountName and AccountKey"
                            .into(),
                    )
                }
                // Other services' endpoints do not concern the blob backend.
                "QueueEndpoint" | "TableEndpoint" | "FileEndpoint" => {}
                other => return Err(format!("unknown connection string key {other:?}")),
            }
        }
        if dev {
            return Ok(Self {
                account: DEV_ACCOUNT.into(),
                key: Zeroizing::new(
                    azure_core::base64::decode(DEV_KEY).expect("the emulator key is base64"),
                ),
                blob_endpoint: DEV_BLOB_ENDPOINT.into(),
            });
        }
        let account = account.ok_or("connection string has no AccountName")?;
        let key = key.ok_or("connection string has no AccountKey")?;
        let key = Zeroizing::new(
            azure_core::base64::decode(key.as_bytes())
                .map_err(|_| "connection string's AccountKey is not base64".to_string())?,
        );
        let blob_endpoint = match (endpoint, suffix) {
            (Some(e), _) => e,
            (None, Some(suffix)) => format!(
                "{}://{account}.blob.{suffix}",
                protocol.as_deref().unwrap_or("https")
            ),
            (None, None) => format!(
                "{}://{account}.blob.core.windows.net",
                protocol.as_deref().unwrap_or("https")
            ),
        };
        Ok(Self {
            account,
            key,
            blob_endpoint,
        })
    }
}

pub(crate) use crate::net::is_loopback;

// --- errors -------------------------------------------------------------------------------

/// What a failed SDK call amounts to, for the backends' error mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The HTTP status, when the service answered.
    pub(crate) status: Option<u16>,
    /// The service's error code (`x-ms-error-code` or the JSON body's `error.code`).
    pub(crate) code: Option<String>,
    /// Worth retrying: no answer (connect, reset, timeout), 408, 429 or 5xx.
    pub(crate) transient: bool,
    /// One line for people, with any URL query (a SAS) removed.
    pub(crate) message: String,
}

pub(crate) fn failure(e: &azure_core::Error) -> Failure {
    match e.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => {
            let code = u16::from(*status);
            Failure {
                status: Some(code),
                code: error_code
                    .clone()
                    .filter(|c| !c.chars().all(|c| c.is_ascii_digit())),
                transient: code == 408 || code == 429 || code >= 500,
                message: describe(e),
            }
        }
        // No answer to classify: a credential or a response we cannot read is not worth
        // retrying; connection and I/O failures (timeouts, resets) are.
        kind => Failure {
            status: None,
            code: None,
            transient: !matches!(kind, ErrorKind::Credential | ErrorKind::DataConversion),
            message: describe(e),
        },
    }
}

/// The error and its causes on one line, each cause once, with URL queries redacted.
pub(crate) fn describe(e: &azure_core::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut push = |s: String| {
        let s = redact(s.trim());
        if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    };
    push(e.to_string());
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        push(s.to_string());
        source = s.source();
    }
    let mut line = parts.join(": ").replace(['\n', '\r'], " ");
    if line.len() > 600 {
        let mut cut = 600;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    line
}

/// Removes the query of every URL in `text`: a SAS lives there (`sig=`), and nothing in a
/// query helps a reader. Also drops the SDK's troubleshooting link noise.
pub(crate) fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        // Copy up to the end of the host part, then skip any query.
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | ','))
            .unwrap_or(tail.len());
        let url = &tail[..end];
        match url.find('?') {
            Some(q) => {
                out.push_str(&url[..q]);
                out.push_str("?<query redacted>");
            }
            None => out.push_str(url),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_drops_every_query() {
        let s = "error sending request for url (http://127.0.0.1:10000/devstoreaccount1/c/b?comp=lease&sig=abc%2B) and https://x/y?sig=z";
        let r = redact(s);
        assert!(!r.contains("sig"), "{r}");
        assert!(r.contains("http://127.0.0.1:10000/devstoreaccount1/c/b?<query redacted>)"));
        assert!(r.ends_with("https://x/y?<query redacted>"));
        assert_eq!(redact("no url here"), "no url here");
    }

    #[test]
    fn connection_strings_parse_and_never_print_the_key() {
        let dev = ConnectionString::parse("UseDevelopmentStorage=true").unwrap();
        assert_eq!(dev.account, "devstoreaccount1");
        assert_eq!(dev.blob_endpoint, "http://127.0.0.1:10000/devstoreaccount1");
        assert_eq!(dev.key.len(), 64);
        let cs = ConnectionString::parse(&format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};BlobEndpoint=http://127.0.0.1:4567/devstoreaccount1/;"
        ))
        .unwrap();
        assert_eq!(cs.blob_endpoint, "http://127.0.0.1:4567/devstoreaccount1");
        assert!(!format!("{cs:?}").contains("Eby8"));
        let e = ConnectionString::parse("AccountName=a;AccountKey=!!notbase64").unwrap_err();
        assert!(!e.contains("notbase64"), "{e}");
        assert!(ConnectionString::parse("AccountName=a").is_err());
        assert!(ConnectionString::parse("Bogus=1").is_err());
        let opts = AzureOptions {
            connection_string: Some("UseDevelopmentStorage=true".into()),
            ..Default::default()
        };
        assert!(!format!("{opts:?}").contains("UseDevelopment"));
    }

    #[test]
    fn settings_problems_name_their_keys() {
        let opts = AzureOptions {
            credential: CredentialKind::ClientSecret,
            ..Default::default()
        };
        let p = opts.problem_lines().join("\n");
        for key in [
            "azure.tenant_id",
            "azure.client_id",
            "azure.client_secret_file",
        ] {
            assert!(p.contains(key), "{p}");
        }
        let opts = AzureOptions {
            tenant_id: Some("t".into()),
            authority_host: Some("http://x".into()),
            ..Default::default()
        };
        let p = opts.problem_lines().join("\n");
        assert!(p.contains("azure.tenant_id: applies only"), "{p}");
        assert!(p.contains("azure.authority_host: must be an https"), "{p}");
        assert!(AzureOptions::default().problems().is_empty());
    }

    fn read(text: &str) -> (Option<AzureOptions>, Vec<String>) {
        let mut report = Report::default();
        let table = crate::config::parse(text).unwrap();
        let opts = AzureOptions::read(&mut report, "azure", Section::read(table));
        let lines = report.problems().iter().map(ToString::to_string).collect();
        (opts, lines)
    }

    #[test]
    fn the_table_is_read_setting_by_setting_and_every_problem_named() {
        let (opts, lines) = read("credential = \"developer-tools\"\nca_file = \"/ca.pem\"\n");
        assert_eq!(lines, Vec::<String>::new());
        let opts = opts.unwrap();
        assert_eq!(opts.credential, CredentialKind::DeveloperTools);
        assert_eq!(opts.ca_file.as_deref(), Some(Path::new("/ca.pem")));
        assert_eq!(read("").0, Some(AzureOptions::default()));

        let (opts, lines) = read("credential = 1\nclient_idd = \"c\"\nca_file = [\"a\"]\n");
        assert_eq!(opts, None);
        assert_eq!(
            lines,
            [
                "azure.credential: must be one of managed-identity, developer-tools, client-secret, not an integer",
                "azure.ca_file: must be a string, not an array",
                "azure.client_idd: unknown setting (did you mean client_id?)",
            ]
        );
    }
}
