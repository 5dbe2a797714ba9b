//! Parsers for the small value languages shared by the attribute, the config file, the
//! environment and the command line: byte sizes (`"2GiB"`), durations (`"30s"`) and group
//! names (`gpu`).
//!
//! The proc-macro crate uses these too, so that `#[capped(mem = "2GiB")]` is checked at
//! compile time by exactly the code that checks `--mem-limit 2GiB` at run time.

use std::time::Duration;

/// The longest group name accepted.
pub const GROUP_NAME_MAX_LEN: usize = 64;

/// What a group name looks like, for error messages.
pub const GROUP_NAME_FORM: &str = "[a-z0-9][a-z0-9_-]{0,63}";

/// Checks that `name` is a valid group name: `[a-z0-9][a-z0-9_-]{0,63}`.
///
/// Group names become directory names under the lock dirs, so anything else (a `/`, a `..`,
/// an upper-case letter that would make two spellings of one group) is refused.
pub fn check_group_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let shown_name = shown(name);
    let Some(first) = chars.next() else {
        return Err(format!(
            "a group name cannot be empty; it must match {GROUP_NAME_FORM}"
        ));
    };
    if name.len() > GROUP_NAME_MAX_LEN {
        return Err(format!(
            "group name `{shown_name}` is {} characters long; at most {GROUP_NAME_MAX_LEN} are allowed ({GROUP_NAME_FORM})",
            name.len()
        ));
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(format!(
            "group name `{shown_name}` must start with a lower-case letter or a digit ({GROUP_NAME_FORM})"
        ));
    }
    if let Some(bad) =
        chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "group name `{shown_name}` contains `{}`; only a-z, 0-9, `_` and `-` are allowed ({GROUP_NAME_FORM})",
            bad.escape_default()
        ));
    }
    Ok(())
}

/// The largest count accepted anywhere a count is read: the width (`--test-threads`,
/// `test-threads`, `CAPPED_TEST_THREADS`, `RUST_TEST_THREADS`, libtest's `--test-threads`),
/// a group's `max` (config, `CAPPED_GROUPS`, `gate --max`) and the rayon, BLAS and async
/// thread counts.
///
/// Counts size the slot tables of every process that takes slots, so they are bounded: far
/// above any machine's useful width, far below what could exhaust memory.
pub const MAX_COUNT: u32 = 4096;

/// What a count looks like, for error messages.
pub const COUNT_FORM: &str = "a whole number from 1 to 4096";

/// Checks that `n` is a count in `1..=`[`MAX_COUNT`].
pub fn check_count(n: i128) -> Result<u32, String> {
    if (1..=i128::from(MAX_COUNT)).contains(&n) {
        Ok(n as u32)
    } else {
        Err(format!("{n} is out of range; expected {COUNT_FORM}"))
    }
}

/// Parses a count in `1..=`[`MAX_COUNT`] (surrounding blanks allowed), as every command-line
/// flag, environment variable and config key that takes one does.
pub fn parse_count(text: &str) -> Result<u32, String> {
    let trimmed = text.trim();
    let all_digits = !trimmed.is_empty()
        && trimmed
            .strip_prefix(['-', '+'])
            .unwrap_or(trimmed)
            .chars()
            .all(|c| c.is_ascii_digit());
    if !all_digits || trimmed.strip_prefix(['-', '+']).is_some_and(str::is_empty) {
        return Err(format!(
            "`{}` is not a whole number; expected {COUNT_FORM}",
            shown(text)
        ));
    }
    match trimmed.parse::<i128>() {
        Ok(n) => check_count(n)
            .map_err(|_| format!("`{trimmed}` is out of range; expected {COUNT_FORM}")),
        // More digits than an i128 holds: out of range all the same.
        Err(_) => Err(format!(
            "`{}` is out of range; expected {COUNT_FORM}",
            shown(trimmed)
        )),
    }
}

/// `text` as an error message shows what a user gave: control characters escaped (a
/// newline or NUL must not break the one line of a message) and cut to a readable length.
pub fn shown(text: &str) -> String {
    const KEEP: usize = 40;
    let escaped = text.escape_debug().to_string();
    if escaped.chars().count() <= KEEP {
        escaped
    } else {
        let head: String = escaped.chars().take(KEEP).collect();
        format!("{head}…")
    }
}

/// What a size looks like, for error messages.
pub const SIZE_FORM: &str = "a number of bytes with an optional unit: 512, 300M, 300MiB, 2GiB, 1.5G (K/M/G/T are powers of 1024; KB/MB/GB/TB powers of 1000)";

/// Parses a byte size such as `"2GiB"`, `"300M"`, `"512"` or `"1.5 GB"`.
///
/// `K`, `M`, `G`, `T` and `KiB`… are powers of 1024; `KB`, `MB`… powers of 1000; `B` or no
/// unit is bytes. Units are case-insensitive. Zero is accepted (callers decide whether it
/// makes sense).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let shown_text = shown(text);
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number = number.replace('_', "");
    let unit = unit.trim();
    if number.is_empty() {
        return Err(format!(
            "`{shown_text}` is not a size; expected {SIZE_FORM}"
        ));
    }
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "`{shown_text}` has an unknown unit `{}`; expected {SIZE_FORM}",
                shown(unit)
            ));
        }
    };
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_mul(multiplier)
            .ok_or_else(|| format!("`{shown_text}` is too large a size"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{shown_text}` is not a size; expected {SIZE_FORM}"))?;
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("`{shown_text}` is too large a size"));
    }
    Ok(bytes.round() as u64)
}

/// Parses a memory limit: a [`parse_size`] that is not zero, which would kill every test
/// as it starts.
pub fn parse_mem_limit(text: &str) -> Result<u64, String> {
    match parse_size(text)? {
        0 => Err(format!(
            "`{}`: a memory limit must be more than 0 bytes",
            shown(text)
        )),
        bytes => Ok(bytes),
    }
}

/// Formats a byte count for people: `300 MiB`, `2.0 GiB`, `512 B`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// What a duration looks like, for error messages.
pub const DURATION_FORM: &str =
    "a number with a unit, or several: 500ms, 30s, 2m, 1h, 1m30s (a bare number is seconds)";

/// Parses a duration such as `"30s"`, `"500ms"`, `"2m"`, `"1h30m"` or `"1.5s"`.
///
/// A bare number is seconds, as in nextest's and libtest's settings.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let shown_text = shown(text);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!(
            "an empty string is not a duration; expected {DURATION_FORM}"
        ));
    }
    if let Ok(seconds) = trimmed.parse::<f64>() {
        return seconds_to_duration(seconds, text);
    }
    let mut total = Duration::ZERO;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let after = after.trim_start();
        let unit_end = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("`{shown_text}` is not a duration; expected {DURATION_FORM}"))?;
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hrs" => 3600.0,
            _ => {
                return Err(format!(
                    "`{shown_text}` has an unknown unit `{}`; expected {DURATION_FORM}",
                    shown(unit)
                ));
            }
        };
        total += seconds_to_duration(value * scale, text)?;
        rest = after.trim_start();
    }
    Ok(total)
}

/// Parses a timeout: a [`parse_duration`] that is not zero, which would end every test
/// before it starts (a flag, the config and the attribute all refuse it).
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err(format!(
            "`{}`: a timeout of zero would fail every test before it starts; expected {DURATION_FORM}",
            shown(text)
        )),
        timeout => Ok(timeout),
    }
}

fn seconds_to_duration(seconds: f64, text: &str) -> Result<Duration, String> {
    if !(0.0..=1e12).contains(&seconds) {
        return Err(format!(
            "`{}` is not a usable duration; expected {DURATION_FORM}",
            shown(text)
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Formats a duration for people: `850ms`, `1.25s`, `2m05s`.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        format!("{millis}ms")
    } else if millis < 60_000 {
        format!("{:.2}s", duration.as_secs_f64())
    } else {
        let secs = duration.as_secs();
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names() {
        assert!(check_group_name("gpu").is_ok());
        assert!(check_group_name("0cross_val-2").is_ok());
        assert!(check_group_name(&"a".repeat(64)).is_ok());
        assert!(check_group_name(&"a".repeat(65)).is_err());
        assert!(check_group_name("").is_err());
        assert!(check_group_name("GPU").is_err());
        assert!(check_group_name("-gpu").is_err());
        assert!(check_group_name("../etc").is_err());
        assert!(check_group_name("a/b").is_err());
        assert!(check_group_name("gpu ").is_err());
    }

    #[test]
    fn counts() {
        assert_eq!(parse_count("1"), Ok(1));
        assert_eq!(parse_count(" 4096 "), Ok(4096));
        assert_eq!(parse_count("+3"), Ok(3));
        for bad in [
            "0",
            "4097",
            "4294967295",
            "-1",
            "99999999999999999999999999999999999999999999",
            "",
            "-",
            "two",
            "1.5",
            "1e3",
        ] {
            let message = parse_count(bad).unwrap_err();
            assert!(message.contains(COUNT_FORM), "{bad}: {message}");
            assert!(!message.contains('\n'), "{bad}: {message}");
        }
        assert_eq!(check_count(4096), Ok(4096));
        assert!(check_count(i128::from(u32::MAX)).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("300M"), Ok(300 << 20));
        assert_eq!(parse_size("300MiB"), Ok(300 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("2 gib"), Ok(2 << 30));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size("1_000"), Ok(1000));
        assert!(parse_size("").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(format_size(300 << 20), "300 MiB");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(12), "12 B");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("-1").is_err());
        assert_eq!(format_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(format_duration(Duration::from_millis(1250)), "1.25s");
        assert_eq!(format_duration(Duration::from_secs(125)), "2m05s");
    }
}
