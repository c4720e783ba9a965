//! Holds the messages of streamed (in-progress) transactions until their
//! Stream Commit: in memory up to a limit, then in a file per transaction,
//! so a transaction of any size costs bounded memory.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;

use bytes::Bytes;

use crate::core::files::{create_private_dir, create_private_file};

/// Per-transaction bytes kept in memory before spilling to disk.
pub const DEFAULT_MEMORY_PER_TXN: usize = 4 << 20;

#[derive(Default)]
struct Held {
    memory: Vec<(u64, Bytes)>,
    memory_bytes: usize,
    file: Option<(PathBuf, BufWriter<File>)>,
    aborted_subxacts: HashSet<u32>,
}

pub struct StreamSpill {
    dir: PathBuf,
    memory_per_txn: usize,
    txns: HashMap<u32, Held>,
}

impl StreamSpill {
    /// Spill files go to `dir` (created on demand, owner-only; files a
    /// crashed run left behind are removed here, at start-up).
    pub fn new(dir: impl Into<PathBuf>, memory_per_txn: usize) -> Self {
        let dir = dir.into();
        let _ = std::fs::remove_dir_all(&dir);
        StreamSpill {
            dir,
            memory_per_txn,
            txns: HashMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.txns.is_empty()
    }

    pub fn append(&mut self, xid: u32, wal_start: u64, msg: Bytes) -> io::Result<()> {
        let limit = self.memory_per_txn;
        let dir = self.dir.clone();
        let held = self.txns.entry(xid).or_default();
        if let Some((_, w)) = &mut held.file {
            return write_record(w, wal_start, &msg);
        }
        held.memory_bytes += msg.len() + 16;
        held.memory.push((wal_start, msg));
        if held.memory_bytes > limit {
            // Row data: owner-only.
            create_private_dir(&dir)?;
            let path = dir.join(format!("xid-{xid}.spill"));
            let mut w = BufWriter::with_capacity(1 << 20, create_private_file(&path)?);
            for (lsn, m) in held.memory.drain(..) {
                write_record(&mut w, lsn, &m)?;
            }
            held.memory_bytes = 0;
            tracing::debug!(xid, path = %path.display(), "spilling streamed transaction to disk");
            held.file = Some((path, w));
        }
        Ok(())
    }

    /// Stream Abort: the whole transaction (`subxid == xid`) or one subtransaction.
    pub fn abort(&mut self, xid: u32, subxid: u32) {
        if xid == subxid {
            if let Some(held) = self.txns.remove(&xid) {
                if let Some((path, _)) = held.file {
                    let _ = std::fs::remove_file(path);
                }
            }
        } else if let Some(held) = self.txns.get_mut(&xid) {
            held.aborted_subxacts.insert(subxid);
        }
    }

    /// Stream Commit: the held messages in order, and the aborted
    /// subtransactions whose changes must be skipped.
    pub fn take(&mut self, xid: u32) -> io::Result<(Replay, HashSet<u32>)> {
        let Some(held) = self.txns.remove(&xid) else {
            return Ok((Replay::Memory(Vec::new().into_iter()), HashSet::new()));
        };
        let replay = match held.file {
            Some((path, mut w)) => {
                w.flush()?;
                drop(w);
                let file = File::open(&path)?;
                // Unlinked now; the open handle keeps the data readable.
                let _ = std::fs::remove_file(&path);
                Replay::File(BufReader::with_capacity(1 << 20, file))
            }
            None => Replay::Memory(held.memory.into_iter()),
        };
        Ok((replay, held.aborted_subxacts))
    }

    /// Drops everything (connection lost: the server resends on reconnect).
    pub fn clear(&mut self) {
        for (_, held) in self.txns.drain() {
            if let Some((path, _)) = held.file {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

impl Drop for StreamSpill {
    fn drop(&mut self) {
        self.clear();
    }
}

fn write_record(w: &mut BufWriter<File>, lsn: u64, msg: &[u8]) -> io::Result<()> {
    w.write_all(&lsn.to_be_bytes())?;
    w.write_all(&(msg.len() as u32).to_be_bytes())?;
    w.write_all(msg)
}

/// The messages of one committed streamed transaction, in order.
pub enum Replay {
    Memory(std::vec::IntoIter<(u64, Bytes)>),
    File(BufReader<File>),
}

impl Replay {
    pub fn next_message(&mut self) -> io::Result<Option<(u64, Bytes)>> {
        match self {
            Replay::Memory(it) => Ok(it.next()),
            Replay::File(r) => {
                let mut head = [0u8; 12];
                match r.read_exact(&mut head) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
                    Err(e) => return Err(e),
                }
                let lsn = u64::from_be_bytes(head[..8].try_into().unwrap());
                let len = u32::from_be_bytes(head[8..].try_into().unwrap()) as usize;
                let mut buf = vec![0u8; len];
                r.read_exact(&mut buf)?;
                Ok(Some((lsn, Bytes::from(buf))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(mut r: Replay) -> Vec<(u64, Bytes)> {
        let mut out = Vec::new();
        while let Some(m) = r.next_message().unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn memory_then_file_keeps_order_and_aborts() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = StreamSpill::new(dir.path().join("spill"), 64);
        for i in 0..50u64 {
            s.append(7, i, Bytes::from(vec![i as u8; 10])).unwrap();
        }
        s.append(8, 1, Bytes::from_static(b"small")).unwrap();
        s.abort(7, 99);
        assert!(dir.path().join("spill/xid-7.spill").exists());
        let (replay, aborted) = s.take(7).unwrap();
        let msgs = drain(replay);
        assert_eq!(msgs.len(), 50);
        assert!(msgs
            .iter()
            .enumerate()
            .all(|(i, (l, m))| *l == i as u64 && m[0] == i as u8));
        assert!(aborted.contains(&99));
        assert!(!dir.path().join("spill/xid-7.spill").exists());
        s.abort(8, 8);
        assert!(s.is_empty());
        let (replay, _) = s.take(8).unwrap();
        assert!(drain(replay).is_empty());
    }

    #[test]
    fn spill_files_are_owner_only_and_stale_ones_go_at_start() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("spill");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("xid-1.spill"), b"left by a crash").unwrap();
        let mut s = StreamSpill::new(&dir, 8);
        assert!(!dir.join("xid-1.spill").exists(), "stale spill file kept");
        s.append(3, 1, Bytes::from(vec![0u8; 64])).unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("xid-3.spill")), 0o600);
    }
}
