//! Logging setup: structured `tracing` logs, human-readable or JSON (`--log-format json`).
//!
//! The level comes from `WXHUB_LOG` (or `RUST_LOG`), default `info`. No log line carries a secret
//! or a token value: tokens are logged by key and generation only.
//!
//! Text that comes from outside (WeChat's `errmsg`, an upstream body that failed to parse) goes
//! through [`untrusted`] before it is kept anywhere a log line, an error or the credentials
//! listing can show it, so that it cannot forge a log line or drive a terminal.

use std::fmt::Write as _;

use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(format: LogFormat) {
    let filter = std::env::var("WXHUB_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The longest outside text kept, in characters; WeChat's messages are a few dozen.
const UNTRUSTED_MAX_CHARS: usize = 256;

/// `text` made safe to log: control characters (newlines, ANSI escape sequences, …) and the
/// invisible characters that reorder or hide text are written as `\u{..}` escapes (a backslash as
/// `\\`, so an escape cannot be forged either), and anything beyond [`UNTRUSTED_MAX_CHARS`]
/// characters is cut and marked with `…`.
pub fn untrusted(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(UNTRUSTED_MAX_CHARS * 2));
    for (count, c) in text.chars().enumerate() {
        if count == UNTRUSTED_MAX_CHARS {
            out.push('…');
            break;
        }
        if c == '\\' {
            out.push_str("\\\\");
        } else if c.is_control() || is_invisible_format(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// Bidirectional controls and zero-width characters: they let text display as something else.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}'
    )
}

#[cfg(test)]
mod tests {
    use super::untrusted;

    #[test]
    fn control_characters_are_escaped_so_no_line_can_be_forged() {
        let hostile =
            "invalid appsecret\n2026-12-01T00:00:00Z  INFO wxhub: all good\x1b[2J\r\t\u{7f}";
        let safe = untrusted(hostile);
        assert!(!safe.chars().any(char::is_control), "{safe:?}");
        assert_eq!(
            safe,
            "invalid appsecret\\u{a}2026-12-01T00:00:00Z  INFO wxhub: all good\\u{1b}[2J\\u{d}\\u{9}\\u{7f}"
        );
    }

    #[test]
    fn backslashes_and_invisible_characters_are_escaped() {
        assert_eq!(untrusted("a\\u{a}b"), "a\\\\u{a}b");
        assert_eq!(untrusted("x\u{202e}y\u{200b}z"), "x\\u{202e}y\\u{200b}z");
        assert_eq!(untrusted("rid: 1-2-3 无效"), "rid: 1-2-3 无效");
    }

    #[test]
    fn long_text_is_cut() {
        let safe = untrusted(&"a".repeat(10_000));
        assert_eq!(safe.chars().count(), super::UNTRUSTED_MAX_CHARS + 1);
        assert!(safe.ends_with('…'));
    }
}
