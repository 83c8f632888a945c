//! `wechat-mock`: the mock of WeChat's servers on its own, for demos, benchmarks and manual tests.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use wechat_mock::{
    parse_apps_file, MockApp, MockComponent, MockConfig, MockCorpApp, MockProvider, MockServer,
    MockSuite,
};

/// A mock of WeChat's token, ticket and business endpoints: official accounts and mini programs,
/// Work WeChat apps, third-party platforms (开放平台) and Work WeChat suites and providers
/// (企业微信服务商), with their encrypted pushes.
#[derive(Parser, Debug)]
#[command(
    name = "wechat-mock",
    version,
    after_help = "Mock-only control endpoints: /mock/stats, /mock/faults, /mock/authorize, \
/mock/updateauthorize, /mock/unauthorize (platforms), /mock/install, /mock/uninstall, \
/mock/reset_permanent_code, /mock/change_auth, /mock/suites/{suite_id}/push_ticket, \
/mock/suites/{suite_id}/verify_url, /mock/suites/{suite_id}/installations (suites)."
)]
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
    /// A third-party platform (开放平台 component) with its AppSecret, message token and
    /// 43-character EncodingAESKey (repeatable).
    // Parsed after clap, whose errors would repeat the raw value, secrets included.
    #[arg(long = "component", value_name = "APPID:SECRET:TOKEN:AESKEY")]
    components: Vec<String>,
    /// Where the platforms' encrypted event pushes go (http:// only); {component_appid} in it is
    /// replaced by each platform's appid. Without it nothing is pushed.
    #[arg(long, value_name = "URL")]
    push_url: Option<String>,
    /// Seconds between verify-ticket pushes to each platform (the first goes out at start).
    #[arg(long, value_name = "SECS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..))]
    push_interval: u64,
    /// Accounts already authorized on each platform at start (for scale tests); their appids are
    /// wx + the platform's index as 4 hex digits + the account's number (from 1) as 12.
    #[arg(long = "authorizers", value_name = "N", default_value_t = 0)]
    authorizers: u32,
    /// api_authorizer_token returns a new refresh token each time; the old one stops working
    /// after the grace.
    #[arg(long)]
    rotate_refresh_tokens: bool,
    /// A Work WeChat suite (第三方应用) with its suite_secret, callback Token and 43-character
    /// EncodingAESKey (repeatable).
    // Parsed after clap, whose errors would repeat the raw value, secrets included.
    #[arg(long = "suite", value_name = "SUITEID:SECRET:TOKEN:AESKEY")]
    suites: Vec<String>,
    /// A Work WeChat provider (服务商) with its provider_secret (repeatable).
    // Parsed after clap, as --suite.
    #[arg(long = "provider", value_name = "CORPID:SECRET")]
    providers: Vec<String>,
    /// Where the suites' encrypted pushes go (their command callback URL; http:// only);
    /// {suite_id} in it is replaced by each suite's id. Without it nothing is pushed.
    #[arg(long, value_name = "URL")]
    suite_push_url: Option<String>,
    /// Seconds between suite_ticket pushes to each suite (the first goes out at start).
    #[arg(long, value_name = "SECS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..))]
    suite_ticket_interval: u64,
    /// Corps that installed each suite before start (for scale tests), each with a permanent code
    /// listed by GET /mock/suites/{suite_id}/installations; their corpids are ww + the suite's
    /// index as 4 hex digits + the corp's number (from 1) as 12.
    #[arg(long = "auth-corps", value_name = "N", default_value_t = 0)]
    auth_corps: u32,
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
    let components = match cli
        .components
        .iter()
        .map(|c| c.parse::<MockComponent>())
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(components) => components,
        Err(e) => {
            eprintln!("error: --component: {e}");
            return ExitCode::from(2);
        }
    };
    let suites = match cli
        .suites
        .iter()
        .map(|s| s.parse::<MockSuite>())
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(suites) => suites,
        Err(e) => {
            eprintln!("error: --suite: {e}");
            return ExitCode::from(2);
        }
    };
    let providers = match cli
        .providers
        .iter()
        .map(|p| p.parse::<MockProvider>())
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(providers) => providers,
        Err(e) => {
            eprintln!("error: --provider: {e}");
            return ExitCode::from(2);
        }
    };
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
        components,
        push_url: cli.push_url,
        push_interval: Duration::from_secs(cli.push_interval),
        authorizers_per_component: cli.authorizers,
        rotate_refresh_tokens: cli.rotate_refresh_tokens,
        suites,
        providers,
        suite_push_url: cli.suite_push_url,
        suite_ticket_interval: Duration::from_secs(cli.suite_ticket_interval),
        auth_corps_per_suite: cli.auth_corps,
        ..MockConfig::default()
    };
    let apps: Vec<&str> = config.apps.iter().map(|a| a.appid.as_str()).collect();
    let corps: Vec<String> = config
        .corps
        .iter()
        .map(|c| format!("{}/{}", c.corpid, c.agentid))
        .collect();
    let components: Vec<&str> = config.components.iter().map(|c| c.appid.as_str()).collect();
    let suites: Vec<&str> = config.suites.iter().map(|s| s.suite_id.as_str()).collect();
    let providers: Vec<&str> = config.providers.iter().map(|p| p.corpid.as_str()).collect();
    tracing::info!(
        lifetime = cli.lifetime,
        grace = cli.grace,
        daily_quota = config.daily_quota,
        apps = %listing(&apps),
        corps = %listing(&corps),
        components = %listing(&components),
        push_url = config.push_url.as_deref().unwrap_or("-"),
        suites = %listing(&suites),
        providers = %listing(&providers),
        suite_push_url = config.suite_push_url.as_deref().unwrap_or("-"),
        "starting"
    );
    if !config.components.is_empty() && config.push_url.is_none() {
        tracing::warn!(
            "no --push-url given: verify tickets and authorization events are not pushed"
        );
    }
    if !config.suites.is_empty() && config.suite_push_url.is_none() {
        tracing::warn!(
            "no --suite-push-url given: suite tickets and installation events are not pushed"
        );
    }
    if config.apps.is_empty()
        && config.corps.is_empty()
        && config.components.is_empty()
        && config.suites.is_empty()
        && config.providers.is_empty()
    {
        tracing::warn!(
            "no --app, --corp, --component, --suite or --provider given: every token request will be refused"
        );
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
