//! The alert rules and the Grafana dashboard under docs/prometheus use the metrics the hub
//! exports: a renamed metric must not leave a rule that silently never fires.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::helpers::*;

/// A file under docs/prometheus.
fn doc(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/prometheus")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `wxhub_…` metric name mentioned in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("wxhub_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The metric families `GET /metrics` declares, with the series names of histograms.
async fn exported() -> BTreeSet<String> {
    let (_mock, hub) = start_ready(&[TestApp::legacy("wxmetrics00000001")]).await;
    let text = hub
        .client
        .get(hub.url("/metrics"))
        .send()
        .await
        .expect("hub answers")
        .text()
        .await
        .expect("metrics text");
    hub.stop().await;
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(declared) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = declared.split(' ');
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        names.insert(name.to_string());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

#[tokio::test]
async fn alert_rules_and_dashboard_use_exported_metrics() {
    let exported = exported().await;
    assert!(exported.contains("wxhub_refreshes_total"), "{exported:?}");
    let alerts = doc("alerts.yml");
    // Rules written ahead of their metric say so, once each.
    let announced: BTreeSet<String> = alerts
        .lines()
        .filter_map(|line| line.split_once("Not exported yet: "))
        .flat_map(|(_, rest)| metric_names(rest))
        .collect();
    for name in &announced {
        assert!(
            !exported.contains(name),
            "{name} is exported now: remove its \"Not exported yet\" note from alerts.yml"
        );
    }
    for (file, text) in [
        ("alerts.yml", &alerts),
        ("dashboard.json", &doc("dashboard.json")),
    ] {
        let used = metric_names(text);
        assert!(!used.is_empty(), "{file} uses no wxhub metric");
        for name in used {
            assert!(
                exported.contains(&name) || announced.contains(&name),
                "{file} uses {name}, which the hub does not export"
            );
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&doc("dashboard.json")).expect("dashboard.json is JSON");
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() >= 8));
}
