//! The redb engine: the operations applied to five tables of `midge.redb`, one write
//! transaction per group commit. Values are the bodies of [`super::codec`].

use std::path::{Path, PathBuf};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};

use super::codec::{self, Op, Reader};
use super::core::Engine;
use super::mirror::Mirror;
use super::StoreError;

const RETAINED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("retained");
const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
const MSGS: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
const QUEUED: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("queued");
const QOS2: TableDefinition<(&[u8], u16), ()> = TableDefinition::new("incoming_qos2");

pub(crate) struct RedbKv {
    path: PathBuf,
    db: Option<Database>,
    /// redb refuses further use after an I/O error: reopen before the next write.
    broken: bool,
    body: Vec<u8>,
}

fn err(path: &Path, e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Io(e) => StoreError::io(path, "redb", e),
        redb::Error::Corrupted(why) => StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: why,
        },
        other => StoreError::Backend {
            path: path.to_path_buf(),
            reason: format!("redb: {other}"),
        },
    }
}

impl RedbKv {
    pub(crate) fn open(dir: &Path) -> Result<RedbKv, StoreError> {
        let path = dir.join("midge.redb");
        let db = Database::create(&path).map_err(|e| err(&path, e))?;
        Ok(RedbKv {
            path,
            db: Some(db),
            broken: false,
            body: Vec::new(),
        })
    }

    fn db(&mut self) -> Result<&mut Database, StoreError> {
        if self.broken || self.db.is_none() {
            self.db = None;
            self.db = Some(Database::create(&self.path).map_err(|e| err(&self.path, e))?);
            self.broken = false;
        }
        Ok(self.db.as_mut().expect("opened above"))
    }

    fn write(
        &mut self,
        durable: bool,
        f: impl FnOnce(&WriteTransaction, &mut Vec<u8>) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let mut body = std::mem::take(&mut self.body);
        let result = (|| -> Result<(), redb::Error> {
            let db = self.db().map_err(|e| redb::Error::Backend(Box::new(e)))?;
            let mut txn = db.begin_write()?;
            txn.set_durability(if durable {
                Durability::Immediate
            } else {
                Durability::None
            })?;
            f(&txn, &mut body)?;
            txn.commit()?;
            Ok(())
        })();
        self.body = body;
        result.map_err(|e| {
            self.broken = true;
            err(&path, e)
        })
    }
}

fn apply(txn: &WriteTransaction, ops: &[Op], body: &mut Vec<u8>) -> Result<(), redb::Error> {
    let mut retained = txn.open_table(RETAINED)?;
    let mut sessions = txn.open_table(SESSIONS)?;
    let mut msgs = txn.open_table(MSGS)?;
    let mut queued = txn.open_table(QUEUED)?;
    let mut qos2 = txn.open_table(QOS2)?;
    for op in ops {
        body.clear();
        match op {
            Op::PutRetained {
                topic,
                msg,
                expires_ms,
            } => {
                codec::put_message(body, msg, *expires_ms);
                retained.insert(&topic.as_bytes()[..], &body[..])?;
            }
            Op::DelRetained { topic } => {
                retained.remove(&topic.as_bytes()[..])?;
            }
            Op::PutSession { client, session } => {
                codec::put_session(body, session);
                sessions.insert(&client.as_bytes()[..], &body[..])?;
            }
            Op::DelSession { client } => {
                sessions.remove(&client.as_bytes()[..])?;
            }
            Op::PutMsg {
                id,
                msg,
                expires_ms,
            } => {
                codec::put_message(body, msg, *expires_ms);
                msgs.insert(*id, &body[..])?;
            }
            Op::DelMsg { id } => {
                msgs.remove(*id)?;
            }
            Op::PutQueued {
                client,
                seq,
                body: q,
            } => {
                codec::put_queued_body(body, q);
                queued.insert((&client.as_bytes()[..], *seq), &body[..])?;
            }
            Op::DelQueued { client, seq } => {
                queued.remove((&client.as_bytes()[..], *seq))?;
            }
            Op::PutQos2 { client, packet_id } => {
                qos2.insert((&client.as_bytes()[..], *packet_id), ())?;
            }
            Op::DelQos2 { client, packet_id } => {
                qos2.remove((&client.as_bytes()[..], *packet_id))?;
            }
        }
    }
    Ok(())
}

fn corrupt(path: &Path, what: &str, e: codec::DecodeError) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("{what}: {e}"),
    }
}

fn utf8(path: &Path, b: &[u8]) -> Result<crate::protocol::ByteStr, StoreError> {
    crate::protocol::ByteStr::from_utf8(bytes::Bytes::copy_from_slice(b)).ok_or_else(|| {
        StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: "key is not UTF-8".into(),
        }
    })
}

impl Engine for RedbKv {
    fn replay(&mut self, f: &mut dyn FnMut(Op, usize)) -> Result<Vec<String>, StoreError> {
        let path = self.path.clone();
        let e = |x: redb::Error| err(&path, x);
        let db = self.db()?;
        // Create the tables on first use so that reads find them.
        {
            let txn = db.begin_write().map_err(|x| e(x.into()))?;
            txn.open_table(RETAINED).map_err(|x| e(x.into()))?;
            txn.open_table(SESSIONS).map_err(|x| e(x.into()))?;
            txn.open_table(MSGS).map_err(|x| e(x.into()))?;
            txn.open_table(QUEUED).map_err(|x| e(x.into()))?;
            txn.open_table(QOS2).map_err(|x| e(x.into()))?;
            txn.commit().map_err(|x| e(x.into()))?;
        }
        let txn = db.begin_read().map_err(|x| e(x.into()))?;
        let t = txn.open_table(MSGS).map_err(|x| e(x.into()))?;
        for row in t.iter().map_err(|x| e(x.into()))? {
            let (k, v) = row.map_err(|x| e(x.into()))?;
            let (msg, expires_ms) = codec::read_message(&mut Reader::new(v.value()))
                .map_err(|x| corrupt(&path, "messages", x))?;
            let size = v.value().len() + 9;
            f(
                Op::PutMsg {
                    id: k.value(),
                    msg,
                    expires_ms,
                },
                size,
            );
        }
        let t = txn.open_table(RETAINED).map_err(|x| e(x.into()))?;
        for row in t.iter().map_err(|x| e(x.into()))? {
            let (k, v) = row.map_err(|x| e(x.into()))?;
            let (msg, expires_ms) = codec::read_message(&mut Reader::new(v.value()))
                .map_err(|x| corrupt(&path, "retained", x))?;
            let size = k.value().len() + v.value().len() + 5;
            f(
                Op::PutRetained {
                    topic: utf8(&path, k.value())?,
                    msg,
                    expires_ms,
                },
                size,
            );
        }
        let t = txn.open_table(SESSIONS).map_err(|x| e(x.into()))?;
        for row in t.iter().map_err(|x| e(x.into()))? {
            let (k, v) = row.map_err(|x| e(x.into()))?;
            let session = codec::read_session(&mut Reader::new(v.value()))
                .map_err(|x| corrupt(&path, "sessions", x))?;
            let size = k.value().len() + v.value().len() + 5;
            f(
                Op::PutSession {
                    client: utf8(&path, k.value())?,
                    session: Box::new(session),
                },
                size,
            );
        }
        let t = txn.open_table(QUEUED).map_err(|x| e(x.into()))?;
        for row in t.iter().map_err(|x| e(x.into()))? {
            let (k, v) = row.map_err(|x| e(x.into()))?;
            let (client, seq) = k.value();
            let body = codec::read_queued_body(&mut Reader::new(v.value()))
                .map_err(|x| corrupt(&path, "queued", x))?;
            let size = client.len() + v.value().len() + 13;
            f(
                Op::PutQueued {
                    client: utf8(&path, client)?,
                    seq,
                    body,
                },
                size,
            );
        }
        let t = txn.open_table(QOS2).map_err(|x| e(x.into()))?;
        for row in t.iter().map_err(|x| e(x.into()))? {
            let (k, _) = row.map_err(|x| e(x.into()))?;
            let (client, packet_id) = k.value();
            f(
                Op::PutQos2 {
                    client: utf8(&path, client)?,
                    packet_id,
                },
                client.len() + 7,
            );
        }
        Ok(Vec::new())
    }

    fn append(&mut self, ops: &[Op], _encoded: &[u8], sync: bool) -> Result<(), StoreError> {
        self.write(sync, |txn, body| apply(txn, ops, body))
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        // An empty durable transaction makes every earlier non-durable one durable.
        self.write(true, |_, _| Ok(()))
    }

    fn rewrite(&mut self, mirror: &Mirror) -> Result<(), StoreError> {
        let mut ops = Vec::new();
        mirror.for_each_op(|op| ops.push(op));
        self.write(true, |txn, body| {
            txn.delete_table(RETAINED)?;
            txn.delete_table(SESSIONS)?;
            txn.delete_table(MSGS)?;
            txn.delete_table(QUEUED)?;
            txn.delete_table(QOS2)?;
            apply(txn, &ops, body)
        })?;
        let path = self.path.clone();
        // Give the freed pages back to the file system.
        if let Err(e) = self.db()?.compact() {
            log::warn!("{}", err(&path, e));
        }
        Ok(())
    }

    fn disk_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    fn os_needs_flusher(&self) -> bool {
        true
    }
}
