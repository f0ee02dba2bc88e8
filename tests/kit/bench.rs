//! For the benches: their one option and the runtime their client runs on.

use std::future::Future;
use std::time::Duration;

/// Whether `--quick` was given (`cargo bench` also passes `--bench`; anything else is
/// ignored).
pub fn quick() -> bool {
    std::env::args().skip(1).any(|a| a == "--quick")
}

/// Runs `bench` to the end as a task on a two-worker runtime, as an async parent would run
/// its client; panics if it panics or takes longer than `limit`.
pub fn run(limit: Duration, bench: impl Future<Output = ()> + Send + 'static) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        match tokio::time::timeout(limit, tokio::spawn(bench)).await {
            Ok(done) => done.expect("the bench panicked"),
            Err(_) => panic!("the bench did not finish within {limit:?}"),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
}

/// Prints rows of columns, each column padded to its widest cell; the second column (the
/// figure) is right-aligned.
pub fn print_rows(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    println!();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let pad = " ".repeat(widths[c] - cell.chars().count());
            if c == 1 {
                line.push_str(&pad);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&pad);
            }
            line.push_str("  ");
        }
        println!("{}", line.trim_end());
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The sample at quantile `q` of `sorted` (nearest rank).
pub fn pct(sorted: &[u64], q: f64) -> u64 {
    let n = sorted.len();
    assert!(n > 0, "no samples");
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    sorted[rank - 1]
}

/// Nanoseconds as microseconds.
pub fn us(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1e3)
}

/// Nanoseconds as milliseconds.
pub fn ms(ns: u64) -> String {
    format!("{:.2} ms", ns as f64 / 1e6)
}
