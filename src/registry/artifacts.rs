//! Model artifacts, content-addressed by SHA-256: on disk under
//! `<dir>/sha256/<hex>`, or in memory. A file is written to a temporary
//! name and renamed, so a crash never leaves half an artifact under its
//! address; every read hashes the content again, so a corrupted file is an
//! error naming its checksum, never a model that silently differs.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::RegistryError;
use super::model::{is_checksum, sha256_hex};

/// Distinguishes the temporary files of concurrent writes in one process.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Where artifacts live.
pub(crate) enum Artifacts {
    /// Files under this directory (`…/artifacts/sha256`).
    Disk(PathBuf),
    /// In memory, for nodes without a data dir.
    Memory(Mutex<HashMap<String, Arc<Vec<u8>>>>),
}

impl fmt::Debug for Artifacts {
    /// The directory, or how many artifacts are in memory (not their bytes).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Artifacts::Disk(root) => f.debug_tuple("Disk").field(root).finish(),
            Artifacts::Memory(map) => {
                let count = map.lock().map_or(0, |m| m.len());
                write!(f, "Memory({count} artifacts)")
            }
        }
    }
}

impl Artifacts {
    /// Artifacts under `dir/sha256/`, created if needed.
    pub(crate) fn open(dir: &Path) -> Result<Artifacts, RegistryError> {
        let root = dir.join("sha256");
        fs::create_dir_all(&root).map_err(|e| {
            RegistryError::Storage(format!(
                "cannot create the artifact directory {}: {e}",
                root.display()
            ))
        })?;
        Ok(Artifacts::Disk(root))
    }

    /// Artifacts in memory.
    pub(crate) fn memory() -> Artifacts {
        Artifacts::Memory(Mutex::new(HashMap::new()))
    }

    /// Stores `bytes`, whose hex SHA-256 is `checksum`. Storing what is
    /// already there (intact) does nothing; a corrupted copy is replaced.
    pub(crate) fn put(&self, checksum: &str, bytes: &[u8]) -> Result<(), RegistryError> {
        valid(checksum)?;
        match self {
            Artifacts::Memory(map) => {
                map.lock()
                    .expect("artifact map lock")
                    .insert(checksum.to_owned(), Arc::new(bytes.to_vec()));
                Ok(())
            }
            Artifacts::Disk(root) => {
                let path = root.join(checksum);
                if fs::read(&path).is_ok_and(|old| sha256_hex(&old) == checksum) {
                    return Ok(());
                }
                write_atomically(root, &path, bytes).map_err(|e| {
                    RegistryError::Storage(format!("cannot write artifact {}: {e}", path.display()))
                })
            }
        }
    }

    /// The bytes stored under `checksum`, checked against it.
    pub(crate) fn get(&self, checksum: &str) -> Result<Vec<u8>, RegistryError> {
        valid(checksum)?;
        let bytes = match self {
            Artifacts::Memory(map) => map
                .lock()
                .expect("artifact map lock")
                .get(checksum)
                .map(|b| b.to_vec())
                .ok_or_else(|| RegistryError::ArtifactMissing(checksum.to_owned()))?,
            Artifacts::Disk(root) => match fs::read(root.join(checksum)) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(RegistryError::ArtifactMissing(checksum.to_owned()));
                }
                Err(e) => {
                    return Err(RegistryError::Storage(format!(
                        "cannot read artifact sha256:{checksum}: {e}"
                    )));
                }
            },
        };
        let actual = sha256_hex(&bytes);
        if actual != checksum {
            return Err(RegistryError::CorruptArtifact {
                checksum: checksum.to_owned(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Whether something is stored under `checksum` (not checked).
    pub(crate) fn contains(&self, checksum: &str) -> bool {
        if !is_checksum(checksum) {
            return false;
        }
        match self {
            Artifacts::Memory(map) => map
                .lock()
                .expect("artifact map lock")
                .contains_key(checksum),
            Artifacts::Disk(root) => root.join(checksum).is_file(),
        }
    }

    /// The file holding `checksum`, for artifacts on disk.
    pub(crate) fn path(&self, checksum: &str) -> Option<PathBuf> {
        match self {
            Artifacts::Disk(root) if is_checksum(checksum) => Some(root.join(checksum)),
            _ => None,
        }
    }
}

impl Artifacts {
    /// Deletes what is stored under `checksum` (nothing there: nothing to do).
    pub(crate) fn remove(&self, checksum: &str) -> Result<(), RegistryError> {
        valid(checksum)?;
        match self {
            Artifacts::Memory(map) => {
                map.lock().expect("artifact map lock").remove(checksum);
                Ok(())
            }
            Artifacts::Disk(root) => match fs::remove_file(root.join(checksum)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RegistryError::Storage(
                    format!("cannot delete artifact sha256:{checksum}: {e}"),
                )),
                _ => Ok(()),
            },
        }
    }

    /// Every artifact stored, with its size and when it was last written or
    /// touched (files only; in memory, the epoch), in no particular order.
    /// Temporary files of unfinished writes are left out.
    pub(crate) fn list(&self) -> Vec<(String, u64, std::time::SystemTime)> {
        match self {
            Artifacts::Memory(map) => map
                .lock()
                .expect("artifact map lock")
                .iter()
                .map(|(k, v)| (k.clone(), v.len() as u64, std::time::UNIX_EPOCH))
                .collect(),
            Artifacts::Disk(root) => fs::read_dir(root)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|entry| {
                    let name = entry.file_name().into_string().ok()?;
                    let meta = entry.metadata().ok()?;
                    (is_checksum(&name) && meta.is_file()).then(|| {
                        let at = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                        (name, meta.len(), at)
                    })
                })
                .collect(),
        }
    }

    /// Marks the file of `checksum` as used now (its modification time),
    /// so recency survives a restart; best effort.
    pub(crate) fn touch(&self, checksum: &str) {
        if let Some(path) = self.path(checksum) {
            if let Ok(file) = fs::File::options().append(true).open(path) {
                let _ = file.set_modified(std::time::SystemTime::now());
            }
        }
    }

    /// Up to `len` bytes of `checksum` from `offset` (fewer at its end), not
    /// checked: the caller checks them against a manifest.
    pub(crate) fn read_range(
        &self,
        checksum: &str,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, RegistryError> {
        use std::io::{Read, Seek, SeekFrom};
        valid(checksum)?;
        let missing = || RegistryError::ArtifactMissing(checksum.to_owned());
        match self {
            Artifacts::Memory(map) => {
                let map = map.lock().expect("artifact map lock");
                let bytes = map.get(checksum).ok_or_else(missing)?;
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let end = start.saturating_add(len).min(bytes.len());
                Ok(bytes[start..end].to_vec())
            }
            Artifacts::Disk(root) => {
                let storage = |e: std::io::Error| {
                    RegistryError::Storage(format!("cannot read artifact sha256:{checksum}: {e}"))
                };
                let mut file = match fs::File::open(root.join(checksum)) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
                    Err(e) => return Err(storage(e)),
                };
                file.seek(SeekFrom::Start(offset)).map_err(storage)?;
                // Room for the tag byte of a chunk reply.
                let mut out = Vec::with_capacity(len + 1);
                file.take(len as u64)
                    .read_to_end(&mut out)
                    .map_err(storage)?;
                Ok(out)
            }
        }
    }
}

fn valid(checksum: &str) -> Result<(), RegistryError> {
    if is_checksum(checksum) {
        Ok(())
    } else {
        Err(RegistryError::BadChecksum(checksum.to_owned()))
    }
}

/// Writes `bytes` to a temporary file in `dir`, syncs it and renames it to
/// `path`, then syncs the directory so the rename survives a crash.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result?;
    #[cfg(unix)]
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_on_disk_are_checked_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Artifacts::open(dir.path()).unwrap();
        let sum = sha256_hex(b"model bytes");
        store.put(&sum, b"model bytes").unwrap();
        assert!(store.contains(&sum));
        assert_eq!(store.get(&sum).unwrap(), b"model bytes");
        let file = dir.path().join("sha256").join(&sum);
        assert_eq!(store.path(&sum).unwrap(), file);
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from(&sum)]);

        fs::write(&file, b"model bytez").unwrap();
        match store.get(&sum) {
            Err(e @ RegistryError::CorruptArtifact { .. }) => {
                assert!(e.to_string().contains(&sum), "{e}");
            }
            other => panic!("{other:?}"),
        }
        // Storing it again repairs it.
        store.put(&sum, b"model bytes").unwrap();
        assert_eq!(store.get(&sum).unwrap(), b"model bytes");
    }

    #[test]
    fn missing_and_malformed_checksums_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        for store in [Artifacts::memory(), Artifacts::open(dir.path()).unwrap()] {
            let sum = sha256_hex(b"nothing");
            assert!(matches!(
                store.get(&sum),
                Err(RegistryError::ArtifactMissing(_))
            ));
            assert!(matches!(
                store.get("../../etc/passwd"),
                Err(RegistryError::BadChecksum(_))
            ));
            assert!(store.put("abc", b"x").is_err());
            assert!(!store.contains("abc"));
        }
    }

    #[test]
    fn artifacts_in_memory_round_trip() {
        let store = Artifacts::memory();
        let sum = sha256_hex(b"m");
        store.put(&sum, b"m").unwrap();
        assert_eq!(store.get(&sum).unwrap(), b"m");
        assert_eq!(store.path(&sum), None);
        assert_eq!(format!("{store:?}"), "Memory(1 artifacts)");
    }
}
