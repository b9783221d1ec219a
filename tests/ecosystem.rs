//! `serve --config FILE` and `--log-format json`.

mod common;

use common::Server;

#[test]
fn config_file_sets_flags_and_the_command_line_wins() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("nvkv.toml");
    std::fs::write(
        &cfg,
        "tcp_threads = 2\nio-threads = 2\nengine = \"aio\"\npin = false\n",
    )
    .unwrap();
    let store = dir.path().join("store");
    let cfg_arg = cfg.to_str().unwrap();
    let srv = Server::start(&store, &["--config", cfg_arg, "--io-threads", "1"]);
    assert_eq!(srv.info_field("tcp_threads"), "2", "from the file");
    assert_eq!(srv.info_field("engine"), "Aio", "from the file");
    assert_eq!(
        srv.info_field("io_threads"),
        "1",
        "the command line overrides the file"
    );
    srv.stop();
}

#[test]
fn unknown_keys_and_bad_values_are_errors_that_name_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "tcp_threads = 2\nno_such_flag = 1\n").unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .arg("--path")
        .arg(dir.path().join("s"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown key(s): no_such_flag"), "{err}");

    std::fs::write(&cfg, "tcp_threads = \"many\"\n").unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("many") && err.contains("tcp-threads"), "{err}");
}

#[test]
fn the_example_file_loads_and_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/nvkv.example.toml");
    let srv = Server::start(
        &dir.path().join("s"),
        &["--config", example, "--log-format", "json"],
    );
    assert_eq!(srv.info_field("io_threads"), "1");
    srv.stop();
    let log = srv_log_lines(&dir.path().join("s"));
    assert!(!log.is_empty());
}

/// Starts and stops a server with JSON logs and returns its stderr lines.
fn srv_log_lines(store: &std::path::Path) -> Vec<serde_json::Value> {
    let mut child = std::process::Command::new(common::BIN)
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--path",
        ])
        .arg(store)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert!(line.starts_with("nvkv listening on"), "{line}");
    // SAFETY: signals our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert!(
        lines.iter().any(|v| v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("clean shutdown"))),
        "{lines:?}"
    );
    lines
}

/// Reads `/metrics` and returns (name with labels → value), checking that
/// every sample has a `# TYPE` line.
fn scrape(addr: &str) -> std::collections::HashMap<String, f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let typed: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut out = std::collections::HashMap::new();
    for l in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = l.rsplit_once(' ').unwrap();
        let base = name.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| base.strip_suffix(s).filter(|f| typed.contains(f)))
            .unwrap_or(base);
        assert!(typed.contains(&family), "{base} has no # TYPE line");
        out.insert(name.to_string(), value.parse().unwrap());
    }
    out
}

#[test]
fn metrics_endpoint_reports_what_clients_did() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(common::BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--path",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = [String::new(), String::new()];
    for l in &mut lines {
        out.read_line(l).unwrap();
    }
    let addr = lines[0]
        .trim()
        .strip_prefix("nvkv listening on ")
        .unwrap()
        .to_string();
    let maddr = lines[1]
        .trim()
        .strip_prefix("nvkv metrics on ")
        .unwrap()
        .to_string();
    // A fresh server, before any command, is scraped like any other.
    let fresh = scrape(&maddr);
    assert_eq!(fresh["nvkv_keys"], 0.0);
    assert_eq!(fresh["nvkv_evicted_keys_total"], 0.0);
    let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
    let mut con = client.get_connection().unwrap();
    for i in 0..10 {
        redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg("v")
            .query::<()>(&mut con)
            .unwrap();
    }
    for i in 0..15 {
        let _: Option<String> = redis::cmd("GET")
            .arg(format!("k{i}"))
            .query(&mut con)
            .unwrap();
    }
    let m = scrape(&maddr);
    assert_eq!(m["nvkv_keys"], 10.0);
    assert_eq!(m["nvkv_keyspace_hits_total"], 10.0);
    assert_eq!(m["nvkv_keyspace_misses_total"], 5.0);
    assert!(m["nvkv_commands_processed_total"] >= 25.0);
    assert_eq!(m["nvkv_connected_clients"], 1.0);
    assert!(m["nvkv_commits_total"] >= 1.0);
    assert!(m["nvkv_device_write_ops_total"] >= 1.0);
    assert!(
        m["nvkv_device_read_ops_total"] <= 10.0,
        "at most one read per hit"
    );
    assert_eq!(
        m["nvkv_device_read_bytes_total"],
        m["nvkv_device_read_ops_total"] * 4096.0,
        "small values: one 4 KiB block per read"
    );
    assert!(m.contains_key("nvkv_poller_mean_batch{poller=\"0\"}"));
    // Calls and a latency histogram by command.
    assert_eq!(m["nvkv_commands_total{command=\"set\"}"], 10.0);
    assert_eq!(m["nvkv_commands_total{command=\"get\"}"], 15.0);
    assert_eq!(
        m["nvkv_command_duration_seconds_count{command=\"get\"}"],
        15.0
    );
    assert_eq!(
        m["nvkv_command_duration_seconds_bucket{command=\"get\",le=\"+Inf\"}"],
        15.0
    );
    let sets_within_1s = m["nvkv_command_duration_seconds_bucket{command=\"set\",le=\"1\"}"];
    assert_eq!(sets_within_1s, 10.0, "a SET took over a second");
    assert!(m["nvkv_command_duration_seconds_sum{command=\"set\"}"] > 0.0);
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut con)
        .unwrap();
    assert!(info.contains("cmdstat_get:calls=15,"), "{info}");
    let lat: String = redis::cmd("INFO")
        .arg("latencystats")
        .query(&mut con)
        .unwrap();
    assert!(lat.contains("latency_percentiles_usec_set:p50="), "{lat}");
    // Redis 7's fields, counted: no GET here was refused or failed.
    assert!(info.contains("rejected_calls=0,failed_calls=0"), "{info}");
    // INFO and /metrics read one table: the same figures, the same values
    // (the server is quiet now). An unknown command: one error reply.
    assert!(redis::cmd("NOSUCH").query::<()>(&mut con).is_err());
    let all: String = redis::cmd("INFO").arg("all").query(&mut con).unwrap();
    let field = |name: &str| -> f64 {
        let line = all
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("INFO has no {name}: {all}"));
        line.trim().parse().unwrap()
    };
    let m = scrape(&maddr);
    for (info_name, metric) in [
        ("keyspace_hits", "nvkv_keyspace_hits_total"),
        ("keyspace_misses", "nvkv_keyspace_misses_total"),
        ("commits", "nvkv_commits_total"),
        ("device_reads", "nvkv_device_read_ops_total"),
        ("live_bytes", "nvkv_live_bytes"),
        ("segments_free", "nvkv_segments_free"),
        ("connected_clients", "nvkv_connected_clients"),
        ("index_tombstones", "nvkv_index_tombstones"),
        ("total_error_replies", "nvkv_error_replies_total"),
    ] {
        assert_eq!(field(info_name), m[metric], "{info_name} vs {metric}");
    }
    // CPU time in seconds: the process's, and each thread's busy time
    // (which only grows, so INFO's and the scrape's are not compared).
    let cpu = m["nvkv_cpu_user_seconds_total"] + m["nvkv_cpu_system_seconds_total"];
    assert!(cpu > 0.0, "no CPU time");
    // A poller inside its connection thread (on fewer than 4 cores) is
    // that thread: each is at most the process's, not their sum.
    let thread = |t: &str| m[&format!("nvkv_thread_cpu_seconds_total{{thread=\"{t}\"}}")];
    let (poller, conn) = (thread("poller0"), thread("conn0"));
    assert!(poller + conn > 0.0, "no thread CPU time");
    assert!(
        poller.max(conn) <= cpu + 0.01,
        "{poller} and {conn} of {cpu}"
    );
    assert_eq!(m["nvkv_error_replies_total"], 1.0);
    assert!(m["nvkv_poller_cpu_seconds_total"] > 0.0);
    assert!(m["nvkv_conn_thread_cpu_seconds_total"] > 0.0);
    // SAFETY: signals our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

/// Log lines to a file or pipe carry no terminal colour codes.
#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let srv = common::Server::start(dir.path(), &[]);
    common::wait_for("the start-up lines logged", || {
        srv.log.lock().unwrap().contains("listening")
    });
    let log = srv.log.lock().unwrap().clone();
    assert!(!log.contains('\x1b'), "colour codes in: {log:?}");
    drop(srv);
}
