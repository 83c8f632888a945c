//! The invalidation-storm client of `bench/storm`: many business servers report the same dead
//! token at the same instant.
//!
//! Every reporter gets its own keep-alive connection, opened and warmed with one token read before
//! the storm, so that the latencies measured are those of the reports alone and not of TCP
//! handshakes. All reporters then wait on one barrier and send their report at once. The tool
//! prints one `name=value` line per figure: latency percentiles, statuses and how many distinct
//! tokens the reporters were handed (a correct hub hands all of them the same new one).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Barrier;

/// Sends `--reports` concurrent invalidation reports of one token and prints their latencies.
#[derive(Parser)]
#[command(name = "wxhub-bench-storm")]
struct Cli {
    /// The hub's address.
    #[arg(long)]
    addr: SocketAddr,
    /// The appid whose access token is reported.
    #[arg(long)]
    appid: String,
    /// The consumer's bearer key (needs the read and invalidate scopes).
    #[arg(long)]
    key: String,
    /// How many reporters send at once (one connection each).
    #[arg(long, default_value_t = 1000)]
    reports: usize,
    /// Bound on the whole storm, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// The hub's process id (same machine): its CPU time during the storm alone, from the
    /// release of the reports to the last answer, is printed as `hub_cpu_ms`.
    #[arg(long)]
    hub_pid: Option<u32>,
    /// Release token reads instead of reports, in the same way: the latency of as many
    /// simultaneous requests that need nothing but HTTP and a lookup, the floor a storm of
    /// reports is measured against.
    #[arg(long)]
    reads: bool,
}

/// One reporter's connection.
type Connection = SendRequest<Full<Bytes>>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = Duration::from_secs(cli.timeout);
    match runtime.block_on(async { tokio::time::timeout(timeout, storm(&cli)).await }) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("error: the storm did not finish within {}s", cli.timeout);
            ExitCode::FAILURE
        }
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn storm(cli: &Cli) -> Result<(), Error> {
    let read_path = format!("/v1/apps/{}/access_token", cli.appid);
    let report_path = format!("/v1/apps/{}/access_token/invalidate", cli.appid);

    // Connect and warm every reporter; the warm-up read also tells which token is current.
    let mut connections = Vec::with_capacity(cli.reports);
    let mut current = None;
    for _ in 0..cli.reports {
        let mut connection = connect(cli.addr).await?;
        let (status, body) = send(&mut connection, cli, Method::GET, &read_path, None).await?;
        if status != 200 {
            return Err(format!("warm-up read answered {status}: {body}").into());
        }
        let token = field(&body, "access_token").ok_or("warm-up read without access_token")?;
        if current.as_ref().is_some_and(|t| *t != token) {
            return Err("the token changed while the reporters were connecting".into());
        }
        current = Some(token);
        connections.push(connection);
    }
    let reported = current.ok_or("no reporters")?;
    let report = Bytes::from(format!("{{\"access_token\":\"{reported}\"}}"));

    let barrier = Arc::new(Barrier::new(cli.reports));
    let cpu_before = cli.hub_pid.and_then(cpu_ticks);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(cli.reports);
    for mut connection in connections {
        let barrier = barrier.clone();
        let report = report.clone();
        let (method, path, report) = if cli.reads {
            (Method::GET, read_path.clone(), None)
        } else {
            (Method::POST, report_path.clone(), Some(report))
        };
        let key = cli.key.clone();
        let host = cli.addr.to_string();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let sent = Instant::now();
            let request = request(&host, &key, method, &path, report)?;
            let response = connection.send_request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, Error>((sent.elapsed(), status, body))
        }));
    }
    let mut latencies = Vec::with_capacity(cli.reports);
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut handed: BTreeMap<String, usize> = BTreeMap::new();
    for task in tasks {
        let (latency, status, body) = task.await??;
        latencies.push(latency);
        *statuses.entry(status).or_default() += 1;
        let body = String::from_utf8_lossy(&body);
        if let Some(token) = field(&body, "access_token") {
            *handed.entry(token).or_default() += 1;
        }
    }
    let wall = started.elapsed();
    let cpu_after = cli.hub_pid.and_then(cpu_ticks);
    latencies.sort();

    println!("reports={}", cli.reports);
    println!(
        "statuses={}",
        statuses
            .iter()
            .map(|(s, n)| format!("{s}:{n}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    println!("distinct_tokens_returned={}", handed.len());
    let reported_returned = if cli.reads {
        0
    } else {
        handed.get(&reported).copied().unwrap_or(0)
    };
    println!("reported_token_returned={reported_returned}");
    println!("p50_ms={:.2}", millis(percentile(&latencies, 50.0)));
    println!("p99_ms={:.2}", millis(percentile(&latencies, 99.0)));
    println!("max_ms={:.2}", millis(percentile(&latencies, 100.0)));
    println!("storm_wall_ms={:.2}", millis(wall));
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        println!(
            "hub_cpu_ms={}",
            (after - before) * 1000 / CLOCK_TICKS_PER_SEC
        );
    }
    Ok(())
}

/// The unit of `utime` and `stime` in `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const CLOCK_TICKS_PER_SEC: u64 = 100;

/// User plus system CPU time of process `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces: count fields after its closing parenthesis.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 2..)?
        .split_whitespace()
        .collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Opens one HTTP/1.1 keep-alive connection.
async fn connect(addr: SocketAddr) -> Result<Connection, Error> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

fn request(
    host: &str,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Bytes>,
) -> Result<Request<Full<Bytes>>, Error> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, host)
        .header(AUTHORIZATION, format!("Bearer {key}"));
    if body.is_some() {
        builder = builder.header(CONTENT_TYPE, "application/json");
    }
    Ok(builder.body(Full::new(body.unwrap_or_default()))?)
}

async fn send(
    connection: &mut Connection,
    cli: &Cli,
    method: Method,
    path: &str,
    body: Option<Bytes>,
) -> Result<(u16, String), Error> {
    let request = request(&cli.addr.to_string(), &cli.key, method, path, body)?;
    let response = connection.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The string value of `"name":"…"` in a flat JSON object (token values have no escapes).
fn field(body: &str, name: &str) -> Option<String> {
    let start = body.find(&format!("\"{name}\":\""))? + name.len() + 4;
    let end = body[start..].find('"')? + start;
    Some(body[start..end].to_string())
}

/// The `p`-th percentile of sorted samples (nearest rank).
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
