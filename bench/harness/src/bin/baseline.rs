//! The read-path baseline: the cheapest HTTP/1.1 server that can give the same answer as the hub.
//!
//! `bench/read-path` loads this and the hub with identical `wrk` settings. It runs on the same
//! runtime as `wxhub serve` (tokio multi-thread, default worker count), serves each connection
//! with hyper like axum does, and answers every request with the same status, headers and body
//! the hub sends for a token read, without routing, authentication or lookup. What the hub costs
//! on top of this is the price of its own work, which is what the benchmark measures.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// A minimal HTTP server answering every request with the bytes of one file.
#[derive(Parser)]
#[command(name = "wxhub-bench-baseline")]
struct Cli {
    /// Address to listen on (port 0 picks a free port; the address is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The response body, for example a token answer saved from the hub.
    #[arg(long)]
    body_file: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let body = match std::fs::read(&cli.body_file) {
        Ok(body) => Bytes::from(body),
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", cli.body_file.display());
            return ExitCode::FAILURE;
        }
    };
    // The same runtime `wxhub serve` builds: multi-threaded, one worker per core.
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(cli.listen, body)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(listen: SocketAddr, body: Bytes) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => continue,
        };
        let body = body.clone();
        // One task per connection, as axum::serve does.
        tokio::spawn(async move {
            let service = service_fn(move |_request: Request<Incoming>| {
                let mut response = Response::new(Full::new(body.clone()));
                let headers = response.headers_mut();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
