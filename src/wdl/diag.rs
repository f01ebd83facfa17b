//! Diagnostics: what is wrong with a workflow file, and where.
//!
//! The compiler collects [`Problem`]s (positions as file ids) while it walks
//! the files; [`Report::finish`] turns them into [`Diagnostics`] with file
//! names, sorted by file, line and column, duplicates removed.

use std::fmt;

/// Position of something in a source file: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct Pos {
    /// Index into the compiler's list of file names.
    pub(crate) file: u32,
    /// 1-based line; 0 when the problem concerns the whole file.
    pub(crate) line: u32,
    /// 1-based column, in characters.
    pub(crate) col: u32,
    /// 0-based offset of the position in the file, in characters.
    pub(crate) offset: u32,
}

impl Pos {
    /// The start of a file: for problems that have no better place.
    pub(crate) fn file_start(file: u32) -> Pos {
        Pos {
            file,
            line: 1,
            col: 1,
            offset: 0,
        }
    }
}

/// The files being compiled: names for diagnostics, texts to place
/// positions inside strings.
#[derive(Debug, Default)]
pub(crate) struct Files<'s> {
    pub(crate) names: Vec<String>,
    pub(crate) texts: Vec<&'s str>,
    /// Per file, where lines and characters start, so that placing a
    /// position costs the same anywhere in a large file.
    maps: Vec<TextMap>,
}

/// Byte offsets of the start of every line and of every
/// [`TextMap::STRIDE`]th character of one text.
#[derive(Debug, Default)]
struct TextMap {
    lines: Vec<usize>,
    chars: Vec<usize>,
}

impl TextMap {
    const STRIDE: usize = 64;

    fn new(text: &str) -> TextMap {
        let lines = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        let chars = text
            .char_indices()
            .step_by(Self::STRIDE)
            .map(|(i, _)| i)
            .collect();
        TextMap { lines, chars }
    }

    /// How many characters `text` holds before byte `byte` (a boundary).
    fn chars_before(&self, text: &str, byte: usize) -> usize {
        let k = self.chars.partition_point(|&b| b <= byte).saturating_sub(1);
        let from = self.chars.get(k).copied().unwrap_or(0);
        k * Self::STRIDE + text[from..byte].chars().count()
    }

    /// The byte where character `n` starts, or the end of the text.
    fn byte_of_char(&self, text: &str, n: usize) -> usize {
        let Some(&from) = self.chars.get(n / Self::STRIDE) else {
            return text.len();
        };
        text[from..]
            .char_indices()
            .nth(n % Self::STRIDE)
            .map_or(text.len(), |(i, _)| from + i)
    }
}

impl<'s> Files<'s> {
    /// Adds a file; returns its id.
    pub(crate) fn add(&mut self, name: &str, text: &'s str) -> u32 {
        self.names.push(name.to_string());
        self.texts.push(text);
        self.maps.push(TextMap::new(text));
        u32::try_from(self.names.len() - 1).unwrap_or(u32::MAX)
    }

    fn text_and_map(&self, file: u32) -> (&'s str, Option<&TextMap>) {
        let text = self.texts.get(file as usize).copied().unwrap_or("");
        (text, self.maps.get(file as usize))
    }

    /// The position of byte `byte` of file `file`.
    pub(crate) fn pos_at(&self, file: u32, byte: usize) -> Pos {
        let (text, map) = self.text_and_map(file);
        let Some(map) = map else {
            return Pos::file_start(file);
        };
        let mut byte = byte.min(text.len());
        while !text.is_char_boundary(byte) {
            byte -= 1;
        }
        let line = map.lines.partition_point(|&b| b <= byte).max(1);
        let line_start = map.lines[line - 1];
        let to_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Pos {
            file,
            line: to_u32(line),
            col: to_u32(text[line_start..byte].chars().count() + 1),
            offset: to_u32(map.chars_before(text, byte)),
        }
    }

    /// The byte where `pos` is in its file.
    pub(crate) fn byte_of(&self, pos: Pos) -> usize {
        let (text, map) = self.text_and_map(pos.file);
        map.map_or(0, |m| m.byte_of_char(text, pos.offset as usize))
    }
}

/// One problem found in a workflow file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as it was named to the compiler.
    pub file: String,
    /// 1-based line; 0 when the problem concerns the whole file.
    pub line: usize,
    /// 1-based column, in characters; 0 with `line`.
    pub col: usize,
    /// What is wrong, in lower case, naming the component.
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    /// `file:line:col: error: message`, then `  hint: …` on its own line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: error: {}", self.file, self.message)?;
        } else {
            write!(
                f,
                "{}:{}:{}: error: {}",
                self.file, self.line, self.col, self.message
            )?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found in a workflow file and its imports, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// All diagnostics as text: one per line, each hint on the line after.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for d in &self.0 {
            out.push_str(&d.to_string());
            out.push('\n');
        }
        out
    }

    /// The diagnostics, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    /// How many problems were found.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no problem was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Diagnostics {
    /// Same as [`Diagnostics::render`], without the last newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A problem with a position still expressed as a file id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) pos: Pos,
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
}

/// How many problems a report shows; the rest are counted. Hundreds of
/// thousands of messages help nobody and cost the reader megabytes.
pub(crate) const MAX_SHOWN: usize = 200;

/// Collects problems while the compiler walks the files.
#[derive(Debug, Default)]
pub(crate) struct Report {
    problems: Vec<Problem>,
}

impl Report {
    /// Records a problem without a hint.
    pub(crate) fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.problems.push(Problem {
            pos,
            message: message.into(),
            hint: None,
        });
    }

    /// Records a problem with an optional hint.
    pub(crate) fn error_hint(
        &mut self,
        pos: Pos,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.problems.push(Problem {
            pos,
            message: message.into(),
            hint,
        });
    }

    /// Whether no problem was recorded.
    pub(crate) fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// How many problems were recorded so far.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.problems.len()
    }

    /// Sorts by position, drops exact duplicates and names the files. Past
    /// [`MAX_SHOWN`] problems, one last diagnostic counts the rest.
    pub(crate) fn finish(mut self, file_names: &[String]) -> Diagnostics {
        // A stable sort keeps problems found at one position in the order
        // they were found.
        self.problems
            .sort_by_key(|p| (p.pos.file, p.pos.line, p.pos.col));
        self.problems.dedup();
        let more = self.problems.len().saturating_sub(MAX_SHOWN);
        self.problems.truncate(MAX_SHOWN);
        if more > 0 {
            self.problems.push(Problem {
                pos: Pos {
                    line: 0,
                    ..Pos::file_start(0)
                },
                message: format!("{more} more problems not shown"),
                hint: Some(format!("the first {MAX_SHOWN} are listed above")),
            });
        }
        Diagnostics(
            self.problems
                .into_iter()
                .map(|p| Diagnostic {
                    file: file_names
                        .get(p.pos.file as usize)
                        .cloned()
                        .unwrap_or_default(),
                    line: p.pos.line as usize,
                    col: if p.pos.line == 0 {
                        0
                    } else {
                        p.pos.col as usize
                    },
                    message: p.message,
                    hint: p.hint,
                })
                .collect(),
        )
    }
}

/// Words users reach for from other tools, mapped to ours.
const SYNONYMS: &[(&str, &str)] = &[
    ("depends_on", "needs"),
    ("dependsOn", "needs"),
    ("depends", "needs"),
    ("dependencies", "needs"),
    ("after", "needs"),
    ("if", "when"),
    ("condition", "when"),
    ("run", "uses"),
    ("executor", "uses"),
    ("args", "with"),
    ("arguments", "with"),
    ("params", "with"),
    ("parameters", "with"),
    ("foreach", "for_each"),
    ("forEach", "for_each"),
    ("loop", "for_each"),
    ("with_items", "for_each"),
    ("withItems", "for_each"),
    ("parallelism", "max_parallel"),
    ("concurrency", "max_parallel"),
    ("retries", "retry"),
    ("attempts", "max_attempts"),
    ("template", "extends"),
    ("imports", "import"),
    ("include", "import"),
    ("jobs", "tasks"),
    ("steps", "tasks"),
    ("env", "with"),
    ("timeout_seconds", "timeout"),
];

/// The candidate closest to `word`, if one is close enough to be a likely
/// typo (or a known synonym from another tool).
pub(crate) fn closest<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let candidates: Vec<&str> = candidates.into_iter().collect();
    if let Some((_, ours)) = SYNONYMS.iter().find(|(theirs, _)| *theirs == word) {
        if let Some(c) = candidates.iter().find(|c| *c == ours) {
            return Some(c);
        }
    }
    let lower = word.to_lowercase();
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (strsim::damerau_levenshtein(&lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

/// How many "did you mean" hints one compile looks for at one site. Each
/// scans every candidate name, so without a budget a file with many names
/// and as many misspellings of them would cost their product.
pub(crate) const MAX_HINTS: usize = 100;

/// A budget of [`MAX_HINTS`] suggestions: past it, problems come without
/// a "did you mean".
#[derive(Debug)]
pub(crate) struct Hints(std::cell::Cell<usize>);

impl Default for Hints {
    fn default() -> Self {
        Hints(std::cell::Cell::new(MAX_HINTS))
    }
}

impl Hints {
    /// [`did_you_mean`] while the budget lasts, `None` after.
    pub(crate) fn did_you_mean<'c>(
        &self,
        word: &str,
        candidates: impl IntoIterator<Item = &'c str>,
    ) -> Option<String> {
        let left = self.0.get();
        if left == 0 {
            return None;
        }
        self.0.set(left - 1);
        did_you_mean(word, candidates)
    }
}

/// `did you mean "x"?` when a candidate is close to `word`.
pub(crate) fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<String> {
    closest(word, candidates).map(|c| format!("did you mean \"{c}\"?"))
}

/// A hint that suggests the closest name or else lists the names.
pub(crate) fn suggest_or_list<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str> + Clone,
    what: &str,
) -> Option<String> {
    if let Some(hint) = did_you_mean(word, candidates.clone()) {
        return Some(hint);
    }
    let names: Vec<String> = candidates.into_iter().map(|c| format!("\"{c}\"")).collect();
    if names.is_empty() {
        None
    } else {
        Some(format!("{what}: {}", names.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_through_bytes() {
        let text = "a: é\n  b: [1, 2]\nçà: \"x\"\n".repeat(50);
        let mut files = Files::default();
        let id = files.add("f.yaml", &text);
        for (byte, _) in text.char_indices() {
            let pos = files.pos_at(id, byte);
            let before = &text[..byte];
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            assert_eq!(pos.line as usize, before.matches('\n').count() + 1);
            assert_eq!(pos.col as usize, before[line_start..].chars().count() + 1);
            assert_eq!(pos.offset as usize, before.chars().count());
            assert_eq!(files.byte_of(pos), byte);
        }
        assert_eq!(files.pos_at(id, text.len() + 10).line as usize, 151);
    }

    #[test]
    fn closest_finds_typos_and_synonyms() {
        let keys = ["uses", "with", "needs", "when", "for_each"];
        assert_eq!(closest("need", keys), Some("needs"));
        assert_eq!(closest("depends_on", keys), Some("needs"));
        assert_eq!(closest("forEach", keys), Some("for_each"));
        assert_eq!(closest("zzzzzzzz", keys), None);
    }

    #[test]
    fn display_puts_the_hint_on_its_own_line() {
        let d = Diagnostic {
            file: "a.yaml".into(),
            line: 3,
            col: 5,
            message: "unknown key \"need\" in task \"b\"".into(),
            hint: Some("did you mean \"needs\"?".into()),
        };
        assert_eq!(
            d.to_string(),
            "a.yaml:3:5: error: unknown key \"need\" in task \"b\"\n  hint: did you mean \"needs\"?"
        );
    }
}
