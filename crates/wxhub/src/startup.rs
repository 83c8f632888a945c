//! Wires the parts together into a running hub: store → hub → engine → API.
//!
//! [`Application::build`] does everything that can fail at startup (open the store, bind the
//! port, load stored tokens), so that `wxhub serve` either reports one clear error or runs.
//! Tests build the same application on port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiContext};
use crate::background::Background;
use crate::configuration::{ConfigError, ServerSettings, Settings, StoreSettings};
use crate::control::{Control, ControlError};
use crate::engine::clock::{Clock, SystemClock};
use crate::engine::{Engine, EngineParts};
use crate::fdlimit;
use crate::forward::Forwarder;
use crate::gateway::{self, Host};
use crate::metrics::gateway::Listener;
use crate::metrics::Metrics;
use crate::read::ReadIndex;
use crate::registry::Registry;
use crate::seal::Sealer;
use crate::store::memory::MemoryStore;
use crate::store::redis::RedisStore;
use crate::store::sealed::SealedStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};
use crate::upstream::{Transport, Upstream, UpstreamError};

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The store could not be opened or read.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    /// The WeChat client could not be built.
    #[error("upstream client: {0}")]
    Upstream(#[from] UpstreamError),
    /// The gateway's WeChat client could not be built.
    #[error("gateway client: {0}")]
    Gateway(#[from] reqwest::Error),
    /// The configuration file could not be read.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The accounts could not be loaded (a runtime account that does not open with the master
    /// key, an unreadable stored account).
    #[error("runtime accounts: {0}")]
    Accounts(#[from] ControlError),
}

/// The part of `[server] request_timeout` that shutdown keeps for the background tasks and the
/// engine's running refreshes after draining the requests in progress (at most a quarter of it).
const SHUTDOWN_RESERVE: Duration = Duration::from_secs(1);

/// The least time the background tasks and the engine are given at shutdown, even when draining
/// used up the deadline (a store write in progress is worth finishing).
const SHUTDOWN_FLOOR: Duration = Duration::from_millis(100);

/// Opens the store the configuration names. Async because the redis store connects (and checks
/// the server's persistence) before the hub starts.
pub async fn open_store(settings: &StoreSettings) -> Result<Arc<dyn Store>, StartupError> {
    match settings {
        StoreSettings::Memory => Ok(Arc::new(MemoryStore::new())),
        StoreSettings::Sqlite { path } => Ok(Arc::new(SqliteStore::open(path)?)),
        StoreSettings::Redis(redis) => Ok(Arc::new(RedisStore::open_with(redis).await?)),
    }
}

/// A built hub, bound to its port and with stored tokens loaded, ready to serve.
pub struct Application {
    /// The bound listener (port 0 in tests resolves here).
    listener: TcpListener,
    /// Its actual address.
    address: SocketAddr,
    /// `[server] events_listen`: the event receiver's own listener, and its address.
    events: Option<(TcpListener, SocketAddr)>,
    /// The refresh engine (already started).
    engine: Engine,
    /// The control plane (runtime accounts, reloads).
    control: Arc<Control>,
    /// The tasks beside the listeners, stopped and awaited at shutdown.
    background: Background,
    /// Handler state.
    context: Arc<ApiContext>,
    /// The configuration it runs with.
    settings: Arc<Settings>,
    /// The listener's limits, with `max_connections` resolved against the descriptor limit.
    limits: api::Limits,
    /// The gateway listeners (`[gateway] listen`, `work_listen`), bound, with the host each
    /// stands for.
    gateways: Vec<(TcpListener, SocketAddr, Host)>,
}

impl Application {
    /// Opens the configured store and builds the hub.
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        let store = open_store(&settings.store).await?;
        Self::build_with_store(settings, store).await
    }

    /// Loads the configuration file at `path` and builds the hub; the file is re-read by a reload
    /// (SIGHUP or `POST /v1/admin/reload`).
    pub async fn build_from_file(path: &Path) -> Result<Application, StartupError> {
        let settings = Settings::load(path)?;
        let store = open_store(&settings.store).await?;
        Self::build_with(settings, store, Some(path.to_path_buf())).await
    }

    /// Builds the hub on a given store (tests share one store between "restarts").
    pub async fn build_with_store(
        settings: Settings,
        store: Arc<dyn Store>,
    ) -> Result<Application, StartupError> {
        Self::build_with(settings, store, None).await
    }

    /// Builds the hub on a given store, reloadable from `config_path` if given.
    pub async fn build_with(
        settings: Settings,
        store: Arc<dyn Store>,
        config_path: Option<PathBuf>,
    ) -> Result<Application, StartupError> {
        Self::build_wired(settings, store, config_path, None, Arc::new(SystemClock)).await
    }

    /// Builds the hub with WeChat reached through `transport` and the time read from `clock`:
    /// for tests that run WeChat in process on tokio's paused clock (see
    /// `docs/architecture.md#testing`).
    pub async fn build_with_wechat(
        settings: Settings,
        store: Arc<dyn Store>,
        transport: Arc<dyn Transport>,
        clock: Arc<dyn Clock>,
    ) -> Result<Application, StartupError> {
        Self::build_wired(settings, store, None, Some(transport), clock).await
    }

    /// [`Self::build_with`], with WeChat over HTTPS unless `transport` says otherwise.
    async fn build_wired(
        settings: Settings,
        store: Arc<dyn Store>,
        config_path: Option<PathBuf>,
        transport: Option<Arc<dyn Transport>>,
        clock: Arc<dyn Clock>,
    ) -> Result<Application, StartupError> {
        for warning in settings.warnings() {
            tracing::warn!("configuration: {warning}");
        }
        let (store, sealed) = seal_at_rest(store, &settings);
        let settings = Arc::new(settings);
        let metrics = Arc::new(Metrics::default());
        let upstream = match transport {
            Some(transport) => Upstream::with_transport(
                transport,
                &settings.wechat.api_base,
                &settings.wechat.work_api_base,
                settings.refresh.concurrency,
                metrics.clone(),
            ),
            None => Upstream::new(
                &settings.wechat.api_base,
                &settings.wechat.work_api_base,
                settings.wechat.timeout,
                settings.refresh.concurrency,
                metrics.clone(),
            )?,
        };
        let platform_upstream = upstream.clone();
        let read_index = Arc::new(ReadIndex::new());
        let engine = Engine::new(
            &settings,
            EngineParts {
                store: store.clone(),
                upstream,
                metrics: metrics.clone(),
                clock: clock.clone(),
                read_index: read_index.clone(),
            },
        );
        let registry = Registry::new(read_index.clone(), settings.refresh.clone());
        let control = Arc::new(Control::new(
            registry,
            engine.clone(),
            store.clone(),
            settings.clone(),
            config_path,
        ));
        let address = settings.server.listen;
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| StartupError::Bind { address, source })?;
        let address = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { address, source })?;
        let events = match settings.server.events_listen {
            Some(address) => {
                let listener = TcpListener::bind(address)
                    .await
                    .map_err(|source| StartupError::Bind { address, source })?;
                let address = listener
                    .local_addr()
                    .map_err(|source| StartupError::Bind { address, source })?;
                Some((listener, address))
            }
            None => None,
        };
        let limits = listener_limits(&settings.server);
        let mut gateways = Vec::new();
        for (address, host) in [
            (settings.gateway.listen, Host::Official),
            (settings.gateway.work_listen, Host::Work),
        ] {
            let Some(address) = address else { continue };
            let listener = TcpListener::bind(address)
                .await
                .map_err(|source| StartupError::Bind { address, source })?;
            let address = listener
                .local_addr()
                .map_err(|source| StartupError::Bind { address, source })?;
            tracing::info!(%address, ?host, "gateway listening");
            metrics.gateway.listening(gateway::listener_of(host));
            gateways.push((listener, address, host));
        }
        // The main listener's `/v1/…/wechat/…` route forwards too, always.
        metrics.gateway.listening(Listener::Api);
        let forwarder = Arc::new(Forwarder::new(&settings, metrics.clone())?);
        let account_feed = store.subscribe_accounts();
        control.start().await?;
        if let Some(sealed) = sealed {
            let count = sealed.seal_what_was_plain().await?;
            if count > 0 {
                tracing::info!(
                    count,
                    "sealed refresh tokens an earlier version stored in the clear"
                );
            }
        }
        // What loading the store copied is freed now, and given back here (`allocator.rs`).
        crate::allocator::release_freed();
        engine.start();
        let background = Background::default();
        background.spawn_listening(
            control
                .clone()
                .run_account_feed(account_feed, background.stopping().clone()),
        );
        tracing::info!(
            max_connections = limits.max_connections,
            header_read_timeout = ?limits.deadlines.header_read_timeout,
            idle_timeout = ?limits.deadlines.idle_timeout,
            "connection limits"
        );
        tracing::info!(
            %address,
            store = store.kind(),
            credentials = read_index.len(),
            "wxhub started"
        );
        let platform = Arc::new(crate::platform::Platform::new(
            control.clone(),
            engine.clone(),
            read_index.clone(),
            platform_upstream.clone(),
            settings.secrets.master_key.as_ref(),
        ));
        let suites = Arc::new(crate::suites::Suites::new(
            control.clone(),
            engine.clone(),
            read_index.clone(),
            platform_upstream.clone(),
        ));
        crate::platform::run_watchdogs(
            &settings,
            platform.clone(),
            engine.clone(),
            read_index.clone(),
            platform_upstream,
            &background,
        );
        let context = Arc::new(ApiContext {
            clock,
            platform,
            suites,
            read_index,
            engine: engine.clone(),
            store,
            metrics,
            settings: settings.clone(),
            control: control.clone(),
            forwarder,
            watchers: Arc::default(),
            background: background.clone(),
        });
        Ok(Application {
            listener,
            address,
            events,
            engine,
            control,
            background,
            context,
            settings,
            limits,
            gateways,
        })
    }

    /// The address of the gateway listener standing for `host`, if one is configured.
    pub fn gateway_address(&self, host: Host) -> Option<SocketAddr> {
        self.gateways
            .iter()
            .find(|(_, _, h)| *h == host)
            .map(|(_, address, _)| *address)
    }

    /// The control plane (runtime accounts, reloads).
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// The address the API listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The address of the event receiver's own listener (`[server] events_listen`), if any.
    pub fn events_address(&self) -> Option<SocketAddr> {
        self.events.as_ref().map(|(_, address)| *address)
    }

    /// The refresh engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The read index: what the hub serves, as the API reads it.
    pub fn read_index(&self) -> &Arc<ReadIndex> {
        &self.context.read_index
    }

    /// The tasks beside the listeners: spawn one here to have it stopped and awaited at
    /// shutdown (the SIGHUP handler).
    pub fn background(&self) -> &Background {
        &self.background
    }

    /// Serves until `shutdown` completes, then shuts down within `[server] request_timeout`:
    /// watch streams end at once with a last event, requests in progress are given the time
    /// left after [`SHUTDOWN_RESERVE`], then the background tasks and the engine what remains.
    pub async fn run_until<F>(self, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let timeout = self.settings.server.request_timeout;
        let began = Arc::new(std::sync::OnceLock::new());
        // One shutdown for every listener: the gateways and the event receiver stop when the
        // main listener is told to, and every one of them has the same limits.
        let stop = CancellationToken::new();
        let mut listeners = Vec::new();
        for (listener, _, host) in self.gateways {
            let service = gateway::service(self.context.clone(), host);
            let stopped = stop.clone();
            listeners.push(tokio::spawn(api::serve(
                listener,
                service,
                self.limits,
                async move { stopped.cancelled().await },
            )));
        }
        if let Some((listener, _)) = self.events {
            let service = api::ApiService::router_only(
                self.context.clone(),
                api::events_router(self.context.clone(), timeout),
            );
            let stopped = stop.clone();
            listeners.push(tokio::spawn(api::serve(
                listener,
                service,
                self.limits,
                async move { stopped.cancelled().await },
            )));
        }
        let service = api::service(self.context, timeout);
        let stopping = stop.clone();
        let background = self.background.clone();
        let shutdown_began = began.clone();
        let shutdown = async move {
            shutdown.await;
            let _ = shutdown_began.set(Instant::now());
            tracing::info!(
                deadline = ?timeout,
                "shutting down: watch streams end, requests in progress finish"
            );
            background.stop();
            stopping.cancel();
        };
        let served = api::serve(self.listener, service, self.limits, shutdown).await;
        stop.cancel();
        for listener in listeners {
            if let Ok(Err(e)) = listener.await {
                tracing::warn!(error = %e, "a gateway or event listener failed");
            }
        }
        self.background.stop();
        let began = began.get().copied().unwrap_or_else(Instant::now);
        let left = || {
            (began + timeout)
                .saturating_duration_since(Instant::now())
                .max(SHUTDOWN_FLOOR)
        };
        let unfinished = self.background.wait(left()).await;
        if unfinished > 0 {
            tracing::warn!(
                tasks = unfinished,
                "background tasks still running at the shutdown deadline were dropped"
            );
        }
        self.engine.shutdown(left()).await;
        tracing::info!("wxhub stopped");
        served
    }
}

/// `store` with authorizers' refresh tokens sealed at rest, when there is a master key to seal
/// them with (and the sealing layer, to seal what an earlier version stored in the clear once it
/// is loaded). Without a master key they stay in the clear, and a hub that serves platforms says
/// so.
fn seal_at_rest(
    store: Arc<dyn Store>,
    settings: &Settings,
) -> (Arc<dyn Store>, Option<Arc<SealedStore>>) {
    let Some(key) = settings.secrets.master_key.as_ref() else {
        if !settings.components.is_empty() || !settings.suites.is_empty() {
            tracing::warn!(
                "no [secrets] master_key: authorizers' refresh tokens and installed corps' \
                 permanent codes are stored unsealed; set one (32 bytes, base64) on every \
                 instance"
            );
        }
        return (store, None);
    };
    let sealed = Arc::new(SealedStore::new(store, Sealer::new(key)));
    (sealed.clone(), Some(sealed))
}

/// The listener's limits: `[server]`'s timeouts, and its connection cap checked against the
/// file-descriptor limit, which is first raised as far as the process may (logged either way).
fn listener_limits(server: &ServerSettings) -> api::Limits {
    let budget = match fdlimit::raise() {
        Ok(limit) => {
            tracing::info!(
                before = limit.before,
                now = limit.now,
                "file-descriptor limit"
            );
            Some(fdlimit::connection_budget(limit.now))
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the file-descriptor limit");
            None
        }
    };
    let max_connections = match (server.max_connections, budget) {
        (Some(wanted), Some(budget)) if wanted > budget => {
            tracing::warn!(
                max_connections = wanted,
                allowed = budget,
                "server.max_connections is more than the file-descriptor limit leaves room for; \
                 serving at most the allowed number"
            );
            budget
        }
        (Some(wanted), _) => wanted,
        (None, Some(budget)) => budget,
        (None, None) => fdlimit::connection_budget(1024),
    };
    api::Limits {
        deadlines: api::Deadlines {
            header_read_timeout: server.header_read_timeout,
            idle_timeout: server.idle_timeout,
            request_timeout: server.request_timeout,
        },
        max_connections,
        drain_timeout: server
            .request_timeout
            .saturating_sub(SHUTDOWN_RESERVE.min(server.request_timeout / 4)),
    }
}
