//! The daemon as it runs on VMs: real `leased` processes on one SQLite lease store, each
//! supervising a stand-in client, 3 identities and 4 daemons (one standby). Every scenario
//! ends with the overlap checker over the clients' sign log: for each identity, the signing
//! intervals of different daemons never overlap.
//!
//! The scenarios run one at a time (they measure take-over latencies on a small machine).

use std::sync::Mutex;
use std::time::Duration;

use integration_tests::cluster::{mono_now, wait_for, Cluster, ClusterSpec};

static SERIAL: Mutex<()> = Mutex::new(());

const D: Duration = Duration::from_secs(15);
/// Default margin: D/3.
const M: Duration = Duration::from_secs(5);

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the cluster and waits until every identity is signing on its own node.
fn running(spec: ClusterSpec) -> (Cluster, std::collections::BTreeMap<String, String>) {
    let cluster = Cluster::start(spec);
    let signers = cluster.wait_all_signing(0, Duration::from_secs(20));
    (cluster, signers)
}

/// The first identity's address and its signer.
fn first(signers: &std::collections::BTreeMap<String, String>) -> (String, String) {
    let (a, n) = signers.iter().next().expect("at least one identity");
    (a.clone(), n.clone())
}

fn secs(nanos: u64) -> f64 {
    Duration::from_nanos(nanos).as_secs_f64()
}

#[test]
fn kill_9_of_a_holder_daemon_hands_its_identity_to_the_standby_within_d_plus_2s() {
    let _serial = serial();
    let (mut cluster, signers) = running(ClusterSpec::default());
    let (address, victim) = first(&signers);
    let killed_at = mono_now();
    cluster.daemon(&victim).kill9();
    let taken = cluster.wait_taken_over(&address, &victim, killed_at, D + Duration::from_secs(4));
    let latency = secs(taken.at - killed_at);
    assert!(
        latency <= (D + Duration::from_secs(2)).as_secs_f64(),
        "take-over after kill -9 took {latency:.3} s"
    );
    // The killed daemon's client stopped at once: its guard saw the daemon's pipe close.
    let last = cluster
        .sign_lines()
        .into_iter()
        .filter(|l| l.node == victim)
        .map(|l| l.at)
        .max()
        .unwrap();
    assert!(
        secs(last.saturating_sub(killed_at)) < 1.0,
        "the killed daemon's client signed on for {:.3} s",
        secs(last.saturating_sub(killed_at))
    );
    cluster.assert_no_overlap();
}

#[test]
fn sigterm_of_a_holder_fences_releases_and_the_standby_takes_over_within_2s() {
    let _serial = serial();
    let (mut cluster, signers) = running(ClusterSpec::default());
    let (address, victim) = first(&signers);
    let stopped_at = mono_now();
    cluster.daemon(&victim).term();
    let taken = cluster.wait_taken_over(&address, &victim, stopped_at, Duration::from_secs(5));
    let latency = secs(taken.at - stopped_at);
    assert!(latency <= 2.0, "graceful take-over took {latency:.3} s");
    let code = cluster.daemon(&victim).wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{}", cluster.diagnostics());
    cluster.assert_no_overlap();
}

#[test]
fn a_frozen_holder_is_fenced_by_its_guard_and_never_signs_again_after_sigcont() {
    let _serial = serial();
    let (mut cluster, signers) = running(ClusterSpec::default());
    let (address, victim) = first(&signers);
    let frozen_at = mono_now();
    cluster.daemon(&victim).stop();
    let taken = cluster.wait_taken_over(&address, &victim, frozen_at, D + Duration::from_secs(4));
    // The guard stopped the client by F = t_ok + D − M, and t_ok was before the freeze.
    let last = cluster
        .sign_lines()
        .into_iter()
        .filter(|l| l.node == victim)
        .map(|l| l.at)
        .max()
        .unwrap();
    let bound = (D - M + Duration::from_millis(300)).as_secs_f64();
    assert!(
        secs(last.saturating_sub(frozen_at)) <= bound,
        "the frozen daemon's client signed {:.3} s after the freeze (bound {bound} s)",
        secs(last.saturating_sub(frozen_at))
    );
    assert!(
        last < taken.at,
        "the standby started before the old client stopped"
    );
    // Held past D, then thawed: the old daemon must not sign again.
    std::thread::sleep(D.saturating_sub(Duration::from_nanos(mono_now() - frozen_at)));
    let thawed_at = mono_now();
    cluster.daemon(&victim).cont();
    std::thread::sleep(Duration::from_secs(4));
    let after: Vec<_> = cluster
        .sign_lines()
        .into_iter()
        .filter(|l| l.node == victim && l.at > thawed_at)
        .collect();
    assert!(
        after.is_empty(),
        "the thawed daemon signed again: {after:?}"
    );
    assert!(
        cluster.daemon(&victim).is_running(),
        "{}",
        cluster.diagnostics()
    );
    let log = cluster.daemon(&victim).log_text();
    assert!(
        log.lines()
            .rev()
            .take(10)
            .any(|l| l.contains("state seeking")),
        "the thawed daemon did not go back to seeking:\n{log}"
    );
    assert!(
        !cluster.holders().values().any(|n| *n == victim),
        "the thawed daemon holds a lease: {:?}",
        cluster.holders()
    );
    cluster.assert_no_overlap();
}

#[test]
fn a_killed_client_is_restarted_and_a_crash_loop_gives_the_identity_up() {
    let _serial = serial();
    let spec = ClusterSpec {
        client_extra:
            "restart_backoff_millis = 200\ncrash_loop_max_exits = 3\ncrash_loop_window_secs = 60\n"
                .into(),
        ..ClusterSpec::default()
    };
    let (cluster, signers) = running(spec);
    let (address, victim) = first(&signers);
    let client_pid = |since: u64| {
        wait_for(Duration::from_secs(5), || {
            cluster
                .sign_lines()
                .into_iter()
                .rev()
                .find(|l| l.address == address && l.node == victim && l.at > since)
                .map(|l| l.pid)
        })
    };
    // Two kills: restarted each time by the same daemon, with a new pid.
    let mut since = 0;
    for round in 1..=2 {
        let pid = client_pid(since)
            .unwrap_or_else(|| panic!("round {round}: no client\n{}", cluster.diagnostics()));
        since = mono_now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let restarted = wait_for(Duration::from_secs(5), || {
            cluster
                .sign_lines()
                .into_iter()
                .find(|l| l.address == address && l.at > since && l.pid != pid)
        })
        .unwrap_or_else(|| {
            panic!(
                "round {round}: the client was not restarted\n{}",
                cluster.diagnostics()
            )
        });
        assert_eq!(restarted.node, victim, "round {round}: restarted elsewhere");
        since = restarted.at;
    }
    // The third exit within the window: the identity goes to the standby.
    let pid = client_pid(since).unwrap();
    let killed_at = mono_now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let taken = cluster.wait_taken_over(&address, &victim, killed_at, Duration::from_secs(8));
    assert_ne!(taken.node, victim);
    assert!(
        cluster.daemon_log(&victim).contains("crash_loop"),
        "{}",
        cluster.diagnostics()
    );
    cluster.assert_no_overlap();
}

#[test]
fn bad_configuration_lists_every_problem_and_exits_64() {
    let d = tempfile::tempdir().unwrap();
    let runtime = d.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // A margin is judged against a valid D, so the two lease problems need two files; each
    // lists every other problem too.
    for (lease, lease_problem) in [
        ("duration_secs = 10", "lease.duration_secs"),
        ("duration_secs = 20\nmargin_secs = 10", "lease.margin_secs"),
    ] {
        let config = d.path().join("bad.toml");
        std::fs::write(
            &config,
            format!(
                "runtime_dir = {:?}\n[store]\nleases = \"sqlite:{}\"\nsecrets = \"dir:{}\"\n\
                 [identity]\npool = \"m0-\"\n[lease]\n{lease}\n[client]\nformat = \"raw-hex\"\n",
                runtime.display().to_string(),
                d.path().join("l.db").display(),
                d.path().join("s").display()
            ),
        )
        .unwrap();
        let out = std::process::Command::new(integration_tests::bin_path("leased-host"))
            .args(["run", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{err}");
        for needle in [lease_problem, "client.command", "runtime_dir"] {
            assert!(err.contains(needle), "{needle} not reported:\n{err}");
        }
    }
    assert!(
        !d.path().join("l.db").exists(),
        "a bad config touched the store"
    );
}

#[test]
fn one_daemon_per_runtime_directory_and_the_http_endpoints_tell_the_truth() {
    let _serial = serial();
    let spec = ClusterSpec {
        identities: 1,
        daemons: 2,
        http: true,
        ..ClusterSpec::default()
    };
    let (mut cluster, signers) = running(spec);
    let holder = signers.values().next().unwrap().clone();
    let standby = if holder == "vm-1" { "vm-2" } else { "vm-1" };
    let get = |c: &mut Cluster, node: &str, path: &str| {
        let addr = c.daemon(node).http.unwrap();
        integration_tests::cluster::http_get(addr, path)
    };
    wait_for(Duration::from_secs(5), || {
        get(&mut cluster, &holder, "/readyz")
    })
    .expect("the holder is ready");
    assert!(
        get(&mut cluster, standby, "/readyz").is_none(),
        "a standby is not ready"
    );
    assert!(get(&mut cluster, standby, "/healthz").is_some());
    let status: serde_json::Value =
        serde_json::from_str(&get(&mut cluster, &holder, "/status").unwrap()).unwrap();
    assert_eq!(status["state"], "holding");
    assert_eq!(status["identity"], "m0-v0");
    assert_eq!(
        status["address"].as_str().unwrap().to_ascii_lowercase(),
        *signers.keys().next().unwrap()
    );
    assert_eq!(status["epoch"], 1);
    let fence_in = status["fence_deadline_in_secs"].as_f64().unwrap();
    assert!(
        fence_in > 0.0 && fence_in <= (D - M).as_secs_f64(),
        "{status}"
    );
    let metrics = get(&mut cluster, &holder, "/metrics").unwrap();
    assert!(
        metrics.contains("leased_state{state=\"holding\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("leased_acquisitions_total 1"), "{metrics}");

    // A second daemon on the holder's runtime directory refuses to run.
    let config = cluster.daemon(&holder).config.clone();
    let out = std::process::Command::new(integration_tests::bin_path("leased-host"))
        .args(["run", "--config"])
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("lock"));
    cluster.assert_no_overlap();
}

#[test]
fn with_an_engine_signer_rpc_the_key_is_set_once_running_no_file_is_written_and_it_is_cleared_before_the_client_stops(
) {
    let _serial = serial();
    let (rpc, calls) = integration_tests::fake_rpc::start();
    let spec = ClusterSpec {
        identities: 1,
        daemons: 1,
        engine_signer_rpc: Some(rpc.to_string()),
        ..ClusterSpec::default()
    };
    let (mut cluster, signers) = running(spec);
    let (address, node) = signers.into_iter().next().unwrap();
    let set = wait_for(Duration::from_secs(5), || {
        calls
            .lock()
            .unwrap()
            .iter()
            .find(|c| c.method == "parity_setEngineSignerSecret")
            .cloned()
    })
    .expect("parity_setEngineSignerSecret was never called");
    let key = shared::ValidatorKey::from_hex(&set.param).expect("the set call carries a key");
    assert_eq!(key.address().to_string().to_ascii_lowercase(), address);
    assert!(
        !cluster.daemon_log(&node).contains(&set.param[2..34]),
        "the key reached the daemon's log"
    );
    // One way in: the key went over the RPC, and no key file was written.
    let files: Vec<String> = std::fs::read_dir(cluster.runtime_dir(&node))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "leased.lock")
        .collect();
    assert!(files.is_empty(), "files beside the RPC hand-off: {files:?}");

    cluster.daemon(&node).term();
    assert_eq!(
        cluster.daemon(&node).wait_exit(Duration::from_secs(10)),
        Some(0)
    );
    let clear = calls
        .lock()
        .unwrap()
        .iter()
        .find(|c| c.method == "parity_clearEngineSigner")
        .cloned()
        .expect("parity_clearEngineSigner was never called");
    let log = std::fs::read_to_string(&cluster.sign_log).unwrap();
    let stopped: u64 = log
        .lines()
        .rev()
        .filter(|l| l.starts_with("stopped with"))
        .find_map(|l| l.split_whitespace().nth(4)?.parse().ok())
        .expect("the client logged its stop");
    assert!(
        clear.at <= stopped,
        "the engine signer was cleared after the client got SIGTERM"
    );
    cluster.assert_no_overlap();
}

#[test]
fn systemd_hears_ready_and_the_state_and_the_key_file_is_private_while_held() {
    use std::os::unix::fs::PermissionsExt;
    let _serial = serial();
    let d = tempfile::tempdir().unwrap();
    let socket_path = d.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let spec = ClusterSpec {
        identities: 1,
        daemons: 1,
        env: vec![("NOTIFY_SOCKET".into(), socket_path.display().to_string())],
        ..ClusterSpec::default()
    };
    let (mut cluster, signers) = running(spec);
    let (address, node) = first(&signers);
    let mut heard = Vec::new();
    let mut buf = [0u8; 512];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline
        && !heard
            .iter()
            .any(|m: &String| m.starts_with("STATUS=holding") && m.contains("(0x"))
    {
        if let Ok(n) = socket.recv(&mut buf) {
            // sd-notify ends each datagram with a newline, which the protocol allows.
            heard.push(String::from_utf8_lossy(&buf[..n]).trim_end().to_owned());
        }
    }
    assert!(heard.iter().any(|m| m == "READY=1"), "{heard:?}");
    let status = heard
        .iter()
        .find(|m| m.starts_with("STATUS=holding") && m.contains("(0x"))
        .unwrap_or_else(|| panic!("no holding status: {heard:?}"));
    assert!(status.contains("m0-v0"), "{status}");
    assert!(status.to_ascii_lowercase().contains(&address), "{status}");

    // The key file: 0600, in the 0700 runtime directory, while held.
    let runtime = cluster.runtime_dir(&node);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&runtime), 0o700);
    let key_file = runtime.join("validator.key");
    assert_eq!(mode(&key_file), 0o600);

    // SIGTERM: STOPPING, and the key file is gone when the daemon has exited.
    cluster.daemon(&node).term();
    assert_eq!(
        cluster.daemon(&node).wait_exit(Duration::from_secs(10)),
        Some(0)
    );
    while let Ok(n) = socket.recv(&mut buf) {
        // sd-notify ends each datagram with a newline, which the protocol allows.
        heard.push(String::from_utf8_lossy(&buf[..n]).trim_end().to_owned());
    }
    assert!(heard.iter().any(|m| m == "STOPPING=1"), "{heard:?}");
    assert!(!key_file.exists(), "the key file outlived the daemon");
    cluster.assert_no_overlap();
}

/// Every line about an identity carries it: the daemon logs inside a span of its node and,
/// while on an identity, a span of that identity and its epoch, so one grep for
/// `identity=m0-v0` finds the guard's reports and the store calls' outcomes too. And at
/// `RUST_LOG=trace`, with the stores' and HTTP crates' own events, no key reaches the log.
#[test]
fn every_line_about_an_identity_carries_it_and_trace_logs_hold_no_key() {
    let _serial = serial();
    let spec = ClusterSpec {
        env: vec![("RUST_LOG".into(), "trace".into())],
        ..ClusterSpec::default()
    };
    let (mut cluster, signers) = running(spec);
    let (address, victim) = first(&signers);
    let stopped_at = mono_now();
    cluster.daemon(&victim).term();
    cluster.wait_taken_over(&address, &victim, stopped_at, Duration::from_secs(5));
    assert_eq!(
        cluster.daemon(&victim).wait_exit(Duration::from_secs(10)),
        Some(0)
    );
    let log = cluster.daemon_log(&victim);
    let identity = log
        .lines()
        .find_map(|l| l.split("acquired ").nth(1)?.split_whitespace().next())
        .expect("the holder said what it acquired")
        .to_string();
    let tagged = format!("identity={identity}");
    // One lease span at a time, its epoch said once.
    for line in log.lines() {
        assert!(
            line.matches("lease{").count() <= 1 && line.matches("epoch=").count() <= 1,
            "nested lease spans or a repeated epoch: {line}"
        );
    }
    let daemon_lines: Vec<&str> = log.lines().filter(|l| l.contains("daemon{")).collect();
    assert!(
        daemon_lines
            .iter()
            .all(|l| l.contains(&format!("node={victim}"))),
        "a daemon line without its node:\n{log}"
    );
    for line in daemon_lines.iter().filter(|l| l.contains(&identity)) {
        assert!(
            line.contains(&tagged),
            "a line names {identity} but is not in its span: {line}"
        );
    }
    for what in [
        "guard fenced the client",
        "fencing ",
        "released ",
        "acquired ",
    ] {
        assert!(
            daemon_lines
                .iter()
                .any(|l| l.contains(what) && l.contains(&tagged)),
            "no {what:?} line carries {tagged}:\n{log}"
        );
    }
    assert!(
        daemon_lines
            .iter()
            .any(|l| l.contains(&tagged) && l.contains("epoch=")),
        "no line carries the lease's epoch:\n{log}"
    );
    // Every key of the consortium, as the `dir:` store holds it: 64 hex digits.
    let mut keys = Vec::new();
    let mut dirs = vec![cluster.dir.path().join("secrets")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("the secret store").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                keys.extend(hex_runs(&text, 64));
            }
        }
    }
    assert!(!keys.is_empty(), "no key found in the secret store");
    for key in &keys {
        assert!(
            !log.contains(key.as_str()) && !log.contains(&key[..32]),
            "key material reached the daemon's trace log"
        );
    }
}

/// Runs of exactly `len` hex digits in `text`.
fn hex_runs(text: &str, len: usize) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .filter(|run| run.len() == len)
        .map(str::to_ascii_lowercase)
        .collect()
}

/// `leased --log-format json run`: every line on stderr is one JSON object with a level and
/// a message, and at `RUST_LOG=debug` the lines about the identity carry the node's and the
/// identity's spans as fields a log shipper can index.
#[test]
fn json_logs_are_one_object_per_line_with_the_identity_spans() {
    let _serial = serial();
    let spec = ClusterSpec {
        identities: 1,
        daemons: 1,
        env: vec![("RUST_LOG".into(), "debug".into())],
        daemon_args: vec!["--log-format".into(), "json".into()],
        ..ClusterSpec::default()
    };
    let (mut cluster, signers) = running(spec);
    let (_, node) = first(&signers);
    // A renew is a debug event: wait for the first (R after the acquire).
    wait_for(Duration::from_secs(15), || {
        cluster
            .daemon_log(&node)
            .contains("renewed m0-v0")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no renew logged:\n{}", cluster.daemon_log(&node)));
    cluster.daemon(&node).term();
    assert_eq!(
        cluster.daemon(&node).wait_exit(Duration::from_secs(10)),
        Some(0)
    );
    let log = cluster.daemon_log(&node);
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        events.iter().any(|e| e["level"] == "DEBUG"),
        "RUST_LOG=debug showed no debug event:\n{log}"
    );
    for e in &events {
        assert!(e["level"].is_string(), "no level: {e}");
        assert!(e["fields"]["message"].is_string(), "no message: {e}");
    }
    let in_span = |e: &serde_json::Value, name: &str, field: &str, value: &str| {
        e["spans"].as_array().is_some_and(|spans| {
            spans
                .iter()
                .any(|s| s["name"] == name && s[field].as_str() == Some(value))
        })
    };
    let acquired = events
        .iter()
        .find(|e| {
            e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("acquired m0-v0"))
        })
        .unwrap_or_else(|| panic!("no `acquired m0-v0` event:\n{log}"));
    assert!(in_span(acquired, "daemon", "node", &node), "{acquired}");
    assert!(
        in_span(acquired, "lease", "identity", "m0-v0"),
        "{acquired}"
    );
    assert!(
        events
            .iter()
            .filter(|e| in_span(e, "lease", "identity", "m0-v0"))
            .any(|e| e["level"] == "DEBUG"),
        "no debug event inside the identity's span:\n{log}"
    );
}
