//! Reading a file that a test process appends to (its events file, libtest's logfile) as it
//! grows: complete lines only, each once, in bounded memory.
//!
//! Invariants: a line is returned only once its newline arrived (a torn last line waits);
//! the read offset only grows; a line longer than [`MAX_LINE`] is dropped whole rather than held, so a writer that never ends a line cannot grow
//! the runner; a file that shrinks (rewritten from the start) is noticed, never re-read.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

/// The longest line kept.
pub const MAX_LINE: usize = 1 << 20;

/// How much one [`FileTail::read_lines`] reads at most, so one call stays short even when a
/// file grew by gigabytes; the rest comes at the next call.
const READ_BUDGET: u64 = 8 << 20;

/// Reads complete lines appended to a file.
#[derive(Debug)]
pub struct FileTail {
    path: PathBuf,
    file: Option<File>,
    offset: u64,
    partial: Vec<u8>,
    /// The line being read is over [`MAX_LINE`]: skip to its newline.
    skipping: bool,
    shrank: bool,
}

impl FileTail {
    /// A tail of `path`, which need not exist yet.
    pub fn new(path: PathBuf) -> FileTail {
        FileTail {
            path,
            file: None,
            offset: 0,
            partial: Vec::new(),
            skipping: false,
            shrank: false,
        }
    }

    /// Whether the file was seen shorter than what was already read (something rewrote it).
    pub fn shrank(&self) -> bool {
        self.shrank
    }

    /// The complete lines appended since the last call, without their newlines.
    pub fn read_lines(&mut self) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let Some(file) = self.file.as_mut() else {
            return lines;
        };
        if let Ok(meta) = file.metadata()
            && meta.len() < self.offset
        {
            self.shrank = true;
            return lines;
        }
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return lines;
        }
        let mut bytes = Vec::new();
        let Ok(n) = file.take(READ_BUDGET).read_to_end(&mut bytes) else {
            return lines;
        };
        self.offset += n as u64;
        let mut rest = bytes.as_slice();
        while let Some(newline) = memchr(rest) {
            let (line, after) = rest.split_at(newline);
            rest = &after[1..];
            if std::mem::replace(&mut self.skipping, false) {
                self.partial.clear();
                continue;
            }
            if self.partial.is_empty() {
                lines.push(line.to_vec());
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                lines.push(whole);
            }
        }
        if !self.skipping {
            if self.partial.len() + rest.len() > MAX_LINE {
                self.partial.clear();
                self.skipping = true;
            } else {
                self.partial.extend_from_slice(rest);
            }
        }
        lines
    }
}

fn memchr(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn append(path: &std::path::Path, bytes: &[u8]) {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
    }

    #[test]
    fn complete_lines_once_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut tail = FileTail::new(path.clone());
        assert!(tail.read_lines().is_empty(), "no file yet");
        append(&path, b"one\ntw");
        assert_eq!(tail.read_lines(), vec![b"one".to_vec()]);
        assert!(tail.read_lines().is_empty());
        append(&path, b"o\nthree\n");
        assert_eq!(tail.read_lines(), vec![b"two".to_vec(), b"three".to_vec()]);
        assert!(!tail.shrank());
    }

    #[test]
    fn an_endless_line_is_dropped_not_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut tail = FileTail::new(path.clone());
        let chunk = vec![b'x'; MAX_LINE / 2 + 1];
        for _ in 0..4 {
            append(&path, &chunk);
            assert!(tail.read_lines().is_empty());
            assert!(tail.partial.len() <= MAX_LINE);
        }
        append(&path, b"tail of the long line\nnext\n");
        assert_eq!(tail.read_lines(), vec![b"next".to_vec()]);
    }

    #[test]
    fn a_rewritten_file_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        append(&path, b"a long first line\n");
        let mut tail = FileTail::new(path.clone());
        assert_eq!(tail.read_lines().len(), 1);
        std::fs::write(&path, b"x\n").unwrap();
        assert!(tail.read_lines().is_empty());
        assert!(tail.shrank());
    }
}
