//! `infra/agent.example.toml` against the configuration code: it loads, it
//! names every key the agent accepts and no other, each commented example
//! line loads when uncommented, and every key it sets holds the real default.
//!
//! The accepted keys come from the code itself, with no list to keep in
//! step: the file's sections deny unknown fields, and serde's refusal of an
//! unknown field names every field the section has.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use vipfleet_agent::config;

/// Keys that have no default; the example sets them to sample values.
const REQUIRED: [&str; 5] = [
    "aws.table",
    "fleet.vips",
    "fleet.route_tables",
    "health.url",
    "peers.key_file",
];
/// Commented keys that take the place of a set one (the two cannot be set
/// together): `(commented, replaced)`.
const REPLACES: [(&str, &str); 1] = [("health.stats_socket", "health.url")];
/// A key no section has.
const PROBE: &str = "vipfleet_probe_not_a_key";

fn example_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../infra/agent.example.toml")
}

fn example() -> String {
    let path = example_path();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn load(text: &str) -> Result<config::AgentConfig, config::ConfigError> {
    config::load(text, &BTreeMap::new(), &[])
}

/// The names in serde's "unknown field `x`, expected one of `a`, `b`" (or
/// "expected `a` or `b`", or "expected `a`"); toml adds "in `section`" on
/// the next line.
fn expected_fields(message: &str) -> Vec<String> {
    let Some((_, expected)) = message.split_once("expected") else {
        return Vec::new();
    };
    expected
        .lines()
        .next()
        .unwrap_or_default()
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Fields of the document (section = None) or of one section, as the code
/// refuses an unknown one.
fn accepted_fields(section: Option<&str>) -> Vec<String> {
    let text = match section {
        None => format!("[{PROBE}]\n"),
        Some(section) => format!("[{section}]\n{PROBE} = 0\n"),
    };
    let err = load(&text).expect_err("an unknown key must be refused").to_string();
    assert!(err.contains(PROBE), "the refusal should name {PROBE}: {err}");
    let fields = expected_fields(&err);
    assert!(
        !fields.is_empty(),
        "no field names in {err:?}: has serde's message changed?"
    );
    fields
}

/// Every `section.key` the configuration code accepts.
fn accepted_keys() -> BTreeSet<String> {
    accepted_fields(None)
        .iter()
        .flat_map(|section| {
            accepted_fields(Some(section))
                .into_iter()
                .map(move |key| format!("{section}.{key}"))
        })
        .collect()
}

/// One key line of the example, set or commented out.
struct KeyLine {
    key: String,
    /// The line with any comment marker removed.
    line: String,
    commented: bool,
}

/// The key lines of the example, by section. Prose comments never look
/// like `name = value`.
fn documented(text: &str) -> Vec<KeyLine> {
    let mut section = String::new();
    let mut lines = Vec::new();
    for raw in text.lines() {
        let trimmed = raw.trim();
        if let Some(name) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (line, commented) = match trimmed.strip_prefix("# ") {
            Some(rest) => (rest, true),
            None => (trimmed, false),
        };
        let Some((name, _)) = line.split_once(" = ") else {
            continue;
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        assert!(!section.is_empty(), "key line before any section: {raw:?}");
        lines.push(KeyLine {
            key: format!("{section}.{name}"),
            line: line.to_string(),
            commented,
        });
    }
    lines
}

#[test]
fn the_example_loads() {
    let config = load(&example()).unwrap_or_else(|e| panic!("{}: {e}", example_path().display()));
    assert!(!config.vips.is_empty() && !config.route_tables.is_empty());
}

#[test]
fn the_example_names_every_accepted_key_once() {
    let accepted = accepted_keys();
    // The probe must have found the sections and keys it is meant to find.
    for key in REQUIRED.iter().chain(&["lifecycle.drain_timeout_ms", "node.weight"]) {
        assert!(
            accepted.contains(*key),
            "{key} not among the accepted keys {accepted:?}"
        );
    }
    let lines = documented(&example());
    let mut seen = BTreeSet::new();
    for line in &lines {
        assert!(seen.insert(line.key.clone()), "{} is documented twice", line.key);
    }
    let missing: Vec<_> = accepted.difference(&seen).collect();
    let unknown: Vec<_> = seen.difference(&accepted).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "infra/agent.example.toml is out of step with vipfleet-agent-config: missing {missing:?}, not accepted {unknown:?}"
    );
}

/// What `key` takes the place of, if anything ([`REPLACES`]).
fn replaced_by(key: &str) -> Option<&'static str> {
    REPLACES.iter().find(|(k, _)| *k == key).map(|(_, replaced)| *replaced)
}

/// A file of the example's required keys plus `extra`, nothing else.
fn required_plus(lines: &[KeyLine], extra: Option<&KeyLine>) -> String {
    let mut sections: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let replaced = extra.and_then(|l| replaced_by(&l.key));
    let wanted = lines
        .iter()
        .filter(|l| REQUIRED.contains(&l.key.as_str()) && !l.commented && Some(l.key.as_str()) != replaced)
        .chain(extra);
    for line in wanted {
        let section = line.key.split_once('.').map(|(s, _)| s).unwrap_or_default();
        sections.entry(section).or_default().push(&line.line);
    }
    sections
        .iter()
        .map(|(section, lines)| format!("[{section}]\n{}\n", lines.join("\n")))
        .collect()
}

/// Loads `text` and renders the result for comparison (the configuration
/// has no `PartialEq`; its `Debug` shows every field).
fn loaded(what: &str, text: &str) -> String {
    match load(text) {
        Ok(config) => format!("{config:#?}"),
        Err(e) => panic!("{what} does not load: {e}\n{text}"),
    }
}

/// The keys set in the example hold the agent's own defaults: the example
/// loads to exactly what its required keys alone load to.
#[test]
fn every_set_key_holds_its_default() {
    let text = example();
    let lines = documented(&text);
    for key in REQUIRED {
        assert!(
            lines.iter().any(|l| l.key == key && !l.commented),
            "required key {key} must be set in the example"
        );
    }
    assert_eq!(
        loaded("the example", &text),
        loaded("its required keys", &required_plus(&lines, None)),
        "a key set in the example differs from its default"
    );
}

/// Each commented line, uncommented alone, loads; and the set keys still
/// hold the defaults next to it (this reaches the keys that only matter
/// once a commented one is set, such as the health timings).
#[test]
fn every_commented_key_loads_when_uncommented() {
    let text = example();
    let lines = documented(&text);
    let commented: Vec<_> = lines.iter().filter(|l| l.commented).collect();
    assert!(!commented.is_empty());
    for line in commented {
        let mut uncommented = text.replacen(&format!("# {}", line.line), &line.line, 1);
        assert_ne!(uncommented, text);
        if let Some(replaced) = replaced_by(&line.key) {
            let set = lines
                .iter()
                .find(|l| l.key == replaced && !l.commented)
                .unwrap_or_else(|| panic!("{} replaces {replaced}, which the example does not set", line.key));
            uncommented = uncommented.replacen(&set.line, &format!("# {}", set.line), 1);
        }
        assert_eq!(
            loaded(&format!("the example with {}", line.key), &uncommented),
            loaded(&format!("{} alone", line.key), &required_plus(&lines, Some(line))),
            "with {} set, a key set in the example differs from its default",
            line.key
        );
    }
}
