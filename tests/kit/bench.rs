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

/// `work`'s output; panics naming `what` if it takes longer than `limit`.
pub async fn within<T>(limit: Duration, what: &str, work: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, work).await {
        Ok(done) => done,
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

/// A `kB` field of a `/proc/.../status` file (`VmRSS`, `VmHWM`).
pub fn status_field(path: &std::path::Path, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(field)?
            .strip_prefix(':')?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}

/// A `kB` field of process `pid`'s status.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    status_field(
        &std::path::Path::new("/proc")
            .join(pid.to_string())
            .join("status"),
        field,
    )
}

/// RSS once two readings 250 ms apart are within 0.5 % of each other (waiting at most
/// `limit`).
pub async fn settled_rss(pid: u32, limit: Duration) -> Option<u64> {
    let deadline = std::time::Instant::now() + limit;
    let mut last = proc_status_kib(pid, "VmRSS")?;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = proc_status_kib(pid, "VmRSS")?;
        if now.abs_diff(last) * 200 <= last || std::time::Instant::now() > deadline {
            return Some(now);
        }
        last = now;
    }
}

/// The 1, 5 and 15 minute load averages: other work on the machine shows in the latencies.
pub fn load_average() -> Option<String> {
    let loadavg = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        loadavg
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Raises the open-file limit to its hard limit (many sockets); returns the limit in
/// effect.
#[cfg(unix)]
pub fn raise_fd_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes one `rlimit` through the pointer, which is valid.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit(2) reads one `rlimit` through the pointer, which is valid.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            eprintln!(
                "warning: could not raise the open-file limit from {} to {}: {}",
                limit.rlim_cur,
                limit.rlim_max,
                std::io::Error::last_os_error()
            );
        }
    }
    // `rlim_t` is `u64` here but not on every target.
    #[allow(clippy::useless_conversion)]
    u64::try_from(limit.rlim_cur).ok()
}

#[cfg(not(unix))]
pub fn raise_fd_limit() -> Option<u64> {
    None
}
