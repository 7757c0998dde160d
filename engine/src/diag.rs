//! Located errors. Every problem found in a pipeline file carries the file and byte span it
//! comes from; rendering (line, column, excerpt, caret) is done with codespan-reporting.

use std::ops::Range;
use std::path::{Path, PathBuf};

use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label};
use codespan_reporting::files::SimpleFiles;
use codespan_reporting::term;

/// Index of a file in a [`SourceMap`].
pub type FileId = usize;

/// A place in a source: a file and a byte range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    pub file: FileId,
    pub span: Range<usize>,
}

/// The texts diagnostics point into: pipeline files, their includes, and each `--set` argument.
#[derive(Default, Debug, Clone)]
pub struct SourceMap {
    files: Vec<(PathBuf, String)>,
}

impl SourceMap {
    pub fn add(&mut self, path: PathBuf, text: String) -> FileId {
        self.files.push((path, text));
        self.files.len() - 1
    }

    pub fn path(&self, file: FileId) -> &Path {
        &self.files[file].0
    }

    pub fn text(&self, file: FileId) -> &str {
        &self.files[file].1
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, file: FileId, offset: usize) -> (usize, usize) {
        let text = self.text(file);
        let offset = offset.min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map(|s| s.chars().count()).unwrap_or(0) + 1;
        (line, col)
    }
}

/// One problem, with where it is and what to do about it.
#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub message: String,
    pub loc: Option<Loc>,
    /// Short text shown under the caret.
    pub label: String,
    /// Other places involved (e.g. the other members of a cycle).
    pub secondary: Vec<(Loc, String)>,
    pub notes: Vec<String>,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>, loc: Option<Loc>) -> Diagnostic {
        Diagnostic {
            message: message.into(),
            loc,
            label: String::new(),
            secondary: Vec::new(),
            notes: Vec::new(),
            hint: None,
        }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = label.into();
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    pub fn with_secondary(mut self, loc: Loc, label: impl Into<String>) -> Diagnostic {
        self.secondary.push((loc, label.into()));
        self
    }

    /// `file:line:col` of the primary location.
    pub fn location(&self, sources: &SourceMap) -> Option<String> {
        let loc = self.loc.as_ref()?;
        let (line, col) = sources.line_col(loc.file, loc.span.start);
        Some(format!("{}:{line}:{col}", sources.path(loc.file).display()))
    }

    /// Renders as `error: message`, `--> file:line:col`, the excerpt with a caret, then notes
    /// and a `hint:` line.
    pub fn render(&self, sources: &SourceMap) -> String {
        let mut files = SimpleFiles::new();
        for idx in 0..sources.len() {
            files.add(sources.path(idx).display().to_string(), sources.text(idx).to_string());
        }
        let mut diagnostic = CsDiagnostic::error().with_message(&self.message);
        let mut labels = Vec::new();
        if let Some(loc) = &self.loc {
            labels.push(Label::primary(loc.file, loc.span.clone()).with_message(&self.label));
        }
        for (loc, label) in &self.secondary {
            labels.push(Label::secondary(loc.file, loc.span.clone()).with_message(label));
        }
        diagnostic = diagnostic.with_labels(labels);
        let mut notes: Vec<String> = self.notes.iter().map(|n| format!("note: {n}")).collect();
        if let Some(hint) = &self.hint {
            notes.push(format!("hint: {hint}"));
        }
        diagnostic = diagnostic.with_notes(notes);
        // ASCII frames (`--> file:line:col`), as cargo and rustc print them: they survive any
        // terminal, log file or CI console.
        let config = term::Config { chars: term::Chars::ascii(), ..term::Config::default() };
        match term::emit_into_string(&config, &files, &diagnostic) {
            Ok(text) => text,
            Err(_) => format!("error: {}\n", self.message),
        }
    }
}

/// Several diagnostics, as returned when a pipeline cannot be loaded or planned.
#[derive(Debug)]
pub struct Diagnostics {
    pub sources: SourceMap,
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        for item in &self.items {
            out.push_str(&item.render(&self.sources));
        }
        if self.items.len() > 1 {
            out.push_str(&format!("error: {} problems found; nothing was run\n", self.items.len()));
        }
        out
    }
}

impl std::fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

impl std::error::Error for Diagnostics {}

/// "did you mean `x`?" for a misspelt name (edit distance of 3 or less, as cargo does).
pub fn did_you_mean<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(wrong, c), c))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, c)| format!("did you mean `{c}`?"))
}
