//! The consortium Data API (issue 14 §2): `orchestrator init --publish` puts
//! networkinfo.json into the lease store, a `leased` daemon with `[http] public` serves it
//! at `/networkinfo` with the live bootnodes (the enodes of the held leases) filled in,
//! caching headers and an ETag; a second member joins from that URL by the Data API's
//! convention (`<URL>/networkinfo`); and a hostile answer at such a URL is refused with one
//! line, nothing written.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use integration_tests::cluster::{wait_for, Cluster, ClusterSpec, Stores};
use serde_json::Value;
use shared::{Address, Name};

const ADMIN0: &str = "0x00000000000000000000000000000000000a0001";
const ADMIN1: &str = "0x00000000000000000000000000000000000A0002";

fn orchestrator(dir: &Path, args: &[&str]) -> Output {
    Command::new(integration_tests::bin_path("orchestrator-host"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run orchestrator-host")
}

/// An HTTP answer: status, headers (lower-case names) and body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// One HTTP/1.1 GET.
fn get(addr: SocketAddr, path: &str, extra: &str) -> Answer {
    try_get(addr, path, extra).expect("the public listener answers")
}

/// [`get`], or `None` while nothing listens (the daemon is still starting).
fn try_get(addr: SocketAddr, path: &str, extra: &str) -> Option<Answer> {
    let mut conn = TcpStream::connect(addr).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).ok()?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((status, headers, raw[end + 4..].to_vec()))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn a_member_joins_from_the_network_info_a_daemon_serves_with_live_bootnodes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("m0")).unwrap();
    let o = orchestrator(
        d,
        &[
            "init",
            "--member",
            "0",
            "--validators",
            "3",
            "--admin",
            ADMIN0,
            "--secrets",
            "dir:m0/secrets",
            "--leases",
            "sqlite:m0/leases.db",
            "--out",
            "net0",
            "--flavour",
            "clique",
            "--publish",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Published beside the lease file.
    let published: Value =
        serde_json::from_slice(&std::fs::read(d.join("m0/networkinfo.json")).unwrap()).unwrap();
    assert_eq!(published["bootnodes"], serde_json::json!([]));
    let deployment: Value =
        serde_json::from_slice(&std::fs::read(d.join("net0/deployment-output.json")).unwrap())
            .unwrap();
    let identities: Vec<(Name, Address)> = deployment["validators"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, a)| {
            (
                Name::new(format!("m0-v{i}")).unwrap(),
                a.as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();

    let mut cluster = Cluster::start(ClusterSpec {
        identities: 3,
        daemons: 0,
        stores: Stores::Specs {
            leases: format!("sqlite:{}", d.join("m0/leases.db").display()),
            secrets: format!("dir:{}", d.join("m0/secrets").display()),
            azure: Box::default(),
            azure_toml: String::new(),
        },
        provisioned: Some(identities),
        ..ClusterSpec::default()
    });
    let public: SocketAddr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    for n in 1..=3u16 {
        let daemon = cluster.spawn_daemon_edited(&format!("vm-{n}"), |text| {
            let text = text.replacen(
                "[client]\n",
                &format!(
                    "[client]\nenode = \"enode://{{node_id}}@127.0.0.1:{}\"\n",
                    30300 + n
                ),
                1,
            );
            match n {
                1 => text.replacen("[http]\n", &format!("[http]\npublic = \"{public}\"\n"), 1),
                _ => text,
            }
        });
        cluster.daemons.push(daemon);
    }

    // The served document gets the 3 live enodes (it is read again every 15 s).
    let served = wait_for(Duration::from_secs(40), || {
        let (status, headers, body) = try_get(public, "/networkinfo", "")?;
        let doc: Value = serde_json::from_slice(&body).ok()?;
        (status == 200 && doc["bootnodes"].as_array()?.len() == 3).then_some((headers, doc))
    })
    .unwrap_or_else(|| {
        panic!(
            "/networkinfo never listed 3 bootnodes\n{}",
            cluster.diagnostics()
        )
    });
    let (headers, doc) = served;
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert!(header(&headers, "cache-control").is_some_and(|c| c.contains("max-age")));
    let etag = header(&headers, "etag").expect("an ETag").to_string();
    for (i, port) in [30301, 30302, 30303].iter().enumerate() {
        let listed: Vec<String> = doc["bootnodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_str().unwrap().to_string())
            .collect();
        assert!(
            listed.iter().any(|b| b.ends_with(&format!(":{port}"))),
            "bootnode {i} (port {port}) missing: {listed:?}"
        );
    }
    assert_eq!(doc["valSetContract"], published["valSetContract"]);
    // A client that has it gets 304; nothing but /networkinfo is public.
    let (status, _, body) = get(
        public,
        "/networkinfo",
        &format!("If-None-Match: {etag}\r\n"),
    );
    assert_eq!(status, 304);
    assert!(body.is_empty());
    for path in ["/status", "/metrics", "/healthz", "/"] {
        assert_eq!(get(public, path, "").0, 404, "{path} is public");
    }

    // Member 1 joins from the daemon's URL, by the Data API's convention.
    let url = format!("http://{public}");
    let o = orchestrator(
        d,
        &[
            "join",
            "--member",
            "1",
            "--validators",
            "2",
            "--admin",
            ADMIN1,
            "--consortium-data",
            &url,
            "--secrets",
            "dir:m1/secrets",
            "--leases",
            "sqlite:m1/leases.db",
            "--out",
            "net1",
        ],
    );
    assert!(
        o.status.success(),
        "join: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        std::fs::read(d.join("net1/genesis/clique.json")).unwrap(),
        std::fs::read(d.join("net0/genesis/clique.json")).unwrap()
    );

    // A hostile answer at a Data API URL: refused in one line, nothing written.
    let hostile = TcpListener::bind("127.0.0.1:0").unwrap();
    let hostile_addr = hostile.local_addr().unwrap();
    let mut bad = doc.clone();
    bad["valSetContract"] = "0x1234".into();
    let body = serde_json::to_vec(&bad).unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = hostile.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.ends_with(b"\r\n\r\n") {
            let n = conn.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        conn.write_all(&body).unwrap();
        String::from_utf8_lossy(&request).into_owned()
    });
    let o = orchestrator(
        d,
        &[
            "join",
            "--member",
            "2",
            "--validators",
            "2",
            "--admin",
            ADMIN1,
            "--consortium-data",
            &format!("http://{hostile_addr}/api"),
            "--secrets",
            "dir:m2/secrets",
            "--leases",
            "sqlite:m2/leases.db",
            "--out",
            "net2",
        ],
    );
    let request = server.join().unwrap();
    assert!(
        request.starts_with("GET /api/networkinfo HTTP/1.1"),
        "{request}"
    );
    assert_eq!(
        o.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("valSetContract"), "{err}");
    for p in ["m2", "net2"] {
        assert!(!d.join(p).exists(), "{p} was written");
    }
    for daemon in &mut cluster.daemons {
        daemon.term();
    }
}
