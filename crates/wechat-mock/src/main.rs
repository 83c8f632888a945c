//! `wechat-mock`: the mock of WeChat's servers on its own, for demos, benchmarks and manual tests.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use wechat_mock::{parse_apps_file, MockApp, MockConfig, MockCorpApp, MockServer};

/// A mock of WeChat's token, ticket and business endpoints (official accounts and Work WeChat).
#[derive(Parser, Debug)]
#[command(name = "wechat-mock", version)]
struct Cli {
    /// Address to listen on, for example 127.0.0.1:9000 (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// Lifetime of tokens and tickets, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 7200,
          value_parser = clap::value_parser!(u64).range(1..))]
    lifetime: u64,
    /// How long a superseded token stays valid, in seconds (also stable_token's rotation window).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    grace: u64,
    /// cgi-bin/token calls allowed per appid per day before 45009.
    #[arg(long, value_name = "N", default_value_t = 2000)]
    daily_quota: u32,
    /// stable_token force refreshes allowed per appid per day before 45009.
    #[arg(long, value_name = "N", default_value_t = 20)]
    force_refresh_limit: u32,
    /// An official account or mini program the mock knows (repeatable).
    #[arg(long = "app", value_name = "APPID:SECRET")]
    apps: Vec<MockApp>,
    /// A file of more official accounts, one APPID:SECRET per line (blank lines and lines
    /// starting with # are skipped): for more accounts than a command line can hold.
    #[arg(long, value_name = "PATH")]
    apps_file: Option<PathBuf>,
    /// A Work WeChat app the mock knows (repeatable).
    #[arg(long = "corp", value_name = "CORPID:AGENTID:SECRET")]
    corps: Vec<MockCorpApp>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if let Some(path) = &cli.apps_file {
        let listed = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| parse_apps_file(&text).map_err(|e| e.to_string()));
        match listed {
            Ok(apps) => cli.apps.extend(apps),
            Err(e) => {
                eprintln!("error: --apps-file {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    // Registered before anything else, so that a stop request during startup is not lost.
    let stop = match StopSignal::register() {
        Ok(stop) => stop,
        Err(e) => {
            eprintln!("wechat-mock: cannot listen for signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::stdout().is_terminal())
        .init();

    let config = MockConfig {
        lifetime: Duration::from_secs(cli.lifetime),
        grace: Duration::from_secs(cli.grace),
        daily_quota: cli.daily_quota,
        force_refresh_daily_limit: cli.force_refresh_limit,
        apps: cli.apps,
        corps: cli.corps,
        ..MockConfig::default()
    };
    let apps: Vec<&str> = config.apps.iter().map(|a| a.appid.as_str()).collect();
    let corps: Vec<String> = config
        .corps
        .iter()
        .map(|c| format!("{}/{}", c.corpid, c.agentid))
        .collect();
    tracing::info!(
        lifetime = cli.lifetime,
        grace = cli.grace,
        daily_quota = config.daily_quota,
        apps = %listing(&apps),
        corps = %listing(&corps),
        "starting"
    );
    if config.apps.is_empty() && config.corps.is_empty() {
        tracing::warn!("no --app or --corp given: every token request will be refused");
    }

    let server = match MockServer::start(config, cli.listen).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("wechat-mock: cannot start on {}: {e}", cli.listen);
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(address = %server.addr(), "wechat-mock listening on {}", server.base_url());

    stop.wait().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    ExitCode::SUCCESS
}

/// The accounts for the startup log line: their names when there are a few, their number when
/// there are many (an apps file may hold 100 000).
fn listing<T: std::fmt::Debug>(names: &[T]) -> String {
    const LISTED: usize = 20;
    if names.len() <= LISTED {
        format!("{names:?}")
    } else {
        format!("{} accounts", names.len())
    }
}

/// Ctrl-C (SIGINT) or, on Unix, SIGTERM as sent by service managers.
struct StopSignal {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignal {
    #[cfg(unix)]
    fn register() -> std::io::Result<StopSignal> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignal {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    #[cfg(not(unix))]
    fn register() -> std::io::Result<StopSignal> {
        Ok(StopSignal {})
    }

    #[cfg(unix)]
    async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }

    #[cfg(not(unix))]
    async fn wait(self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}
