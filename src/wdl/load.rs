//! The only I/O of the language: reading a workflow file and its imports.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;

use super::diag::Report;
use super::sources::{Sources, normalize, resolve_import};
use super::{parse, yaml};

impl Sources {
    /// Reads `main` and every file it imports, transitively. A file that
    /// cannot be read is recorded as such: compiling reports it.
    pub fn read(main: &Path) -> Sources {
        let main = normalize(&main.to_string_lossy());
        let mut sources = Sources::default();
        let mut seen = BTreeSet::from([main.clone()]);
        let mut queue = vec![main.clone()];
        while let Some(path) = queue.pop() {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
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
                Err(e) => sources.insert_unreadable(&path, reason(&e)),
            }
        }
        sources.set_main(main);
        sources
    }
}

fn reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "file not found".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::InvalidData => "the file is not utf-8 text".into(),
        _ => e.to_string(),
    }
}
