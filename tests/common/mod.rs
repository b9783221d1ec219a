//! Test harness: runs the real `nvkv` binary and talks to it with real
//! clients.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod large;
#[cfg(feature = "spdk")]
pub mod nvmf;

pub const BIN: &str = env!("CARGO_BIN_EXE_nvkv");

/// Reads one line from `s`, byte by byte (nothing after it is taken from
/// the socket), and returns it without its CRLF.
pub fn read_line(s: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while !out.ends_with(b"\r\n") {
        match s.read(&mut b) {
            Ok(1) => out.push(b[0]),
            other => panic!("reading a reply: {other:?} after {out:?}"),
        }
    }
    out.truncate(out.len() - 2);
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether python3 with redis-py is here (the tests that run it as
/// applications do say so and skip when not). Under CI (`CI` set), which
/// installs it, its absence fails the test instead of skipping it.
pub fn redis_py() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import redis"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but `python3 -c 'import redis'` fails: .ci/run installs redis-py"
        );
        eprintln!("skipped: no python3 with redis-py here (Debian: python3-redis)");
    }
    ok
}

/// The block device the tests load stores onto, when `NVKV_TEST_DEVICE`
/// names one (the VM harness sets it to an NVMe namespace; tests/vm/).
pub fn test_device() -> Option<String> {
    std::env::var("NVKV_TEST_DEVICE")
        .ok()
        .filter(|d| !d.is_empty())
}

/// The NVMe namespace the tests put their stores on through SPDK: in the
/// `spdk_suites` test binary (the file engines' suites again, on SPDK), a
/// namespace of its own per test on a loopback NVMe-oF/TCP target; or, in
/// any suite, the one `NVKV_TEST_SPDK_TRID` gives by transport ID (and
/// `NVKV_TEST_SPDK_NSID`, default 1), with the tests run one at a time
/// (`--test-threads 1`) since they share it.
pub fn test_spdk() -> Option<(String, String)> {
    #[cfg(feature = "spdk")]
    if nvmf::in_suites() {
        return Some(nvmf::suite_namespace());
    }
    let trid = std::env::var("NVKV_TEST_SPDK_TRID")
        .ok()
        .filter(|t| !t.is_empty())?;
    let nsid = std::env::var("NVKV_TEST_SPDK_NSID").unwrap_or_else(|_| "1".into());
    Some((trid, nsid))
}

/// Bytes of the test device or namespace a store uses (unless a test
/// asks for its own `--capacity`).
const TEST_CAPACITY: &str = "128M";

/// The flags every nvkv command takes on an SPDK test namespace: SPDK's
/// environment in ordinary memory, so that nvkv needs no hugepages (the
/// target has them).
pub const SPDK_ENV: [&str; 3] = ["--spdk-no-huge", "--spdk-mem", "256"];

/// Whether the stores are on an SPDK namespace; tests that reach into the
/// data file itself (there is none there) skip themselves then.
pub fn on_spdk(test: &str) -> bool {
    let on = test_spdk().is_some();
    if on {
        eprintln!("{test}: skipped on an SPDK namespace (a test of data files)");
    }
    on
}

/// `load`'s device flags for the test store, if it is not a file.
fn device_args() -> Vec<String> {
    let mut a = Vec::new();
    if let Some((trid, nsid)) = test_spdk() {
        a.extend([
            "--device".into(),
            trid,
            "--nsid".into(),
            nsid,
            "--force".into(),
        ]);
        a.extend(SPDK_ENV.map(String::from));
        a.push("--log-level=warn".into());
    } else if let Some(dev) = test_device() {
        a.extend(["--log-level", "warn", "--device", &dev, "--force"].map(String::from));
    }
    a
}

/// Creates an empty store (`nvkv load --keys 0` with `args`) on the test
/// backend: a file in `dir`, or the test device or namespace (128 MiB of it
/// unless `args` set `--capacity`).
pub fn create_store(dir: &Path, args: &[&str]) {
    let mut cmd = Command::new(BIN);
    cmd.args(["load", "--keys", "0", "--path"])
        .arg(dir)
        .args(device_args())
        .args(args);
    if (test_spdk().is_some() || test_device().is_some()) && !args.contains(&"--capacity") {
        cmd.args(["--capacity", TEST_CAPACITY]);
    }
    let out = cmd.output().expect("run nvkv load");
    assert!(
        out.status.success(),
        "creating a store failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `nvkv load` and panics on failure.
pub fn load(dir: &Path, keys: u64, min: usize, max: usize, seed: u64) {
    load_with(dir, keys, min, max, seed, &[]);
}

/// Runs `nvkv load` with `extra` flags (of the test backend's capacity
/// unless they set `--capacity`), and panics on failure.
pub fn load_with(dir: &Path, keys: u64, min: usize, max: usize, seed: u64, extra: &[&str]) {
    let mut cmd = Command::new(BIN);
    cmd.arg("load").args(device_args());
    if !extra.contains(&"--capacity") {
        cmd.args(["--capacity", TEST_CAPACITY]);
    }
    let out = cmd
        .arg("--path")
        .arg(dir)
        .args(["--keys", &keys.to_string()])
        .args([
            "--min-size",
            &min.to_string(),
            "--max-size",
            &max.to_string(),
        ])
        .args(["--seed", &seed.to_string()])
        .args(extra)
        .output()
        .expect("run nvkv load");
    assert!(
        out.status.success(),
        "load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running server.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// Starts `nvkv serve` on a free loopback port.
    ///
    /// On the SPDK test namespace, a directory without a store first gets
    /// an empty one there (`nvkv load --keys 0`, of serve's `--capacity`),
    /// and `--engine` is left out: the engine follows the device.
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--path"])
            .arg(dir);
        if test_spdk().is_some() {
            let mut args = Vec::new();
            let mut capacity = TEST_CAPACITY;
            let mut it = extra.iter();
            while let Some(&a) = it.next() {
                match a {
                    "--engine" => {
                        it.next();
                    }
                    "--capacity" => capacity = it.next().expect("--capacity VALUE"),
                    _ => args.push(a),
                }
            }
            if !dir.join("data.nvme").exists() {
                create_store(dir, &["--capacity", capacity]);
            }
            cmd.args(["--pin", "false", "--poll", "adaptive"])
                .args(SPDK_ENV)
                .args(args);
        } else {
            // A store serve creates stays sparse: tests need not write 1 GiB
            // of zeros each (stores made by `load` are filled, as in
            // production).
            cmd.arg("--sparse").args(extra);
        }
        start_command(cmd, dir)
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    pub fn client(&self) -> redis::Connection {
        let c = redis::Client::open(self.url()).expect("client");
        let con = c
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect");
        con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        con
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    pub fn stop(mut self) {
        signal(&self.child, libc::SIGTERM);
        let status = wait_bounded(&mut self.child, Duration::from_secs(20));
        assert!(
            status.success(),
            "server exited with {status}\n{}",
            self.log.lock().unwrap()
        );
    }

    /// SIGKILL: a crash.
    pub fn kill(mut self) {
        signal(&self.child, libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// The INFO field `name`.
    pub fn info_field(&self, name: &str) -> String {
        let info: String = redis::cmd("INFO").query(&mut self.client()).expect("INFO");
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} in INFO:\n{info}"))
            .trim()
            .to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: sends a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, sig) };
}

pub fn wait_bounded(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        assert!(
            t0.elapsed() < limit,
            "process did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Bytes the process has read from storage (/proc/PID/io `read_bytes`).
pub fn read_bytes(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("/proc/PID/io");
    io.lines()
        .find_map(|l| l.strip_prefix("read_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("read_bytes")
}

/// Starts a server from a prepared command (another wrapper, such as
/// `unshare`, in front of `nvkv serve`) and waits for its listening line.
pub fn start_command(mut cmd: Command, dir: &Path) -> Server {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the server command");
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let stderr = child.stderr.take().expect("stderr");
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout
        .read_line(&mut line)
        .expect("read the listening line");
    let Some(addr) = line.trim().strip_prefix("nvkv listening on ") else {
        let _ = child.wait();
        panic!("server did not start: {line:?}\n{}", log.lock().unwrap());
    };
    Server {
        child,
        addr: addr.parse().expect("address"),
        dir: dir.to_owned(),
        log,
    }
}

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Runs `nvkv ARGS... DIR` to completion (for commands expected to stop by
/// themselves: a failing `serve`, `load`, `check`).
pub fn run_on(args: &[&str], dir: &Path) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    match args.split_first() {
        Some((&"check", rest)) if test_spdk().is_some() => {
            cmd.arg("check").args(SPDK_ENV).args(rest)
        }
        _ => cmd.args(args),
    };
    cmd.arg(dir).output().expect("run nvkv")
}

/// Runs `nvkv serve --path DIR ARGS...` (with the SPDK environment flags
/// on an SPDK namespace), expects it to refuse to start, and returns what
/// it printed on stderr.
pub fn refused_start(dir: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--path"]).arg(dir).args(args);
    if test_spdk().is_some() {
        cmd.args(SPDK_ENV);
    }
    let out = cmd.output().expect("run nvkv serve");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "serve {args:?} started\nstdout: {}\nstderr: {err}",
        String::from_utf8_lossy(&out.stdout)
    );
    err
}

/// DBSIZE over `con`.
pub fn dbsize(con: &mut redis::Connection) -> u64 {
    redis::cmd("DBSIZE").query(con).expect("DBSIZE")
}

/// A plain TCP connection to `srv`, for requests a client library would not
/// send; reads and writes time out after 10 s.
pub fn raw(srv: &Server) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(srv.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Everything the server sends on `s` until it closes the connection (or
/// the read times out).
pub fn read_all(mut s: std::net::TcpStream) -> String {
    let mut out = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// One command as a RESP array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Polls `cond` every 20 ms until it holds; panics after 30 s with `what`.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "timed out waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A redis-server of Debian's package on a free port, for comparisons;
/// `None` (with a line saying so) where none is installed.
pub struct RealRedis {
    child: std::process::Child,
    pub addr: String,
    /// Its working directory: a SAVE or BGSAVE writes dump.rdb there, not
    /// into the checkout.
    _dir: tempfile::TempDir,
}

impl RealRedis {
    pub fn start(extra: &[&str]) -> Option<RealRedis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let dir = tempfile::tempdir().ok()?;
        let child = std::process::Command::new("redis-server")
            .args([
                "--dir",
                dir.path().to_str()?,
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        let Ok(child) = child else {
            eprintln!("skipped the comparison with Redis: no redis-server installed");
            return None;
        };
        let addr = format!("127.0.0.1:{port}");
        let r = RealRedis {
            child,
            addr,
            _dir: dir,
        };
        wait_for("redis-server listening", || {
            std::net::TcpStream::connect(&r.addr).is_ok()
        });
        Some(r)
    }
}

impl Drop for RealRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RealRedis {
    /// A connection of the `redis` crate.
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(format!("redis://{}/", self.addr))
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

/// A connection the differential harness sends commands over: one
/// command in, its whole reply out.
pub trait Call {
    fn call(&mut self, args: &[&[u8]]) -> Vec<u8>;
}

impl Call for RawConn {
    fn call(&mut self, args: &[&[u8]]) -> Vec<u8> {
        RawConn::call(self, args)
    }
}

/// The same commands to nvkv (`ours`) and to a real redis-server
/// (`theirs`), each reply compared byte for byte.
pub struct Both<C = RawConn> {
    pub ours: C,
    pub theirs: C,
}

impl Both<RawConn> {
    pub fn connect(ours: &Server, theirs: &RealRedis) -> Both {
        Both {
            ours: RawConn::connect(ours.addr),
            theirs: RawConn::connect(theirs.addr.as_str()),
        }
    }
}

impl<C: Call> Both<C> {
    /// Sends `args` to both and asserts the same bytes come back; returns
    /// them.
    pub fn check(&mut self, args: &[&[u8]]) -> Vec<u8> {
        let ours = self.ours.call(args);
        let theirs = self.theirs.call(args);
        assert_eq!(
            ours.escape_ascii().to_string(),
            theirs.escape_ascii().to_string(),
            "{:?}",
            args.iter()
                .map(|a| a.escape_ascii().to_string())
                .collect::<Vec<_>>()
        );
        ours
    }

    pub fn check_str(&mut self, args: &[&str]) -> Vec<u8> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.check(&args)
    }

    /// [`Both::check_str`] for each command in turn.
    pub fn script(&mut self, cmds: &[&[&str]]) {
        for cmd in cmds {
            self.check_str(cmd);
        }
    }
}

/// A plain connection for comparing replies byte for byte: each call
/// sends a command and an `ECHO` of a marker, and returns the bytes that
/// came before the marker's reply (the command's whole reply, whatever its
/// type).
pub struct RawConn {
    stream: std::net::TcpStream,
}

const RAW_MARKER: &[u8] = b"\x00end-of-reply\x00";

impl RawConn {
    pub fn connect(addr: impl std::net::ToSocketAddrs) -> RawConn {
        let stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        RawConn { stream }
    }

    pub fn call(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.pipeline(&[args])
    }

    /// Sends `cmds` at once, pipelined, and returns their replies' bytes.
    pub fn pipeline(&mut self, cmds: &[&[&[u8]]]) -> Vec<u8> {
        use std::io::{Read, Write};
        let mut req: Vec<u8> = cmds.iter().flat_map(|c| encode(c)).collect();
        req.extend(encode(&[b"ECHO", RAW_MARKER]));
        self.stream.write_all(&req).expect("send");
        let mut tail = format!("${}\r\n", RAW_MARKER.len()).into_bytes();
        tail.extend_from_slice(RAW_MARKER);
        tail.extend_from_slice(b"\r\n");
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        while !got.ends_with(&tail) {
            let n = self.stream.read(&mut buf).expect("read a reply");
            assert!(n > 0, "connection closed after {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        got.truncate(got.len() - tail.len());
        got
    }
}

/// INFO's `keyspace_hits` and `keyspace_misses`.
pub fn hits_misses(con: &mut redis::Connection) -> (u64, u64) {
    let info: String = redis::cmd("INFO").arg("stats").query(con).unwrap();
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in INFO stats"))
    };
    (field("keyspace_hits"), field("keyspace_misses"))
}

/// Runs each of `cmds` in turn on `con`, alone or (`txn`) as a MULTI …
/// EXEC of its own, and returns the keyspace hits and misses INFO counts
/// for each: what tests compare with redis-server's.
pub fn hits_misses_of(con: &mut redis::Connection, cmds: &[&[&str]], txn: bool) -> Vec<(u64, u64)> {
    cmds.iter()
        .map(|args| {
            let before = hits_misses(con);
            let mut p = redis::pipe();
            if txn {
                p.atomic();
            }
            let c = p.cmd(args[0]);
            for a in &args[1..] {
                c.arg(*a);
            }
            let _: redis::Value = p
                .query(con)
                .unwrap_or_else(|e| panic!("{args:?} (in a transaction: {txn}): {e}"));
            let after = hits_misses(con);
            (after.0 - before.0, after.1 - before.1)
        })
        .collect()
}

/// Whether keys `a` and `b` lie on different pollers of the server at
/// `addr`: an MSETNX of keys on two pollers beside a command of the whole
/// key space (DBSIZE) inside MULTI … EXEC makes EXEC answer CROSSSLOT,
/// the one case of keys across pollers EXEC still refuses; on one poller
/// it runs, and an MSETNX missing its last value changes nothing.
pub fn apart(addr: impl std::net::ToSocketAddrs, a: &[u8], b: &[u8]) -> bool {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = encode(&[b"MULTI"]);
    req.extend(encode(&[b"MSETNX", a, b"probe", b]));
    req.extend(encode(&[b"DBSIZE"]));
    req.extend(encode(&[b"EXEC"]));
    req.extend(encode(&[b"ECHO", b"probed"]));
    s.write_all(&req).expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"probed\r\n") {
        let n = s.read(&mut buf).expect("read a reply");
        assert!(n > 0, "connection closed after {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    got.windows(10).any(|w| w == b"-CROSSSLOT")
}
