//! A binary's events file, read incrementally: the start and end lines its `#[capped]` and
//! harness tests append (`capped_model::protocol::Event`, one JSON object a line).
//!
//! Invariants: lines are read as [`FileTail`] reads them (complete, once, bounded), and an
//! unparsable line is skipped, never fatal. Besides every event, the tail keeps which tests started (with
//! the width slots each holds) and which ended: the run loop estimates from them how much
//! of the width a harness binary uses ([`EventsTail::width_in_use`]).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use capped_model::protocol::Event;

use super::file_tail::FileTail;

/// Reads a binary's events file incrementally.
pub struct EventsTail {
    file: FileTail,
    /// Every event read so far.
    events: Vec<Event>,
    /// Started tests and the width slots each holds.
    started: HashMap<String, u32>,
    ended: HashSet<String>,
}

impl EventsTail {
    /// A tail of `path`, which need not exist yet.
    pub fn new(path: PathBuf) -> EventsTail {
        EventsTail {
            file: FileTail::new(path),
            events: Vec::new(),
            started: HashMap::new(),
            ended: HashSet::new(),
        }
    }

    /// Every event read so far.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Whether `test` started.
    pub fn has_started(&self, test: &str) -> bool {
        self.started.contains_key(test)
    }

    /// The width slots held by the tests that started and have not ended.
    pub fn width_in_use(&self) -> u32 {
        self.started
            .iter()
            .filter(|(name, _)| !self.ended.contains(*name))
            .map(|(_, width)| *width)
            .sum()
    }

    /// Events appended since the last call (complete lines only).
    pub fn read(&mut self) -> Vec<Event> {
        let mut new = Vec::new();
        for line in self.file.read_lines() {
            let Ok(event) = serde_json::from_slice::<Event>(&line) else {
                continue;
            };
            match &event {
                Event::Start { test, slots, .. } => {
                    let width = slots
                        .get(capped_model::resource::WIDTH)
                        .map_or(0, |ids| ids.len() as u32);
                    self.started.insert(test.clone(), width);
                }
                Event::End { test, .. } => {
                    self.ended.insert(test.clone());
                }
            }
            new.push(event.clone());
            self.events.push(event);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn events_tail_reads_complete_lines_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        let mut tail = EventsTail::new(path.clone());
        assert!(tail.read().is_empty(), "no file yet");
        let start = Event::Start {
            test: "a".into(),
            pid: 1,
            at_us: 1,
            slots: BTreeMap::from([("width".to_string(), vec![0, 1])]),
            waits_us: BTreeMap::new(),
        };
        start.append_to(&path).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"event\":\"end\",\"te"))
            .unwrap();
        assert_eq!(tail.read(), vec![start.clone()]);
        assert_eq!(tail.started["a"], 2);
        assert!(tail.has_started("a"));
        assert_eq!(tail.width_in_use(), 2, "a holds two slots");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| {
                std::io::Write::write_all(
                    &mut f,
                    b"st\":\"a\",\"pid\":1,\"at_us\":2,\"outcome\":\"passed\",\"duration_us\":1}\n",
                )
            })
            .unwrap();
        let new = tail.read();
        assert_eq!(new.len(), 1);
        assert!(tail.ended.contains("a"));
        assert_eq!(tail.width_in_use(), 0, "a ended");
        assert!(tail.read().is_empty());
        assert_eq!(tail.events.len(), 2);
    }
}
