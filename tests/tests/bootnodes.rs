//! The bootnode registrar on the lease store (issue 14 §3): 3 `leased` daemons on one
//! SQLite store, each with `[client] enode` naming its own port. `orchestrator bootnodes`
//! lists the enodes of the held leases. A holder killed with kill -9 drops out within D,
//! its replacement on another port comes in, and the killed one's enode never comes back;
//! a holder stopped with SIGTERM drops out at once (it removes its enode as it releases).

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use integration_tests::cluster::{wait_for, Cluster, ClusterSpec};

const D: Duration = Duration::from_secs(15);

/// The enode of VM `n`: the identity's node id, its own port.
fn enode_line(n: u16) -> String {
    format!("enode = \"enode://{{node_id}}@127.0.0.1:{}\"\n", 30300 + n)
}

fn spawn(cluster: &mut Cluster, n: u16) {
    let daemon = cluster.spawn_daemon_edited(&format!("vm-{n}"), |text| {
        text.replacen("[client]\n", &format!("[client]\n{}", enode_line(n)), 1)
    });
    cluster.daemons.push(daemon);
}

/// The ports of the live enodes, as `orchestrator bootnodes --json` lists them.
fn live_ports(cluster: &Cluster) -> BTreeSet<u16> {
    let leases = format!("sqlite:{}", cluster.dir.path().join("leases.db").display());
    let out = Command::new(integration_tests::bin_path("orchestrator-host"))
        .args(["bootnodes", "--leases", &leases, "--json"])
        .output()
        .expect("run orchestrator bootnodes");
    assert!(
        out.status.success(),
        "orchestrator bootnodes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let enodes = doc["enodes"].as_array().expect("an enodes array");
    let ports: BTreeSet<u16> = enodes
        .iter()
        .map(|e| {
            let url = e["enode"].as_str().expect("an enode");
            url.rsplit(':').next().unwrap().parse().expect("a port")
        })
        .collect();
    assert_eq!(ports.len(), enodes.len(), "one enode per port: {doc}");
    ports
}

#[test]
fn the_live_bootnode_list_follows_the_holders_and_never_shows_a_dead_one_again() {
    let mut cluster = Cluster::start(ClusterSpec {
        identities: 3,
        daemons: 0,
        duration_secs: D.as_secs(),
        ..ClusterSpec::default()
    });
    for n in 1..=3 {
        spawn(&mut cluster, n);
    }
    let all: BTreeSet<u16> = [30301, 30302, 30303].into();
    wait_for(Duration::from_secs(20), || {
        (live_ports(&cluster) == all).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "not all 3 enodes live: {:?}\n{}",
            live_ports(&cluster),
            cluster.diagnostics()
        )
    });
    // The node id is the identity's public key: every enode is a different identity's.
    let leases = format!("sqlite:{}", cluster.dir.path().join("leases.db").display());
    let forms = Command::new(integration_tests::bin_path("orchestrator-host"))
        .args(["bootnodes", "--leases", &leases, "--form", "bootnodes"])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&forms.stdout).trim().to_string();
    assert!(line.starts_with("--bootnodes=enode://"), "{line}");
    assert_eq!(line.matches("enode://").count(), 3, "{line}");

    // kill -9 of vm-2; a replacement on port 30304 waits as a standby.
    let killed = Instant::now();
    cluster.daemon("vm-2").kill9();
    spawn(&mut cluster, 4);
    let mut replaced_at = None;
    let mut after_replacement = Vec::new();
    let deadline = killed + D + Duration::from_secs(10);
    while Instant::now() < deadline {
        let ports = live_ports(&cluster);
        if replaced_at.is_none() && ports.contains(&30304) {
            replaced_at = Some(killed.elapsed());
        }
        if replaced_at.is_some() {
            after_replacement.push(ports.clone());
        }
        if ports.contains(&30302) {
            // A dead holder counts until its lease lapses, D after its last renew.
            assert!(
                killed.elapsed() < D + Duration::from_secs(1),
                "the killed holder's enode is still live {:?} after the kill",
                killed.elapsed()
            );
        }
        if after_replacement.len() >= 20 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let replaced_at = replaced_at.unwrap_or_else(|| {
        panic!(
            "the replacement's enode never came in\n{}",
            cluster.diagnostics()
        )
    });
    assert!(replaced_at <= D + Duration::from_secs(3), "{replaced_at:?}");
    for ports in &after_replacement {
        assert!(!ports.contains(&30302), "a dead enode came back: {ports:?}");
    }
    assert_eq!(
        after_replacement.last().unwrap(),
        &BTreeSet::from([30301, 30303, 30304])
    );
    eprintln!(
        "BOOTNODE_FIGURES kill -9: replacement listed {} ms after the kill (D = {} s)",
        replaced_at.as_millis(),
        D.as_secs()
    );

    // SIGTERM of vm-1: it removes its enode as it releases, so it drops out at once.
    let stopped = Instant::now();
    cluster.daemon("vm-1").term();
    wait_for(Duration::from_secs(5), || {
        (!live_ports(&cluster).contains(&30301)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "vm-1's enode stayed after its SIGTERM\n{}",
            cluster.diagnostics()
        )
    });
    eprintln!(
        "BOOTNODE_FIGURES SIGTERM: gone from the list {} ms after the signal",
        stopped.elapsed().as_millis()
    );
    cluster.assert_no_overlap();
}
