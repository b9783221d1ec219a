//! INFO's CPU section: Redis's `used_cpu_*` fields from getrusage, in
//! Redis's format, and the busy time of each poller and connection thread.

mod common;

use common::{RealRedis, Server};

/// The `field:value` lines of INFO section `cpu`.
fn cpu_fields(con: &mut redis::Connection) -> Vec<(String, String)> {
    let info: String = redis::cmd("INFO").arg("cpu").query(con).unwrap();
    assert!(info.starts_with("# CPU\r\n"), "{info}");
    info.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(f, v)| (f.to_string(), v.trim().to_string()))
        .collect()
}

/// Seconds with six decimals, as Redis prints `used_cpu_*`.
fn seconds(v: &str) -> f64 {
    let (s, us) = v.split_once('.').unwrap_or_else(|| panic!("{v}"));
    assert!(
        s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty(),
        "{v}"
    );
    assert!(
        us.len() == 6 && us.bytes().all(|b| b.is_ascii_digit()),
        "{v}"
    );
    v.parse().unwrap()
}

#[test]
fn cpu_section_has_redis_s_fields_and_each_thread_s_time() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--io-threads", "2", "--tcp-threads", "2"]);
    let mut con = srv.client();
    for i in 0..200 {
        redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg("v")
            .query::<()>(&mut con)
            .unwrap();
    }
    let ours = cpu_fields(&mut con);
    let get = |name: &str| -> f64 {
        let v = ours.iter().find(|(f, _)| f == name);
        seconds(&v.unwrap_or_else(|| panic!("no {name} in {ours:?}")).1)
    };
    // Every field Redis 7 has that is not about its main thread.
    if let Some(redis) = RealRedis::start(&[]) {
        for (field, v) in cpu_fields(&mut redis.client()) {
            if !field.ends_with("_main_thread") {
                seconds(&v);
                get(&field);
            }
        }
    }
    let total = get("used_cpu_sys") + get("used_cpu_user");
    assert!(total > 0.0);
    assert_eq!(
        get("used_cpu_sys_children") + get("used_cpu_user_children"),
        0.0
    );
    let threads: Vec<f64> = ["poller0_cpu", "poller1_cpu", "conn0_cpu", "conn1_cpu"]
        .iter()
        .map(|f| get(f))
        .collect();
    // Read after the threads' total, one clock after another: a little
    // later, a little more (a poller inside its connection thread shows
    // that thread's clock, so the sum counts it twice; its timed turns
    // run meanwhile).
    let busy = get("used_cpu_pollers") + get("used_cpu_conn_threads");
    let sum: f64 = threads.iter().sum();
    assert!(sum > 0.0 && sum <= busy + 0.05, "{threads:?} vs {busy}");
    assert!(
        threads.iter().all(|&t| t <= total + 0.05),
        "{threads:?} vs {total}"
    );
    // The section is in plain INFO, as in Redis.
    let plain: String = redis::cmd("INFO").query(&mut con).unwrap();
    assert!(plain.contains("\r\n# CPU\r\nused_cpu_sys:"), "{plain}");
    srv.stop();
}
