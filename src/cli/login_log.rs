//! `$CODEX_HOME/log/codex-login.log` (Codex's `log_dir`): one line per command-line sign-in,
//! sign-out, refresh and import, so that a CI job that lost its credential can be traced
//! afterwards. Lines hold what happened and to which account, never a token, a key or a
//! code: every text written here is one of authbridge's own messages, which carry none.

use std::io::Write;
use std::path::Path;

const DIR: &str = "log";
const FILE: &str = "codex-login.log";

/// Appends `command: outcome` with the time and the process id. Best effort: a log that
/// cannot be written must not fail the sign-in it describes.
pub(crate) fn append(home: &Path, command: &str, outcome: &str) {
    if let Err(e) = try_append(home, command, outcome) {
        tracing::warn!("cannot write {}: {e}", home.join(DIR).join(FILE).display());
    }
}

fn try_append(home: &Path, command: &str, outcome: &str) -> std::io::Result<()> {
    let dir = home.join(DIR);
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&dir)?;
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(dir.join(FILE))?;
    // A file created earlier by someone else with a wider mode is narrowed, not trusted.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let line = format!(
        "{} pid={} {command}: {}\n",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        std::process::id(),
        outcome.replace('\n', " ")
    );
    file.write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_are_appended_to_a_private_file() {
        let home = tempfile::tempdir().unwrap();
        super::append(home.path(), "login", "first");
        super::append(home.path(), "logout", "second\nline");
        let path = home.path().join("log/codex-login.log");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].ends_with("login: first"), "{text}");
        assert!(lines[1].ends_with("logout: second line"), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}
