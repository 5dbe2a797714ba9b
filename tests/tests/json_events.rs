//! The JSON event stream is the interface `docs/json-events.schema.json` describes: a real
//! run's every line, a `--no-run`'s lines and every example in `docs/json-events.md` match
//! it, `run-started` carries the format version, and every line its wall-clock time.
//!
//! The schema is checked by [`check`], which implements exactly the JSON Schema keywords the
//! file uses and refuses any other, so the schema cannot grow a rule that goes unchecked.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;

fn schema() -> Value {
    let path = repo_root().join("docs/json-events.schema.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        other => panic!("the schema names an unknown type `{other}`"),
    }
}

/// The errors of `value` against `schema` (within `root`, for `$ref`), each naming where.
fn check(schema: &Value, root: &Value, value: &Value, at: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let Some(rules) = schema.as_object() else {
        panic!("{at}: a schema must be an object");
    };
    for (keyword, rule) in rules {
        match keyword.as_str() {
            "$schema" | "$id" | "title" | "description" | "$defs" => {}
            "$ref" => {
                let pointer = rule.as_str().and_then(|r| r.strip_prefix('#')).unwrap();
                let target = root
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("no {pointer}"));
                errors.extend(check(target, root, value, at));
            }
            "type" => {
                let names: Vec<&str> = match rule {
                    Value::String(name) => vec![name],
                    Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
                    _ => panic!("{at}: bad type rule"),
                };
                if !names.iter().any(|n| type_matches(n, value)) {
                    errors.push(format!("{at}: {value} is not {names:?}"));
                }
            }
            "const" if value != rule => errors.push(format!("{at}: {value} is not {rule}")),
            "enum" if !rule.as_array().unwrap().contains(value) => {
                errors.push(format!("{at}: {value} is not one of {rule}"))
            }
            "const" | "enum" => {}
            "minimum" => {
                if let Some(n) = value.as_f64()
                    && n < rule.as_f64().unwrap()
                {
                    errors.push(format!("{at}: {n} < {rule}"));
                }
            }
            "required" => {
                if let Some(object) = value.as_object() {
                    for name in rule.as_array().unwrap().iter().filter_map(Value::as_str) {
                        if !object.contains_key(name) {
                            errors.push(format!("{at}: `{name}` is missing"));
                        }
                    }
                }
            }
            "properties" => {
                if let Some(object) = value.as_object() {
                    for (name, sub) in rule.as_object().unwrap() {
                        if let Some(v) = object.get(name) {
                            errors.extend(check(sub, root, v, &format!("{at}.{name}")));
                        }
                    }
                }
            }
            "additionalProperties" => {
                if let Some(object) = value.as_object() {
                    let known = rules.get("properties").and_then(Value::as_object);
                    for (name, v) in object {
                        if known.is_some_and(|k| k.contains_key(name)) {
                            continue;
                        }
                        match rule {
                            Value::Bool(false) => {
                                errors.push(format!("{at}: `{name}` is not in the schema"))
                            }
                            Value::Bool(true) => {}
                            sub => errors.extend(check(sub, root, v, &format!("{at}.{name}"))),
                        }
                    }
                }
            }
            "propertyNames" => {
                if let Some(object) = value.as_object() {
                    for name in object.keys() {
                        let name_value = Value::String(name.clone());
                        errors.extend(check(rule, root, &name_value, &format!("{at} key")));
                    }
                }
            }
            "items" => {
                if let Some(items) = value.as_array() {
                    for (i, v) in items.iter().enumerate() {
                        errors.extend(check(rule, root, v, &format!("{at}[{i}]")));
                    }
                }
            }
            "oneOf" => {
                let results: Vec<Vec<String>> = rule
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|sub| check(sub, root, value, at))
                    .collect();
                let matched = results.iter().filter(|r| r.is_empty()).count();
                if matched != 1 {
                    // The closest branch says most: the one with the fewest errors.
                    let closest = results.into_iter().min_by_key(Vec::len).unwrap_or_default();
                    errors.push(format!(
                        "{at}: matches {matched} of oneOf; closest: {closest:?}"
                    ));
                }
            }
            other => panic!("the schema uses `{other}`, which this check does not implement"),
        }
    }
    errors
}

/// Checks every line of a stream; returns the parsed events.
fn check_stream(stdout: &[u8], context: &str) -> Vec<Value> {
    let schema = schema();
    let text = String::from_utf8_lossy(stdout);
    let mut events = Vec::new();
    for line in text.lines() {
        let event: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let errors = check(&schema, &schema, &event, "event");
        assert!(errors.is_empty(), "{errors:#?}\nin: {line}\n{context}");
        events.push(event);
    }
    events
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Every event is stamped within the run, in order.
fn assert_stamped(events: &[Value], before: u64, after: u64, context: &str) {
    let mut last = 0;
    for event in events {
        let at = event["at_ms"].as_u64().unwrap_or_else(|| panic!("{event}"));
        assert!(
            (before..=after).contains(&at),
            "{at} outside {before}..{after}: {event}"
        );
        assert!(at >= last, "stamps go back: {event}\n{context}");
        last = at;
    }
}

#[test]
fn a_real_run_matches_the_schema() {
    let scratch = RunScratch::new();
    let mut command = capped_in("verdicts");
    command.args([
        "t2",
        "--test",
        "reports",
        "--test",
        "mixed_abort",
        "--test",
        "nocapture",
    ]);
    scratch.apply(&mut command);
    // One thread: libtest runs mixed_abort's tests in name order, so the abort always
    // leaves `c_capped_after` not run (at two, it may have started beside the abort).
    command.args([
        "--no-capture",
        "--test-threads",
        "1",
        "--message-format",
        "json",
    ]);
    let before = unix_ms_now();
    let output = command.output().expect("running cargo capped");
    let after = unix_ms_now();
    let text = describe(&output);
    assert_eq!(exit_code(&output), 100, "{text}");
    let events = check_stream(&output.stdout, &text);
    assert_eq!(events[0]["type"], "run-started", "{text}");
    assert_eq!(events[0]["format_version"], 1, "{text}");
    assert_eq!(events.last().unwrap()["type"], "run-finished", "{text}");
    // The build comes before the run: only events stamped after it are the run's.
    assert_stamped(&events, before, after, &text);
    for kind in [
        "binary-started",
        "test-started",
        "test-output",
        "test-finished",
        "binary-finished",
    ] {
        assert!(
            events.iter().any(|e| e["type"] == kind),
            "no {kind}: {text}"
        );
    }
    for status in ["passed", "failed", "ignored", "not-run"] {
        assert!(
            events.iter().any(|e| e["status"] == status),
            "no {status} test: {text}"
        );
    }

    let mut command = capped_in("verdicts");
    command.args(["t2", "--no-run"]);
    scratch.apply(&mut command);
    command.args(["--message-format", "json"]);
    let before = unix_ms_now();
    let output = command.output().expect("running cargo capped");
    let after = unix_ms_now();
    let text = describe(&output);
    assert_eq!(exit_code(&output), 0, "{text}");
    let events = check_stream(&output.stdout, &text);
    assert!(!events.is_empty(), "{text}");
    assert_stamped(&events, before, after, &text);
}

#[test]
fn every_event_type_has_a_documented_example_that_matches() {
    let schema = schema();
    let doc = std::fs::read_to_string(repo_root().join("docs/json-events.md")).unwrap();
    let mut documented = std::collections::BTreeSet::new();
    for block in doc.split("```json\n").skip(1) {
        let example = block.split("\n```").next().unwrap();
        let event: Value =
            serde_json::from_str(example).unwrap_or_else(|e| panic!("{e}: {example}"));
        let errors = check(&schema, &schema, &event, "example");
        assert!(errors.is_empty(), "{errors:#?}\nin: {example}");
        documented.insert(event["type"].as_str().unwrap().to_string());
    }
    let in_schema: std::collections::BTreeSet<String> = schema["$defs"]
        .as_object()
        .unwrap()
        .keys()
        .filter_map(|k| k.strip_prefix("event-").map(str::to_string))
        .collect();
    assert_eq!(documented, in_schema);
}

#[test]
fn the_check_catches_what_the_schema_forbids() {
    let schema = schema();
    let good = serde_json::json!({"type": "notice", "message": "m", "at_ms": 1});
    assert!(check(&schema, &schema, &good, "e").is_empty());
    for bad in [
        serde_json::json!({"type": "notice", "message": "m"}),
        serde_json::json!({"type": "notice", "message": 3, "at_ms": 1}),
        serde_json::json!({"type": "notice", "message": "m", "at_ms": 1, "extra": true}),
        serde_json::json!({"type": "nope", "at_ms": 1}),
    ] {
        assert!(!check(&schema, &schema, &bad, "e").is_empty(), "{bad}");
    }
}
