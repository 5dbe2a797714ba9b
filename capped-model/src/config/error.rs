//! Errors in `.config/capped.toml`, located by file, line and column.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A problem with a config file: where it is and what is accepted instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, when the config came from one.
    pub path: Option<PathBuf>,
    /// 1-based line and column of the offending text, when known.
    pub position: Option<(usize, usize)>,
    /// What is wrong and what would be accepted.
    pub message: String,
}

impl ConfigError {
    /// An error at byte range `span` of `text` (the file's contents).
    pub(crate) fn at(
        path: Option<&Path>,
        text: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            path: path.map(Path::to_path_buf),
            position: span.map(|span| line_column(text, span.start)),
            message: one_line(message.into()),
        }
    }

    /// An error about the file as a whole (it could not be read, say).
    pub(crate) fn whole(path: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            path: Some(path.to_path_buf()),
            position: None,
            message: message.into(),
        }
    }
}

/// `message` with its control characters escaped: messages from the TOML parser and serde
/// quote what the file says (an enum variant, a key), and a newline or NUL there must not
/// break the one line of an error.
fn one_line(message: String) -> String {
    if message.chars().any(char::is_control) {
        message
            .chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_debug().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    } else {
        message
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.path, self.position) {
            (Some(path), Some((line, column))) => {
                write!(f, "{}:{line}:{column}: ", path.display())?
            }
            (Some(path), None) => write!(f, "{}: ", path.display())?,
            (None, Some((line, column))) => write!(f, "config:{line}:{column}: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, text.find('=').unwrap()), (1, 3));
        assert_eq!(line_column(text, text.rfind('=').unwrap()), (2, 4));
        assert_eq!(line_column(text, 999), (3, 1));
    }
}
