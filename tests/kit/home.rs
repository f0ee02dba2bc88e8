//! What the server leaves in its `CODEX_HOME`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

/// Every file and folder under `dir` by relative path (folders end in `/` and have no
/// content), with its content.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if path.is_dir() {
                out.insert(format!("{name}/"), vec![]);
                walk(root, &path, out);
            } else {
                out.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// `auth.json` under `home`, parsed; `None` when there is none.
pub fn auth_json(home: &Path) -> Option<Value> {
    match std::fs::read(home.join("auth.json")) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).expect("auth.json is JSON")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("reading auth.json: {e}"),
    }
}
