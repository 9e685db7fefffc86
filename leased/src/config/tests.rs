use std::os::unix::fs::PermissionsExt;

use super::*;

/// The example from the issue, verbatim.
const EXAMPLE: &str = r#"
node = "vm-1"                      # optional; default: the hostname
runtime_dir = "/run/leased"        # lock file, key file; must be private (0700)
[store]
leases  = "sqlite:/var/lib/leased/leases.db"
secrets = "dir:/var/lib/leased/secrets"
[identity]
pool = "m0-"
[lease]
duration_secs = 15                 # D, 15–60
# renew_every_secs, margin_secs, standby_poll_millis: defaults from docs/architecture.md
[client]
format  = "raw-hex"                # or "keystore-v3" (then password_file)
command = ["besu", "--node-private-key-file={key_file}"]
# engine_signer_rpc = "http://127.0.0.1:8545"
[http]
listen = "127.0.0.1:9797"
"#;

/// `EXAMPLE` with `key` (dotted) set to the TOML `value`, or removed when `value` is
/// `None`. A key in a section that is absent gets the section appended.
fn edit(text: &str, key: &str, value: Option<&str>) -> String {
    let (section, name) = key.rsplit_once('.').unwrap_or(("", key));
    let mut out = Vec::new();
    let mut current = String::new();
    let mut done = false;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(h) = line.strip_prefix('[') {
            current = h.trim_end_matches(']').to_string();
        }
        let is_key = line
            .split_once('=')
            .is_some_and(|(k, _)| k.trim() == name && !line.starts_with('#'));
        if current == section && is_key {
            if let Some(v) = value {
                out.push(format!("{name} = {v}"));
            }
            done = true;
            continue;
        }
        out.push(line.to_string());
        // Insert at the end of the section if the key was not there.
        let section_ends = lines.peek().is_none_or(|next| next.starts_with('['));
        if current == section && section_ends && !done {
            if let Some(v) = value {
                out.push(format!("{name} = {v}"));
            }
            done = true;
        }
    }
    if !done {
        if let Some(v) = value {
            out.push(format!("[{section}]"));
            out.push(format!("{name} = {v}"));
        }
    }
    out.join("\n") + "\n"
}

fn edits(changes: &[(&str, Option<&str>)]) -> String {
    changes
        .iter()
        .fold(EXAMPLE.to_string(), |t, (k, v)| edit(&t, k, *v))
}

fn parse(text: &str) -> Result<Config, Problems> {
    Config::parse(text, &Overrides::default())
}

fn ok(text: &str) -> Config {
    parse(text).unwrap_or_else(|p| panic!("{p}\n---\n{text}"))
}

/// The problems, as the operator reads them.
fn problems(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(c) => panic!("accepted: {c:?}\n---\n{text}"),
        Err(p) => p.as_slice().iter().map(ToString::to_string).collect(),
    }
}

fn one_problem(changes: &[(&str, Option<&str>)]) -> String {
    let p = problems(&edits(changes));
    assert_eq!(p.len(), 1, "{p:#?}");
    p.into_iter().next().unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn the_issue_example_parses_with_defaults_filled_in() {
    let c = ok(EXAMPLE);
    assert_eq!(c.node, "vm-1");
    assert_eq!(c.runtime_dir, Path::new("/run/leased"));
    assert_eq!(
        c.store.leases,
        LeaseStoreSpec::Sqlite("/var/lib/leased/leases.db".into())
    );
    assert_eq!(
        c.store.secrets,
        SecretStoreSpec::Dir("/var/lib/leased/secrets".into())
    );
    assert_eq!(
        c.identity,
        IdentityConfig {
            pool: "m0-".into(),
            quarantine: Duration::ZERO
        }
    );
    assert_eq!(
        c.lease,
        LeaseConfig {
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            margin: Duration::from_secs(5),
            standby_poll: ms(500),
            nudge_listen: Some(NudgeListen::At("127.0.0.1:0".parse().unwrap())),
        }
    );
    assert_eq!(
        c.lease_duration(),
        LeaseDuration::Fixed(Duration::from_secs(15))
    );
    assert_eq!(c.client.format, ClientFormat::RawHex);
    assert_eq!(c.client.password_file, None);
    assert_eq!(c.client.password_secret, None);
    assert_eq!(c.client.engine_signer_rpc, None);
    assert_eq!(c.client.restart_backoff, ms(1_000));
    assert_eq!(c.client.crash_loop_max_exits, 5);
    assert_eq!(c.client.crash_loop_window, Duration::from_secs(60));
    assert_eq!(c.client.fence_grace, ms(1_250));
    assert_eq!(c.client.start_timeout, Duration::from_secs(10));
    assert_eq!(
        c.client.env,
        [("PATH".to_string(), DEFAULT_CLIENT_PATH.to_string())].into()
    );
    assert_eq!(c.http.listen, "127.0.0.1:9797".parse().unwrap());
    let argv = c.client.command.render(&Substitutions {
        key_file: Path::new("/run/leased/key"),
        password_file: None,
        address: "0xabc",
    });
    assert_eq!(argv, ["besu", "--node-private-key-file=/run/leased/key"]);
}

#[test]
fn optional_settings_parse() {
    let c = ok(&edits(&[
        ("identity.quarantine_secs", Some("12")),
        ("lease.duration_secs", Some("30")),
        ("lease.renew_every_secs", Some("8")),
        ("lease.margin_secs", Some("12")),
        ("lease.standby_poll_millis", Some("250")),
        ("lease.nudge_listen", Some(r#""{host_ip}:7946""#)),
        ("client.format", Some(r#""keystore-v3""#)),
        ("client.password_file", Some(r#""/etc/leased/pw""#)),
        (
            "client.command",
            Some(r#"["geth", "--unlock={address}", "--password={password_file}"]"#),
        ),
        (
            "client.engine_signer_rpc",
            Some(r#""http://127.0.0.1:8545""#),
        ),
        ("client.restart_backoff_millis", Some("300")),
        ("client.crash_loop_max_exits", Some("3")),
        ("client.crash_loop_window_secs", Some("120")),
        ("client.fence_grace_millis", Some("6000")),
        ("http.listen", Some(r#""[::1]:9000""#)),
    ]));
    assert_eq!(c.identity.quarantine, Duration::from_secs(12));
    assert_eq!(
        c.lease,
        LeaseConfig {
            duration: Duration::from_secs(30),
            renew_every: Duration::from_secs(8),
            margin: Duration::from_secs(12),
            standby_poll: ms(250),
            nudge_listen: Some(NudgeListen::HostIp(7946)),
        }
    );
    assert_eq!(c.client.format, ClientFormat::KeystoreV3);
    assert_eq!(
        c.client.password_file.as_deref(),
        Some(Path::new("/etc/leased/pw"))
    );
    assert_eq!(
        c.client.engine_signer_rpc.as_deref(),
        Some("http://127.0.0.1:8545")
    );
    assert_eq!(c.client.restart_backoff, ms(300));
    assert_eq!(c.client.crash_loop_max_exits, 3);
    assert_eq!(c.client.crash_loop_window, Duration::from_secs(120));
    assert_eq!(c.client.fence_grace, ms(6_000));
    assert_eq!(c.http.listen, "[::1]:9000".parse().unwrap());
    let argv = c.client.command.render(&Substitutions {
        key_file: Path::new("/k"),
        password_file: Some(Path::new("/etc/leased/pw")),
        address: "0x00aa",
    });
    assert_eq!(
        argv,
        ["geth", "--unlock=0x00aa", "--password=/etc/leased/pw"]
    );
}

#[test]
fn timing_defaults_follow_d() {
    let c = ok(&edits(&[("lease.duration_secs", Some("30"))]));
    assert_eq!(
        (c.lease.renew_every, c.lease.margin, c.client.fence_grace),
        (Duration::from_secs(10), Duration::from_secs(10), ms(2_500))
    );
    let c = ok(&edits(&[("lease.duration_secs", Some("16"))]));
    assert_eq!(c.lease.renew_every, Duration::from_secs(16) / 3);
    assert_eq!(c.lease.margin, Duration::from_secs(16) / 3);
    // A wider margin shortens the default renew period to (D − M)/2.
    let c = ok(&edits(&[("lease.margin_secs", Some("7"))]));
    assert_eq!(c.lease.renew_every, Duration::from_secs(4));
}

#[test]
fn lease_duration_must_be_15_to_60() {
    assert_eq!(
        one_problem(&[("lease.duration_secs", Some("10"))]),
        "lease.duration_secs: 10 is outside 15–60"
    );
    assert_eq!(
        one_problem(&[("lease.duration_secs", Some("61"))]),
        "lease.duration_secs: 61 is outside 15–60"
    );
    ok(&edits(&[("lease.duration_secs", Some("60"))]));
    // Absent means the 15 s default.
    let c = ok(&edits(&[("lease.duration_secs", None)]));
    assert_eq!(c.lease.duration, Duration::from_secs(15));
}

#[test]
fn margin_must_be_at_least_2_s_and_below_half_of_d() {
    assert_eq!(
        one_problem(&[("lease.margin_secs", Some("8"))]),
        "lease.margin_secs: 8 must be less than D/2 = 7.5 s"
    );
    assert_eq!(
        one_problem(&[
            ("lease.duration_secs", Some("20")),
            ("lease.margin_secs", Some("10"))
        ]),
        "lease.margin_secs: 10 must be less than D/2 = 10 s"
    );
    assert_eq!(
        one_problem(&[("lease.margin_secs", Some("1"))]),
        "lease.margin_secs: 1 is below the 2 s minimum"
    );
    ok(&edits(&[("lease.margin_secs", Some("2"))]));
    ok(&edits(&[("lease.margin_secs", Some("7"))]));
}

#[test]
fn renew_period_must_leave_room_for_retries() {
    let p = one_problem(&[("lease.renew_every_secs", Some("6"))]);
    assert!(
        p.starts_with("lease.renew_every_secs: 6 is too long: it must be at most (D − M)/2 = 5 s"),
        "{p}"
    );
    ok(&edits(&[("lease.renew_every_secs", Some("5"))]));
    assert_eq!(
        one_problem(&[("lease.renew_every_secs", Some("0"))]),
        "lease.renew_every_secs: 0 must be at least 1"
    );
    // Checked against the margin actually in force.
    ok(&edits(&[
        ("lease.margin_secs", Some("2")),
        ("lease.renew_every_secs", Some("6")),
    ]));
    // A bad D is reported once, not again through the rules that depend on it.
    let p = problems(&edits(&[
        ("lease.duration_secs", Some("5")),
        ("lease.margin_secs", Some("4")),
        ("lease.renew_every_secs", Some("4")),
    ]));
    assert_eq!(p, ["lease.duration_secs: 5 is outside 15–60"]);
}

#[test]
fn the_nudge_listener_is_an_address_others_can_send_to_or_off() {
    let c = ok(&edits(&[("lease.nudge_listen", Some(r#""off""#))]));
    assert_eq!(c.lease.nudge_listen, None);
    let c = ok(&edits(&[(
        "lease.nudge_listen",
        Some(r#""10.0.1.7:7946""#),
    )]));
    assert_eq!(
        c.lease.nudge_listen,
        Some(NudgeListen::At("10.0.1.7:7946".parse().unwrap()))
    );
    for (bad, says) in [
        (
            r#""0.0.0.0:7946""#,
            "no address the other nodes can send to",
        ),
        (r#""{host_ip}:0""#, "needs a fixed port"),
        (r#""{host_ip}""#, "not an address and port"),
        (r#""everywhere""#, "not an address and port"),
    ] {
        let p = one_problem(&[("lease.nudge_listen", Some(bad))]);
        assert!(p.starts_with("lease.nudge_listen: "), "{p}");
        assert!(p.contains(says), "{bad}: {p}");
    }
}

#[test]
fn standby_poll_must_be_between_100_ms_and_d() {
    assert_eq!(
        one_problem(&[("lease.standby_poll_millis", Some("99"))]),
        "lease.standby_poll_millis: 99 is below 100"
    );
    ok(&edits(&[("lease.standby_poll_millis", Some("100"))]));
    ok(&edits(&[("lease.standby_poll_millis", Some("15000"))]));
    let p = one_problem(&[("lease.standby_poll_millis", Some("15001"))]);
    assert!(p.contains("longer than the lease"), "{p}");
}

#[test]
fn the_client_command_is_required_and_non_empty() {
    assert_eq!(
        one_problem(&[("client.command", None)]),
        "client.command: is required"
    );
    assert_eq!(
        one_problem(&[("client.command", Some("[]"))]),
        "client.command: is empty; it needs at least the program"
    );
    assert_eq!(
        one_problem(&[("client.command", Some(r#"["  ", "x"]"#))]),
        "client.command[0]: the program name is empty"
    );
    assert_eq!(
        one_problem(&[("client.command", Some(r#""besu --x""#))]),
        "client.command: must be an array of strings, not a string"
    );
    assert_eq!(
        one_problem(&[("client.command", Some(r#"["besu", 7]"#))]),
        "client.command[1]: must be a string, not an integer"
    );
}

#[test]
fn command_placeholders_are_checked_and_rendered() {
    assert_eq!(
        one_problem(&[("client.command", Some(r#"["besu", "--key={keyfile}"]"#))]),
        r#"client.command[1]: "--key={keyfile}" unknown placeholder {keyfile}; allowed: {key_file}, {keystore_dir}, {password_file}, {address}"#
    );
    // Every bad argument is reported, by index.
    let p = problems(&edits(&[(
        "client.command",
        Some(r#"["c", "{key_file", "x}", "{node}"]"#),
    )]));
    assert_eq!(p.len(), 3, "{p:#?}");
    assert!(p[0].starts_with("client.command[1]: ") && p[0].contains("without its '}'"));
    assert!(p[1].starts_with("client.command[2]: ") && p[1].contains("without its '{'"));
    assert!(p[2].starts_with("client.command[3]: ") && p[2].contains("{node}"));

    let t = CommandTemplate::parse(&[
        "run".to_string(),
        "{{\"k\":\"{key_file}\"}}".to_string(),
        "{address}{address}".to_string(),
        String::new(),
    ])
    .unwrap();
    assert!(t.uses(Placeholder::KeyFile) && t.uses(Placeholder::Address));
    assert!(!t.uses(Placeholder::PasswordFile));
    let argv = t.render(&Substitutions {
        key_file: Path::new("/r/key"),
        password_file: None,
        address: "0x01",
    });
    assert_eq!(argv, ["run", r#"{"k":"/r/key"}"#, "0x010x01", ""]);
}

#[test]
fn keystore_formats_need_a_password_from_a_file_or_a_secret_and_only_one() {
    for f in ["keystore-v3", "geth-keystore", "nethermind-keystore"] {
        let command = match f {
            "keystore-v3" => r#"["x", "{key_file}"]"#,
            _ => r#"["x", "{keystore_dir}"]"#,
        };
        assert_eq!(
            one_problem(&[
                ("client.format", Some(&format!("{f:?}"))),
                ("client.command", Some(command)),
            ]),
            format!(
                "client.password_file: is required with format {f} (or set client.password_secret)"
            )
        );
        for password in [
            ("client.password_file", r#""/etc/pw""#),
            ("client.password_secret", r#""keystore-password""#),
        ] {
            ok(&edits(&[
                ("client.format", Some(&format!("{f:?}"))),
                ("client.command", Some(command)),
                (password.0, Some(password.1)),
            ]));
        }
    }
    // With any other format, a password decrypts keystore-v3 secrets.
    let c = ok(&edits(&[("client.password_file", Some(r#""/etc/pw""#))]));
    assert_eq!(
        c.client.password_file.as_deref(),
        Some(Path::new("/etc/pw"))
    );
    let c = ok(&edits(&[("client.password_secret", Some(r#""pw-1""#))]));
    assert_eq!(c.client.password_secret.unwrap().as_str(), "pw-1");
    assert_eq!(
        one_problem(&[
            ("client.password_file", Some(r#""/etc/pw""#)),
            ("client.password_secret", Some(r#""pw-1""#)),
        ]),
        "client.password_secret: cannot be set together with client.password_file: the \
         password comes from one place"
    );
    assert!(one_problem(&[("client.password_secret", Some(r#""a/b""#))])
        .starts_with("client.password_secret: "));
    assert_eq!(
        one_problem(&[
            ("client.format", Some(r#""keystore-v3""#)),
            ("client.password_file", Some(r#""pw""#))
        ]),
        r#"client.password_file: "pw" must be an absolute path"#
    );
    assert_eq!(
        one_problem(&[(
            "client.command",
            Some(r#"["geth", "--password={password_file}"]"#)
        )]),
        "client.command: uses {password_file}, but neither client.password_file nor \
         client.password_secret is set"
    );
    let p = one_problem(&[("client.format", Some(r#""pem""#))]);
    assert!(
        p.starts_with("client.format: unknown client format \"pem\""),
        "{p}"
    );
    for f in ["besu", "nethermind", "geth-nodekey"] {
        let c = ok(&edits(&[("client.format", Some(&format!("{f:?}")))]));
        assert_eq!(c.client.format.as_str(), f);
    }
}

#[test]
fn a_directory_format_takes_keystore_dir_and_a_file_format_key_file() {
    let pw = ("client.password_file", Some(r#""/etc/pw""#));
    assert_eq!(
        one_problem(&[("client.format", Some(r#""geth-keystore""#)), pw]),
        "client.command: uses {key_file}, but format geth-keystore hands over a directory: \
         use {keystore_dir}"
    );
    assert_eq!(
        one_problem(&[("client.command", Some(r#"["x", "{keystore_dir}"]"#))]),
        "client.command: uses {keystore_dir}, but format raw-hex hands over a file: use \
         {key_file}"
    );
    let c = ok(&edits(&[
        ("client.format", Some(r#""geth-keystore""#)),
        pw,
        (
            "client.command",
            Some(
                r#"["geth", "--keystore", "{keystore_dir}", "--password", "{password_file}", "--unlock", "{address}"]"#,
            ),
        ),
    ]));
    let argv = c.client.command.render(&Substitutions {
        key_file: Path::new("/run/leased/keystore"),
        password_file: Some(Path::new("/etc/pw")),
        address: "0xab",
    });
    assert_eq!(
        argv,
        [
            "geth",
            "--keystore",
            "/run/leased/keystore",
            "--password",
            "/etc/pw",
            "--unlock",
            "0xab"
        ]
    );
    assert_eq!(
        one_problem(&[
            ("client.command", Some(r#"["x", "{keystore_dir}"]"#)),
            ("client.format", Some(r#""nethermind-keystore""#)),
            pw,
            (
                "client.engine_signer_rpc",
                Some(r#""http://127.0.0.1:8545""#)
            ),
        ]),
        "client.command: uses {keystore_dir}, but with client.engine_signer_rpc the key goes \
         over the RPC and nothing is written for the client"
    );
}

#[test]
fn store_specs_use_the_shared_parsers() {
    let p = problems(&edits(&[
        ("store.leases", Some(r#""dir:/x""#)),
        ("store.secrets", Some(r#""s3:bucket""#)),
    ]));
    assert_eq!(p.len(), 2, "{p:#?}");
    assert!(
        p[0].starts_with("store.leases: unknown lease store \"dir\""),
        "{}",
        p[0]
    );
    assert!(
        p[1].starts_with("store.secrets: unknown secret store \"s3\""),
        "{}",
        p[1]
    );
    let c = ok(&edits(&[
        (
            "store.leases",
            Some(r#""blob:https://acct.blob.core.windows.net/leases""#),
        ),
        (
            "store.secrets",
            Some(r#""keyvault:https://kv1.vault.azure.net""#),
        ),
    ]));
    assert!(matches!(c.store.leases, LeaseStoreSpec::Blob { .. }));
    assert!(matches!(c.store.secrets, SecretStoreSpec::KeyVault { .. }));
}

#[test]
fn required_settings_are_named_when_missing() {
    let p = problems(&edits(&[
        ("store.leases", None),
        ("store.secrets", None),
        ("identity.pool", None),
    ]));
    assert_eq!(
        p,
        [
            "store.leases: is required",
            "store.secrets: is required",
            "identity.pool: is required"
        ]
    );
}

#[test]
fn the_pool_is_an_identity_name_prefix() {
    for bad in [r#""""#, r#""m0_""#, r#""m 0""#] {
        let p = one_problem(&[("identity.pool", Some(bad))]);
        assert!(p.starts_with("identity.pool: "), "{p}");
    }
    ok(&edits(&[("identity.pool", Some(r#""member-7""#))]));
}

#[test]
fn http_listen_must_be_an_address_and_may_be_any_interface() {
    assert_eq!(
        one_problem(&[("http.listen", Some(r#""localhost""#))]),
        r#"http.listen: "localhost" is not an address and port, like 127.0.0.1:9797 or [::1]:9797"#
    );
    let c = ok(&edits(&[("http.listen", Some(r#""0.0.0.0:9797""#))]));
    assert_eq!(c.http.listen, "0.0.0.0:9797".parse().unwrap());
    let c = ok(&edits(&[("http.listen", None)]));
    assert_eq!(c.http.listen.to_string(), DEFAULT_LISTEN);
}

#[test]
fn engine_signer_rpc_must_be_an_http_url_on_loopback() {
    for bad in [
        r#""127.0.0.1:8545""#,
        r#""http://""#,
        r#""ws://x:8546""#,
        r#""https://signer.internal/rpc""#,
        r#""http://10.0.0.5:8545""#,
    ] {
        let p = one_problem(&[("client.engine_signer_rpc", Some(bad))]);
        assert!(p.starts_with("client.engine_signer_rpc: "), "{p}");
    }
    for good in [
        r#""http://127.0.0.1:8545""#,
        r#""http://localhost:8545/""#,
        r#""http://[::1]:8545""#,
    ] {
        ok(&edits(&[
            ("client.engine_signer_rpc", Some(good)),
            (
                "client.command",
                Some(r#"["openethereum", "--engine-signer={address}"]"#),
            ),
        ]));
    }
}

#[test]
fn with_an_engine_signer_the_command_cannot_name_a_key_file() {
    let p = one_problem(&[(
        "client.engine_signer_rpc",
        Some(r#""http://127.0.0.1:8545""#),
    )]);
    assert_eq!(
        p,
        "client.command: uses {key_file}, but with client.engine_signer_rpc the key goes \
         over the RPC and nothing is written for the client"
    );
}

#[test]
fn crash_loop_and_fence_grace_are_checked() {
    assert_eq!(
        one_problem(&[("client.crash_loop_max_exits", Some("0"))]),
        "client.crash_loop_max_exits: 0 is outside 1–1000"
    );
    assert_eq!(
        one_problem(&[("client.crash_loop_window_secs", Some("0"))]),
        "client.crash_loop_window_secs: 0 must be at least 1"
    );
    assert_eq!(
        one_problem(&[("client.restart_backoff_millis", Some("50"))]),
        "client.restart_backoff_millis: 50 is below 100"
    );
    assert_eq!(
        one_problem(&[("client.fence_grace_millis", Some("2501"))]),
        "client.fence_grace_millis: 2501 is not well inside the margin: it must be at most M/2 = 2500 ms"
    );
    ok(&edits(&[("client.fence_grace_millis", Some("2500"))]));
    assert_eq!(
        one_problem(&[("client.fence_grace_millis", Some("0"))]),
        "client.fence_grace_millis: 0 must be at least 1"
    );
}

/// Found by the simulator (seeds 11406415, 11433691, 11794491): at D ≥ 30 s with
/// M = 2 s, a grace of M/2 plus the backstop's 0.5 s plus the drift of ±1 % clocks over
/// D outlasted M, so a client ignoring SIGTERM could sign after the store's lease ended.
#[test]
fn the_grace_fits_in_the_margin_with_the_backstop_and_clock_drift() {
    let at = |d: &'static str, m: &'static str, g: Option<&'static str>| {
        edits(&[
            ("lease.duration_secs", Some(d)),
            ("lease.margin_secs", Some(m)),
            ("client.fence_grace_millis", g),
        ])
    };
    // D = 30 s, M = 2 s: 2000 − 500 − 600 leaves 900 ms.
    let p = problems(&at("30", "2", Some("1000")));
    assert_eq!(
        p,
        [
            "client.fence_grace_millis: 1000 does not fit in the margin with the daemon's \
          backstop and clock drift: grace + 500 ms + D/50 (600 ms) must be at most \
          M = 2000 ms, so at most 900 ms (or widen lease.margin_secs)"
        ]
    );
    assert_eq!(ok(&at("30", "2", Some("900"))).client.fence_grace, ms(900));
    // D = 60 s, M = 2 s: the default (M/4 = 500 ms) gives way to the 300 ms limit.
    assert_eq!(ok(&at("60", "2", None)).client.fence_grace, ms(300));
    // D = 15 s, M = 2 s: M/2 still fits (2000 − 500 − 300 = 1200 ms).
    assert_eq!(
        ok(&at("15", "2", Some("1000"))).client.fence_grace,
        ms(1_000)
    );
    for d in 15..=60u64 {
        for m in 2..d.div_ceil(2) {
            let limit = max_fence_grace(Duration::from_secs(m), Duration::from_secs(d));
            assert!(limit >= ms(300), "D {d} s, M {m} s: no room for a grace");
        }
    }
}

#[test]
fn the_azure_table_is_checked_when_a_store_is_on_azure() {
    let azure_stores = edits(&[
        (
            "store.leases",
            Some("\"blob:https://a.blob.core.windows.net/leases\""),
        ),
        (
            "store.secrets",
            Some("\"keyvault:https://kv.vault.azure.net\""),
        ),
    ]);
    // The default credential (managed identity) needs nothing else.
    ok(&azure_stores);
    let p = problems(&format!(
        "{azure_stores}\n[azure]\ncredential = \"client-secret\"\ntenant_id = \"t\"\n"
    ));
    assert_eq!(
        p,
        [
            "azure.client_id: is required with credential = \"client-secret\"",
            "azure.client_secret_file: is required with credential = \"client-secret\"",
        ]
    );
    let p = problems(&format!("{azure_stores}\n[azure]\ncredentail = \"x\"\n"));
    assert_eq!(
        p,
        ["azure.credentail: unknown setting (did you mean credential?)"]
    );
    // Local stores ignore the table's combinations, but not its syntax.
    let local = edits(&[]);
    ok(&format!(
        "{local}\n[azure]\ncredential = \"client-secret\"\n"
    ));
}

#[test]
fn unknown_settings_and_sections_are_errors_with_their_names() {
    let text = edits(&[
        ("lease.duraton_secs", Some("15")),
        ("client.restart_backof_millis", Some("100")),
        ("http.port", Some("9797")),
        ("extra.thing", Some("1")),
    ]);
    let text = format!("nodes = \"x\"\n{text}");
    let p = problems(&text);
    assert_eq!(
        p,
        [
            "extra: unknown setting; known here: node, runtime_dir, store, identity, lease, client, http, quarantine, azure",
            "nodes: unknown setting (did you mean node?)",
            "lease.duraton_secs: unknown setting (did you mean duration_secs?)",
            "client.restart_backof_millis: unknown setting (did you mean restart_backoff_millis?)",
            "http.port: unknown setting; known here: listen, public",
        ]
    );
}

#[test]
fn wrong_types_are_reported_with_the_setting() {
    let text = edits(&[
        ("lease.duration_secs", Some(r#""15""#)),
        ("lease.margin_secs", Some("-3")),
        ("identity.quarantine_secs", Some("1.5")),
        ("node", Some("7")),
    ]);
    let text = format!(
        "http = 5\n{}",
        text.replace("[http]\nlisten = \"127.0.0.1:9797\"", "")
    );
    assert_eq!(
        problems(&text),
        [
            "http: must be a section ([http]), not an integer",
            "node: must be a string, not an integer",
            "identity.quarantine_secs: must be a whole number, not a float",
            "lease.duration_secs: must be a whole number, not a string",
            "lease.margin_secs: -3 is negative",
        ]
    );
}

#[test]
fn every_problem_is_listed_not_just_the_first() {
    // The issue's acceptance list, plus a few more, all at once.
    let text = edits(&[
        ("lease.duration_secs", Some("10")),
        ("client.command", None),
        ("store.leases", Some(r#""nothing""#)),
        ("http.listen", Some(r#""nowhere""#)),
        ("client.format", Some(r#""keystore-v3""#)),
        ("lease.bogus", Some("1")),
    ]);
    let err = parse(&text).unwrap_err();
    assert_eq!(
        err.keys(),
        [
            "store.leases",
            "lease.duration_secs",
            "lease.bogus",
            "client.password_file",
            "client.command",
            "http.listen",
        ]
    );
    // A margin ≥ D/2 alongside a bad command.
    let text = edits(&[
        ("lease.margin_secs", Some("9")),
        ("client.command", Some(r#"["x", "{oops}"]"#)),
    ]);
    assert_eq!(
        parse(&text).unwrap_err().keys(),
        ["lease.margin_secs", "client.command[1]"]
    );
}

/// Problems of different kinds in different sections, `[azure]` among them, are all
/// reported at once: reading one setting wrong does not stop the next.
#[test]
fn an_unknown_key_a_wrong_type_and_a_bad_azure_value_are_reported_together() {
    let text = format!(
        "{}\n[azure]\ncredential = \"password\"\n",
        edits(&[
            ("lease.duration_sec", Some("30")),
            ("client.crash_loop_max_exits", Some(r#""5""#)),
        ])
    );
    assert_eq!(
        problems(&text),
        [
            "azure.credential: \"password\" is not one of managed-identity, developer-tools, client-secret",
            "lease.duration_sec: unknown setting (did you mean duration_secs?)",
            "client.crash_loop_max_exits: must be a whole number, not a string",
        ]
    );
}

#[test]
fn problems_display_as_a_list() {
    let err = parse(&edits(&[
        ("lease.duration_secs", Some("10")),
        ("client.command", None),
    ]))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "2 problems in the configuration:\n  lease.duration_secs: 10 is outside 15–60\n  client.command: is required"
    );
    let one = parse(&edits(&[("client.command", None)])).unwrap_err();
    assert!(one
        .to_string()
        .starts_with("1 problem in the configuration:"));
}

#[test]
fn overrides_apply_before_validation() {
    let o = Overrides {
        node: Some("vm-9".into()),
        runtime_dir: Some("/run/other".into()),
        leases: Some("sqlite:/tmp/l.db".into()),
        secrets: Some("dir:/tmp/s".into()),
        pool: Some("m1-".into()),
        duration_secs: Some(30),
        listen: Some("127.0.0.1:1".into()),
    };
    // An override fixes a bad value in the file...
    let text = edits(&[("lease.duration_secs", Some("10"))]);
    let c = Config::parse(&text, &o).unwrap();
    assert_eq!(c.node, "vm-9");
    assert_eq!(c.runtime_dir, Path::new("/run/other"));
    assert_eq!(c.store.leases, LeaseStoreSpec::Sqlite("/tmp/l.db".into()));
    assert_eq!(c.store.secrets, SecretStoreSpec::Dir("/tmp/s".into()));
    assert_eq!(c.identity.pool, "m1-");
    assert_eq!(c.lease.duration, Duration::from_secs(30));
    assert_eq!(c.lease.renew_every, Duration::from_secs(10));
    assert_eq!(c.http.listen.port(), 1);
    // ...fills a section the file lacks...
    let text = edits(&[("store.leases", None), ("store.secrets", None)]).replace("[store]\n", "");
    Config::parse(&text, &o).unwrap();
    // ...and a bad override is reported under the setting's name.
    let bad = Overrides {
        duration_secs: Some(u64::MAX),
        listen: Some("x".into()),
        ..Overrides::default()
    };
    let err = Config::parse(EXAMPLE, &bad).unwrap_err();
    assert_eq!(err.keys(), ["lease.duration_secs", "http.listen"]);
}

#[test]
fn node_defaults_to_the_hostname_and_must_be_printable() {
    let c = ok(&edits(&[("node", None)]));
    assert!(!c.node.is_empty());
    for bad in [r#""""#, r#""vm 1""#, r#""vm\t1""#] {
        let p = one_problem(&[("node", Some(bad))]);
        assert!(p.starts_with("node: "), "{p}");
    }
}

#[test]
fn runtime_dir_must_be_absolute_and_defaults_to_run_leased() {
    assert_eq!(
        one_problem(&[("runtime_dir", Some(r#""run/leased""#))]),
        r#"runtime_dir: "run/leased" must be an absolute path"#
    );
    let c = ok(&edits(&[("runtime_dir", None)]));
    assert_eq!(c.runtime_dir, Path::new(DEFAULT_RUNTIME_DIR));
}

#[test]
fn runtime_dir_rules() {
    let me = 1000;
    assert_eq!(check_runtime_dir(&DirState::Missing, me), Ok(()));
    assert_eq!(
        check_runtime_dir(
            &DirState::Directory {
                mode: 0o700,
                owner: me
            },
            me
        ),
        Ok(())
    );
    assert_eq!(
        check_runtime_dir(
            &DirState::Directory {
                mode: 0o500,
                owner: me
            },
            me
        ),
        Ok(())
    );
    let e = check_runtime_dir(
        &DirState::Directory {
            mode: 0o750,
            owner: me,
        },
        me,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "runtime_dir: has mode 0750; it holds the key file and must be private (chmod 700)"
    );
    assert!(check_runtime_dir(
        &DirState::Directory {
            mode: 0o701,
            owner: me
        },
        me
    )
    .is_err());
    let e = check_runtime_dir(
        &DirState::Directory {
            mode: 0o700,
            owner: 0,
        },
        me,
    )
    .unwrap_err();
    assert!(e.message.contains("owned by uid 0"), "{e}");
    assert!(check_runtime_dir(&DirState::NotADirectory, me).is_err());
}

#[test]
fn inspect_dir_reads_the_filesystem() {
    let d = tempfile::tempdir().unwrap();
    assert_eq!(
        inspect_dir(&d.path().join("nope")).unwrap(),
        DirState::Missing
    );
    let f = d.path().join("file");
    std::fs::write(&f, b"").unwrap();
    assert_eq!(inspect_dir(&f).unwrap(), DirState::NotADirectory);
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o710)).unwrap();
    let DirState::Directory { mode, owner } = inspect_dir(d.path()).unwrap() else {
        panic!()
    };
    assert_eq!(mode, 0o710);
    assert_eq!(owner, nix::unistd::geteuid().as_raw());
}

fn write_config(dir: &Path, runtime_dir: &Path, changes: &[(&str, Option<&str>)]) -> PathBuf {
    let mut all = vec![];
    let rd = format!("{:?}", runtime_dir.display().to_string());
    all.push(("runtime_dir", Some(rd.as_str())));
    all.extend_from_slice(changes);
    let path = dir.join("leased.toml");
    std::fs::write(&path, edits(&all)).unwrap();
    path
}

#[test]
fn load_accepts_the_example_with_a_private_runtime_dir() {
    let d = tempfile::tempdir().unwrap();
    let rt = d.path().join("rt");
    std::fs::create_dir(&rt).unwrap();
    std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = write_config(d.path(), &rt, &[]);
    let c = Config::load(&path, &Overrides::default()).unwrap();
    assert_eq!(c.runtime_dir, rt);
    // A runtime directory that does not exist yet is created private by the daemon.
    let path = write_config(d.path(), &d.path().join("later"), &[]);
    Config::load(&path, &Overrides::default()).unwrap();
}

#[test]
fn load_reports_a_runtime_dir_that_is_not_private_among_the_rest() {
    let d = tempfile::tempdir().unwrap();
    let rt = d.path().join("rt");
    std::fs::create_dir(&rt).unwrap();
    std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = write_config(
        d.path(),
        &rt,
        &[
            ("lease.duration_secs", Some("61")),
            ("lease.margin_secs", Some("8")),
            ("client.command", None),
        ],
    );
    let err = Config::load(&path, &Overrides::default()).unwrap_err();
    // D = 61 is out of range, so the margin rule against D is not checked on top of it.
    assert_eq!(
        err.keys(),
        ["runtime_dir", "lease.duration_secs", "client.command"]
    );
    assert!(err.as_slice()[0].message.contains("mode 0755"), "{err}");
    // An override pointing somewhere private fixes it.
    let o = Overrides {
        runtime_dir: Some(d.path().join("fresh")),
        ..Overrides::default()
    };
    let err = Config::load(&path, &o).unwrap_err();
    assert_eq!(err.keys(), ["lease.duration_secs", "client.command"]);
}

#[test]
fn file_level_problems_name_the_file() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("absent.toml");
    let err = Config::load(&missing, &Overrides::default()).unwrap_err();
    assert_eq!(err.as_slice().len(), 1);
    assert_eq!(err.as_slice()[0].key, None);
    assert!(err.to_string().contains("absent.toml"), "{err}");

    let bad = d.path().join("bad.toml");
    std::fs::write(&bad, "node = \"a\"\n[lease\nduration_secs = 15\n").unwrap();
    let err = Config::load(&bad, &Overrides::default()).unwrap_err();
    let msg = err.as_slice()[0].to_string();
    assert!(
        msg.contains("bad.toml: not valid TOML: line 2, column"),
        "{msg}"
    );

    let binary = d.path().join("bin.toml");
    std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
    let err = Config::load(&binary, &Overrides::default()).unwrap_err();
    assert!(err.to_string().contains("not UTF-8"), "{err}");
}

#[test]
fn machine_params_carry_the_settings() {
    let c = ok(&edits(&[
        ("lease.duration_secs", Some("30")),
        ("identity.quarantine_secs", Some("3")),
        ("client.crash_loop_max_exits", Some("4")),
    ]));
    let p = c.machine_params(99);
    assert_eq!(p.node, "vm-1");
    assert_eq!(p.lease, Duration::from_secs(30));
    assert_eq!(p.renew_every, Duration::from_secs(10));
    assert_eq!(p.margin, Duration::from_secs(10));
    assert_eq!(p.renew_retry, Duration::from_secs(1));
    assert_eq!(p.quarantine, Duration::from_secs(3));
    assert_eq!(p.standby_poll, ms(500));
    assert_eq!(p.poll_jitter, ms(125));
    assert_eq!(p.restart_backoff, ms(1_000));
    assert_eq!(p.crash_loop_max_exits, 4);
    assert_eq!(p.crash_loop_window, Duration::from_secs(60));
    assert_eq!(p.seed, 99);
}

/// Issue 10, item 12: the client's environment is exactly `[client.env]` plus a PATH.
#[test]
fn the_client_environment_is_listed_whole_and_checked() {
    let text = format!("{EXAMPLE}\n[client.env]\nGETH_CACHE = \"512\"\nPATH = \"/opt/geth/bin\"\n");
    let c = ok(&text);
    assert_eq!(
        c.client.env,
        [
            ("GETH_CACHE".to_string(), "512".to_string()),
            ("PATH".to_string(), "/opt/geth/bin".to_string()),
        ]
        .into()
    );
    let bad = format!(
        "{EXAMPLE}\n[client.env]\n\"1X\" = \"a\"\n\"A-B\" = \"b\"\nN = 3\nZ = \"a\\u0000b\"\n"
    );
    let p = problems(&bad);
    for key in [
        "client.env.1X",
        "client.env.A-B",
        "client.env.N",
        "client.env.Z",
    ] {
        assert!(p.iter().any(|l| l.starts_with(key)), "{key}: {p:#?}");
    }
    let p = one_problem(&[("client.env", Some("3"))]);
    assert!(p.starts_with("client.env"), "{p}");
}

#[test]
fn the_start_timeout_is_checked() {
    let c = ok(&edits(&[("client.start_timeout_secs", Some("30"))]));
    assert_eq!(c.client.start_timeout, Duration::from_secs(30));
    assert_eq!(c.machine_params(0).start_timeout, Duration::from_secs(30));
    for bad in ["0", "301"] {
        let p = one_problem(&[("client.start_timeout_secs", Some(bad))]);
        assert!(p.contains("client.start_timeout_secs"), "{p}");
    }
}

#[test]
fn the_quarantine_watch_is_off_without_its_section_and_checked_whole_with_it() {
    assert_eq!(ok(EXAMPLE).quarantine, None);
    let c = ok(&format!(
        "{EXAMPLE}[quarantine]\nrpc = \"http://127.0.0.1:8545\"\nengine = \"clique\"\n"
    ));
    assert_eq!(
        c.quarantine,
        Some(QuarantineConfig {
            rpc: "http://127.0.0.1:8545".into(),
            engine: shared::seal::Engine::Clique,
            window: DEFAULT_QUARANTINE_WINDOW,
        })
    );
    let problems = Config::parse(
        &format!("{EXAMPLE}[quarantine]\nengine = \"pow\"\nwindow_secs = 0\nwindw = 3\n"),
        &Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(
        problems.keys(),
        [
            "quarantine.rpc",
            "quarantine.engine",
            "quarantine.window_secs",
            "quarantine.windw"
        ],
        "{problems}"
    );
}

#[test]
fn the_client_examples_in_ops_parse() {
    let examples = [
        (
            include_str!("../../../ops/clients/geth-clique.toml"),
            ClientFormat::GethKeystore,
        ),
        (
            include_str!("../../../ops/clients/besu-qbft.toml"),
            ClientFormat::Besu,
        ),
        (
            include_str!("../../../ops/clients/nethermind-aura.toml"),
            ClientFormat::NethermindKeystore,
        ),
        (
            include_str!("../../../ops/clients/openethereum-aura.toml"),
            ClientFormat::RawHex,
        ),
    ];
    for (text, format) in examples {
        let c = ok(text);
        assert_eq!(c.client.format, format);
    }
    let c = ok(include_str!("../../../ops/leased.example.toml"));
    assert_eq!(c.client.format, ClientFormat::RawHex);
}

/// `[client]` for geth behind the sync gate, with `changes` on top.
fn geth_unlock(changes: &[(&str, Option<&str>)]) -> String {
    let base = [
        ("client.format", Some(r#""geth-keystore""#)),
        (
            "client.password_file",
            Some(r#""/etc/leased/keystore-password""#),
        ),
        (
            "client.command",
            Some(
                r#"["geth", "--keystore", "{keystore_dir}", "--mine", "--miner.etherbase", "{address}"]"#,
            ),
        ),
        ("client.unlock_rpc", Some(r#""http://127.0.0.1:8545""#)),
        (
            "client.sync_with",
            Some(r#"["http://10.0.0.2:8545", "http://10.0.0.3:8545"]"#),
        ),
    ];
    base.iter()
        .chain(changes)
        .fold(EXAMPLE.to_string(), |t, (k, v)| edit(&t, k, *v))
}

#[test]
fn geth_unlock_behind_the_sync_gate_is_read() {
    let c = ok(&geth_unlock(&[]));
    assert_eq!(
        c.client.unlock_rpc.as_deref(),
        Some("http://127.0.0.1:8545")
    );
    assert_eq!(
        c.client.sync_with,
        ["http://10.0.0.2:8545", "http://10.0.0.3:8545"]
    );
    // The machine holds the client in Starting until the unlock succeeded.
    assert!(c.machine_params(0).engine_signer);
    // Without either setting there is no signer step and no gate.
    let plain = ok(EXAMPLE);
    assert!(plain.client.unlock_rpc.is_none() && plain.client.sync_with.is_empty());
    assert!(!plain.machine_params(0).engine_signer);
}

#[test]
fn unlock_rpc_is_loopback_geth_keystore_and_not_beside_an_engine_signer() {
    let problems_of = |changes: &[(&str, Option<&str>)]| problems(&geth_unlock(changes));
    assert_eq!(
        problems_of(&[("client.unlock_rpc", Some(r#""http://10.0.0.5:8545""#))]),
        [
            r#"client.unlock_rpc: "http://10.0.0.5:8545" must be an http://HOST:PORT URL on loopback (127.0.0.1, [::1] or localhost): the password travels in it"#
        ]
    );
    assert_eq!(
        problems_of(&[
            ("client.format", Some(r#""keystore-v3""#)),
            ("client.command", Some(r#"["geth", "{key_file}"]"#)),
        ]),
        ["client.unlock_rpc: unlocks a geth keystore account: it needs format geth-keystore, not keystore-v3"]
    );
    assert_eq!(
        problems_of(&[(
            "client.command",
            Some(r#"["geth", "--keystore", "{keystore_dir}", "--unlock", "{address}", "--mine"]"#)
        )]),
        [
            "client.command: passes --unlock, but with client.unlock_rpc the daemon unlocks the \
          account once the client has synced: unlocked at start, geth may seal before it syncs"
        ]
    );
    let both = problems_of(&[(
        "client.engine_signer_rpc",
        Some(r#""http://127.0.0.1:8546""#),
    )]);
    assert!(
        both.iter().any(|p| p
            == "client.unlock_rpc: cannot be set together with client.engine_signer_rpc: the signer is enabled one way"),
        "{both:#?}"
    );
}

#[test]
fn sync_with_lists_http_urls_and_needs_a_signer_step() {
    assert_eq!(
        problems(&edits(&[(
            "client.sync_with",
            Some(r#"["http://10.0.0.2:8545"]"#)
        )])),
        ["client.sync_with: gates the signer, which needs client.unlock_rpc (geth) or client.engine_signer_rpc"]
    );
    assert_eq!(
        problems(&geth_unlock(&[(
            "client.sync_with",
            Some(r#"["http://10.0.0.2:8545", "10.0.0.3:8545"]"#)
        )])),
        [r#"client.sync_with[1]: "10.0.0.3:8545" must be an http:// JSON-RPC URL"#]
    );
    let many: Vec<String> = (0..=MAX_SYNC_PEERS)
        .map(|i| format!("\"http://10.0.0.{i}:8545\""))
        .collect();
    assert_eq!(
        problems(&geth_unlock(&[(
            "client.sync_with",
            Some(&format!("[{}]", many.join(", ")))
        )])),
        [format!(
            "client.sync_with: lists 17 URLs; at most {MAX_SYNC_PEERS}"
        )]
    );
}

#[test]
fn the_enode_template_is_an_enode_url_and_the_node_key_file_serves_it() {
    let c = ok(&edits(&[(
        "client.enode",
        Some(r#""enode://{node_id}@10.0.1.5:30303""#),
    )]));
    assert_eq!(
        c.client.enode.as_deref(),
        Some("enode://{node_id}@10.0.1.5:30303")
    );
    let c = ok(&edits(&[
        (
            "client.enode",
            Some(r#""enode://{node_id}@10.0.1.5:30303""#),
        ),
        (
            "client.node_key_file",
            Some(r#""/var/lib/geth/geth/nodekey""#),
        ),
    ]));
    assert_eq!(
        c.client.node_key_file.as_deref(),
        Some(Path::new("/var/lib/geth/geth/nodekey"))
    );
    assert_eq!(
        one_problem(&[("client.enode", Some(r#""enode://{node_id}@10.0.1.5""#))]),
        r#"client.enode: "enode://{node_id}@10.0.1.5" is not an enode://{node_id}@HOST:PORT URL (HOST may be {host_ip}; the node id may be written out)"#
    );
    assert_eq!(
        one_problem(&[
            (
                "client.enode",
                Some(r#""enode://{node_id}@10.0.1.5:30303""#)
            ),
            ("client.node_key_file", Some(r#""nodekey""#)),
        ]),
        "client.node_key_file: nodekey must be an absolute path"
    );
    let written_out = format!("\"enode://{}@10.0.1.5:30303\"", "ab".repeat(64));
    assert_eq!(
        one_problem(&[
            ("client.enode", Some(&written_out)),
            (
                "client.node_key_file",
                Some(r#""/var/lib/geth/geth/nodekey""#)
            ),
        ]),
        "client.node_key_file: gives {node_id}, which client.enode does not use"
    );
}

#[test]
fn the_public_listener_is_optional_and_apart_from_the_admin_one() {
    assert_eq!(ok(EXAMPLE).http.public, None);
    let c = ok(&edits(&[("http.public", Some(r#""0.0.0.0:8080""#))]));
    assert_eq!(c.http.public, Some("0.0.0.0:8080".parse().unwrap()));
    assert_eq!(
        one_problem(&[("http.public", Some(r#""127.0.0.1:9797""#))]),
        r#"http.public: "127.0.0.1:9797" is http.listen too: the public listener serves /networkinfo alone, on an address of its own"#
    );
    assert_eq!(
        one_problem(&[("http.public", Some(r#""everywhere""#))]),
        r#"http.public: "everywhere" is not an address and port, like 0.0.0.0:8080"#
    );
}
