use std::sync::Mutex;

use super::keyring::store_key;
use super::*;
use crate::auth::jwt;
use serde_json::{Value, json};

fn mock_keyring() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| keyring_core::set_default_store(keyring_core::mock::Store::new().unwrap()));
}

fn chatgpt_document(account: &str, refresh: &str) -> AuthDocument {
    let id = jwt::unsigned_token(&json!({"email": "m@example.com",
        "https://api.openai.com/auth": {"chatgpt_account_id": account, "chatgpt_plan_type": "team"}}));
    AuthDocument::default().with_chatgpt(
        TokenData {
            id_token: SecretText::new(id),
            access_token: SecretText::new("a.b.c".into()),
            refresh_token: SecretText::new(refresh.into()),
            account_id: Some(account.into()),
            other: Default::default(),
        },
        None,
        SystemTime::now(),
    )
}

fn file_json(store: &CredentialStore) -> Value {
    serde_json::from_slice(&std::fs::read(store.file_path()).unwrap()).unwrap()
}

#[test]
fn the_file_store_writes_the_reference_format_with_private_modes() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let store = CredentialStore::new(&home, CredentialsStore::File, None);
    store
        .save(&AuthDocument::default().with_api_key(SecretText::new("sk-test".into())))
        .unwrap();
    assert_eq!(
        file_json(&store),
        json!({"auth_mode": "apikey", "OPENAI_API_KEY": "sk-test"})
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store.file_path()), 0o600);
        assert_eq!(mode(&home), 0o700, "a home authbridge creates is private");
    }
    assert!(matches!(store.load().unwrap(), Some(Stored::ApiKey(_))));
    store.delete().unwrap();
    assert!(store.load().unwrap().is_none());
    assert_eq!(
        std::fs::read_dir(&home).unwrap().count(),
        0,
        "no temp file left"
    );
}

#[test]
fn reads_a_managed_chatgpt_file_and_its_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let store = CredentialStore::new(dir.path(), CredentialsStore::File, None);
    store.save(&chatgpt_document("ws-9", "rt")).unwrap();
    let Some(Stored::Chatgpt(t)) = store.load().unwrap() else {
        panic!("not chatgpt")
    };
    assert_eq!(t.account_id.as_deref(), Some("ws-9"));
    assert_eq!(t.claims.email.as_deref(), Some("m@example.com"));
    assert!(t.last_refresh.is_some());
    assert_eq!(file_json(&store)["tokens"]["refresh_token"], "rt");
}

#[test]
fn a_rewrite_keeps_fields_authbridge_does_not_know() {
    let dir = tempfile::tempdir().unwrap();
    let store = CredentialStore::new(dir.path(), CredentialsStore::File, None);
    std::fs::write(
        store.file_path(),
        r#"{"OPENAI_API_KEY":"sk-old","future_field":{"kept":true}}"#,
    )
    .unwrap();
    let doc = store.load_document().unwrap().unwrap();
    store
        .save(&doc.with_api_key(SecretText::new("sk-new".into())))
        .unwrap();
    let v = file_json(&store);
    assert_eq!(v["future_field"], json!({"kept": true}));
    assert_eq!(v["OPENAI_API_KEY"], "sk-new");
}

#[test]
fn a_corrupt_file_is_a_clear_error_without_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let store = CredentialStore::new(dir.path(), CredentialsStore::File, None);
    std::fs::write(store.file_path(), "{\"OPENAI_API_KEY\": \"sk-leak").unwrap();
    let e = store.load().unwrap_err().to_string();
    assert!(e.contains("not a credential file"), "{e}");
    assert!(!e.contains("sk-leak"), "{e}");
}

#[test]
fn a_torn_read_is_retried_until_the_writer_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let store = CredentialStore::new(dir.path(), CredentialsStore::File, None);
    std::fs::write(store.file_path(), "{\"auth_mode\":\"apikey\",").unwrap();
    let path = store.file_path().to_owned();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        std::fs::write(path, r#"{"auth_mode":"apikey","OPENAI_API_KEY":"sk-x"}"#).unwrap();
    });
    assert!(matches!(store.load().unwrap(), Some(Stored::ApiKey(_))));
    writer.join().unwrap();
}

#[cfg(unix)]
#[test]
fn a_fifo_in_place_of_the_file_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let store = CredentialStore::new(dir.path(), CredentialsStore::File, None);
    let fifo = std::ffi::CString::new(store.file_path().to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    assert!(matches!(store.load(), Err(StorageError::NotAFile { .. })));
}

#[test]
fn the_keyring_store_uses_codex_s_entry_and_removes_the_file_copy() {
    mock_keyring();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(AUTH_FILE), "{}").unwrap();
    let store = CredentialStore::new(dir.path(), CredentialsStore::Keyring, None);
    store.save(&chatgpt_document("ws-k", "rt-k")).unwrap();
    assert!(
        !store.file_path().exists(),
        "the stale file copy is removed"
    );
    let entry = keyring_core::Entry::new("Codex Auth", &store_key(dir.path())).unwrap();
    let value: Value = serde_json::from_str(&entry.get_password().unwrap()).unwrap();
    assert_eq!(value["tokens"]["refresh_token"], "rt-k");
    assert!(store_key(dir.path()).starts_with("cli|"));
    assert_eq!(store_key(dir.path()).len(), 4 + 16);
    assert!(matches!(store.load().unwrap(), Some(Stored::Chatgpt(_))));
    store.delete().unwrap();
    assert!(store.load().unwrap().is_none());
}

#[test]
fn auto_falls_back_to_the_file_visibly_when_the_keyring_fails() {
    mock_keyring();
    let dir = tempfile::tempdir().unwrap();
    let warned = Arc::new(Mutex::new(Vec::new()));
    let sink = warned.clone();
    let store = CredentialStore::new(
        dir.path(),
        CredentialsStore::Auto,
        Some(Arc::new(move |m| sink.lock().unwrap().push(m))),
    );
    let entry = keyring_core::Entry::new("Codex Auth", &store_key(dir.path())).unwrap();
    let cred: &keyring_core::mock::Cred = entry.as_any().downcast_ref().unwrap();
    cred.set_error(keyring_core::Error::NoStorageAccess(
        "locked collection".into(),
    ));
    store.save(&chatgpt_document("ws-a", "rt-a")).unwrap();
    assert!(store.file_path().exists(), "the file took the credential");
    let warning = store.warning().expect("the fallback is visible");
    assert!(warning.contains("keyring is unavailable"), "{warning}");
    assert!(!warning.contains("rt-a"));
    assert_eq!(
        warned.lock().unwrap().len(),
        1,
        "clients are told of the write"
    );
    assert!(store.describe().contains("keyring unavailable"));
    // Once the keyring works again, the next save goes there and the warning ends.
    store.save(&chatgpt_document("ws-a", "rt-b")).unwrap();
    assert!(store.warning().is_none());
    assert!(!store.file_path().exists());
}

#[test]
fn ephemeral_keeps_nothing_on_disk_and_seeding_respects_an_existing_credential() {
    let dir = tempfile::tempdir().unwrap();
    let store = CredentialStore::new(dir.path(), CredentialsStore::Ephemeral, None);
    let seed = br#"{"auth_mode":"apikey","OPENAI_API_KEY":"sk-seed"}"#;
    assert!(store.seed(seed).unwrap());
    assert!(matches!(store.load().unwrap(), Some(Stored::ApiKey(_))));
    assert!(!store.seed(br#"{"OPENAI_API_KEY":"sk-other"}"#).unwrap());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    assert!(store.seed(b"not json").is_err());
}

#[test]
fn compare_and_swap_writes_only_over_the_expected_credential() {
    mock_keyring();
    for kind in [CredentialsStore::File, CredentialsStore::Ephemeral] {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore::new(dir.path(), kind, None);
        store.save(&chatgpt_document("ws", "rt-1")).unwrap();
        let read = store.load_document().unwrap();
        // Another program rotates meanwhile: the swap leaves its document in place.
        store.save(&chatgpt_document("ws", "rt-codex")).unwrap();
        match store
            .compare_and_swap(&read, chatgpt_document("ws", "rt-ours"))
            .unwrap()
        {
            Swap::Moved(Some(now)) => {
                assert_eq!(now.tokens.unwrap().refresh_token.expose(), "rt-codex")
            }
            _ => panic!("{kind:?}: the swap went over a changed credential"),
        }
        let read = store.load_document().unwrap();
        assert!(matches!(
            store
                .compare_and_swap(&read, chatgpt_document("ws", "rt-ours"))
                .unwrap(),
            Swap::Swapped(_)
        ));
        let now = store.load_document().unwrap().unwrap();
        assert_eq!(now.tokens.unwrap().refresh_token.expose(), "rt-ours");
    }
}
