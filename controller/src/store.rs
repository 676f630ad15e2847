//! The controller's state on disk: one redb file (no server). Every change
//! is one write transaction, durable when it returns, so a crash loses
//! nothing that was acknowledged.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use thiserror::Error;

use crate::records::{AuthKeyRecord, NodeRecord};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const NODES: TableDefinition<u64, &[u8]> = TableDefinition::new("nodes");
const AUTH_KEYS: TableDefinition<u64, &[u8]> = TableDefinition::new("auth_keys");

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("database {0} is in use by another process (a running `cvlan-controller serve`?)")]
    InUse(PathBuf),
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("database error: {0}")]
    Db(#[from] redb::Error),
    #[error("database record {0} is corrupt")]
    Corrupt(&'static str),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                Self::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Everything in the database, read once at startup.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub nodes: Vec<NodeRecord>,
    pub auth_keys: Vec<AuthKeyRecord>,
    pub meta: Vec<(String, Vec<u8>)>,
}

#[derive(Debug)]
pub struct Store {
    db: Database,
}

/// Changes made in one transaction.
pub struct Batch<'a> {
    txn: &'a WriteTransaction,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Batch")
    }
}

impl Batch<'_> {
    pub fn put_node(&self, n: &NodeRecord) -> Result<(), StoreError> {
        self.txn
            .open_table(NODES)?
            .insert(n.id, n.encode_to_vec().as_slice())?;
        Ok(())
    }

    pub fn delete_node(&self, id: u64) -> Result<(), StoreError> {
        self.txn.open_table(NODES)?.remove(id)?;
        Ok(())
    }

    pub fn put_auth_key(&self, k: &AuthKeyRecord) -> Result<(), StoreError> {
        self.txn
            .open_table(AUTH_KEYS)?
            .insert(k.id, k.encode_to_vec().as_slice())?;
        Ok(())
    }

    pub fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.txn.open_table(META)?.insert(key, value)?;
        Ok(())
    }
}

impl Store {
    /// Opens or creates the database; the file is made 0600 (it names
    /// every node and holds key hashes).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(|source| match source {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse(path.into()),
            source => StoreError::Open {
                path: path.into(),
                source,
            },
        })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let store = Self { db };
        store.write(|b| {
            // Creates the tables on a new database.
            b.txn.open_table(META)?;
            b.txn.open_table(NODES)?;
            b.txn.open_table(AUTH_KEYS)?;
            Ok(())
        })?;
        Ok(store)
    }

    /// Runs `f` in one write transaction and commits it durably.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&Batch<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let txn = self.db.begin_write()?;
        let out = f(&Batch { txn: &txn })?;
        txn.commit()?;
        Ok(out)
    }

    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let txn = self.db.begin_read()?;
        let mut snap = Snapshot::default();
        for row in txn.open_table(NODES)?.iter()? {
            let (_, v) = row?;
            let rec = NodeRecord::decode(v.value()).map_err(|_| StoreError::Corrupt("node"))?;
            snap.nodes.push(rec);
        }
        for row in txn.open_table(AUTH_KEYS)?.iter()? {
            let (_, v) = row?;
            let rec =
                AuthKeyRecord::decode(v.value()).map_err(|_| StoreError::Corrupt("auth key"))?;
            snap.auth_keys.push(rec);
        }
        for row in txn.open_table(META)?.iter()? {
            let (k, v) = row?;
            snap.meta.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(snap)
    }
}
