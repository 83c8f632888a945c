//! Prometheus metrics (docs/architecture.md#observability), rendered as text by `GET /metrics`.
//!
//! Counters touched on the consumer read path are plain atomics in a fixed matrix (route ×
//! status), one copy per thread, so serving a token never takes a lock for bookkeeping nor writes
//! a cache line another core is writing; the gateway's, touched on every forwarded call, are
//! built the same way ([`gateway`]). Everything else (refresh
//! outcomes, upstream latency, errcodes) changes at most a few times per refresh and lives behind
//! short `std::sync::Mutex` sections. Labels never carry a secret or token value: only key kinds,
//! appids, routes, statuses, errcodes and the gateway's closed sets of listeners, outcomes and
//! reasons.

pub mod gateway;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The consumer-facing routes, for the request counters. A closed set keeps the matrix fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Route {
    AccessToken,
    AccessTokenInvalidate,
    Ticket,
    TicketInvalidate,
    JssdkSignature,
    AdminRefresh,
    Credentials,
    Admin,
    Other,
}

impl Route {
    const ALL: [Route; 9] = [
        Route::AccessToken,
        Route::AccessTokenInvalidate,
        Route::Ticket,
        Route::TicketInvalidate,
        Route::JssdkSignature,
        Route::AdminRefresh,
        Route::Credentials,
        Route::Admin,
        Route::Other,
    ];

    fn name(self) -> &'static str {
        match self {
            Route::AccessToken => "access_token",
            Route::AccessTokenInvalidate => "access_token_invalidate",
            Route::Ticket => "ticket",
            Route::TicketInvalidate => "ticket_invalidate",
            Route::JssdkSignature => "jssdk_signature",
            Route::AdminRefresh => "admin_refresh",
            Route::Credentials => "credentials",
            Route::Admin => "admin",
            Route::Other => "other",
        }
    }
}

/// How many copies of the request counters there are. Every token read counts itself; with one
/// shared counter, every core would write the same cache line on every request, and that line
/// bouncing between cores costs more than the rest of the read's bookkeeping (measured: about 7 %
/// of read throughput on two cores). Each thread counts into its own shard (threads are dealt
/// shards in turn, so runtime workers, fewer than this, never share one).
const REQUEST_SHARDS: usize = 16;

/// One copy of the request counters: `[route][status index]`, the last status slot is "other".
/// Aligned so that no two shards share a cache line (128 bytes: adjacent-line prefetch pairs
/// lines).
#[repr(align(128))]
struct RequestShard {
    counts: [[AtomicU64; STATUSES.len() + 1]; Route::ALL.len()],
}

impl Default for RequestShard {
    fn default() -> Self {
        RequestShard {
            counts: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

/// The calling thread's request-counter shard.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % REQUEST_SHARDS;
    }
    SHARD.with(|shard| *shard)
}

/// Statuses the API answers with (201 and 204 from the admin routes, 410 for a withdrawn
/// authorizer, 502 when WeChat cannot be reached); anything else is counted as `other`.
const STATUSES: [u16; 16] = [
    200, 201, 204, 400, 401, 403, 404, 405, 408, 409, 410, 413, 429, 500, 502, 503,
];

/// What an invalidation report turned into (docs/architecture.md#compare-and-refresh).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidationOutcome {
    /// The reported token was no longer current: answered with the current one, no upstream call.
    Stale,
    /// The report caused (or joined) a refresh.
    Refreshed,
    /// The token was younger than `min_refresh_interval`: answered with it, not refreshed.
    Throttled,
    /// WeChat still accepts the reported token: answered with it, not refreshed.
    Rejected,
}

impl InvalidationOutcome {
    /// Every outcome, in the order of its counter.
    const ALL: [InvalidationOutcome; 4] = [
        InvalidationOutcome::Stale,
        InvalidationOutcome::Refreshed,
        InvalidationOutcome::Throttled,
        InvalidationOutcome::Rejected,
    ];

    /// The outcome's name in metrics and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidationOutcome::Stale => "stale",
            InvalidationOutcome::Refreshed => "refreshed",
            InvalidationOutcome::Throttled => "throttled",
            InvalidationOutcome::Rejected => "rejected",
        }
    }
}

/// The errcodes that get a metric series of their own: those WeChat documents for the endpoints
/// the hub calls. The errcode comes from the upstream's answer, so any other number shares the
/// series `other`; otherwise every distinct number a broken or hostile upstream sends would add
/// a series for good.
const KNOWN_ERRCODES: [(i64, &str); 31] = [
    (-1, "-1"),
    (40001, "40001"),
    (40002, "40002"),
    (40013, "40013"),
    (40014, "40014"),
    (40091, "40091"),
    (40125, "40125"),
    (40164, "40164"),
    (40243, "40243"),
    (41001, "41001"),
    (41002, "41002"),
    (41004, "41004"),
    (41018, "41018"),
    (42001, "42001"),
    (43002, "43002"),
    (45009, "45009"),
    (45011, "45011"),
    (45033, "45033"),
    (47001, "47001"),
    (48001, "48001"),
    (48006, "48006"),
    (61004, "61004"),
    (61005, "61005"),
    (61006, "61006"),
    (61007, "61007"),
    (61011, "61011"),
    (61023, "61023"),
    (89501, "89501"),
    (89503, "89503"),
    (89506, "89506"),
    (89507, "89507"),
];

/// The `errcode` label of `code`: its number if it is a [`KNOWN_ERRCODES`] one, else `other`.
fn errcode_label(code: i64) -> &'static str {
    KNOWN_ERRCODES
        .iter()
        .find(|(known, _)| *known == code)
        .map_or("other", |(_, label)| label)
}

/// Upper bounds of the upstream latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// The slot of an observation of `secs` among [`LATENCY_BUCKETS`]: the first bound it does not
/// exceed, or the last slot (above every bound).
fn latency_bucket(secs: f64) -> usize {
    LATENCY_BUCKETS
        .iter()
        .position(|bound| secs <= *bound)
        .unwrap_or(LATENCY_BUCKETS.len())
}

/// Writes one latency histogram's series of `family` for the label set `labels` (without
/// braces, e.g. `endpoint="token"`): the cumulative buckets, `+Inf`, `_sum` and `_count`.
/// `buckets` holds the observations per slot of [`latency_bucket`], not cumulative.
fn write_latency_histogram(
    out: &mut String,
    family: &str,
    labels: &str,
    buckets: &[u64; LATENCY_BUCKETS.len() + 1],
    sum_secs: f64,
) {
    let mut cumulative = 0;
    for (bound, n) in LATENCY_BUCKETS.iter().zip(buckets) {
        cumulative += n;
        let _ = writeln!(
            out,
            "{family}_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
        );
    }
    let count = cumulative + buckets[LATENCY_BUCKETS.len()];
    let _ = writeln!(out, "{family}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{family}_sum{{{labels}}} {sum_secs}");
    let _ = writeln!(out, "{family}_count{{{labels}}} {count}");
}

/// One latency histogram (Prometheus cumulative buckets are computed at render time).
#[derive(Default)]
struct Histogram {
    /// Observations per bucket (not cumulative); the last slot counts those above every bound.
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

/// Every metric of one hub process.
pub struct Metrics {
    /// Consumer requests, in [`REQUEST_SHARDS`] shards summed when rendered.
    requests: Box<[RequestShard; REQUEST_SHARDS]>,
    /// Invalidation reports by outcome.
    invalidations: [AtomicU64; InvalidationOutcome::ALL.len()],
    /// Refresh attempts by (credential kind, outcome).
    refreshes: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Upstream call latency by endpoint.
    upstream_latency: Mutex<BTreeMap<&'static str, Histogram>>,
    /// WeChat errcodes seen, by endpoint and errcode label ([`errcode_label`]).
    errcodes: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Failed store operations (the store being unreachable is also reflected in `/readyz`).
    store_errors: AtomicU64,
    /// Whether the store answered the engine's last health check. While it does not, the hub is
    /// degraded: it serves what it holds but cannot refresh.
    store_up: AtomicBool,
    /// Periodic token checks by outcome: [`TokenCheck`].
    token_checks: [AtomicU64; TokenCheck::ALL.len()],
    /// The gateway listeners' calls, refusals, upstream latency and held bytes, counted on every
    /// forwarded call (see [`gateway`]).
    pub gateway: gateway::GatewayMetrics,
}

/// What one periodic check of a token found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenCheck {
    /// WeChat accepts it.
    Alive,
    /// WeChat refuses it: it was killed outside the hub, and is replaced.
    Dead,
    /// WeChat could not be asked (network, busy): tried again at the next interval.
    Failed,
}

impl TokenCheck {
    /// Every outcome, in the order they are rendered.
    pub const ALL: [TokenCheck; 3] = [TokenCheck::Alive, TokenCheck::Dead, TokenCheck::Failed];

    /// The outcome's label.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenCheck::Alive => "alive",
            TokenCheck::Dead => "dead",
            TokenCheck::Failed => "failed",
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Box::new(std::array::from_fn(|_| RequestShard::default())),
            invalidations: std::array::from_fn(|_| AtomicU64::new(0)),
            refreshes: Mutex::default(),
            upstream_latency: Mutex::default(),
            errcodes: Mutex::default(),
            store_errors: AtomicU64::new(0),
            store_up: AtomicBool::new(true),
            token_checks: std::array::from_fn(|_| AtomicU64::new(0)),
            gateway: gateway::GatewayMetrics::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a metrics lock leaves only counters behind: keep counting.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    /// Counts one consumer request.
    pub fn count_request(&self, route: Route, status: u16) {
        let slot = STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or(STATUSES.len());
        self.requests[shard()].counts[route as usize][slot].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one invalidation report.
    pub fn count_invalidation(&self, outcome: InvalidationOutcome) {
        self.invalidations[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one refresh attempt of a credential kind.
    pub fn count_refresh(&self, kind: &'static str, outcome: &'static str) {
        *lock(&self.refreshes).entry((kind, outcome)).or_default() += 1;
    }

    /// Counts one periodic token check.
    pub fn count_token_check(&self, outcome: TokenCheck) {
        self.token_checks[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one failed store operation.
    pub fn count_store_error(&self) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Records whether the store answered its last health check.
    pub fn set_store_up(&self, up: bool) {
        self.store_up.store(up, Ordering::Relaxed);
    }

    /// Whether the store answered its last health check.
    pub fn store_up(&self) -> bool {
        self.store_up.load(Ordering::Relaxed)
    }

    /// Records one upstream call: its latency, and the errcode WeChat answered, if any.
    pub fn observe_upstream(
        &self,
        endpoint: &'static str,
        elapsed: Duration,
        errcode: Option<i64>,
    ) {
        let secs = elapsed.as_secs_f64();
        {
            let mut latency = lock(&self.upstream_latency);
            let h = latency.entry(endpoint).or_default();
            h.buckets[latency_bucket(secs)] += 1;
            h.sum += secs;
            h.count += 1;
        }
        if let Some(code) = errcode {
            *lock(&self.errcodes)
                .entry((endpoint, errcode_label(code)))
                .or_default() += 1;
        }
    }

    /// Renders every counter in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP wxhub_http_requests_total Consumer requests by route and status.\n");
        out.push_str("# TYPE wxhub_http_requests_total counter\n");
        for route in Route::ALL {
            for i in 0..=STATUSES.len() {
                let n: u64 = self
                    .requests
                    .iter()
                    .map(|shard| shard.counts[route as usize][i].load(Ordering::Relaxed))
                    .sum();
                if n == 0 {
                    continue;
                }
                let status = STATUSES
                    .get(i)
                    .map_or_else(|| "other".to_string(), |s| s.to_string());
                let _ = writeln!(
                    out,
                    "wxhub_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                    route.name()
                );
            }
        }

        out.push_str("# HELP wxhub_invalidations_total Invalidation reports by outcome.\n");
        out.push_str("# TYPE wxhub_invalidations_total counter\n");
        for outcome in InvalidationOutcome::ALL {
            let n = self.invalidations[outcome as usize].load(Ordering::Relaxed);
            let name = outcome.as_str();
            let _ = writeln!(out, "wxhub_invalidations_total{{outcome=\"{name}\"}} {n}");
        }

        out.push_str("# HELP wxhub_refreshes_total Refreshes by credential kind and outcome.\n");
        out.push_str("# TYPE wxhub_refreshes_total counter\n");
        for ((kind, outcome), n) in lock(&self.refreshes).iter() {
            let _ = writeln!(
                out,
                "wxhub_refreshes_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {n}"
            );
        }

        out.push_str("# HELP wxhub_upstream_seconds Latency of calls to WeChat by endpoint.\n");
        out.push_str("# TYPE wxhub_upstream_seconds histogram\n");
        for (endpoint, h) in lock(&self.upstream_latency).iter() {
            let labels = format!("endpoint=\"{endpoint}\"");
            write_latency_histogram(out, "wxhub_upstream_seconds", &labels, &h.buckets, h.sum);
        }

        out.push_str("# HELP wxhub_upstream_errcodes_total WeChat errcodes seen by endpoint.\n");
        out.push_str("# TYPE wxhub_upstream_errcodes_total counter\n");
        for ((endpoint, code), n) in lock(&self.errcodes).iter() {
            let _ = writeln!(
                out,
                "wxhub_upstream_errcodes_total{{endpoint=\"{endpoint}\",errcode=\"{code}\"}} {n}"
            );
        }

        out.push_str(
            "# HELP wxhub_token_checks_total Periodic checks of served tokens with WeChat, by \
             outcome.\n",
        );
        out.push_str("# TYPE wxhub_token_checks_total counter\n");
        for outcome in TokenCheck::ALL {
            let _ = writeln!(
                out,
                "wxhub_token_checks_total{{outcome=\"{}\"}} {}",
                outcome.as_str(),
                self.token_checks[outcome as usize].load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP wxhub_store_errors_total Failed store operations.\n");
        out.push_str("# TYPE wxhub_store_errors_total counter\n");
        let _ = writeln!(
            out,
            "wxhub_store_errors_total {}",
            self.store_errors.load(Ordering::Relaxed)
        );

        let up = u8::from(self.store_up());
        out.push_str("# HELP wxhub_store_up Whether the store answered the last health check.\n");
        out.push_str("# TYPE wxhub_store_up gauge\n");
        let _ = writeln!(out, "wxhub_store_up {up}");
        out.push_str(
            "# HELP wxhub_degraded 1 while the store does not answer: tokens are served from \
             memory and refreshes wait.\n",
        );
        out.push_str("# TYPE wxhub_degraded gauge\n");
        let _ = writeln!(out, "wxhub_degraded {}", 1 - up);

        self.gateway.render(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let m = Metrics::default();
        m.count_request(Route::AccessToken, 200);
        m.count_request(Route::AccessToken, 200);
        m.count_request(Route::AccessToken, 418);
        m.count_request(Route::Admin, 201);
        m.count_request(Route::Admin, 204);
        // Counts from other threads (other shards) are summed in.
        std::thread::scope(|s| {
            s.spawn(|| m.count_request(Route::AccessToken, 200));
        });
        m.count_invalidation(InvalidationOutcome::Throttled);
        m.count_refresh("access_token", "ok");
        m.observe_upstream("token", Duration::from_millis(20), Some(40125));
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("wxhub_http_requests_total{route=\"access_token\",status=\"200\"} 3"));
        assert!(out.contains("wxhub_http_requests_total{route=\"admin\",status=\"201\"} 1"));
        assert!(out.contains("wxhub_http_requests_total{route=\"admin\",status=\"204\"} 1"));
        assert!(
            out.contains("wxhub_http_requests_total{route=\"access_token\",status=\"other\"} 1")
        );
        assert!(out.contains("wxhub_invalidations_total{outcome=\"throttled\"} 1"));
        assert!(out.contains("wxhub_refreshes_total{kind=\"access_token\",outcome=\"ok\"} 1"));
        assert!(out.contains("wxhub_upstream_seconds_bucket{endpoint=\"token\",le=\"0.025\"} 1"));
        assert!(
            out.contains("wxhub_upstream_errcodes_total{endpoint=\"token\",errcode=\"40125\"} 1")
        );
    }

    #[test]
    fn unknown_errcodes_share_one_series() {
        let m = Metrics::default();
        for code in 0..300 {
            m.observe_upstream("token", Duration::ZERO, Some(70_000 + code));
        }
        m.observe_upstream("token", Duration::ZERO, Some(45009));
        m.observe_upstream("token", Duration::ZERO, Some(i64::MIN));
        let mut out = String::new();
        m.render(&mut out);
        let series: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("wxhub_upstream_errcodes_total{"))
            .collect();
        assert_eq!(
            series,
            [
                "wxhub_upstream_errcodes_total{endpoint=\"token\",errcode=\"45009\"} 1",
                "wxhub_upstream_errcodes_total{endpoint=\"token\",errcode=\"other\"} 301",
            ]
        );
        for (code, label) in KNOWN_ERRCODES {
            assert_eq!(label, code.to_string());
        }
    }

    #[test]
    fn a_store_outage_shows_as_degraded() {
        let m = Metrics::default();
        m.set_store_up(false);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("wxhub_store_up 0\n"), "{out}");
        assert!(out.contains("wxhub_degraded 1\n"), "{out}");
        m.set_store_up(true);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("wxhub_store_up 1\n"), "{out}");
        assert!(out.contains("wxhub_degraded 0\n"), "{out}");
    }
}
