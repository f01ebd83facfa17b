//! The Raft log as one append-only file: records written with positional
//! writes, made durable by group commits on a thread of their own, the
//! newest entries also kept decoded in memory so replication reads them
//! without touching the disk.
//!
//! A record is `len u32 | crc32 u32 | index u64 | payload` (little endian;
//! the checksum covers index and payload; the payload is the bincode of an
//! openraft entry). Removing entries from an index on (openraft's
//! `truncate`) cuts the file. Purging only raises a floor below which
//! entries are no longer served; the file is emptied when a purge covers
//! all of it.
//!
//! Opening reads the whole file once: a last record cut short or failing
//! its checksum is a write torn by a crash and is cut off; a bad record
//! followed by good ones is corruption and refuses to open (Raft must not
//! run on a log that silently lost entries in the middle).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};

use openraft::storage::LogFlushed;
use openraft::{Entry, LogId};
use tracing::warn;

use super::{NodeId, TypeConfig};

const HEADER: u64 = 16;
/// A record longer than this is not one (a damaged length field).
const MAX_RECORD: u64 = 1 << 30;
/// One position kept in memory per this many indexes (for reads of old
/// entries).
const MARK_EVERY: u64 = 64;
/// Encoded bytes of the newest entries kept decoded in memory.
pub const RECENT_BYTES: usize = 16 << 20;

/// The log file; clones share it.
#[derive(Debug, Clone)]
pub struct LogFile {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Written at positions only; its cursor belongs to the reads of old
    /// entries, which run under the `state` lock.
    file: File,
    state: Mutex<State>,
    flusher: mpsc::Sender<LogFlushed<TypeConfig>>,
    recent_cap: usize,
}

#[derive(Debug)]
struct State {
    /// Where the next record goes.
    end: u64,
    /// `(index, offset)` of a record every `MARK_EVERY` indexes or so,
    /// the file's first among them, ascending.
    marks: Vec<(u64, u64)>,
    /// The newest entries with their encoded sizes, ascending.
    recent: VecDeque<(Entry<TypeConfig>, usize)>,
    recent_bytes: usize,
    /// The last entry's id.
    last: Option<LogId<NodeId>>,
    /// Entries up to this index are purged.
    floor: Option<u64>,
}

/// One record as read from the file.
struct Raw {
    offset: u64,
    index: u64,
    payload: Vec<u8>,
}

fn encode(entry: &Entry<TypeConfig>) -> Vec<u8> {
    bincode::serde::encode_to_vec(entry, crate::codec::config()).expect("entries encode")
}

fn decode(raw: &Raw) -> io::Result<Entry<TypeConfig>> {
    bincode::serde::decode_from_slice(&raw.payload, crate::codec::config())
        .map(|(e, _)| e)
        .map_err(|e| {
            io::Error::other(format!(
                "the log record of entry {} at offset {} does not decode: {e}",
                raw.index, raw.offset
            ))
        })
}

fn checksum(index: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&index.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

fn append_record(buf: &mut Vec<u8>, index: u64, payload: &[u8]) {
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&checksum(index, payload).to_le_bytes());
    buf.extend_from_slice(&index.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// What reading the record at the cursor found.
enum Next {
    Record(Raw),
    /// The file ends here.
    End,
    /// A record that is cut short or fails its checksum; `last` when
    /// nothing follows it.
    Bad {
        offset: u64,
        last: bool,
        why: String,
    },
}

/// Reads records sequentially from `offset` of a file `len` bytes long.
struct Scan<'a> {
    reader: BufReader<&'a File>,
    offset: u64,
    len: u64,
}

impl<'a> Scan<'a> {
    fn new(file: &'a File, offset: u64, len: u64) -> io::Result<Scan<'a>> {
        let mut reader = BufReader::with_capacity(1 << 20, file);
        reader.seek(SeekFrom::Start(offset))?;
        Ok(Scan {
            reader,
            offset,
            len,
        })
    }

    fn next(&mut self) -> io::Result<Next> {
        let offset = self.offset;
        let left = self.len - offset;
        if left == 0 {
            return Ok(Next::End);
        }
        let bad = |last: bool, why: String| Ok(Next::Bad { offset, last, why });
        if left < HEADER {
            return bad(true, "a header cut short".into());
        }
        let mut header = [0u8; HEADER as usize];
        self.reader.read_exact(&mut header)?;
        let len = u64::from(u32::from_le_bytes(header[0..4].try_into().expect("4")));
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4"));
        let index = u64::from_le_bytes(header[8..16].try_into().expect("8"));
        if len > MAX_RECORD || HEADER + len > left {
            return bad(true, format!("a record of {len} bytes cut short"));
        }
        let mut payload = vec![0u8; len as usize];
        self.reader.read_exact(&mut payload)?;
        let end = offset + HEADER + len;
        if checksum(index, &payload) != crc {
            return bad(end == self.len, format!("entry {index} fails its checksum"));
        }
        self.offset = end;
        Ok(Next::Record(Raw {
            offset,
            index,
            payload,
        }))
    }
}

impl LogFile {
    /// Opens (or creates) the log at `path`; entries up to `floor` are
    /// purged. A torn last record is cut off.
    ///
    /// # Errors
    /// When the file cannot be opened or a record before the last is
    /// damaged.
    pub fn open(path: &Path, floor: Option<u64>, recent_cap: usize) -> Result<LogFile, String> {
        let fail = |e: &dyn std::fmt::Display| format!("the raft log {}: {e}", path.display());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| fail(&e))?;
        let len = file.metadata().map_err(|e| fail(&e))?.len();
        let mut state = State {
            end: 0,
            marks: Vec::new(),
            recent: VecDeque::new(),
            recent_bytes: 0,
            last: None,
            floor,
        };
        // The newest records, still encoded, within the memory bound.
        let mut tail: VecDeque<Raw> = VecDeque::new();
        let mut tail_bytes = 0;
        let mut scan = Scan::new(&file, 0, len).map_err(|e| fail(&e))?;
        loop {
            match scan.next().map_err(|e| fail(&e))? {
                Next::End => break,
                Next::Bad { offset, last, why } if last => {
                    warn!(offset, why, "Cut a torn last record off the raft log.");
                    file.set_len(offset).map_err(|e| fail(&e))?;
                    file.sync_all().map_err(|e| fail(&e))?;
                    break;
                }
                Next::Bad { offset, why, .. } => {
                    return Err(fail(&format!(
                        "damaged at offset {offset} ({why}) with records after it; \
                         move the file away to rebuild this node's log from its peers"
                    )));
                }
                Next::Record(raw) => {
                    state.note(raw.index, raw.offset);
                    state.end = raw.offset + HEADER + raw.payload.len() as u64;
                    tail_bytes += raw.payload.len();
                    tail.push_back(raw);
                    while tail_bytes > recent_cap && tail.len() > 1 {
                        let old = tail.pop_front().expect("not empty");
                        tail_bytes -= old.payload.len();
                    }
                }
            }
        }
        drop(scan);
        for raw in tail {
            let entry = decode(&raw).map_err(|e| fail(&e))?;
            state.last = Some(entry.log_id);
            state.remember(entry, raw.payload.len(), recent_cap);
        }
        let (flusher, pending) = mpsc::channel();
        let syncer = file.try_clone().map_err(|e| fail(&e))?;
        std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || group_commits(syncer, pending))
            .map_err(|e| fail(&e))?;
        Ok(LogFile {
            shared: Arc::new(Shared {
                file,
                state: Mutex::new(state),
                flusher,
                recent_cap,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last entry's id (`None`: the file holds none).
    pub fn last(&self) -> Option<LogId<NodeId>> {
        self.state().last
    }

    /// Writes `entries` after the last one (not yet durable: see
    /// [`LogFile::when_durable`]).
    ///
    /// # Errors
    /// When the write fails.
    pub fn append(&self, entries: impl IntoIterator<Item = Entry<TypeConfig>>) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut written = Vec::new();
        for entry in entries {
            let payload = encode(&entry);
            let offset = buf.len() as u64;
            append_record(&mut buf, entry.log_id.index, &payload);
            written.push((offset, payload.len(), entry));
        }
        let mut state = self.state();
        let at = state.end;
        self.shared.file.write_all_at(&buf, at)?;
        state.end = at + buf.len() as u64;
        for (offset, bytes, entry) in written {
            state.note(entry.log_id.index, at + offset);
            state.last = Some(entry.log_id);
            state.remember(entry, bytes, self.shared.recent_cap);
        }
        Ok(())
    }

    /// Makes everything written so far durable now.
    ///
    /// # Errors
    /// When the fsync fails.
    pub fn sync(&self) -> io::Result<()> {
        self.shared.file.sync_data()
    }

    /// Calls `callback` once everything written so far is on disk (one
    /// fsync serves every callback queued while the previous one ran).
    pub fn when_durable(&self, callback: LogFlushed<TypeConfig>) {
        if let Err(mpsc::SendError(callback)) = self.shared.flusher.send(callback) {
            callback.log_io_completed(Err(io::Error::other("the raft log's syncer stopped")));
        }
    }

    /// The entries whose indexes are in `from..until`, in order.
    ///
    /// # Errors
    /// When the file cannot be read or a record does not decode.
    pub fn read(&self, from: u64, until: u64) -> io::Result<Vec<Entry<TypeConfig>>> {
        let state = self.state();
        let from = state.floor.map_or(from, |f| from.max(f + 1));
        if from >= until {
            return Ok(Vec::new());
        }
        if let Some((first, _)) = state.recent.front()
            && first.log_id.index <= from
        {
            return Ok(state
                .recent
                .iter()
                .map(|(e, _)| e)
                .skip_while(|e| e.log_id.index < from)
                .take_while(|e| e.log_id.index < until)
                .cloned()
                .collect());
        }
        let mut entries = Vec::new();
        let Some(start) = state.mark_before(from) else {
            return Ok(entries);
        };
        let end = state.end;
        let mut scan = Scan::new(&self.shared.file, start, end)?;
        while let Next::Record(raw) = scan.next()? {
            if raw.index >= until {
                break;
            }
            if raw.index >= from {
                entries.push(decode(&raw)?);
            }
        }
        Ok(entries)
    }

    /// Removes every entry from index `from` on.
    ///
    /// # Errors
    /// When the file cannot be read or cut.
    pub fn truncate(&self, from: u64) -> io::Result<()> {
        let mut state = self.state();
        let Some(start) = state.mark_before(from) else {
            return Ok(());
        };
        let end = state.end;
        // The offset of the first entry at or after `from`, and the id of
        // the one before it.
        let mut cut = end;
        let mut before = None;
        let mut scan = Scan::new(&self.shared.file, start, end)?;
        while let Next::Record(raw) = scan.next()? {
            if raw.index >= from {
                cut = raw.offset;
                break;
            }
            before = Some(raw);
        }
        drop(scan);
        if cut == end {
            return Ok(());
        }
        let last = match before {
            Some(raw) => Some(decode(&raw)?.log_id),
            None => None,
        };
        self.shared.file.set_len(cut)?;
        self.shared.file.sync_all()?;
        state.end = cut;
        state.last = last;
        state.marks.retain(|&(_, offset)| offset < cut);
        state.forget(|entry| entry.log_id.index >= from);
        Ok(())
    }

    /// Stops serving entries up to index `upto`; empties the file when
    /// that covers every entry in it.
    ///
    /// # Errors
    /// When the file cannot be emptied.
    pub fn purge(&self, upto: u64) -> io::Result<()> {
        let mut state = self.state();
        state.floor = Some(state.floor.map_or(upto, |f| f.max(upto)));
        if state.last.is_none_or(|l| l.index <= upto) {
            self.shared.file.set_len(0)?;
            self.shared.file.sync_all()?;
            state.end = 0;
            state.marks.clear();
            state.last = None;
        }
        state.forget(|entry| entry.log_id.index <= upto);
        Ok(())
    }
}

impl State {
    /// Notes a record written at `offset`: marked when it is the file's
    /// first or `MARK_EVERY` indexes after the last mark.
    fn note(&mut self, index: u64, offset: u64) {
        if self
            .marks
            .last()
            .is_none_or(|&(marked, _)| index >= marked + MARK_EVERY)
        {
            self.marks.push((index, offset));
        }
    }

    /// Keeps `entry` decoded, within the memory bound.
    fn remember(&mut self, entry: Entry<TypeConfig>, bytes: usize, cap: usize) {
        self.recent.push_back((entry, bytes));
        self.recent_bytes += bytes;
        while self.recent_bytes > cap && self.recent.len() > 1 {
            let (_, bytes) = self.recent.pop_front().expect("not empty");
            self.recent_bytes -= bytes;
        }
    }

    /// Drops the decoded entries `gone` picks.
    fn forget(&mut self, gone: impl Fn(&Entry<TypeConfig>) -> bool) {
        self.recent.retain(|(entry, _)| !gone(entry));
        self.recent_bytes = self.recent.iter().map(|(_, bytes)| bytes).sum();
    }

    /// Where to start reading to find index `index`: the last mark at or
    /// before it (`None`: the file is empty).
    fn mark_before(&self, index: u64) -> Option<u64> {
        let at = self.marks.partition_point(|&(i, _)| i <= index);
        match at {
            0 => self.marks.first().map(|&(_, o)| o),
            n => Some(self.marks[n - 1].1),
        }
    }
}

/// The syncer: one fsync for every callback queued while the last ran.
fn group_commits(file: File, pending: mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = pending.recv() {
        let mut waiting = vec![first];
        waiting.extend(pending.try_iter());
        let started = std::time::Instant::now();
        let result = file.sync_data();
        metrics::histogram!("symphony_raft_flush_seconds").record(started.elapsed().as_secs_f64());
        for callback in waiting {
            callback.log_io_completed(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    use crate::raft::state::Command;

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Arc::new(Command::Batch(vec![Command::Own {
                run: format!("run-{index}"),
                node: "a".into(),
                epoch: term,
            }]))),
        }
    }

    fn indexes(entries: &[Entry<TypeConfig>]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    /// A log that keeps only a few entries in memory, so reads go to disk.
    fn small(path: &Path) -> LogFile {
        LogFile::open(path, None, 200).unwrap()
    }

    #[test]
    fn reads_come_back_from_memory_and_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let log = small(&dir.path().join("log"));
        log.append((1..=300).map(|i| entry(1, i))).unwrap();
        assert_eq!(log.last().map(|l| l.index), Some(300));
        assert!(log.state().recent.len() < 20, "the memory bound holds");
        assert_eq!(indexes(&log.read(1, 4).unwrap()), vec![1, 2, 3]);
        assert_eq!(indexes(&log.read(130, 133).unwrap()), vec![130, 131, 132]);
        assert_eq!(indexes(&log.read(298, 1000).unwrap()), vec![298, 299, 300]);
        assert_eq!(log.read(0, 301).unwrap().len(), 300);
        let read = log.read(200, 201).unwrap();
        assert_eq!(read[0], entry(1, 200));
    }

    #[test]
    fn a_reopened_log_has_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        small(&path).append((1..=150).map(|i| entry(2, i))).unwrap();
        let log = small(&path);
        assert_eq!(log.last(), Some(entry(2, 150).log_id));
        assert_eq!(
            indexes(&log.read(1, 151).unwrap()),
            (1..=150).collect::<Vec<_>>()
        );
        log.append([entry(3, 151)]).unwrap();
        assert_eq!(small(&path).last(), Some(entry(3, 151).log_id));
    }

    #[test]
    fn truncation_cuts_the_file_and_appends_follow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let log = small(&path);
        log.append((1..=200).map(|i| entry(1, i))).unwrap();
        log.truncate(71).unwrap();
        assert_eq!(log.last(), Some(entry(1, 70).log_id));
        assert_eq!(log.read(60, 300).unwrap().len(), 11);
        log.append((71..=80).map(|i| entry(2, i))).unwrap();
        let log = small(&path);
        let read = log.read(69, 300).unwrap();
        assert_eq!(
            read,
            vec![entry(1, 69), entry(1, 70)]
                .into_iter()
                .chain((71..=80).map(|i| entry(2, i)))
                .collect::<Vec<_>>()
        );
        log.truncate(1).unwrap();
        assert_eq!(log.last(), None);
        assert!(log.read(0, 100).unwrap().is_empty());
    }

    #[test]
    fn purged_entries_are_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let log = small(&path);
        log.append((1..=100).map(|i| entry(1, i))).unwrap();
        log.purge(90).unwrap();
        assert_eq!(
            indexes(&log.read(0, 200).unwrap()),
            (91..=100).collect::<Vec<_>>()
        );
        let reopened = LogFile::open(&path, Some(90), 200).unwrap();
        assert_eq!(reopened.read(0, 200).unwrap().len(), 10);
        log.purge(100).unwrap();
        assert_eq!(log.last(), None);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "emptied");
    }

    #[test]
    fn a_torn_last_record_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        small(&path).append((1..=10).map(|i| entry(1, i))).unwrap();
        let whole = std::fs::metadata(&path).unwrap().len();
        // A crash in the middle of writing an eleventh record.
        let mut bytes = std::fs::read(&path).unwrap();
        let mut torn = Vec::new();
        append_record(&mut torn, 11, &encode(&entry(1, 11)));
        bytes.extend_from_slice(&torn[..torn.len() / 2]);
        std::fs::write(&path, &bytes).unwrap();
        let log = small(&path);
        assert_eq!(log.last(), Some(entry(1, 10).log_id));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
        // A last record whose bytes did not all reach the disk.
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(small(&path).last(), Some(entry(1, 9).log_id));
    }

    #[test]
    fn damage_before_the_end_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        small(&path).append((1..=10).map(|i| entry(1, i))).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let err = LogFile::open(&path, None, 200).unwrap_err();
        assert!(err.contains("damaged at offset 0"), "{err}");
        assert!(err.contains("entry 1 fails its checksum"), "{err}");
    }
}
