//! `wxhub check-config` output: the effective configuration as TOML, with nothing secret in it.

use std::fmt::Write as _;

use super::{
    format_duration, mask_url_password, mask_url_userinfo, RedisSettings, RedisTarget,
    RefreshOverrides, SecretSource, Settings, StoreSettings,
};

/// A TOML string literal.
fn quote(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn quote_list<T: ToString>(items: &[T]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| quote(&i.to_string())).collect();
    format!("[{}]", quoted.join(", "))
}

/// `secret = "***"` and a comment saying where the secret was read from.
fn secret_line(out: &mut String, source: &SecretSource) {
    masked_line(out, "secret", source);
}

/// `{key} = "***"` and a comment saying where the value was read from.
fn masked_line(out: &mut String, key: &str, source: &SecretSource) {
    let from = match source {
        SecretSource::Inline => "given inline".to_string(),
        SecretSource::Env(name) => format!("from environment variable {name}"),
        SecretSource::File(path) => format!("from file {}", path.display()),
    };
    let _ = writeln!(out, "{key} = \"***\"  # {from}");
}

/// The redis store's keys, every password masked.
fn redis_lines(out: &mut String, redis: &RedisSettings) {
    match &redis.target {
        RedisTarget::Url(url) => {
            let _ = writeln!(out, "url = {}", quote(&mask_url_password(url)));
        }
        RedisTarget::Sentinel { master, sentinels } => {
            let _ = writeln!(out, "sentinel_master = {}", quote(master));
            let masked: Vec<String> = sentinels.iter().map(|s| mask_url_password(s)).collect();
            let _ = writeln!(out, "sentinels = {}", quote_list(&masked));
        }
    }
    let _ = writeln!(out, "namespace = {}", quote(&redis.namespace));
    if let Some(username) = &redis.username {
        let _ = writeln!(out, "username = {}", quote(username));
    }
    if let Some(password) = &redis.password {
        masked_line(out, "password", password.source());
    }
    if let Some(ca_file) = &redis.ca_file {
        let _ = writeln!(out, "ca_file = {}", quote(&ca_file.display().to_string()));
    }
}

/// An account's own refresh timing, when it has any.
fn overrides_lines(out: &mut String, overrides: &RefreshOverrides) {
    for (key, value) in [
        ("refresh_before_expired", overrides.refresh_before_expired),
        ("refresh_retry_interval", overrides.refresh_retry_interval),
        ("check_interval", overrides.check_interval),
    ] {
        if let Some(value) = value {
            let _ = writeln!(out, "{key} = {}", quote(&format_duration(value)));
        }
    }
}

pub(super) fn masked(settings: &Settings) -> String {
    let mut out = String::new();
    let s = &settings.server;
    let _ = writeln!(out, "[server]");
    let _ = writeln!(out, "listen = {}", quote(&s.listen.to_string()));
    let _ = writeln!(
        out,
        "request_timeout = {}",
        quote(&format_duration(s.request_timeout))
    );
    for (key, value) in [
        ("header_read_timeout", s.header_read_timeout),
        ("idle_timeout", s.idle_timeout),
    ] {
        let _ = writeln!(out, "{key} = {}", quote(&format_duration(value)));
    }
    match s.max_connections {
        Some(n) => {
            let _ = writeln!(out, "max_connections = {n}");
        }
        None => {
            let _ = writeln!(
                out,
                "# max_connections: derived from the file-descriptor limit at start"
            );
        }
    }
    let _ = writeln!(
        out,
        "max_watchers_per_consumer = {}",
        s.max_watchers_per_consumer
    );
    if let Some(events) = s.events_listen {
        let _ = writeln!(out, "events_listen = {}", quote(&events.to_string()));
    }

    let _ = writeln!(out, "\n[store]");
    let _ = writeln!(out, "kind = {}", quote(settings.store.kind_name()));
    match &settings.store {
        StoreSettings::Memory => {}
        StoreSettings::Sqlite { path } => {
            let _ = writeln!(out, "path = {}", quote(&path.display().to_string()));
        }
        StoreSettings::Redis(redis) => redis_lines(&mut out, redis),
    }

    let w = &settings.wechat;
    let _ = writeln!(out, "\n[wechat]");
    let _ = writeln!(out, "api_base = {}", quote(&mask_url_userinfo(&w.api_base)));
    let _ = writeln!(
        out,
        "work_api_base = {}",
        quote(&mask_url_userinfo(&w.work_api_base))
    );
    let _ = writeln!(out, "timeout = {}", quote(&format_duration(w.timeout)));

    let r = &settings.refresh;
    let _ = writeln!(out, "\n[refresh]");
    for (key, value) in [
        ("refresh_before_expired", r.refresh_before_expired),
        ("refresh_retry_interval", r.refresh_retry_interval),
        ("min_refresh_interval", r.min_refresh_interval),
    ] {
        let _ = writeln!(out, "{key} = {}", quote(&format_duration(value)));
    }
    if let Some(check) = r.check_interval {
        let _ = writeln!(out, "check_interval = {}", quote(&format_duration(check)));
    }
    let _ = writeln!(out, "concurrency = {}", r.concurrency);
    let _ = writeln!(out, "force_reserve = {}", r.force_reserve);

    let g = &settings.gateway;
    if g.listen.is_some() || g.work_listen.is_some() {
        let _ = writeln!(out, "\n[gateway]");
        for (key, address) in [("listen", g.listen), ("work_listen", g.work_listen)] {
            if let Some(address) = address {
                let _ = writeln!(out, "{key} = {}", quote(&address.to_string()));
            }
        }
        let _ = writeln!(out, "max_body = {}", g.max_body);
        let _ = writeln!(out, "replay_memory = {}", g.replay_memory);
    }
    if settings.secrets.master_key.is_some() {
        let _ = writeln!(out, "\n[secrets]");
        let _ = writeln!(out, "master_key = \"***\"");
    }

    for app in &settings.apps {
        let _ = writeln!(out, "\n[[apps]]");
        let _ = writeln!(out, "appid = {}", quote(&app.appid));
        secret_line(&mut out, app.secret.source());
        let _ = writeln!(out, "mode = {}", quote(app.mode.as_str()));
        let _ = writeln!(out, "tickets = {}", quote_list(&app.tickets));
        overrides_lines(&mut out, &app.refresh);
    }

    for corp in &settings.corps {
        let _ = writeln!(out, "\n[[corps]]");
        let _ = writeln!(out, "corpid = {}", quote(&corp.corpid));
        let _ = writeln!(out, "agentid = {}", quote(&corp.agentid));
        secret_line(&mut out, corp.secret.source());
        let _ = writeln!(out, "tickets = {}", quote_list(&corp.tickets));
        overrides_lines(&mut out, &corp.refresh);
    }

    for component in &settings.components {
        let _ = writeln!(out, "\n[[components]]");
        let _ = writeln!(
            out,
            "component_appid = {}",
            quote(&component.component_appid)
        );
        secret_line(&mut out, component.secret.source());
        let mut masked_line = |key: &str, source: &SecretSource| {
            let mut line = String::new();
            secret_line(&mut line, source);
            out.push_str(&line.replacen("secret", key, 1));
        };
        masked_line("token", component.token.source());
        masked_line("encoding_aes_key", component.encoding_aes_key.source());
        if let Some(previous) = &component.previous_encoding_aes_key {
            masked_line("previous_encoding_aes_key", previous.source());
        }
        let _ = writeln!(
            out,
            "authorizer_tickets = {}",
            quote_list(&component.authorizer_tickets)
        );
        overrides_lines(&mut out, &component.refresh);
    }

    for suite in &settings.suites {
        let _ = writeln!(out, "\n[[suites]]");
        let _ = writeln!(out, "suite_id = {}", quote(&suite.suite_id));
        secret_line(&mut out, suite.secret.source());
        masked_line(&mut out, "token", suite.token.source());
        masked_line(
            &mut out,
            "encoding_aes_key",
            suite.encoding_aes_key.source(),
        );
        if let Some(previous) = &suite.previous_encoding_aes_key {
            masked_line(&mut out, "previous_encoding_aes_key", previous.source());
        }
        let _ = writeln!(out, "corp_tickets = {}", quote_list(&suite.corp_tickets));
        overrides_lines(&mut out, &suite.refresh);
    }

    for provider in &settings.providers {
        let _ = writeln!(out, "\n[[providers]]");
        let _ = writeln!(out, "corpid = {}", quote(&provider.corpid));
        secret_line(&mut out, provider.secret.source());
        overrides_lines(&mut out, &provider.refresh);
    }

    for consumer in &settings.consumers {
        let _ = writeln!(out, "\n[[consumers]]");
        let _ = writeln!(out, "name = {}", quote(&consumer.name));
        let short = hex::encode(&consumer.key_sha256[..4]);
        let _ = writeln!(
            out,
            "key_sha256 = {}  # shortened",
            quote(&format!("{short}…"))
        );
        let _ = writeln!(out, "apps = {}", quote_list(&consumer.apps));
        let _ = writeln!(out, "scopes = {}", quote_list(&consumer.scopes));
    }
    out
}
