//! Splitting a test binary's output stream into lines, in linear time and bounded memory.
//!
//! Output arrives in chunks cut anywhere. A line without its newline waits for the next
//! chunk; each byte is looked at once (a long line is never searched again from its start),
//! and a line longer than [`MAX_LINE`] keeps its first [`MAX_LINE`] bytes and a note of how
//! much was cut, so a test that writes gigabytes without a newline costs the runner
//! [`MAX_LINE`] bytes.

/// The longest line kept whole.
pub const MAX_LINE: usize = 64 * 1024;

/// Splits one stream into lines.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
    /// Bytes of the current line dropped past [`MAX_LINE`].
    cut: u64,
}

impl LineSplitter {
    /// Feeds a chunk; returns the lines it completes (invalid UTF-8 replaced, without their
    /// newlines).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        let mut rest = chunk;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            self.keep(&rest[..newline]);
            lines.push(self.take());
            rest = &rest[newline + 1..];
        }
        self.keep(rest);
        lines
    }

    /// The start of the line not yet ended (at most [`MAX_LINE`] bytes).
    pub fn partial(&self) -> &[u8] {
        &self.partial
    }

    /// The line not yet ended, taken as it is (at the stream's end).
    pub fn finish(&mut self) -> Option<String> {
        (!self.partial.is_empty() || self.cut > 0).then(|| self.take())
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = MAX_LINE - self.partial.len();
        let kept = bytes.len().min(room);
        self.partial.extend_from_slice(&bytes[..kept]);
        self.cut += (bytes.len() - kept) as u64;
    }

    fn take(&mut self) -> String {
        let mut line = String::from_utf8_lossy(&self.partial).into_owned();
        if self.cut > 0 {
            line.push_str(&format!(" [… {} bytes of this line cut]", self.cut));
        }
        self.partial.clear();
        self.cut = 0;
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_anywhere_come_out_whole() {
        let mut split = LineSplitter::default();
        assert!(split.push(b"test a ... ").is_empty());
        assert_eq!(split.partial(), b"test a ... ");
        assert_eq!(split.push(b"ok\ntest b"), vec!["test a ... ok"]);
        assert_eq!(
            split.push(b" ... FAILED\n\n"),
            vec!["test b ... FAILED", ""]
        );
        assert_eq!(split.finish(), None);
        split.push(b"tail");
        assert_eq!(split.finish().as_deref(), Some("tail"));
    }

    #[test]
    fn an_endless_line_keeps_its_head_and_says_what_was_cut() {
        let mut split = LineSplitter::default();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..64 {
            assert!(split.push(&chunk).is_empty());
            assert!(split.partial().len() <= MAX_LINE);
        }
        let lines = split.push(b"\nnext\n");
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with(&"x".repeat(MAX_LINE)));
        assert!(
            lines[0].ends_with(&format!(
                " [… {} bytes of this line cut]",
                (64 << 20) - MAX_LINE
            )),
            "{}",
            &lines[0][MAX_LINE..]
        );
        assert_eq!(lines[1], "next");
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let mut split = LineSplitter::default();
        assert_eq!(split.push(b"a\xffb\n"), vec!["a\u{fffd}b"]);
    }
}
