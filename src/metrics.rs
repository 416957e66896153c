//! Prometheus metrics, served in the text format at `/metrics` on `metrics.listen` only
//! (the labels name session ids, which are capabilities).
//!
//! Request-path metrics are plain counters and histograms updated once per request in the
//! logging phase. Per-session metrics are not kept on the request path at all: they are
//! read from the sessions' own statistics at scrape time, so their cardinality is bounded
//! by the sessions held (and candidates per session), and a session that finished more
//! than [`FINISHED_SERIES_TTL`] ago drops out of the exposition.

use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::gepa::{SessionMetrics, Sessions};
use crate::store::StoreProbe;

/// Series of a completed or cancelled session are dropped this long after it finished.
pub const FINISHED_SERIES_TTL: Duration = Duration::from_secs(3600);

/// Fine enough to see tens of microseconds of gateway overhead.
const OVERHEAD_BUCKETS: [f64; 14] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.5,
];
/// LLM calls take from milliseconds to minutes.
const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// One finished request, as the logging phase reports it.
#[derive(Debug, Clone, Copy)]
pub struct RequestObservation<'a> {
    pub route: &'a str,
    pub status: u16,
    pub total: Duration,
    pub upstream: Option<Duration>,
    pub upstream_ttfb: Option<Duration>,
    pub upstream_status: Option<u16>,
    pub error_code: Option<&'a str>,
}

pub struct Metrics {
    registry: Registry,
    sessions: Arc<Sessions>,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: Histogram,
    upstream_ttfb: Histogram,
    overhead: Histogram,
    upstream_errors: IntCounterVec,
    body_rejections: IntCounterVec,
    /// The proxy route's series, resolved on first use: `with_label_values` hashes the
    /// labels and takes a lock on each call, and every proxied call updates these.
    proxy_requests: [OnceLock<IntCounter>; STATUS_CLASSES.len()],
    proxy_duration: OnceLock<Histogram>,
}

/// The `status_class` label's values; "none": no response was written.
const STATUS_CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

fn status_class(status: u16) -> usize {
    match status {
        0 => 0,
        100..=199 => 1,
        200..=299 => 2,
        300..=399 => 3,
        400..=499 => 4,
        _ => 5,
    }
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> prometheus::Result<Histogram> {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
}

impl Metrics {
    /// `store`: the durable store's series, registered when there is one.
    pub fn new(sessions: Arc<Sessions>, store: Option<&StoreProbe>) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let m = Metrics {
            requests: IntCounterVec::new(
                Opts::new("gepa_requests_total", "Requests by route and status class."),
                &["route", "status_class"],
            )?,
            request_duration: HistogramVec::new(
                HistogramOpts::new("gepa_request_duration_seconds", "Total time per request.")
                    .buckets(LATENCY_BUCKETS.to_vec()),
                &["route"],
            )?,
            upstream_duration: histogram(
                "gepa_upstream_duration_seconds",
                "Time from sending a proxied request upstream to its last response byte.",
                &LATENCY_BUCKETS,
            )?,
            upstream_ttfb: histogram(
                "gepa_upstream_ttfb_seconds",
                "Time from sending a proxied request upstream to its response header.",
                &LATENCY_BUCKETS,
            )?,
            overhead: histogram(
                "gepa_gateway_overhead_seconds",
                "Per proxied request: total time minus the time spent waiting on the upstream.",
                &OVERHEAD_BUCKETS,
            )?,
            upstream_errors: IntCounterVec::new(
                Opts::new(
                    "gepa_upstream_errors_total",
                    "Upstream failures by kind (connect, timeout, reset, 5xx).",
                ),
                &["kind"],
            )?,
            body_rejections: IntCounterVec::new(
                Opts::new(
                    "gepa_body_rejections_total",
                    "Proxied request bodies refused before the upstream, by reason.",
                ),
                &["reason"],
            )?,
            proxy_requests: Default::default(),
            proxy_duration: OnceLock::new(),
            registry,
            sessions,
        };
        m.registry.register(Box::new(m.requests.clone()))?;
        m.registry.register(Box::new(m.request_duration.clone()))?;
        m.registry.register(Box::new(m.upstream_duration.clone()))?;
        m.registry.register(Box::new(m.upstream_ttfb.clone()))?;
        m.registry.register(Box::new(m.overhead.clone()))?;
        m.registry.register(Box::new(m.upstream_errors.clone()))?;
        m.registry.register(Box::new(m.body_rejections.clone()))?;
        for collector in store.map(StoreProbe::collectors).unwrap_or_default() {
            m.registry.register(collector)?;
        }
        Ok(m)
    }

    /// Records one finished request.
    pub fn observe(&self, o: &RequestObservation<'_>) {
        let class = status_class(o.status);
        let total = o.total.as_secs_f64();
        if o.route == "proxy" {
            self.proxy_requests[class]
                .get_or_init(|| {
                    self.requests
                        .with_label_values(&["proxy", STATUS_CLASSES[class]])
                })
                .inc();
            self.proxy_duration
                .get_or_init(|| self.request_duration.with_label_values(&["proxy"]))
                .observe(total);
        } else {
            self.requests
                .with_label_values(&[o.route, STATUS_CLASSES[class]])
                .inc();
            self.request_duration
                .with_label_values(&[o.route])
                .observe(total);
        }
        if let Some(up) = o.upstream {
            self.upstream_duration.observe(up.as_secs_f64());
            self.overhead
                .observe(o.total.saturating_sub(up).as_secs_f64());
        }
        if let Some(ttfb) = o.upstream_ttfb {
            self.upstream_ttfb.observe(ttfb.as_secs_f64());
        }
        let kind = match o.error_code {
            Some("upstream_unreachable") => Some("connect"),
            Some("upstream_timeout") => Some("timeout"),
            Some("upstream_error" | "stream_broken") => Some("reset"),
            _ if o.upstream_status.is_some_and(|s| s >= 500) => Some("5xx"),
            _ => None,
        };
        if let Some(kind) = kind {
            self.upstream_errors.with_label_values(&[kind]).inc();
        }
        if o.route == "proxy" && matches!(o.status, 400 | 413) {
            if let Some(code) = o.error_code {
                self.body_rejections.with_label_values(&[code]).inc();
            }
        }
    }

    /// The whole exposition in Prometheus' text format.
    pub fn render(&self) -> prometheus::Result<Vec<u8>> {
        let mut families = self.registry.gather();
        families.extend(self.session_families()?);
        let mut out = Vec::new();
        TextEncoder::new().encode(&families, &mut out)?;
        Ok(out)
    }

    /// Per-session series, read from the sessions' statistics at scrape time.
    fn session_families(&self) -> prometheus::Result<Vec<prometheus::proto::MetricFamily>> {
        let families = SessionFamilies::new()?;
        for s in self.sessions.all() {
            families.add(&s.id, &s.metrics_snapshot());
        }
        Ok(families.collect())
    }
}

/// The per-session metric families of one scrape, built afresh each time (sessions come
/// and go; a registry would keep the series of removed ones).
struct SessionFamilies {
    rollouts: IntCounterVec,
    rewards: IntCounterVec,
    reward_sum: GaugeVec,
    mean: GaugeVec,
    failures_per_candidate: IntCounterVec,
    candidates: IntGaugeVec,
    proposals: IntCounterVec,
    failures: IntCounterVec,
    proposer_tokens: IntCounterVec,
    sessions: IntGaugeVec,
}

impl SessionFamilies {
    fn new() -> prometheus::Result<Self> {
        let sc = ["session", "candidate"];
        let opts = Opts::new;
        let sessions = IntGaugeVec::new(
            opts("gepa_sessions", "Sessions held, by status."),
            &["status"],
        )?;
        for status in ["started", "paused", "completed", "cancelled"] {
            sessions.with_label_values(&[status]).set(0);
        }
        Ok(SessionFamilies {
            rollouts: IntCounterVec::new(
                opts(
                    "gepa_rollouts_total",
                    "Rollouts served, per session and candidate.",
                ),
                &sc,
            )?,
            rewards: IntCounterVec::new(
                opts(
                    "gepa_rewards_total",
                    "Rewards counted, per session and candidate.",
                ),
                &sc,
            )?,
            reward_sum: GaugeVec::new(
                opts(
                    "gepa_reward_accumulated",
                    "Sum of counted rewards, per session and candidate.",
                ),
                &sc,
            )?,
            mean: GaugeVec::new(
                opts(
                    "gepa_candidate_mean_reward",
                    "Mean reward of each rewarded candidate.",
                ),
                &sc,
            )?,
            failures_per_candidate: IntCounterVec::new(
                opts(
                    "gepa_candidate_failures_total",
                    "Calls the upstream refused or broke (a 4xx other than 429, a 5xx, a \
                     timeout, a refused or broken connection), per session and candidate.",
                ),
                &sc,
            )?,
            candidates: IntGaugeVec::new(
                opts("gepa_candidates", "Candidates per session by status."),
                &["session", "status"],
            )?,
            proposals: IntCounterVec::new(
                opts("gepa_proposals_total", "Proposals per session by result."),
                &["session", "result"],
            )?,
            failures: IntCounterVec::new(
                opts(
                    "gepa_proposer_failures_total",
                    "Failed proposer attempts per session.",
                ),
                &["session"],
            )?,
            proposer_tokens: IntCounterVec::new(
                opts(
                    "gepa_proposer_tokens_total",
                    "Tokens the proposer model reported, per session and kind (prompt, completion).",
                ),
                &["session", "kind"],
            )?,
            sessions,
        })
    }

    /// Counts one session; a finished one's own series stop after [`FINISHED_SERIES_TTL`].
    fn add(&self, id: &str, snap: &SessionMetrics) {
        self.sessions.with_label_values(&[snap.status]).inc();
        if snap.finished_for.is_some_and(|d| d > FINISHED_SERIES_TTL) {
            return;
        }
        let (mut active, mut archived) = (0, 0);
        for c in &snap.candidates {
            let l = [id, &*c.id];
            self.rollouts.with_label_values(&l).inc_by(c.stats.issued);
            self.rewards.with_label_values(&l).inc_by(c.stats.rewards);
            self.reward_sum
                .with_label_values(&l)
                .set(c.stats.reward_sum);
            self.failures_per_candidate
                .with_label_values(&l)
                .inc_by(c.failures);
            if c.stats.rewards > 0 {
                self.mean
                    .with_label_values(&l)
                    .set(c.stats.reward_sum / c.stats.rewards as f64);
            }
            if c.active {
                active += 1;
            } else {
                archived += 1;
            }
        }
        let by_status = &self.candidates;
        by_status.with_label_values(&[id, "active"]).set(active);
        by_status.with_label_values(&[id, "archived"]).set(archived);
        let proposals = &self.proposals;
        proposals
            .with_label_values(&[id, "accepted"])
            .inc_by(snap.proposals);
        proposals
            .with_label_values(&[id, "failed"])
            .inc_by(snap.failures);
        self.failures.with_label_values(&[id]).inc_by(snap.failures);
        let (prompt, completion) = snap.proposer_tokens;
        let tokens = &self.proposer_tokens;
        tokens.with_label_values(&[id, "prompt"]).inc_by(prompt);
        tokens.with_label_values(&[id, "completion"]).inc_by(completion);
    }

    /// The families that have series (a family without any is left out of the exposition).
    fn collect(self) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::core::Collector;
        let collectors: [&dyn Collector; 10] = [
            &self.rollouts,
            &self.rewards,
            &self.reward_sum,
            &self.mean,
            &self.failures_per_candidate,
            &self.candidates,
            &self.proposals,
            &self.failures,
            &self.proposer_tokens,
            &self.sessions,
        ];
        collectors
            .into_iter()
            .flat_map(|c| c.collect())
            .filter(|f| !f.get_metric().is_empty())
            .collect()
    }
}

/// The `/metrics` listener's application.
pub struct MetricsApp {
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path_ok = session.req_header().uri.path() == "/metrics";
        let (status, body, content_type) = if !path_ok {
            (404, b"not found\n".to_vec(), "text/plain")
        } else {
            match self.metrics.render() {
                Ok(b) => (200, b, "text/plain; version=0.0.4"),
                Err(e) => (500, format!("metrics: {e}\n").into_bytes(), "text/plain"),
            }
        };
        let len = body.len();
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .header("content-length", len)
            .body(body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
