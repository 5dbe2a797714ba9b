//! Colors and number formats for the human report.

use std::time::Duration;

/// A color (or weight) for a piece of text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Passed.
    Pass,
    /// Failed, timed out, killed, crashed.
    Fail,
    /// Skipped, not run, notices.
    Warn,
    /// A binary's id.
    Binary,
    /// A test's name, headers.
    Bold,
    /// Secondary text.
    Dim,
}

impl Style {
    fn code(self) -> &'static str {
        match self {
            Style::Pass => "1;32",
            Style::Fail => "1;31",
            Style::Warn => "1;33",
            Style::Binary => "35",
            Style::Bold => "1",
            Style::Dim => "2",
        }
    }
}

/// Paints text with ANSI colors, or leaves it alone when colors are off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Painter {
    /// Whether colors are on.
    pub on: bool,
}

impl Painter {
    /// `text` in `style`.
    pub fn paint(self, style: Style, text: &str) -> String {
        if self.on && !text.is_empty() {
            format!("\u{1b}[{}m{text}\u{1b}[0m", style.code())
        } else {
            text.to_string()
        }
    }

    /// A status label right-aligned in the label column, then painted.
    pub fn label(self, style: Style, label: &str) -> String {
        self.paint(style, &format!("{label:>12}"))
    }
}

/// `[   0.012s]`, or blanks of the same width when unknown.
pub fn bracketed_duration(duration: Option<Duration>) -> String {
    match duration {
        Some(duration) => format!("[{:>9.3}s]", duration.as_secs_f64()),
        None => format!("[{:>10}]", ""),
    }
}

/// Milliseconds for wait percentiles: `0ms`, `0.4ms`, `310ms`.
pub fn millis(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1000.0;
    if ms > 0.0 && ms < 1.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{}ms", ms.round() as u64)
    }
}

/// Seconds with three decimals: `12.300s`.
pub fn seconds(duration: Duration) -> String {
    format!("{:.3}s", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(
            bracketed_duration(Some(Duration::from_millis(12))),
            "[    0.012s]"
        );
        assert_eq!(bracketed_duration(None), "[          ]");
        assert_eq!(
            bracketed_duration(None).len(),
            bracketed_duration(Some(Duration::from_secs(1))).len()
        );
        assert_eq!(millis(Duration::ZERO), "0ms");
        assert_eq!(millis(Duration::from_micros(400)), "0.4ms");
        assert_eq!(millis(Duration::from_micros(310_400)), "310ms");
        assert_eq!(seconds(Duration::from_millis(12_300)), "12.300s");
    }

    #[test]
    fn painting() {
        let on = Painter { on: true };
        let off = Painter { on: false };
        assert_eq!(off.paint(Style::Fail, "FAIL"), "FAIL");
        assert_eq!(on.paint(Style::Fail, "FAIL"), "\u{1b}[1;31mFAIL\u{1b}[0m");
        assert_eq!(off.label(Style::Pass, "PASS"), "        PASS");
        assert_eq!(on.paint(Style::Pass, ""), "");
    }
}
