//! The `wxhub` command line (docs/architecture.md#command-line): `serve`, `demo`, `check-config`,
//! `hash-key`, `new-key`.

use std::io::{IsTerminal, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rand::RngCore;
use wxhub::configuration::{consumer_key_sha256, Settings};
use wxhub::demo::{self, DemoOptions};
use wxhub::startup::Application;
use wxhub::telemetry::{self, LogFormat};

/// The allocator, and why: `docs/architecture.md#memory`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// WeChat credential hub: keeps every WeChat credential fresh and serves it to business servers.
#[derive(Parser)]
#[command(name = "wxhub", version, about)]
struct Cli {
    /// Log line format.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub.
    Serve {
        /// The configuration file.
        #[arg(long, short, default_value = "wxhub.toml")]
        config: PathBuf,
    },
    /// Run a hub against a built-in WeChat mock, with nothing to configure.
    Demo {
        /// Where the demo hub listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Validate a configuration file and print it with secrets masked.
    CheckConfig {
        /// The configuration file.
        #[arg(long, short, default_value = "wxhub.toml")]
        config: PathBuf,
    },
    /// Print the key_sha256 to put in [[consumers]] for a consumer's bearer key.
    HashKey {
        /// The consumer's bearer key; read from standard input when absent (so that it stays out
        /// of the shell history and the process list).
        key: Option<String>,
    },
    /// Generate a consumer key (256 random bits) and print it with its key_sha256.
    NewKey,
}

/// Shortest consumer key `hash-key` accepts: 32 characters (128 bits as hex), so that a key
/// cannot be guessed from its hash.
const MIN_KEY_CHARS: usize = 32;
/// Longest key read from standard input; anything longer is not a key someone pasted.
const MAX_KEY_BYTES: u64 = 4096;

fn main() -> ExitCode {
    wxhub::allocator::without_huge_pages();
    let cli = Cli::parse();
    match cli.command {
        Command::HashKey { key } => {
            let key = match key.map_or_else(read_key_from_stdin, Ok) {
                Ok(key) => key,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if let Err(e) = check_key(&key) {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            println!("{}", consumer_key_sha256(&key));
            ExitCode::SUCCESS
        }
        Command::NewKey => {
            let mut bytes = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            let key = hex::encode(bytes);
            println!("key: {key}");
            println!("key_sha256: {}", consumer_key_sha256(&key));
            eprintln!(
                "give the key to the consumer (Authorization: Bearer <key>); put key_sha256 in \
                 its [[consumers]] entry"
            );
            ExitCode::SUCCESS
        }
        Command::CheckConfig { config } => match Settings::load(&config) {
            Ok(settings) => {
                print!("{}", settings.render_masked());
                for warning in settings.warnings() {
                    eprintln!("warning: {}: {warning}", config.display());
                }
                eprintln!("{}: configuration is valid", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { config } => {
            telemetry::init(cli.log_format);
            if let Err(e) = Settings::load(&config) {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            run(async move {
                let app = Application::build_from_file(&config).await?;
                reload_on_sighup(app.background(), app.control().clone());
                app.run_until(shutdown_signal()).await?;
                Ok(())
            })
        }
        Command::Demo { listen } => {
            telemetry::init(cli.log_format);
            run(async move {
                let demo = demo::start(DemoOptions {
                    listen,
                    database: None,
                })
                .await
                .map_err(|e| format!("{e} (choose another address with --listen)"))?;
                println!("{}", demo.instructions());
                let database = demo.database.clone();
                demo.run_until(shutdown_signal()).await?;
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", database.display()));
                }
                Ok(())
            })
        }
    }
}

/// Reads a key from standard input: everything up to the end, without its trailing line break.
fn read_key_from_stdin() -> Result<String, String> {
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("reading the key from standard input (end with Ctrl-D)");
    }
    let mut raw = Vec::new();
    stdin
        .by_ref()
        .take(MAX_KEY_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(|e| format!("cannot read the key from standard input: {e}"))?;
    if raw.len() as u64 > MAX_KEY_BYTES {
        return Err(format!(
            "the key on standard input is longer than {MAX_KEY_BYTES} bytes"
        ));
    }
    let mut key =
        String::from_utf8(raw).map_err(|_| "the key on standard input is not UTF-8".to_string())?;
    if key.ends_with('\n') {
        key.pop();
        if key.ends_with('\r') {
            key.pop();
        }
    }
    Ok(key)
}

/// Refuses keys that would be weak or could never be sent: empty, shorter than
/// [`MIN_KEY_CHARS`], or with characters an `Authorization` header cannot carry as they are.
fn check_key(key: &str) -> Result<(), String> {
    let hint = "generate one with `wxhub new-key`";
    if key.is_empty() {
        return Err(format!("the key is empty; {hint}"));
    }
    if key.trim() != key {
        return Err(
            "the key starts or ends with whitespace, which an Authorization header drops"
                .to_string(),
        );
    }
    if !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(
            "the key may only contain visible ASCII characters (no spaces or control characters)"
                .to_string(),
        );
    }
    let length = key.chars().count();
    if length < MIN_KEY_CHARS {
        return Err(format!(
            "the key is {length} characters long; a consumer key needs at least \
             {MIN_KEY_CHARS}; {hint}"
        ));
    }
    Ok(())
}

/// Runs `main_task` on a multi-threaded runtime and turns its error into an exit code.
fn run(
    main_task: impl std::future::Future<Output = Result<(), Box<dyn std::error::Error>>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Re-reads the configuration file on every SIGHUP, until shutdown. A broken file is logged and
/// changes nothing.
fn reload_on_sighup(
    background: &wxhub::background::Background,
    control: std::sync::Arc<wxhub::control::Control>,
) {
    #[cfg(unix)]
    background.spawn(async move {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; use POST /v1/admin/reload to reload");
            return;
        };
        while hangups.recv().await.is_some() {
            let outcome = match control.reload().await {
                Ok(_) => "ok",
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: the configuration was not reloaded; nothing changed");
                    "invalid_configuration"
                }
            };
            control
                .audit()
                .record(wxhub::audit::SIGNAL_RELOAD, "reload", "configuration", outcome);
        }
    });
    #[cfg(not(unix))]
    let _ = (background, control);
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
