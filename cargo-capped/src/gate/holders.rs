//! Who holds a group's slots, for the waiting gate's messages: the lock files' records
//! (`gpu slot 0: pid 1234 cargo-capped`) made readable with the holder's command line from
//! `/proc/<pid>/cmdline`, and whether a holder is one of our ancestors.

use crate::host::HostRoot;

/// The longest command line shown for a holder.
const MAX_SHOWN: usize = 160;

/// One holder of a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    /// The record as `capped_model::resource::Resolved::holders` gives it.
    pub record: String,
    /// The slot number, when the record names one.
    pub slot: u32,
    /// The holder's pid, when the record names one.
    pub pid: Option<u32>,
    /// Its command line, when `/proc` still shows it.
    pub command: Option<String>,
    /// The command lines of its children (a gate's CMD, a runner's test binary), with
    /// their pids.
    pub children: Vec<(u32, String)>,
}

/// Parses `gpu slot 0: pid 1234 cargo-capped` into slot 0 and pid 1234.
pub(crate) fn parse_record(record: &str) -> (u32, Option<u32>) {
    let slot = record
        .split(" slot ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let pid = record
        .split_once(": pid ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok());
    (slot, pid)
}

/// Quotes a word for a shell-like display when it has spaces or shell characters.
fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// A `/proc/<pid>/cmdline` as one line, quoted where needed and shortened.
pub(crate) fn render_cmdline(bytes: &[u8]) -> Option<String> {
    let words: Vec<String> = bytes
        .split(|&b| b == 0)
        .filter(|word| !word.is_empty())
        .map(|word| quote(&String::from_utf8_lossy(word)))
        .collect();
    if words.is_empty() {
        return None;
    }
    let line = words.join(" ");
    Some(if line.chars().count() > MAX_SHOWN {
        let cut: String = line.chars().take(MAX_SHOWN - 1).collect();
        format!("{cut}…")
    } else {
        line
    })
}

fn cmdline(pid: u32) -> Option<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .and_then(|bytes| render_cmdline(&bytes))
}

/// The holders behind `records`, with their command lines and their children's.
pub(crate) fn describe(records: &[String]) -> Vec<Holder> {
    let table = HostRoot::system().process_table().ok();
    records
        .iter()
        .map(|record| {
            let (slot, pid) = parse_record(record);
            let children = match (pid, &table) {
                (Some(pid), Some(table)) => table
                    .processes()
                    .iter()
                    .filter(|p| p.ppid == pid && p.state != 'Z')
                    .filter_map(|p| Some((p.pid, cmdline(p.pid)?)))
                    .collect(),
                _ => Vec::new(),
            };
            Holder {
                record: record.clone(),
                slot,
                pid,
                command: pid.and_then(cmdline),
                children,
            }
        })
        .collect()
}

/// `slot 0: pid 1234 (sh -c 'sleep 5'); slot 1: pid 99 (…)`, or a note when the holders
/// could not be identified (a slot freed meanwhile).
pub(crate) fn render(holders: &[Holder]) -> String {
    if holders.is_empty() {
        return "nobody identifiable (a slot was freed just now, or its holder is in another mount namespace)".to_string();
    }
    holders
        .iter()
        .map(|holder| {
            let mut line = match (holder.pid, &holder.command) {
                (Some(pid), Some(command)) => {
                    format!("slot {}: pid {pid} ({command})", holder.slot)
                }
                _ => holder.record.clone(),
            };
            if let Some((pid, command)) = holder.children.first() {
                line.push_str(&format!(", running pid {pid} ({command})"));
                if holder.children.len() > 1 {
                    line.push_str(&format!(" and {} more", holder.children.len() - 1));
                }
            }
            line
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Our ancestors' pids (parent, grandparent, … up to init), nearest first.
pub(crate) fn ancestors() -> Vec<u32> {
    let host = HostRoot::system();
    let mut found = Vec::new();
    let mut pid = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32);
    while pid > 1 && found.len() < 256 && !found.contains(&pid) {
        found.push(pid);
        pid = match host.proc_stat(pid) {
            Ok(Some(stat)) => stat.ppid,
            _ => break,
        };
    }
    found
}

/// The holder that is one of our ancestors, if any: waiting for it would never end.
pub(crate) fn held_by_ancestor(holders: &[Holder]) -> Option<&Holder> {
    let mine = ancestors();
    holders
        .iter()
        .find(|holder| holder.pid.is_some_and(|pid| mine.contains(&pid)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse() {
        assert_eq!(
            parse_record("gpu slot 0: pid 1234 cargo-capped"),
            (0, Some(1234))
        );
        assert_eq!(
            parse_record("cross-val slot 12: pid 7 (this process)"),
            (12, Some(7))
        );
        assert_eq!(parse_record("gpu slot 1: unknown"), (1, None));
        assert_eq!(parse_record("garbage"), (0, None));
    }

    #[test]
    fn command_lines_are_quoted_and_shortened() {
        assert_eq!(
            render_cmdline(b"sh\0-c\0sleep 5; echo 'done'\0").unwrap(),
            r"sh -c 'sleep 5; echo '\''done'\'''"
        );
        assert_eq!(
            render_cmdline(b"/usr/bin/python3\0run.py\0--gpu=0\0").unwrap(),
            "/usr/bin/python3 run.py --gpu=0"
        );
        assert_eq!(render_cmdline(b""), None);
        let long = format!("{}\0", "x".repeat(500));
        let shown = render_cmdline(long.as_bytes()).unwrap();
        assert_eq!(shown.chars().count(), MAX_SHOWN);
        assert!(shown.ends_with('…'));
    }

    #[test]
    fn holders_show_their_command_or_the_record() {
        let me = std::process::id();
        let holders = describe(&[
            format!("gpu slot 0: pid {me} cargo-capped"),
            "gpu slot 1: pid 4000000000 gone".to_string(),
        ]);
        assert_eq!(holders[0].pid, Some(me));
        let shown = render(&holders);
        assert!(shown.starts_with(&format!("slot 0: pid {me} (")), "{shown}");
        assert!(
            shown.ends_with("; gpu slot 1: pid 4000000000 gone"),
            "{shown}"
        );
        assert!(render(&[]).starts_with("nobody identifiable"));
    }

    #[test]
    fn a_holder_shows_what_it_runs() {
        let mut child = std::process::Command::new("sleep")
            .arg("7.25")
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let shown = loop {
            let holders = describe(&[format!("g slot 0: pid {} x", std::process::id())]);
            let shown = render(&holders);
            if shown.contains("sleep 7.25") || std::time::Instant::now() > deadline {
                break shown;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            shown.contains(&format!("running pid {} (sleep 7.25)", child.id())),
            "{shown}"
        );
    }

    #[test]
    fn our_parent_is_an_ancestor() {
        let parent = rustix::process::getppid().unwrap().as_raw_nonzero().get() as u32;
        let found = ancestors();
        assert_eq!(found.first(), Some(&parent));
        let holders = describe(&[format!("gpu slot 3: pid {parent} x")]);
        assert_eq!(held_by_ancestor(&holders).map(|h| h.slot), Some(3));
        let holders = describe(&[format!("gpu slot 0: pid {} x", std::process::id())]);
        assert!(
            held_by_ancestor(&holders).is_none(),
            "we are not our own ancestor"
        );
    }
}
