//! The `wxhub` command line (docs/architecture.md#command-line): `serve`, `demo`, `check-config`,
//! `hash-key`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wxhub::configuration::{consumer_key_sha256, Settings};
use wxhub::demo::{self, DemoOptions};
use wxhub::startup::Application;
use wxhub::telemetry::{self, LogFormat};

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
        /// The consumer's bearer key.
        key: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::HashKey { key } => {
            println!("{}", consumer_key_sha256(&key));
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
                reload_on_sighup(app.control().clone());
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
                demo.app.run_until(shutdown_signal()).await?;
                drop(demo.mock);
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", database.display()));
                }
                Ok(())
            })
        }
    }
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

/// Re-reads the configuration file on every SIGHUP. A broken file is logged and changes nothing.
fn reload_on_sighup(control: std::sync::Arc<wxhub::control::Control>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; use POST /v1/admin/reload to reload");
            return;
        };
        while hangups.recv().await.is_some() {
            if let Err(e) = control.reload().await {
                tracing::error!(error = %e, "SIGHUP: the configuration was not reloaded; nothing changed");
            }
        }
    });
    #[cfg(not(unix))]
    let _ = control;
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
