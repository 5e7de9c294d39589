//! An upstream's resilience settings (timeouts, active health checks, outlier ejection,
//! retries), read from its `[[upstream]]` table with every out-of-range value reported.

use std::time::Duration;

use toml::Spanned;

use crate::config::model::{HealthCheckSection, UpstreamSection};
use crate::config::{Collector, in_range, is_token};

/// Per-upstream timeouts.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    pub idle: Duration,
    /// The whole request, retries included.
    pub total: Option<Duration>,
}

/// What an active probe does.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// A connection that opens passes.
    Tcp,
    /// A request whose answer has an expected status (and body) passes.
    Http { method: String, path: String, host: Option<String>, status: (u16, u16), body: Option<String> },
}

/// Active health checks.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub probe: Probe,
    pub port: Option<u16>,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// Passive health: ejection after failures in a row.
#[derive(Debug, Clone, PartialEq)]
pub struct Outlier {
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_ejected_percent: u32,
}

/// Which failures are retried.
#[derive(Debug, Clone, PartialEq)]
pub struct Retries {
    pub max_retries: u32,
    pub idempotent: bool,
    pub budget_percent: u32,
}

/// Everything above, for one upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamPolicy {
    pub timeouts: Timeouts,
    pub health_check: Option<HealthCheck>,
    pub outlier: Option<Outlier>,
    pub retries: Retries,
}

impl Default for UpstreamPolicy {
    fn default() -> Self {
        UpstreamPolicy {
            timeouts: Timeouts {
                connect: Duration::from_secs(5),
                read: Duration::from_secs(60),
                write: Duration::from_secs(60),
                idle: Duration::from_secs(60),
                total: None,
            },
            health_check: None,
            outlier: Some(Outlier {
                consecutive_failures: 5,
                base_ejection: Duration::from_secs(30),
                max_ejection: Duration::from_secs(300),
                max_ejected_percent: 50,
            }),
            retries: Retries { max_retries: 2, idempotent: false, budget_percent: 20 },
        }
    }
}

/// The longest timeout or interval accepted (a day), so arithmetic on them cannot overflow.
const MAX_MS: u64 = 86_400_000;

/// A millisecond value in `min..=MAX_MS`, or `default`.
fn millis(value: &Option<Spanned<u64>>, name: &str, min: u64, default: Duration, c: &mut Collector<'_>) -> Duration {
    Duration::from_millis(in_range(value, name, (min, MAX_MS), default.as_millis() as u64, c))
}

fn health_check(h: &HealthCheckSection, c: &mut Collector<'_>) -> HealthCheck {
    let kind = h.kind.as_ref().map_or("http", |k| k.get_ref().as_str());
    let probe = match kind {
        "tcp" => {
            for (set, name) in [
                (h.path.as_ref().map(Spanned::span), "path"),
                (h.method.as_ref().map(Spanned::span), "method"),
                (h.host.as_ref().map(Spanned::span), "host"),
                (h.expect_status.as_ref().map(Spanned::span), "expect_status"),
                (h.expect_body.as_ref().map(Spanned::span), "expect_body"),
            ] {
                if let Some(span) = set {
                    c.error(span, format!("`{name}` is for kind = \"http\" health checks; a tcp check only connects"));
                }
            }
            Probe::Tcp
        }
        other => {
            if other != "http"
                && let Some(k) = &h.kind
            {
                c.error(k.span(), format!("unknown health check kind `{other}` (use \"http\" or \"tcp\")"));
            }
            let path = h.path.as_ref().map_or_else(|| "/".to_string(), |p| p.get_ref().clone());
            if let Some(p) = &h.path
                && (!path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f))
            {
                c.error(p.span(), "health check path must start with '/' and contain no spaces or control characters");
            }
            let method = h.method.as_ref().map_or_else(|| "GET".to_string(), |m| m.get_ref().to_ascii_uppercase());
            if let Some(m) = &h.method
                && !is_token(&method)
            {
                c.error(m.span(), format!("`{}` is not an HTTP method", m.get_ref()));
            }
            if let Some(host) = &h.host
                && (host.get_ref().is_empty() || host.get_ref().bytes().any(|b| b <= b' ' || b == 0x7f))
            {
                c.error(host.span(), "health check host must be a non-empty name without spaces");
            }
            let status = match &h.expect_status {
                None => (200, 399),
                Some(s) => match s.get_ref()[..] {
                    [lo, hi] if (100..=599).contains(&lo) && (lo..=599).contains(&hi) => (lo, hi),
                    _ => {
                        c.error(s.span(), "expect_status is [lowest, highest], two statuses between 100 and 599");
                        (200, 399)
                    }
                },
            };
            Probe::Http {
                method,
                path,
                host: h.host.as_ref().map(|h| h.get_ref().clone()),
                status,
                body: h.expect_body.as_ref().map(|b| b.get_ref().clone()),
            }
        }
    };
    if let Some(p) = &h.port
        && *p.get_ref() == 0
    {
        c.error(p.span(), "health check port must not be 0");
    }
    HealthCheck {
        probe,
        port: h.port.as_ref().map(|p| *p.get_ref()),
        interval: millis(&h.interval_ms, "interval_ms", 10, Duration::from_secs(10), c),
        timeout: millis(&h.timeout_ms, "timeout_ms", 1, Duration::from_secs(5), c),
        healthy_threshold: in_range(&h.healthy_threshold, "healthy_threshold", (1, 1000), 2, c),
        unhealthy_threshold: in_range(&h.unhealthy_threshold, "unhealthy_threshold", (1, 1000), 3, c),
    }
}

impl UpstreamPolicy {
    /// The policy `u` describes; every out-of-range value is reported to `c` (and replaced by
    /// its default).
    pub fn from_config(u: &UpstreamSection, c: &mut Collector<'_>) -> UpstreamPolicy {
        let defaults = UpstreamPolicy::default();
        let t = &u.timeouts;
        let timeouts = Timeouts {
            connect: millis(&t.connect_ms, "connect_ms", 1, defaults.timeouts.connect, c),
            read: millis(&t.read_ms, "read_ms", 1, defaults.timeouts.read, c),
            write: millis(&t.write_ms, "write_ms", 1, defaults.timeouts.write, c),
            idle: millis(&t.idle_ms, "idle_ms", 1, defaults.timeouts.idle, c),
            total: t.total_ms.as_ref().map(|_| millis(&t.total_ms, "total_ms", 1, Duration::ZERO, c)),
        };
        let o = &u.outlier;
        let default_outlier = defaults.outlier.unwrap_or_else(|| unreachable!("the default has one"));
        let base_ejection = millis(&o.base_ejection_ms, "base_ejection_ms", 1, default_outlier.base_ejection, c);
        let max_ejection = millis(&o.max_ejection_ms, "max_ejection_ms", 1, default_outlier.max_ejection, c);
        if let Some(m) = &o.max_ejection_ms
            && max_ejection < base_ejection
        {
            c.error(m.span(), "max_ejection_ms must not be below base_ejection_ms");
        }
        let outlier = Outlier {
            consecutive_failures: in_range(&o.consecutive_failures, "consecutive_failures", (1, 1000), 5, c),
            base_ejection,
            max_ejection,
            max_ejected_percent: in_range(&o.max_ejected_percent, "max_ejected_percent", (0, 100), 50, c),
        };
        let r = &u.retries;
        let retries = Retries {
            max_retries: in_range(&r.max_retries, "max_retries", (0, 10), 2, c),
            idempotent: r.idempotent,
            budget_percent: in_range(&r.budget_percent, "budget_percent", (0, 100), 20, c),
        };
        UpstreamPolicy {
            timeouts,
            health_check: u.health_check.as_ref().map(|h| health_check(h.get_ref(), c)),
            outlier: o.enabled.unwrap_or(true).then_some(outlier),
            retries,
        }
    }
}
