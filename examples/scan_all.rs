//! Times a full SCAN of a server's key space: `scan_all ADDR [COUNT]`
//! sends SCAN with COUNT (default 1000) from cursor 0 until it comes back
//! to 0, and prints the keys returned, the distinct ones, the steps, the
//! seconds, and the slowest steps (a step that waits for a poller's fill
//! of its cache of key names takes longest; scripts/bench-keyspace.sh
//! runs it).

use std::collections::HashSet;
use std::time::Instant;

fn main() -> redis::RedisResult<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:6379".into());
    let count: u64 = args.next().map_or(1000, |c| c.parse().expect("COUNT"));
    let mut con = redis::Client::open(format!("redis://{addr}/"))?.get_connection()?;
    let t = Instant::now();
    let (mut cursor, mut steps, mut returned) = (0u64, 0u64, 0u64);
    let mut distinct: HashSet<Vec<u8>> = HashSet::new();
    let mut slowest: Vec<(f64, u64)> = Vec::new();
    loop {
        let step = Instant::now();
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(count)
            .query(&mut con)?;
        slowest.push((step.elapsed().as_secs_f64(), steps));
        steps += 1;
        returned += keys.len() as u64;
        distinct.extend(keys);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let took = t.elapsed().as_secs_f64();
    slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
    let slow: Vec<String> = (slowest.iter().take(3))
        .map(|(s, i)| format!("#{i} {:.3} s", s))
        .collect();
    println!(
        "{returned} keys ({} distinct) in {steps} steps, {took:.3} s (slowest steps: {})",
        distinct.len(),
        slow.join(", ")
    );
    Ok(())
}
