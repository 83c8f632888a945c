//! The listener: accepts connections and serves HTTP/1.1 on each with hyper, answering through
//! one shared [`ApiService`], until shutdown.
//!
//! `axum::serve` runs the same hyper connection code, but it clones the whole service for every
//! request (two reference counts that every core then writes to, on the hottest path there is),
//! boxes every request body, and wraps every connection for HTTP/2 and upgrades, which the hub
//! does not speak. Here each connection borrows the one service, and a read's answer goes out as
//! the bytes it is. Shutdown is axum's: stop accepting, let every connection finish the request
//! it is on (idle keep-alive connections close at once), then return.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::ApiService;

/// How long the listener pauses after an accept error that is not about one connection (out of
/// file descriptors, say), instead of spinning on it.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Serves `service` on `listener` until `shutdown` completes, then waits for the open connections
/// to finish their requests.
pub async fn serve<F>(listener: TcpListener, service: ApiService, shutdown: F) -> io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let service = Arc::new(service);
    // Every connection task holds a receiver of each: `stop` tells them to finish, and the
    // listener learns that the last one ended when `open` has no receivers left.
    let (stop_sender, stop) = watch::channel(false);
    let (open_sender, open) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        tokio::spawn(serve_connection(
            stream,
            service.clone(),
            stop.clone(),
            open.clone(),
        ));
    }
    drop(listener);
    let _ = stop_sender.send(true);
    drop(open);
    open_sender.closed().await;
    Ok(())
}

/// Serves one connection until the peer closes it or, after `stop`, until its request in
/// progress is answered.
async fn serve_connection(
    stream: TcpStream,
    service: Arc<ApiService>,
    mut stop: watch::Receiver<bool>,
    _open: watch::Receiver<()>,
) {
    let answer = service_fn(move |request| service.answer(request));
    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), answer);
    tokio::pin!(connection);
    tokio::select! {
        // Checked in order, so the connection (polled on every wake-up) is not preceded by a
        // random draw and a look at `stop` each time.
        biased;
        _ = connection.as_mut() => return,
        // A change, or the listener gone: either way, time to finish.
        _ = stop.changed() => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// Errors about one connection (reset before it was accepted) are nothing to act on; anything
/// else (out of file descriptors) is logged and waited out, as `axum::serve` does.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; pausing before the next accept");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}
