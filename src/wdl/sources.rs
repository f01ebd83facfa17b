//! The text of a workflow's files, so compiling stays pure.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Source files by path: the main file and the files it imports.
///
/// Paths are normalised lexically (`a/./b/../c.yaml` is `a/c.yaml`) so an
/// import is found however it is spelled. [`Sources::read`] fills this from
/// disk; the engine keeps the files of a run and rebuilds it with
/// [`Sources::from_files`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    main: String,
    /// Text, or why the file could not be read.
    files: BTreeMap<String, Result<String, String>>,
}

impl Sources {
    /// Just the main file: `path` names it in messages and is where its
    /// imports are resolved from.
    pub fn new(path: impl AsRef<str>, text: impl Into<String>) -> Sources {
        let mut sources = Sources {
            main: normalize(path.as_ref()),
            files: BTreeMap::new(),
        };
        let main = sources.main.clone();
        sources.files.insert(main, Ok(text.into()));
        sources
    }

    /// The main file's path and every file as `(path, text)`, e.g. as the
    /// engine journaled them.
    pub fn from_files(
        main: impl AsRef<str>,
        files: impl IntoIterator<Item = (String, String)>,
    ) -> Sources {
        let mut sources = Sources {
            main: normalize(main.as_ref()),
            files: BTreeMap::new(),
        };
        for (path, text) in files {
            sources.insert(&path, text);
        }
        sources
    }

    /// Adds (or replaces) a file.
    pub fn insert(&mut self, path: &str, text: impl Into<String>) {
        self.files.insert(normalize(path), Ok(text.into()));
    }

    /// Records that a file could not be read, and why; compiling reports it
    /// where the file is imported.
    pub fn insert_unreadable(&mut self, path: &str, reason: impl Into<String>) {
        self.files.insert(normalize(path), Err(reason.into()));
    }

    /// Sets the main file's path (already normalised).
    pub(crate) fn set_main(&mut self, main: String) {
        self.main = main;
    }

    /// The main file's path.
    pub fn main(&self) -> &str {
        &self.main
    }

    /// Every readable file as `(path, text)`, sorted by path.
    pub fn files(&self) -> impl Iterator<Item = (&str, &str)> {
        self.files
            .iter()
            .filter_map(|(p, t)| t.as_ref().ok().map(|t| (p.as_str(), t.as_str())))
    }

    /// A file's text, or why it could not be read; `None` when unknown.
    pub(crate) fn get(&self, path: &str) -> Option<Result<&str, &str>> {
        self.files
            .get(path)
            .map(|r| r.as_ref().map(String::as_str).map_err(String::as_str))
    }
}

/// `path` with `.` and `name/..` removed, `/`-separated.
pub(crate) fn normalize(path: &str) -> String {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if matches!(out.components().next_back(), Some(Component::Normal(_))) {
                    out.pop();
                } else {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    let text = out.to_string_lossy().into_owned();
    if text.is_empty() { ".".into() } else { text }
}

/// The path of `import` as written in the file `importer`.
pub(crate) fn resolve_import(importer: &str, import: &str) -> String {
    let base = Path::new(importer).parent().unwrap_or(Path::new(""));
    normalize(&base.join(import).to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_lexically() {
        assert_eq!(normalize("./a/b/../c.yaml"), "a/c.yaml");
        assert_eq!(normalize("../x.yaml"), "../x.yaml");
        assert_eq!(
            resolve_import("dir/main.yaml", "lib/t.yaml"),
            "dir/lib/t.yaml"
        );
        assert_eq!(resolve_import("dir/main.yaml", "../t.yaml"), "t.yaml");
        assert_eq!(resolve_import("main.yaml", "/abs/t.yaml"), "/abs/t.yaml");
    }

    #[test]
    fn files_lists_the_readable_ones() {
        let mut s = Sources::new("./m.yaml", "a");
        s.insert_unreadable("x.yaml", "file not found");
        assert_eq!(s.main(), "m.yaml");
        assert_eq!(s.files().collect::<Vec<_>>(), vec![("m.yaml", "a")]);
        assert_eq!(s.get("x.yaml"), Some(Err("file not found")));
    }
}
