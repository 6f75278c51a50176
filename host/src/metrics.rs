//! Prometheus metrics (`prometheus-client`, OpenMetrics text on `GET /metrics` of
//! `--metrics-listen`).
//!
//! Every name starts with `sealed_host_`; counters end in `_total`, durations are in seconds
//! (`_seconds`). Label values come from fixed sets only, so that no client-chosen string reaches a
//! label and the series count stays bounded: `route` is the matched route template (one of
//! [`ROUTES`], or `unmatched`), never the raw path; `status` is the HTTP status the host chose;
//! `code` and `outcome` are stable error-code names ([`ErrorCode::as_str`]) or `loaded`; `reason` is
//! one of [`RejectReason::ALL`].
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `sealed_host_http_requests_total` | counter | route, status |
//! | `sealed_host_http_request_duration_seconds` | histogram | route |
//! | `sealed_host_http_requests_in_flight` | gauge | |
//! | `sealed_host_errors_total` | counter | code |
//! | `sealed_host_enclave_in_flight` | gauge (queue depth at the enclave) | |
//! | `sealed_host_enclave_connections_up` | gauge | |
//! | `sealed_host_enclave_up` | gauge, 0 or 1 | |
//! | `sealed_host_enclave_restarts_total` | counter (returns after a loss) | |
//! | `sealed_host_models_loaded` | gauge | |
//! | `sealed_host_enclave_batched_requests` | gauge (the enclave's count since it started) | |
//! | `sealed_host_sealed_model_loads_total` | counter | outcome |
//! | `sealed_host_http_connections` | gauge (client connections open) | |
//! | `sealed_host_rejected_total` | counter (refused or cut off by a limit) | reason |
//!
//! What it does not do: label anything with a path, query, body, model id, nonce or secret.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use sealed_wire::ErrorCode;

use crate::limits::RejectReason;

/// The routes the host serves, as matched templates: the only values of the `route` label besides
/// [`UNMATCHED_ROUTE`].
pub const ROUTES: &[&str] = &[
    "/v1/attestation",
    "/v1/infer",
    "/v1/health",
    "/v1/models",
    "/v1/admin/models",
    "/livez",
    "/readyz",
    "/metrics",
];
/// The `route` label of a request that matched no route (404).
pub const UNMATCHED_ROUTE: &str = "unmatched";
/// The `outcome` label of a sealed model load that succeeded (failures carry their error code).
pub const LOADED_OUTCOME: &str = "loaded";

/// The `route` label for a matched route template; anything else is [`UNMATCHED_ROUTE`].
pub fn route_label(matched: Option<&str>) -> &'static str {
    matched
        .and_then(|m| ROUTES.iter().copied().find(|r| *r == m))
        .unwrap_or(UNMATCHED_ROUTE)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

fn latency_histogram() -> Histogram {
    // 1 ms to ~33 s: health checks to large-model inference.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The host's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<RequestLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    errors: Family<CodeLabels, Counter>,
    sealed_loads: Family<OutcomeLabels, Counter>,
    rejected: Family<ReasonLabels, Counter>,
    /// Client HTTP connections open.
    pub http_connections: Gauge,
    /// HTTP requests being handled (what a drain waits for).
    pub http_in_flight: Gauge,
    /// Requests sent to the enclave and not yet answered.
    pub enclave_in_flight: Gauge,
    pub enclave_connections_up: Gauge,
    /// 1 while the last health probe succeeded, else 0.
    pub enclave_up: Gauge,
    /// Times the enclave came back after it was lost.
    pub enclave_restarts: Counter,
    /// Models the enclave reported in its last health answer.
    pub models_loaded: Gauge,
    /// Requests the enclave answered within a dynamic batch, as of its last health answer
    /// (a gauge: it restarts from 0 with the enclave).
    pub enclave_batched_requests: Gauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// All metrics at zero, registered under the `sealed_host` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sealed_host");
        let m = Metrics {
            registry: Registry::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            errors: Family::default(),
            sealed_loads: Family::default(),
            rejected: Family::default(),
            http_connections: Gauge::default(),
            http_in_flight: Gauge::default(),
            enclave_in_flight: Gauge::default(),
            enclave_connections_up: Gauge::default(),
            enclave_up: Gauge::default(),
            enclave_restarts: Counter::default(),
            models_loaded: Gauge::default(),
            enclave_batched_requests: Gauge::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template and status",
            m.http_requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "HTTP request duration, by route template",
            Unit::Seconds,
            m.http_duration.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being handled",
            m.http_in_flight.clone(),
        );
        registry.register(
            "errors",
            "Error answers, by stable error code",
            m.errors.clone(),
        );
        registry.register(
            "enclave_in_flight",
            "Requests sent to the enclave and not yet answered (queue depth)",
            m.enclave_in_flight.clone(),
        );
        registry.register(
            "enclave_connections_up",
            "Enclave connections currently established",
            m.enclave_connections_up.clone(),
        );
        registry.register(
            "enclave_up",
            "1 if the last enclave health probe succeeded, else 0",
            m.enclave_up.clone(),
        );
        registry.register(
            "enclave_restarts",
            "Times the enclave came back after being lost",
            m.enclave_restarts.clone(),
        );
        registry.register(
            "models_loaded",
            "Models the enclave serves, from its last health answer",
            m.models_loaded.clone(),
        );
        registry.register(
            "enclave_batched_requests",
            "Requests the enclave answered within a dynamic batch since it started, from its last health answer",
            m.enclave_batched_requests.clone(),
        );
        registry.register(
            "sealed_model_loads",
            "Sealed model loads (startup, reload and admin), by outcome",
            m.sealed_loads.clone(),
        );
        registry.register(
            "http_connections",
            "Client HTTP connections open",
            m.http_connections.clone(),
        );
        registry.register(
            "rejected",
            "Connections and requests refused or cut off by a limit, by reason",
            m.rejected.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts one answered HTTP request.
    pub fn observe_request(&self, route: &'static str, status: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels { route })
            .observe(seconds);
    }

    /// Counts one error answer.
    pub fn observe_error(&self, code: ErrorCode) {
        self.errors
            .get_or_create(&CodeLabels {
                code: code.as_str(),
            })
            .inc();
    }

    /// Counts one sealed model load: `Ok` or the failure's code.
    pub fn observe_sealed_load(&self, outcome: Result<(), ErrorCode>) {
        let outcome = match outcome {
            Ok(()) => LOADED_OUTCOME,
            Err(code) => code.as_str(),
        };
        self.sealed_loads
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts one connection or request refused or cut off by a limit.
    pub fn observe_rejected(&self, reason: RejectReason) {
        self.rejected
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; an encoder error would leave a truncated page, which
        // the scraper reports.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    fn snake_case(name: &str) -> bool {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !name.starts_with('_')
            && !name.ends_with('_')
            && !name.contains("__")
    }

    /// Sample lines as (metric name, [(label, value)]).
    fn samples(text: &str) -> Vec<(String, Vec<(String, String)>)> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|line| {
                let (series, _value) = line.rsplit_once(' ').unwrap();
                match series.split_once('{') {
                    None => (series.to_string(), vec![]),
                    Some((name, labels)) => {
                        let labels = labels.strip_suffix('}').unwrap();
                        let labels = labels
                            .split(',')
                            .map(|kv| {
                                let (k, v) = kv.split_once('=').unwrap();
                                (k.to_string(), v.trim_matches('"').to_string())
                            })
                            .collect();
                        (name.to_string(), labels)
                    }
                }
            })
            .collect()
    }

    fn exercised() -> Metrics {
        let m = Metrics::new();
        for route in ROUTES {
            m.observe_request(route, 200, 0.01);
        }
        m.observe_request(route_label(Some("/v1/infer/../../etc")), 404, 0.001);
        m.observe_request(route_label(None), 404, 0.001);
        for &code in ErrorCode::ALL {
            m.observe_error(code);
            m.observe_sealed_load(Err(code));
        }
        m.observe_error(ErrorCode::Unknown(4242));
        m.observe_sealed_load(Ok(()));
        for &reason in RejectReason::ALL {
            m.observe_rejected(reason);
        }
        m.http_connections.inc();
        m.enclave_up.set(1);
        m.enclave_restarts.inc();
        m
    }

    /// The naming rules of the Prometheus docs ("Metric and label naming"): one application prefix,
    /// snake_case, `_total` on counters, base units (`_seconds`) in the name.
    #[test]
    fn names_follow_the_prometheus_conventions() {
        let text = exercised().encode();
        let mut types = std::collections::HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                types.insert(name.to_string(), kind.to_string());
            }
        }
        assert!(types.len() >= 10, "{text}");
        for (name, kind) in &types {
            assert!(name.starts_with("sealed_host_"), "{name}");
            assert!(snake_case(name), "{name}");
            if name.contains("duration") {
                assert!(name.ends_with("_seconds"), "{name}");
            }
            if kind == "counter" {
                assert!(!name.ends_with("_total"), "the encoder adds _total: {name}");
            }
        }
        for (name, labels) in samples(&text) {
            assert!(
                name.starts_with("sealed_host_") && snake_case(&name),
                "{name}"
            );
            let family = types
                .keys()
                .filter(|f| name.starts_with(f.as_str()))
                .max_by_key(|f| f.len())
                .unwrap_or_else(|| panic!("{name} has no TYPE line"));
            match types[family].as_str() {
                "counter" => assert_eq!(name, format!("{family}_total")),
                "histogram" => assert!(
                    ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name == format!("{family}{s}")),
                    "{name}"
                ),
                _ => assert_eq!(&name, family),
            }
            for (k, _) in &labels {
                assert!(snake_case(k), "{name}: label {k}");
            }
        }
        for want in [
            "sealed_host_http_requests_total",
            "sealed_host_http_request_duration_seconds_bucket",
            "sealed_host_errors_total",
            "sealed_host_enclave_in_flight",
            "sealed_host_enclave_connections_up",
            "sealed_host_enclave_up",
            "sealed_host_enclave_restarts_total",
            "sealed_host_models_loaded",
            "sealed_host_enclave_batched_requests",
            "sealed_host_sealed_model_loads_total",
            "sealed_host_http_connections",
            "sealed_host_rejected_total",
        ] {
            assert!(text.lines().any(|l| l.starts_with(want)), "{want} missing");
        }
    }

    /// Every label value is from a fixed set: a client-chosen path never becomes a label.
    #[test]
    fn label_values_come_from_fixed_sets() {
        let text = exercised().encode();
        let codes: Vec<&str> = ErrorCode::ALL
            .iter()
            .map(|c| c.as_str())
            .chain(["unknown"])
            .collect();
        let mut routes_seen = 0;
        for (name, labels) in samples(&text) {
            for (k, v) in labels {
                match k.as_str() {
                    "route" => {
                        routes_seen += 1;
                        assert!(ROUTES.contains(&v.as_str()) || v == UNMATCHED_ROUTE, "{v}");
                    }
                    "status" => {
                        let n: u16 = v.parse().unwrap();
                        assert!((100..600).contains(&n), "{v}");
                    }
                    "code" => assert!(codes.contains(&v.as_str()), "{v}"),
                    "outcome" => {
                        assert!(v == LOADED_OUTCOME || codes.contains(&v.as_str()), "{v}")
                    }
                    "reason" => assert!(RejectReason::ALL.iter().any(|r| r.as_str() == v), "{v}"),
                    "le" => assert!(name.ends_with("_bucket"), "{name}"),
                    other => panic!("unexpected label {other} on {name}"),
                }
            }
        }
        assert!(routes_seen > 0);
        assert!(!text.contains("etc"), "a raw path leaked into a label");
        assert_eq!(route_label(Some("/v1/infer")), "/v1/infer");
        assert_eq!(route_label(Some("/v1/infer?nonce=ab")), UNMATCHED_ROUTE);
    }
}
