//! A private PostgreSQL for one test: its own cluster in a temp dir, on a Unix socket in
//! that dir and a free port on 127.0.0.1, with trust authentication, stopped and removed
//! when dropped. No service has to be running, so CI needs none.
//!
//! PostgreSQL refuses to run as root, and tests run as root in CI: then the cluster runs as
//! `nobody` (through `runuser`, or `setpriv` where that is missing), which owns the temp dir.
//! Without the binaries, [`PgCluster::start`] says so on the terminal and returns `None`,
//! so a test can skip visibly instead of passing silently.
//!
//! [`PgCluster::start_tls`] serves TLS with a certificate from the test's own authority
//! and can refuse TCP clients without it. The kit's own connections ([`PgCluster::execute`],
//! [`PgCluster::connect`]) go through the Unix socket, so they work whatever a test makes
//! its TCP clients prove.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The superuser `initdb` creates; trust authentication lets anyone on the machine connect
/// as it, which is what a throwaway test cluster wants.
pub const SUPERUSER: &str = "postgres";
/// The database [`PgCluster::url`] names.
pub const DATABASE: &str = "authbridge_test";
/// Names a directory holding `initdb` and `pg_ctl`, ahead of every other place.
pub const BIN_ENV: &str = "AUTHBRIDGE_PG_BIN";
/// How long the cluster may take to start or stop.
const START_LIMIT: Duration = Duration::from_secs(30);
const STOP_LIMIT_SECS: u32 = 10;

/// TLS for a cluster: the certificate it presents, and whether TCP clients must use TLS.
pub struct ServerTls {
    pub leaf: super::pki::Leaf,
    /// Only `hostssl` lines in `pg_hba.conf`: a client that connects over TCP at all has
    /// proved it used TLS.
    pub only_tls: bool,
    /// Lines put first in `pg_hba.conf`: a test's own rules (password authentication for
    /// a role, say) ahead of the kit's trust.
    pub hba_first: Vec<String>,
}

pub struct PgCluster {
    bin: PathBuf,
    /// Who runs the cluster's commands: empty for the current user, else the prefix that
    /// drops root.
    runner: Vec<String>,
    dir: Option<tempfile::TempDir>,
    port: u16,
}

impl PgCluster {
    /// A running cluster with [`DATABASE`] created; `None` (and a `SKIPPED:` line on the
    /// terminal) when PostgreSQL cannot be run here.
    pub fn start() -> Option<PgCluster> {
        Self::start_with(None)
    }

    /// [`PgCluster::start`] with `ssl = on`, presenting `tls.leaf`.
    pub fn start_tls(tls: ServerTls) -> Option<PgCluster> {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<ServerTls>) -> Option<PgCluster> {
        let Some(bin) = find_bin() else {
            skipped("PostgreSQL binaries not found");
            return None;
        };
        let runner = match unprivileged_runner() {
            Ok(runner) => runner,
            Err(why) => {
                skipped(&why);
                return None;
            }
        };
        let dir = tempfile::Builder::new()
            .prefix("authbridge-pg-")
            .tempdir()
            .expect("a temp dir");
        let mut cluster = PgCluster {
            bin,
            runner,
            dir: Some(dir),
            port: 0,
        };
        cluster.hand_dir_to_runner();
        cluster.initdb();
        if let Some(tls) = &tls {
            cluster.serve_tls(tls);
        }
        // Another process may take the free port between our probe and the bind.
        for attempt in 1..=3 {
            cluster.port = free_port();
            cluster.configure();
            match cluster.pg_ctl(&["start", "-w", "-t", &START_LIMIT.as_secs().to_string()]) {
                Ok(_) => break,
                Err(e) if attempt < 3 => eprintln!("pg_ctl start failed, retrying: {e}"),
                Err(e) => panic!("PostgreSQL did not start: {e}\n{}", cluster.log()),
            }
        }
        cluster.create_database(DATABASE);
        Some(cluster)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (every session ends at once, as in a failover) and starts it again
    /// on the same port; returns once it accepts connections.
    pub fn restart(&self) {
        let limit = START_LIMIT.as_secs().to_string();
        if let Err(e) = self.pg_ctl(&["restart", "-m", "fast", "-w", "-t", &limit]) {
            panic!("PostgreSQL did not restart: {e}\n{}", self.log());
        }
    }

    /// The directory holding the Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir().path()
    }

    /// `postgres://postgres@127.0.0.1:PORT/authbridge_test`.
    pub fn url(&self) -> String {
        self.database_url(DATABASE)
    }

    pub fn database_url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        assert!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "a plain database name"
        );
        self.execute("postgres", &format!("CREATE DATABASE {name}"));
        self.database_url(name)
    }

    /// Runs `sql` in `database`, from any context (a thread of its own has its own runtime,
    /// so a test's runtime can call this too).
    pub fn execute(&self, database: &str, sql: &str) {
        let config = self.socket_config(database);
        let sql = sql.to_owned();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let client = connect_config(&config).await;
                client
                    .batch_execute(&sql)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            })
        })
        .join()
        .expect("the SQL helper thread");
    }

    /// A client of [`DATABASE`] over the Unix socket, its connection on a task of the
    /// caller's runtime.
    pub async fn connect(&self) -> tokio_postgres::Client {
        connect_config(&self.socket_config(DATABASE)).await
    }

    /// The kit's own way in, which no `pg_hba.conf` line for TCP concerns.
    fn socket_config(&self, database: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(self.socket_dir())
            .port(self.port)
            .user(SUPERUSER)
            .dbname(database);
        config
    }

    /// The server log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().path().join("log")).unwrap_or_default()
    }

    fn dir(&self) -> &tempfile::TempDir {
        self.dir.as_ref().expect("present until dropped")
    }

    fn data(&self) -> PathBuf {
        self.dir().path().join("data")
    }

    fn hand_dir_to_runner(&self) {
        if self.runner.is_empty() {
            return;
        }
        let (uid, gid) = nobody().expect("checked by unprivileged_runner");
        std::os::unix::fs::chown(self.dir().path(), Some(uid), Some(gid))
            .expect("chown the cluster's temp dir");
    }

    fn initdb(&self) {
        let data = self.data();
        let args = [
            "-D",
            data.to_str().unwrap(),
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ];
        self.run("initdb", &args)
            .unwrap_or_else(|e| panic!("initdb failed: {e}"));
    }

    /// Writes the certificate and key where the cluster's user (and only it) can read the
    /// key, turns `ssl` on, and lets TCP clients in with TLS, and without it unless
    /// `only_tls`.
    fn serve_tls(&self, tls: &ServerTls) {
        let (cert, key) = tls.leaf.write(self.dir().path(), "server");
        if !self.runner.is_empty() {
            let (uid, gid) = nobody().expect("checked by unprivileged_runner");
            for file in [&cert, &key] {
                std::os::unix::fs::chown(file, Some(uid), Some(gid))
                    .expect("chown for the cluster");
            }
        }
        let settings = format!(
            "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            cert.display(),
            key.display()
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(self.data().join("postgresql.conf"))
            .and_then(|mut conf| conf.write_all(settings.as_bytes()))
            .expect("postgresql.conf after initdb");
        let mut hba: String = tls
            .hba_first
            .iter()
            .map(|line| format!("{line}\n"))
            .collect();
        hba.push_str("local all all trust\nhostssl all all 127.0.0.1/32 trust\n");
        if !tls.only_tls {
            hba.push_str("hostnossl all all 127.0.0.1/32 trust\n");
        }
        std::fs::write(self.data().join("pg_hba.conf"), hba).expect("pg_hba.conf");
    }

    /// Settings for a fast, private cluster; appended again on each start attempt (the
    /// last setting of a name wins).
    fn configure(&self) {
        let settings = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             shared_buffers = 16MB\nmax_connections = 50\n",
            self.port,
            self.dir().path().display()
        );
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data().join("postgresql.conf"))
            .expect("postgresql.conf after initdb");
        conf.write_all(settings.as_bytes()).unwrap();
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<Output, String> {
        let data = self.data();
        let log = self.dir().path().join("log");
        let mut all = vec!["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap()];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all)
    }

    /// Runs one of the cluster's programs as the cluster's user, in its dir (a user that
    /// cannot read the test's working directory would make `initdb` fail).
    fn run(&self, program: &str, args: &[&str]) -> Result<Output, String> {
        let program = self.bin.join(program);
        let mut command = match self.runner.split_first() {
            None => Command::new(&program),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&program);
                c
            }
        };
        let output = command
            .args(args)
            .current_dir(self.dir().path())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{}: {e}", program.display()))?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(format!(
                "{} exited with {}: {}",
                program.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// The postmaster's pid, for a stop that `pg_ctl` could not do.
    fn postmaster_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.port != 0 {
            let pid = self.postmaster_pid();
            let stop = self.pg_ctl(&[
                "stop",
                "-m",
                "immediate",
                "-w",
                "-t",
                &STOP_LIMIT_SECS.to_string(),
            ]);
            if let (Err(e), Some(pid)) = (stop, pid) {
                eprintln!("pg_ctl stop failed ({e}); killing the postmaster");
                // SAFETY: a plain kill(2) of the postmaster this cluster started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

/// Connects, retrying for a few seconds: a server that just said it is ready can still be
/// finishing its start-up.
pub async fn connect_url(url: &str) -> tokio_postgres::Client {
    connect_config(&url.parse().expect("a postgres:// URL")).await
}

async fn connect_config(config: &tokio_postgres::Config) -> tokio_postgres::Client {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match config.connect(tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                return client;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot connect to the test cluster: {e}"),
        }
    }
}

/// Says so on the terminal even when the test harness captures output.
fn skipped(why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

/// `$AUTHBRIDGE_PG_BIN`, then `PATH`, then Debian's versioned directories, newest first.
fn find_bin() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let from_env = std::env::var_os(BIN_ENV).map(PathBuf::from);
    let from_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .collect();
    debian.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    from_env
        .into_iter()
        .chain(from_path)
        .chain(debian.into_iter().map(|(_, dir)| dir))
        .find(|dir| has_tools(dir))
}

/// The command prefix that runs a program as `nobody` when we are root; empty otherwise.
fn unprivileged_runner() -> Result<Vec<String>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(vec![]);
    }
    let (uid, gid) = nobody().ok_or("running as root and there is no user `nobody`")?;
    let candidates = [
        vec![
            "runuser".to_owned(),
            "-u".into(),
            "nobody".into(),
            "--".into(),
        ],
        vec![
            "setpriv".to_owned(),
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".into(),
        ],
    ];
    candidates
        .into_iter()
        .find(|prefix| {
            Command::new(&prefix[0])
                .args(&prefix[1..])
                .arg("true")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .ok_or_else(|| {
            "running as root and neither runuser nor setpriv can drop to `nobody`".to_owned()
        })
}

fn nobody() -> Option<(u32, u32)> {
    // SAFETY: getpwnam with a NUL-terminated name; the result is read at once, before any
    // other call could reuse its static buffer (tests ask only for this one user).
    unsafe {
        let entry = libc::getpwnam(c"nobody".as_ptr());
        (!entry.is_null()).then(|| ((*entry).pw_uid, (*entry).pw_gid))
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}
