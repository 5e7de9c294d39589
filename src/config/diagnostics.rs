//! Configuration problems with their place in the source: `file:line:col: message`.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based line; 0 when the problem has no place in the file.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.column, self.message)
        }
    }
}

/// Every problem found in one load, in source order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// A configuration file's text and name, to turn byte spans into lines and columns.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    /// The source named `path` with contents `text`.
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        SourceFile { path: path.into(), text: text.into() }
    }

    /// The directory relative paths in the file are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
    }

    /// A diagnostic at the start of `span`.
    pub fn at(&self, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        let offset = span.start.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Diagnostic { file: self.path.clone(), line, column, message: message.into() }
    }

    /// A diagnostic about the file as a whole.
    pub fn whole(&self, message: impl Into<String>) -> Diagnostic {
        Diagnostic { file: self.path.clone(), line: 0, column: 0, message: message.into() }
    }
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while index > 0 && !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

/// Collects diagnostics for one source.
#[derive(Debug)]
pub struct Collector<'s> {
    pub source: &'s SourceFile,
    pub found: Vec<Diagnostic>,
}

impl<'s> Collector<'s> {
    /// An empty collector for `source`.
    pub fn new(source: &'s SourceFile) -> Self {
        Collector { source, found: Vec::new() }
    }

    /// Records a problem at `span`.
    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let d = self.source.at(span, message);
        self.found.push(d);
    }

    /// The problems found, sorted by position, or `Ok(())`.
    pub fn finish(mut self) -> Result<(), Diagnostics> {
        if self.found.is_empty() {
            return Ok(());
        }
        self.found.sort_by_key(|d| (d.line, d.column));
        self.found.dedup();
        Err(Diagnostics(self.found))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_become_lines_and_columns() {
        let src = SourceFile::new("a.toml", "x = 1\n  y = \"é\"\nz");
        assert_eq!(src.at(0..1, "m").to_string(), "a.toml:1:1: m");
        assert_eq!(src.at(8..9, "m").to_string(), "a.toml:2:3: m");
        assert_eq!(src.at(17..18, "m").to_string(), "a.toml:3:1: m");
    }
}
