//! `orchestrator bootnodes`: the live bootnode list, from the lease store. Each `leased`
//! holder with `[client] enode` registers its client's enode in its lease's metadata while
//! it holds (`shared::enode`); the enodes of the held leases are printed in the forms the
//! clients take.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use shared::enode::{self, Form};
use shared::spec::LeaseStoreSpec;

use crate::exit::Failure;

#[derive(Debug, Args)]
pub(crate) struct BootnodesArgs {
    /// The lease store: sqlite:PATH or blob:https://ACCOUNT.blob.core.windows.net/CONTAINER.
    #[arg(long, value_name = "SPEC")]
    leases: String,
    /// A TOML file whose `[azure]` table says how to reach a blob: store (as for init).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print only this form: bootnodes (geth's and Besu's --bootnodes), static-nodes
    /// (a static-nodes.json array) or nethermind (--Network.StaticPeers).
    #[arg(long, value_enum)]
    form: Option<FormArg>,
    /// Print one JSON document: every identity's enode and every form.
    #[arg(long, conflicts_with = "form")]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormArg {
    Bootnodes,
    StaticNodes,
    Nethermind,
}

impl From<FormArg> for Form {
    fn from(f: FormArg) -> Self {
        match f {
            FormArg::Bootnodes => Form::Bootnodes,
            FormArg::StaticNodes => Form::StaticNodes,
            FormArg::Nethermind => Form::Nethermind,
        }
    }
}

pub(crate) fn run(args: BootnodesArgs) -> Result<(), Failure> {
    let spec: LeaseStoreSpec = args
        .leases
        .parse()
        .map_err(|e| Failure::usage(format!("--leases {}: {e}", args.leases)))?;
    let azure = crate::network_cmd::azure_options(args.config.as_deref())?;
    let store = spec
        .open(&azure)
        .map_err(|e| Failure::no_input(format!("--leases {}: {e}", args.leases)))?;
    let runtime = crate::runtime()?;
    let records = runtime.block_on(store.list()).map_err(|e| {
        Failure::new(
            shared::exit::Status::Unavailable,
            format!("--leases {}: {e}", args.leases),
        )
    })?;
    let live = enode::live(&records);
    let enodes: Vec<String> = live.iter().map(|(_, e)| e.clone()).collect();
    let text = if args.json {
        let mut doc = serde_json::json!({
            "enodes": live.iter().map(|(id, e)| serde_json::json!({"identity": id.as_str(), "enode": e})).collect::<Vec<_>>(),
        });
        for form in Form::ALL {
            doc[form.as_str()] = form.render(&enodes).into();
        }
        serde_json::to_string_pretty(&doc).expect("JSON")
    } else if let Some(form) = args.form {
        Form::from(form).render(&enodes)
    } else if enodes.is_empty() {
        "no held lease has registered an enode (leased's [client] enode)".to_string()
    } else {
        let mut out = String::new();
        for (id, e) in &live {
            out.push_str(&format!("{id}  {e}\n"));
        }
        for form in Form::ALL {
            out.push_str(&format!(
                "\n# {}\n{}\n",
                form.as_str(),
                form.render(&enodes)
            ));
        }
        out.trim_end().to_string()
    };
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .map_err(|e| Failure::io(format!("cannot write to stdout: {e}")))
}
