//! The alert rules and the Grafana dashboard shipped in `infra/` query only
//! series the agent exports: their PromQL is taken apart here, by hand, into
//! the metric names it selects.

use serde_json::Value;

use super::fleet::{get, Fleet};

/// The names of the series a PromQL expression selects: what is left once
/// strings, label matchers, ranges, grouping clauses, function names,
/// keywords, numbers and Grafana variables are set aside.
fn promql_metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: [&str; 8] = ["and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"];
    const GROUPING: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
    let chars: Vec<char> = expr.chars().collect();
    // (identifier, followed by an opening parenthesis)
    let mut idents: Vec<(String, bool)> = Vec::new();
    let mut i = 0;
    let closing = |open: char| match open {
        '{' => '}',
        '[' => ']',
        other => other,
    };
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`' | '{' | '[') {
            let end = closing(c);
            i += 1;
            while i < chars.len() && chars[i] != end {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' || c == '$' {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let rest: String = chars[j..].iter().take(8).collect::<String>().to_lowercase();
            // `sum by (x) (...)`: an aggregation with its clause first.
            let call = rest.starts_with('(') || rest.starts_with("by") || rest.starts_with("without");
            if GROUPING.contains(&word.to_lowercase().as_str()) && call {
                let mut depth = 0;
                i = j;
                while i < chars.len() {
                    depth += match chars[i] {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    i += 1;
                    if depth == 0 {
                        break;
                    }
                }
                continue;
            }
            idents.push((word, call));
        } else if c.is_ascii_digit() || c == '.' {
            // Numbers and durations (5m, 1e3, 0x1f).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    idents
        .into_iter()
        .filter(|(word, call)| !call && !word.starts_with('$') && !KEYWORDS.contains(&word.to_lowercase().as_str()))
        .map(|(word, _)| word)
        .collect()
}

/// Series names in OpenMetrics text, as Prometheus stores them (a
/// histogram `x` is `x_bucket`, `x_sum` and `x_count`; a counter `x_total`).
fn exported_series(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

fn repo_file(relative: &str) -> String {
    let path = format!("{}/../../{relative}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every query in the Grafana dashboard and every alert rule names only
/// series the agent really exports, so neither shows "no data" forever.
#[tokio::test(start_paused = true)]
async fn the_alert_rules_and_the_grafana_dashboard_query_only_exported_series() {
    // The extractor itself: names, not functions, labels or variables.
    assert_eq!(
        promql_metric_names(
            r#"sum by (job, instance) (rate(vipfleet_store_calls_total{job="$job",outcome="throttled"}[$__rate_interval])) > 0 and on(instance) up == 1"#
        ),
        vec!["vipfleet_store_calls_total", "up"]
    );
    assert_eq!(
        promql_metric_names("histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m]))) / ignoring(op) y offset 1h"),
        vec!["x_bucket", "y"]
    );

    let fleet = Fleet::start().await;
    let text = get(&fleet.router(0, None), "/metrics").await.body;
    let mut exported = exported_series(&text);
    // Prometheus adds `up` for every scrape target.
    exported.insert("up".to_string());
    assert!(
        !exported.contains("vipfleet_claims"),
        "counters are stored with _total: a query without it finds nothing"
    );

    let rules: serde_json::Value = serde_norway::from_str(&repo_file("infra/monitoring/alerts.yml")).unwrap();
    let mut alert_queries = Vec::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .expect("a named rule");
            alert_queries.push((
                format!("alerts.yml {name}"),
                rule["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }

    let dashboard: Value = serde_json::from_str(&repo_file("infra/monitoring/grafana-dashboard.json")).unwrap();
    let mut grafana_queries = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"].as_array().expect("panels").iter().collect();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            grafana_queries.push((
                format!("panel {title:?}"),
                target["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        let query = variable["query"]["query"].as_str().or(variable["definition"].as_str());
        if let (Some("query"), Some(query)) = (variable["type"].as_str(), query) {
            // label_values(metric, label): only the first argument is a series.
            let series = query
                .strip_prefix("label_values(")
                .and_then(|rest| rest.split(',').next())
                .unwrap_or(query);
            grafana_queries.push((format!("variable {}", variable["name"]), series.to_string()));
        }
    }

    for (what, queries) in [
        ("alerts.yml", &alert_queries),
        ("the Grafana dashboard", &grafana_queries),
    ] {
        let mut used = std::collections::BTreeSet::new();
        let mut unknown = Vec::new();
        for (place, expr) in queries.iter() {
            let names = promql_metric_names(expr);
            assert!(!names.is_empty(), "{place} queries no series: {expr}");
            for name in names {
                if !exported.contains(&name) {
                    unknown.push(format!("{place}: {name} in {expr}"));
                }
                used.insert(name);
            }
        }
        assert!(
            unknown.is_empty(),
            "{what} queries series the agent does not export:\n{}",
            unknown.join("\n")
        );
        assert!(used.len() >= 8, "{what} uses only {used:?}");
        eprintln!(
            "{what}: {} queries over {} series, all exported",
            queries.len(),
            used.len()
        );
    }
}
