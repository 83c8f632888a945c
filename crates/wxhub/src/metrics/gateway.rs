//! The gateway's metrics (docs/architecture.md#observability): what became of each call a
//! gateway listener took, why the ones the hub answered itself were refused, how long WeChat took,
//! and the request bytes held for replays, per listener.
//!
//! Every forwarded call writes here, and the gateway is measured against nginx, so every series is
//! a plain relaxed atomic in a fixed array indexed by closed enums ([`Listener`], [`Outcome`],
//! [`Refusal`], the latency buckets): no lock, no allocation, no map lookup per call. The arrays
//! are sharded per thread like the request counters (see [`super::REQUEST_SHARDS`]): with one
//! shared copy, every core would write the same cache lines on every call. Rendering sums a fixed
//! number of shards, whatever the number of credentials.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::{latency_bucket, shard, write_latency_histogram, LATENCY_BUCKETS, REQUEST_SHARDS};

/// The listeners calls are forwarded for: the label `listener`. Named after the configuration
/// key that opens each (docs/architecture.md#gateway), never after anything a caller sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Listener {
    /// `[gateway] listen`, shaped like api.weixin.qq.com.
    Official,
    /// `[gateway] work_listen`, shaped like qyapi.weixin.qq.com.
    Work,
    /// The main listener's `/v1/…/wechat/…` route: the same forwarding, healing and replay
    /// memory, with the hub's token put in by the hub.
    Api,
}

impl Listener {
    /// Every listener, in the order they are rendered.
    pub const ALL: [Listener; 3] = [Listener::Official, Listener::Work, Listener::Api];

    /// The listener's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Official => "official",
            Listener::Work => "work",
            Listener::Api => "api",
        }
    }
}

/// What became of one call: the label `outcome`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded, and WeChat's answer handed back as it came.
    Passed,
    /// WeChat refused a token the hub serves as dead; the hub replaced it and the call, replayed
    /// with the new token, was answered by WeChat.
    Healed,
    /// WeChat refused a token the hub serves as dead, and its answer stands: the token was alive
    /// after all (refused for another reason), the refresh was refused or failed, or WeChat
    /// re-sent the same value.
    Unhealed,
    /// One of the hub's own endpoints (tokens, tickets, a platform's or a suite's token
    /// exchanges), answered by the hub in WeChat's shape, whatever its errcode.
    Answered,
    /// Answered by the gateway with a refusal of its own, before or instead of WeChat's answer.
    Refused(Refusal),
}

impl Outcome {
    /// The outcomes counted in a slot of their own; refused calls are counted by reason only,
    /// and `refused` is rendered as the sum of the reasons.
    const COUNTED: [Outcome; 4] = [
        Outcome::Passed,
        Outcome::Healed,
        Outcome::Unhealed,
        Outcome::Answered,
    ];

    /// The outcome's slot in [`GatewayShard::calls`]: its place in [`Outcome::COUNTED`].
    /// `None` for a refused call, which is counted by reason instead.
    fn slot(self) -> Option<usize> {
        match self {
            Outcome::Passed => Some(0),
            Outcome::Healed => Some(1),
            Outcome::Unhealed => Some(2),
            Outcome::Answered => Some(3),
            Outcome::Refused(_) => None,
        }
    }

    /// The outcome's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Healed => "healed",
            Outcome::Unhealed => "unhealed",
            Outcome::Answered => "answered",
            Outcome::Refused(_) => "refused",
        }
    }
}

/// Why the gateway refused a call itself: the label `reason`, one per refusal path of the
/// gateway and the forwarding below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Refusal {
    /// A path written otherwise than the hub matches paths (40097, nothing forwarded).
    PathNotCanonical,
    /// Two token parameters: which one WeChat would read cannot be told (40097).
    TokenAmbiguous,
    /// A token the hub does not serve (40014, as WeChat, nothing forwarded).
    TokenUnknown,
    /// A call carrying the AppSecret with a consumer key that is not granted the app, or without
    /// an appid or key (WeChat's errcodes, nothing forwarded).
    SecretRefused,
    /// A request body larger than `[gateway] max_body` (413).
    BodyTooLarge,
    /// A request body that could not be read from the client (400).
    BodyUnreadable,
    /// WeChat could not be reached, did not answer in time, or broke off its answer (502).
    UpstreamUnreachable,
    /// The gateway's handler panicked (500; the process and the connection live on).
    Internal,
}

impl Refusal {
    /// Every reason, in the order they are rendered.
    pub const ALL: [Refusal; 8] = [
        Refusal::PathNotCanonical,
        Refusal::TokenAmbiguous,
        Refusal::TokenUnknown,
        Refusal::SecretRefused,
        Refusal::BodyTooLarge,
        Refusal::BodyUnreadable,
        Refusal::UpstreamUnreachable,
        Refusal::Internal,
    ];

    /// The reason's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::PathNotCanonical => "path_not_canonical",
            Refusal::TokenAmbiguous => "token_ambiguous",
            Refusal::TokenUnknown => "token_unknown",
            Refusal::SecretRefused => "secret_refused",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::BodyUnreadable => "body_unreadable",
            Refusal::UpstreamUnreachable => "upstream_unreachable",
            Refusal::Internal => "internal",
        }
    }
}

/// How many listeners there are, for the arrays' sizes.
const LISTENERS: usize = Listener::ALL.len();

/// One thread's copy of the gateway's counters. Aligned so that no two shards share a cache line
/// (as [`super::RequestShard`]).
#[repr(align(128))]
struct GatewayShard {
    /// Calls by `[listener][outcome]`, for the outcomes of [`Outcome::COUNTED`].
    calls: [[AtomicU64; Outcome::COUNTED.len()]; LISTENERS],
    /// Refused calls by `[listener][reason]`.
    refused: [[AtomicU64; Refusal::ALL.len()]; LISTENERS],
    /// Upstream exchanges by `[listener][bucket]` (not cumulative); the last slot counts those
    /// above every bound. Their total is the histogram's count.
    upstream_buckets: [[AtomicU64; LATENCY_BUCKETS.len() + 1]; LISTENERS],
    /// The upstream exchanges' total time by listener, in nanoseconds (u64 lasts centuries).
    upstream_nanos: [AtomicU64; LISTENERS],
    /// Bytes held for replays by listener, as this thread saw them change: a body is held on one
    /// thread and may be given back on another, so one shard alone may wrap below zero. Only the
    /// wrapping sum over the shards is meaningful.
    held_bytes: [AtomicU64; LISTENERS],
}

impl Default for GatewayShard {
    fn default() -> Self {
        fn zeros<const N: usize>() -> [AtomicU64; N] {
            std::array::from_fn(|_| AtomicU64::new(0))
        }
        GatewayShard {
            calls: std::array::from_fn(|_| zeros()),
            refused: std::array::from_fn(|_| zeros()),
            upstream_buckets: std::array::from_fn(|_| zeros()),
            upstream_nanos: zeros(),
            held_bytes: zeros(),
        }
    }
}

/// The gateway's metrics of one hub process.
pub struct GatewayMetrics {
    /// The counters, in [`REQUEST_SHARDS`] shards summed when rendered.
    shards: Box<[GatewayShard; REQUEST_SHARDS]>,
    /// Which listeners serve in this process (set at startup): only those are rendered, so that
    /// a hub without a Work WeChat gateway shows no `listener="work"` series.
    listening: [AtomicBool; LISTENERS],
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        GatewayMetrics {
            shards: Box::new(std::array::from_fn(|_| GatewayShard::default())),
            listening: std::array::from_fn(|_| AtomicBool::new(false)),
        }
    }
}

/// Request bytes a call holds for a replay, counted in `wxhub_gateway_held_bytes` until dropped.
/// Lives beside the share of `[gateway] replay_memory` it stands for.
pub struct HeldBytes<'m> {
    /// Where they are counted.
    metrics: &'m GatewayMetrics,
    /// For which listener.
    listener: Listener,
    /// How many are counted now.
    bytes: u64,
}

impl HeldBytes<'_> {
    /// Counts `n` more bytes held.
    pub fn add(&mut self, n: usize) {
        let n = n as u64;
        self.bytes += n;
        self.metrics.local().held_bytes[self.listener as usize].fetch_add(n, Ordering::Relaxed);
    }
}

impl Drop for HeldBytes<'_> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            // Wraps in this shard if another held them: the sum over the shards is right.
            self.metrics.local().held_bytes[self.listener as usize]
                .fetch_sub(self.bytes, Ordering::Relaxed);
        }
    }
}

impl GatewayMetrics {
    /// The calling thread's shard.
    fn local(&self) -> &GatewayShard {
        &self.shards[shard()]
    }

    /// Marks `listener` as serving in this process: its series are rendered from now on.
    pub fn listening(&self, listener: Listener) {
        self.listening[listener as usize].store(true, Ordering::Relaxed);
    }

    /// Counts one call `listener` took, by what became of it.
    pub fn count_call(&self, listener: Listener, outcome: Outcome) {
        let local = self.local();
        let counter = match outcome {
            Outcome::Refused(reason) => &local.refused[listener as usize][reason as usize],
            counted => &local.calls[listener as usize][counted.slot().unwrap_or_default()],
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one exchange with WeChat for `listener`: from the request sent to the answer's
    /// head received (a streamed answer's body is the client's pace, not WeChat's).
    pub fn observe_upstream(&self, listener: Listener, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = latency_bucket(elapsed.as_secs_f64());
        let local = self.local();
        local.upstream_buckets[listener as usize][bucket].fetch_add(1, Ordering::Relaxed);
        local.upstream_nanos[listener as usize].fetch_add(nanos, Ordering::Relaxed);
    }

    /// Nothing held yet for `listener`: [`HeldBytes::add`] counts what a call holds.
    pub fn held(&self, listener: Listener) -> HeldBytes<'_> {
        HeldBytes {
            metrics: self,
            listener,
            bytes: 0,
        }
    }

    /// The sum over the shards of the counter `pick` chooses in each.
    fn sum(&self, pick: impl Fn(&GatewayShard) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|shard| pick(shard).load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    /// The listeners that serve, in their rendering order.
    fn serving(&self) -> impl Iterator<Item = Listener> + '_ {
        Listener::ALL
            .into_iter()
            .filter(|l| self.listening[*l as usize].load(Ordering::Relaxed))
    }

    /// Renders the gateway's series in the Prometheus text format: a fixed number of lines per
    /// serving listener. The families are declared even when no listener serves, so that rules
    /// and dashboards can rely on their names.
    pub fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP wxhub_gateway_calls_total Calls taken by each gateway listener, by outcome.\n",
        );
        out.push_str("# TYPE wxhub_gateway_calls_total counter\n");
        for listener in self.serving() {
            let l = listener as usize;
            let name = listener.as_str();
            for (slot, outcome) in Outcome::COUNTED.into_iter().enumerate() {
                let n = self.sum(|s| &s.calls[l][slot]);
                let outcome = outcome.as_str();
                let _ = writeln!(
                    out,
                    "wxhub_gateway_calls_total{{listener=\"{name}\",outcome=\"{outcome}\"}} {n}"
                );
            }
            let refused: u64 = Refusal::ALL
                .iter()
                .map(|reason| self.sum(|s| &s.refused[l][*reason as usize]))
                .sum();
            let _ = writeln!(
                out,
                "wxhub_gateway_calls_total{{listener=\"{name}\",outcome=\"refused\"}} {refused}"
            );
        }

        out.push_str(
            "# HELP wxhub_gateway_refused_total Calls the gateway refused itself, by listener and \
             reason.\n",
        );
        out.push_str("# TYPE wxhub_gateway_refused_total counter\n");
        for listener in self.serving() {
            let (l, name) = (listener as usize, listener.as_str());
            for reason in Refusal::ALL {
                let n = self.sum(|s| &s.refused[l][reason as usize]);
                let reason = reason.as_str();
                let _ = writeln!(
                    out,
                    "wxhub_gateway_refused_total{{listener=\"{name}\",reason=\"{reason}\"}} {n}"
                );
            }
        }

        out.push_str(
            "# HELP wxhub_gateway_upstream_seconds Time from a gateway call sent to WeChat to its \
             answer's head, by listener (a streamed request body is sent in that time, at the \
             client's pace).\n",
        );
        out.push_str("# TYPE wxhub_gateway_upstream_seconds histogram\n");
        for listener in self.serving() {
            let (l, name) = (listener as usize, listener.as_str());
            let buckets = std::array::from_fn(|i| self.sum(|s| &s.upstream_buckets[l][i]));
            let seconds = self.sum(|s| &s.upstream_nanos[l]) as f64 / 1e9;
            let labels = format!("listener=\"{name}\"");
            write_latency_histogram(
                out,
                "wxhub_gateway_upstream_seconds",
                &labels,
                &buckets,
                seconds,
            );
        }

        out.push_str(
            "# HELP wxhub_gateway_held_bytes Request bytes each listener's calls hold in memory \
             for replays now.\n",
        );
        out.push_str("# TYPE wxhub_gateway_held_bytes gauge\n");
        for listener in self.serving() {
            let l = listener as usize;
            // Read shard by shard while calls go on: a give-back may be seen before its hold.
            let held = (self.sum(|s| &s.held_bytes[l]) as i64).max(0);
            let _ = writeln!(
                out,
                "wxhub_gateway_held_bytes{{listener=\"{}\"}} {held}",
                listener.as_str()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_counted_outcome_has_its_place_in_counted_as_its_slot() {
        // `render` reads slot i as COUNTED[i]; `count_call` writes `slot()`.
        for (i, outcome) in Outcome::COUNTED.into_iter().enumerate() {
            assert_eq!(outcome.slot(), Some(i), "{}", outcome.as_str());
        }
        assert_eq!(Outcome::Refused(Refusal::Internal).slot(), None);
    }

    /// The rendered text of `m`.
    fn rendered(m: &GatewayMetrics) -> String {
        let mut out = String::new();
        m.render(&mut out);
        out
    }

    #[test]
    fn renders_calls_refusals_and_latency_per_serving_listener() {
        let m = GatewayMetrics::default();
        m.listening(Listener::Official);
        m.listening(Listener::Api);
        m.count_call(Listener::Official, Outcome::Passed);
        m.count_call(Listener::Official, Outcome::Passed);
        m.count_call(Listener::Official, Outcome::Healed);
        m.count_call(Listener::Official, Outcome::Answered);
        m.count_call(Listener::Official, Outcome::Refused(Refusal::TokenUnknown));
        // Counts from other threads (other shards) are summed in.
        std::thread::scope(|s| {
            s.spawn(|| {
                m.count_call(
                    Listener::Official,
                    Outcome::Refused(Refusal::UpstreamUnreachable),
                );
                m.count_call(Listener::Api, Outcome::Unhealed);
            });
        });
        m.observe_upstream(Listener::Official, Duration::from_millis(20));
        m.observe_upstream(Listener::Official, Duration::from_millis(5));
        m.observe_upstream(Listener::Official, Duration::from_secs(9));
        let out = rendered(&m);
        for line in [
            "wxhub_gateway_calls_total{listener=\"official\",outcome=\"passed\"} 2",
            "wxhub_gateway_calls_total{listener=\"official\",outcome=\"healed\"} 1",
            "wxhub_gateway_calls_total{listener=\"official\",outcome=\"unhealed\"} 0",
            "wxhub_gateway_calls_total{listener=\"official\",outcome=\"answered\"} 1",
            "wxhub_gateway_calls_total{listener=\"official\",outcome=\"refused\"} 2",
            "wxhub_gateway_calls_total{listener=\"api\",outcome=\"unhealed\"} 1",
            "wxhub_gateway_refused_total{listener=\"official\",reason=\"token_unknown\"} 1",
            "wxhub_gateway_refused_total{listener=\"official\",reason=\"upstream_unreachable\"} 1",
            "wxhub_gateway_refused_total{listener=\"official\",reason=\"body_too_large\"} 0",
            // 5 ms is within the 0.005 bound (`le` is inclusive), 20 ms within 0.025.
            "wxhub_gateway_upstream_seconds_bucket{listener=\"official\",le=\"0.005\"} 1",
            "wxhub_gateway_upstream_seconds_bucket{listener=\"official\",le=\"0.01\"} 1",
            "wxhub_gateway_upstream_seconds_bucket{listener=\"official\",le=\"0.025\"} 2",
            "wxhub_gateway_upstream_seconds_bucket{listener=\"official\",le=\"5\"} 2",
            "wxhub_gateway_upstream_seconds_bucket{listener=\"official\",le=\"+Inf\"} 3",
            "wxhub_gateway_upstream_seconds_sum{listener=\"official\"} 9.025",
            "wxhub_gateway_upstream_seconds_count{listener=\"official\"} 3",
            "wxhub_gateway_upstream_seconds_count{listener=\"api\"} 0",
            "wxhub_gateway_held_bytes{listener=\"official\"} 0",
        ] {
            assert!(out.contains(&format!("{line}\n")), "{line} in:\n{out}");
        }
        // A listener that does not serve has no series; its families are still declared.
        assert!(!out.contains("listener=\"work\""), "{out}");
        for family in [
            "wxhub_gateway_calls_total counter",
            "wxhub_gateway_refused_total counter",
            "wxhub_gateway_upstream_seconds histogram",
            "wxhub_gateway_held_bytes gauge",
        ] {
            assert!(out.contains(&format!("# TYPE {family}\n")), "{family}");
        }
        // Every reason and outcome of a serving listener is a series from the start, so that a
        // rate sees its first increase; the labels are the closed sets, nothing else.
        let official = out
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains("listener=\"official\""))
            .count();
        assert_eq!(
            official,
            Outcome::COUNTED.len() + 1 + Refusal::ALL.len() + LATENCY_BUCKETS.len() + 3 + 1
        );
    }

    #[test]
    fn held_bytes_follow_each_hold_even_when_given_back_on_another_thread() {
        let m = GatewayMetrics::default();
        m.listening(Listener::Official);
        m.listening(Listener::Work);
        let mut a = m.held(Listener::Official);
        a.add(1000);
        a.add(24);
        let mut b = m.held(Listener::Work);
        b.add(7);
        let out = rendered(&m);
        assert!(out.contains("wxhub_gateway_held_bytes{listener=\"official\"} 1024\n"));
        assert!(out.contains("wxhub_gateway_held_bytes{listener=\"work\"} 7\n"));
        // Given back on another thread: that shard wraps, the sum is right.
        std::thread::scope(|s| {
            s.spawn(move || drop(a));
        });
        let out = rendered(&m);
        assert!(out.contains("wxhub_gateway_held_bytes{listener=\"official\"} 0\n"));
        assert!(out.contains("wxhub_gateway_held_bytes{listener=\"work\"} 7\n"));
        drop(b);
        assert!(rendered(&m).contains("wxhub_gateway_held_bytes{listener=\"work\"} 0\n"));
    }

    #[test]
    fn a_bound_falls_in_its_own_bucket() {
        let m = GatewayMetrics::default();
        m.listening(Listener::Work);
        // A bound itself falls in its bucket; just above it, in the next.
        m.observe_upstream(Listener::Work, Duration::from_millis(100));
        m.observe_upstream(Listener::Work, Duration::from_nanos(100_000_001));
        let out = rendered(&m);
        assert!(
            out.contains("wxhub_gateway_upstream_seconds_bucket{listener=\"work\",le=\"0.1\"} 1\n")
        );
        assert!(out
            .contains("wxhub_gateway_upstream_seconds_bucket{listener=\"work\",le=\"0.25\"} 2\n"));
    }
}
