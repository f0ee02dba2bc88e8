//! The change feed: other instances' rotations, so every broker serves the newest access
//! token without polling. PostgreSQL drops notifications sent while a listener is
//! disconnected, so the feed re-reads the row whenever it (re)connects; a reader of the
//! feed never misses the latest row, only intermediate ones.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_postgres::AsyncMessage;

use super::error::StoreError;
use super::pg_store::{CHANNEL, COLUMNS, Connector, PgStore, TABLE, row_of};
use super::row::CredentialRow;

/// Pauses between reconnection attempts, growing to the last.
const BACKOFF: [Duration; 4] = [
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_secs(2),
    Duration::from_secs(5),
];

/// The latest row as the feed last read it. Ends its task when dropped.
pub struct Subscription {
    rows: watch::Receiver<Option<CredentialRow>>,
    connected: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Subscription {
    /// Waits for the row to change (a notification, or a re-read after reconnecting) and
    /// returns it. `None` while the credential does not exist.
    pub async fn changed(&mut self) -> Option<CredentialRow> {
        // The sender lives as long as the task, which runs until this is dropped.
        let _ = self.rows.changed().await;
        self.rows.borrow_and_update().clone()
    }

    /// Another view of the rows, for a task that follows every change.
    pub(crate) fn rows(&self) -> watch::Receiver<Option<CredentialRow>> {
        self.rows.clone()
    }

    /// The row as last read, without waiting.
    pub fn current(&self) -> Option<CredentialRow> {
        self.rows.borrow().clone()
    }

    /// Whether the feed is listening now; notifications sent while it is not are lost
    /// (the re-read on reconnecting makes up for them).
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Waits until the feed listens (for tests and start-up ordering).
    pub async fn wait_connected(&mut self) {
        let _ = self.connected.wait_for(|c| *c).await;
    }
}

impl PgStore {
    /// Listens for changes of this store's credential on a dedicated connection.
    pub fn subscribe(&self) -> Subscription {
        let (rows_tx, rows) = watch::channel(None);
        let (connected_tx, connected) = watch::channel(false);
        let task = tokio::spawn(feed(
            self.connector.clone(),
            self.id.clone(),
            rows_tx,
            connected_tx,
        ));
        Subscription {
            rows,
            connected,
            task,
        }
    }
}

async fn feed(
    connector: Arc<Connector>,
    id: String,
    rows: watch::Sender<Option<CredentialRow>>,
    connected: watch::Sender<bool>,
) {
    let mut failures = 0usize;
    loop {
        match listen_once(&connector, &id, &rows, &connected).await {
            Ok(()) => failures = 0,
            Err(e) => {
                tracing::warn!("credential change feed: {e}; reconnecting");
                failures += 1;
            }
        }
        connected.send_replace(false);
        let pause = BACKOFF[failures.min(BACKOFF.len() - 1)];
        tokio::time::sleep(pause).await;
    }
}

/// One connection's life: listen, re-read, then re-read at every notification for this id
/// until the connection ends.
async fn listen_once(
    connector: &Connector,
    id: &str,
    rows: &watch::Sender<Option<CredentialRow>>,
    connected: &watch::Sender<bool>,
) -> Result<(), StoreError> {
    let (client, mut connection) = connector.connect_raw().await?;
    let (notes_tx, mut notes) = mpsc::unbounded_channel();
    // The connection must be polled for queries to progress; this task also picks the
    // notifications out of its messages.
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = notes_tx.send(n.payload().to_owned());
                }
                Ok(_) => {}
                Err(e) => return Err(StoreError::db("listening")(e)),
            }
        }
        Ok(())
    });
    let _abort_driver = AbortOnDrop(driver.abort_handle());
    connector.prepare(&client).await?;
    // Named apart so an operator (or a test) can tell the feed from the lock holders.
    client
        .batch_execute(&format!(
            "SET application_name = 'authbridge broker (change feed)'; LISTEN {CHANNEL}"
        ))
        .await
        .map_err(StoreError::db("listening"))?;
    let sql = format!("SELECT {COLUMNS} FROM {TABLE} WHERE id = $1");
    let read = || async {
        let row = client
            .query_opt(&sql, &[&id])
            .await
            .map_err(StoreError::db("re-reading the credential"))?;
        row.map(|r| row_of(&r, id)).transpose()
    };
    rows.send_replace(read().await?);
    connected.send_replace(true);
    while let Some(payload) = notes.recv().await {
        if payload.rsplit_once(':').is_some_and(|(of, _)| of == id) {
            rows.send_replace(read().await?);
        }
    }
    // The connection ended: its driver says why.
    match driver.await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
