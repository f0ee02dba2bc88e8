//! `schema/` is the output of `authbridge generate-json-schema`: this fails when the Rust
//! types and the committed files disagree. Regenerate with
//! `cargo run -- generate-json-schema --out schema`.

use std::collections::BTreeSet;
use std::path::Path;

#[test]
fn committed_schema_matches_the_rust_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
    let generated = authbridge::schema::render();
    for (file, text) in &generated {
        let committed = std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|_| panic!("schema/{file} is missing; regenerate schema/"));
        assert_eq!(
            &committed, text,
            "schema/{file} is stale; regenerate schema/"
        );
    }
    let expected: BTreeSet<String> = generated.into_iter().map(|(f, _)| f).collect();
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        present, expected,
        "schema/ holds files the code does not generate"
    );
}

#[test]
fn the_cli_writes_the_same_files() {
    let out = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_authbridge"))
        .args(["generate-json-schema", "--out"])
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success());
    for (file, text) in authbridge::schema::render() {
        assert_eq!(
            std::fs::read_to_string(out.path().join(&file)).unwrap(),
            text,
            "{file}"
        );
    }
}
