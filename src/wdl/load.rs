//! The only I/O of the language: reading a workflow file and its imports.
//!
//! Every file is read through [`read_file`]: a regular file only (a FIFO,
//! a device such as `/dev/zero` or a directory would hang or never end),
//! and never more than [`MAX_SOURCE_BYTES`] for a workflow and all its
//! imports together, the same as the HTTP API's body limit.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

use super::diag::Report;
use super::sources::{Sources, normalize, resolve_import};
use super::{parse, yaml};

/// The most a workflow file and the files it imports may hold together:
/// 8 MiB, like a request body of the HTTP API.
pub const MAX_SOURCE_BYTES: u64 = 8 * 1024 * 1024;

impl Sources {
    /// Reads `main` and every file it imports, transitively. A file that
    /// cannot be read (missing, not a regular file, past the size budget)
    /// is recorded as such: compiling reports it where it is imported.
    pub fn read(main: &Path) -> Sources {
        let main = normalize(&main.to_string_lossy());
        let mut sources = Sources::default();
        let mut seen = BTreeSet::from([main.clone()]);
        let mut queue = vec![main.clone()];
        let mut budget = MAX_SOURCE_BYTES;
        while let Some(path) = queue.pop() {
            match read_file(Path::new(&path), budget) {
                Ok(text) => {
                    budget -= text.len() as u64;
                    // Problems are reported by the compiler; here the tree
                    // is only searched for imports.
                    let mut ignored = Report::default();
                    if let Some(node) = yaml::parse(0, &text, &mut ignored) {
                        for import in parse::imports(&node) {
                            let next = resolve_import(&path, &import);
                            if seen.insert(next.clone()) {
                                queue.push(next);
                            }
                        }
                    }
                    sources.insert(&path, text);
                }
                Err(reason) => sources.insert_unreadable(&path, reason),
            }
        }
        sources.set_main(main);
        sources
    }
}

/// Reads the text of a file a user names for a workflow (its source, an
/// import, an inputs file): only a regular file, at most `limit` bytes,
/// checked before reading and again while reading (a file that grows).
/// Never blocks on a FIFO: the file is opened without waiting for a
/// writer, then refused for not being a regular file.
///
/// # Errors
/// Why the file cannot be used, in words for a diagnostic.
pub fn read_file(path: &Path, limit: u64) -> Result<String, String> {
    let file = open_nonblocking(path).map_err(|e| reason(&e))?;
    let meta = file.metadata().map_err(|e| reason(&e))?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if is_fifo(&kind) {
            "a FIFO"
        } else {
            "a device or other special file"
        };
        return Err(format!("it is {what}, not a regular file"));
    }
    let too_large = || {
        format!(
            "it is larger than {limit} bytes, the limit for a workflow and its imports together"
        )
    };
    if meta.len() > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| reason(&e))?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|_| "the file is not utf-8 text".to_string())
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).open(path)
}

#[cfg(unix)]
fn is_fifo(kind: &std::fs::FileType) -> bool {
    use std::os::unix::fs::FileTypeExt;
    kind.is_fifo()
}

#[cfg(not(unix))]
fn is_fifo(_: &std::fs::FileType) -> bool {
    false
}

fn reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "file not found".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::InvalidData => "the file is not utf-8 text".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_limit_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w.yaml");
        std::fs::write(&file, "name: x\n").unwrap();
        assert_eq!(read_file(&file, 100).unwrap(), "name: x\n");
        assert!(
            read_file(&file, 3)
                .unwrap_err()
                .contains("larger than 3 bytes")
        );
        assert!(
            read_file(dir.path(), 100)
                .unwrap_err()
                .contains("a directory")
        );
        let err = read_file(Path::new("/dev/zero"), MAX_SOURCE_BYTES).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        assert_eq!(
            read_file(&dir.path().join("none"), 100).unwrap_err(),
            "file not found"
        );
        std::fs::write(&file, [0xff, 0xfe]).unwrap();
        assert_eq!(
            read_file(&file, 100).unwrap_err(),
            "the file is not utf-8 text"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.yaml");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("SKIPPED: mkfifo is not available");
            return;
        }
        assert_eq!(
            read_file(&fifo, MAX_SOURCE_BYTES).unwrap_err(),
            "it is a FIFO, not a regular file"
        );
    }
}
