//! The credential in a PostgreSQL table, so that any number of broker instances, on any
//! number of machines, serve one credential and spend its refresh token one at a time.
//!
//! tokio-postgres rather than sqlx: it is one small crate on the tokio we already run, with
//! no macros or offline query metadata, and its `Connection::poll_message` hands us
//! `LISTEN` notifications directly, which is all the change feed needs.
//!
//! Each store keeps two connections: one for reads, which never wait behind a lock
//! (PostgreSQL reads the last committed row), and one for writes, whose mutex is also the
//! in-process single flight: a second refresh in this process waits for the first and then
//! finds the row it wrote.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;
use tokio_postgres::{Client, Row};

use super::error::StoreError;
use super::pg_tls::{self, PgTls, RustlsStream};
use super::row::{self, CredentialRow, CredentialState, ImportedCredential};
use super::seal::SealKey;
use crate::vocabulary::PermanentFailure;

pub(super) const TABLE: &str = "authbridge_credential";
/// The channel other instances listen on; the payload is `<id>:<generation>`, no secret.
pub const CHANNEL: &str = "credential_changed";
/// Every column but the sealed refresh token, in [`row_of`]'s order.
pub(super) const COLUMNS: &str = "id, generation, state, reason, account_id, plan, access_token, \
     access_exp, id_token, last_refresh, updated_at";

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS authbridge_credential (
    id text PRIMARY KEY,
    generation bigint NOT NULL,
    state text NOT NULL CHECK (state IN ('ok', 'needs_relogin')),
    reason text,
    account_id text,
    plan text,
    access_token text NOT NULL,
    access_exp timestamptz,
    id_token text NOT NULL,
    refresh_token bytea NOT NULL,
    last_refresh timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
)";
/// Serializes table creation: two instances starting on an empty database at once would
/// otherwise race inside `CREATE TABLE IF NOT EXISTS` and one would fail.
const SCHEMA_LOCK: i64 = 0x6175_7468_6272_6467; // "authbrdg"

/// Limits that decide how long a dead or stuck broker can hold the credential.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The row's id: one credential per id.
    pub id: String,
    /// How long a grant may take before its outcome counts as uncertain.
    pub grant_timeout: Duration,
    /// PostgreSQL ends a session idle inside a transaction this long, which releases the row
    /// lock of a broker that hangs or lost its network. Must exceed `grant_timeout`, since
    /// the session is idle in its transaction while the grant runs.
    pub lock_hold_limit: Duration,
    /// How long a refresh waits for another instance's row lock before giving up.
    pub lock_wait_limit: Duration,
    pub connect_timeout: Duration,
    /// TCP keepalive idle time, on both ends: a broker whose machine vanished is noticed
    /// by the server, and a server that vanished by the broker.
    pub keepalive_idle: Duration,
    /// The program's trusted roots, for `sslmode=verify-ca`/`verify-full` without
    /// `sslrootcert`; `None` reads them from the environment as start-up would.
    pub network: Option<crate::net::Network>,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            id: "default".into(),
            grant_timeout: Duration::from_secs(30),
            lock_hold_limit: Duration::from_secs(45),
            lock_wait_limit: Duration::from_secs(90),
            connect_timeout: Duration::from_secs(10),
            keepalive_idle: Duration::from_secs(10),
            network: None,
        }
    }
}

/// Opens connections with the session settings every one of them needs.
pub(super) struct Connector {
    config: tokio_postgres::Config,
    tls: PgTls,
    session: String,
    connect_timeout: Duration,
}

impl Connector {
    fn new(url: &str, options: &PgOptions) -> Result<Self, StoreError> {
        let (mut config, tls) = pg_tls::configure(url, options.network.as_ref())?;
        if config.get_application_name().is_none() {
            // The process id tells an operator (and the fleet test) which instance holds
            // the row lock: `pg_stat_activity.application_name`.
            config.application_name(format!("authbridge broker {}", std::process::id()));
        }
        config
            .connect_timeout(options.connect_timeout)
            .keepalives(true)
            .keepalives_idle(options.keepalive_idle)
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3);
        let ms = |d: Duration| d.as_millis().max(1);
        let session = format!(
            "SET idle_in_transaction_session_timeout = {}; SET lock_timeout = {}; \
             SET tcp_keepalives_idle = {}; SET tcp_keepalives_interval = 5; \
             SET tcp_keepalives_count = 3",
            ms(options.lock_hold_limit),
            ms(options.lock_wait_limit),
            options.keepalive_idle.as_secs().max(1),
        );
        Ok(Self {
            config,
            tls,
            session,
            connect_timeout: options.connect_timeout,
        })
    }

    /// A client whose connection runs on its own task; `None` for the connection itself
    /// when the caller drives it (the change feed reads notifications from it).
    pub(super) async fn connect_raw(
        &self,
    ) -> Result<
        (
            Client,
            tokio_postgres::Connection<tokio_postgres::Socket, RustlsStream>,
        ),
        StoreError,
    > {
        let limit = self.connect_timeout + Duration::from_secs(1);
        tokio::time::timeout(limit, self.config.connect(self.tls.connector()))
            .await
            .map_err(|_| StoreError::Timeout {
                what: "connecting",
                limit,
            })?
            .map_err(|e| self.tls.connect_error(e))
    }

    pub(super) async fn prepare(&self, client: &Client) -> Result<(), StoreError> {
        client
            .batch_execute(&self.session)
            .await
            .map_err(StoreError::db("setting session limits"))
    }

    async fn connect(&self) -> Result<Client, StoreError> {
        let (client, connection) = self.connect_raw().await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("PostgreSQL store connection ended: {e}");
            }
        });
        self.prepare(&client).await?;
        Ok(client)
    }
}

pub struct PgStore {
    pub(super) id: String,
    pub(super) key: SealKey,
    pub(super) options: PgOptions,
    pub(super) connector: Arc<Connector>,
    /// Shared by every credential of the database: reads never wait behind a lock.
    reader: Arc<Mutex<Option<Arc<Client>>>>,
    pub(super) writer: Arc<Mutex<Option<Client>>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects and creates the table when the database has none.
    pub async fn connect(url: &str, key: SealKey) -> Result<Self, StoreError> {
        Self::connect_with(url, key, PgOptions::default()).await
    }

    pub async fn connect_with(
        url: &str,
        key: SealKey,
        options: PgOptions,
    ) -> Result<Self, StoreError> {
        let connector = Connector::new(url, &options)?;
        let mut writer = connector.connect().await?;
        let tx = writer
            .transaction()
            .await
            .map_err(StoreError::db("creating the table"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await
            .map_err(StoreError::db("creating the table"))?;
        tx.batch_execute(SCHEMA)
            .await
            .map_err(StoreError::db("creating the table"))?;
        tx.commit()
            .await
            .map_err(StoreError::db("creating the table"))?;
        Ok(Self {
            id: options.id.clone(),
            key,
            options,
            connector: Arc::new(connector),
            reader: Arc::new(Mutex::new(None)),
            writer: Arc::new(Mutex::new(Some(writer))),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The store of another credential (row) of the same database: it shares the
    /// connection settings and the reading connection, and has a writing connection of its
    /// own (opened at its first write), since that connection's mutex is the credential's
    /// in-process single flight and one credential's grant must not wait for another's.
    pub(crate) fn sibling(&self, id: &str) -> PgStore {
        PgStore {
            id: id.to_owned(),
            key: self.key.clone(),
            options: PgOptions {
                id: id.to_owned(),
                ..self.options.clone()
            },
            connector: self.connector.clone(),
            reader: self.reader.clone(),
            writer: Arc::new(Mutex::new(None)),
        }
    }

    /// The ids of every stored credential, in order.
    pub(crate) async fn ids(&self) -> Result<Vec<String>, StoreError> {
        let client = self.reader().await?;
        let sql = format!("SELECT id FROM {TABLE} ORDER BY id");
        let rows = client
            .query(&sql, &[])
            .await
            .map_err(StoreError::db("listing the credentials"))?;
        rows.iter()
            .map(|r| r.try_get::<_, String>(0).map_err(|_| self.corrupt()))
            .collect()
    }

    /// Deletes the credential; returns the generation it had, `None` when there was none.
    /// Waits for a grant in progress (the row lock). Other instances hear of it as a
    /// change whose generation is one above the deleted row's.
    pub(crate) async fn delete(&self) -> Result<Option<i64>, StoreError> {
        let what = "deleting the credential";
        let mut slot = self.writer().await?;
        let client = slot.as_mut().expect("writer() connects");
        let tx = client.transaction().await.map_err(StoreError::db(what))?;
        let sql = format!("DELETE FROM {TABLE} WHERE id = $1 RETURNING generation");
        let deleted: Option<i64> = tx
            .query_opt(&sql, &[&self.id])
            .await
            .map_err(StoreError::db(what))?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(|_| self.corrupt())?;
        if let Some(generation) = deleted {
            let payload = format!("{}:{}", self.id, generation + 1);
            tx.execute(NOTIFY, &[&CHANNEL, &payload])
                .await
                .map_err(StoreError::db("announcing the change"))?;
        }
        tx.commit().await.map_err(StoreError::db(what))?;
        Ok(deleted)
    }

    /// The reading connection, opened again if it died.
    async fn reader(&self) -> Result<Arc<Client>, StoreError> {
        let mut slot = self.reader.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let client = Arc::new(self.connector.connect().await?);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// The writing connection, opened again if it died. Holding the guard is holding the
    /// in-process single flight; the owned guard outlives the borrow of the store, so a
    /// rotation can hold it from the re-read to the commit.
    pub(super) async fn writer(
        &self,
    ) -> Result<tokio::sync::OwnedMutexGuard<Option<Client>>, StoreError> {
        let mut slot = self.writer.clone().lock_owned().await;
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            *slot = None;
            *slot = Some(self.connector.connect().await?);
        }
        Ok(slot)
    }

    /// The committed row; `None` before the first import.
    pub async fn read(&self) -> Result<Option<CredentialRow>, StoreError> {
        let client = self.reader().await?;
        let sql = format!("SELECT {COLUMNS} FROM {TABLE} WHERE id = $1");
        let row = client
            .query_opt(&sql, &[&self.id])
            .await
            .map_err(StoreError::db("reading the credential"))?;
        row.map(|r| row_of(&r, &self.id)).transpose()
    }

    /// The refresh token, for the rare caller that must hold it outside a grant (an export
    /// back to `auth.json`, a revocation at sign-out).
    pub async fn unseal_refresh_token(&self) -> Result<SecretString, StoreError> {
        let client = self.reader().await?;
        let sql = format!("SELECT refresh_token FROM {TABLE} WHERE id = $1");
        let row = client
            .query_opt(&sql, &[&self.id])
            .await
            .map_err(StoreError::db("reading the credential"))?
            .ok_or_else(|| StoreError::NoCredential {
                id: self.id.clone(),
            })?;
        self.unseal(row.try_get(0).map_err(|_| self.corrupt())?)
    }

    pub(super) fn unseal(&self, sealed: &[u8]) -> Result<SecretString, StoreError> {
        let plain = self.key.open(sealed, &self.id)?;
        let text = std::str::from_utf8(&plain).map_err(|_| self.corrupt())?;
        Ok(SecretString::from(text))
    }

    pub(super) fn seal(&self, token: &SecretString) -> Vec<u8> {
        self.key.seal(token.expose_secret().as_bytes(), &self.id)
    }

    pub(super) fn corrupt(&self) -> StoreError {
        StoreError::Corrupt {
            id: self.id.clone(),
        }
    }

    /// Creates or replaces the credential with a new sign-in. A replaced row gets a higher
    /// generation and state `ok`: a latched credential comes back to life only this way.
    /// Waits for a grant in progress (the row lock), so the sign-in is never overwritten
    /// by the rotation of the credential it replaces.
    pub async fn import(
        &self,
        credential: ImportedCredential,
    ) -> Result<CredentialRow, StoreError> {
        self.import_above(credential, 1).await
    }

    /// [`import`](Self::import) whose generation is at least `floor`: a name deleted and
    /// imported again keeps counting up, so no worker takes the new credential for an old
    /// one.
    pub(crate) async fn import_above(
        &self,
        credential: ImportedCredential,
        floor: i64,
    ) -> Result<CredentialRow, StoreError> {
        let derived = row::derive(
            &credential.id_token,
            &credential.access_token,
            credential.account_id.clone(),
        );
        let sealed = self.seal(&credential.refresh_token);
        let last_refresh = credential.last_refresh.unwrap_or_else(SystemTime::now);
        let what = "importing the credential";
        let mut slot = self.writer().await?;
        let client = slot.as_mut().expect("writer() connects");
        let tx = client.transaction().await.map_err(StoreError::db(what))?;
        let sql = format!(
            "INSERT INTO {TABLE} (id, generation, state, reason, account_id, plan, access_token, \
               access_exp, id_token, refresh_token, last_refresh, updated_at) \
             VALUES ($1, GREATEST(1, $9::bigint), 'ok', NULL, $2, $3, $4, $5, $6, $7, $8, now()) \
             ON CONFLICT (id) DO UPDATE SET \
               generation = GREATEST({TABLE}.generation + 1, $9::bigint), state = 'ok', \
               reason = NULL, account_id = $2, plan = $3, access_token = $4, access_exp = $5, \
               id_token = $6, refresh_token = $7, last_refresh = $8, updated_at = now() \
             RETURNING {COLUMNS}"
        );
        let row = tx
            .query_one(
                &sql,
                &[
                    &self.id,
                    &derived.account_id,
                    &derived.plan,
                    &credential.access_token.expose_secret(),
                    &derived.access_exp,
                    &credential.id_token.expose_secret(),
                    &sealed,
                    &last_refresh,
                    &floor,
                ],
            )
            .await
            .map_err(StoreError::db(what))?;
        let row = row_of(&row, &self.id)?;
        tx.execute(NOTIFY, &[&CHANNEL, &notice(&row)])
            .await
            .map_err(StoreError::db("announcing the change"))?;
        tx.commit().await.map_err(StoreError::db(what))?;
        Ok(row)
    }
}

/// Announces a change to other instances. Queued inside the transaction: PostgreSQL
/// delivers it at commit, and never if the transaction rolls back.
pub(super) const NOTIFY: &str = "SELECT pg_notify($1, $2)";

/// The payload of [`NOTIFY`] for `row`: its id and generation, no secret.
pub(super) fn notice(row: &CredentialRow) -> String {
    format!("{}:{}", row.id, row.generation)
}

pub(super) fn row_of(row: &Row, id: &str) -> Result<CredentialRow, StoreError> {
    let corrupt = || StoreError::Corrupt { id: id.to_owned() };
    let text = |i: usize| row.try_get::<_, Option<String>>(i).map_err(|_| corrupt());
    let secret = |i: usize| {
        row.try_get::<_, &str>(i)
            .map(SecretString::from)
            .map_err(|_| corrupt())
    };
    let time = |i: usize| {
        row.try_get::<_, Option<SystemTime>>(i)
            .map_err(|_| corrupt())
    };
    let state: &str = row.try_get(2).map_err(|_| corrupt())?;
    Ok(CredentialRow {
        id: row.try_get(0).map_err(|_| corrupt())?,
        generation: row.try_get(1).map_err(|_| corrupt())?,
        state: CredentialState::from_sql(state).ok_or_else(corrupt)?,
        // A reason this version cannot name is still a dead credential.
        reason: text(3)?
            .map(|r| PermanentFailure::from_kind(&r).unwrap_or(PermanentFailure::Rejected)),
        account_id: text(4)?,
        plan: text(5)?,
        access_token: secret(6)?,
        access_exp: time(7)?,
        id_token: secret(8)?,
        last_refresh: time(9)?,
        updated_at: time(10)?.ok_or_else(corrupt)?,
    })
}
