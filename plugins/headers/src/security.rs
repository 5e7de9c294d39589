//! The `security_headers` preset: conservative browser hardening headers added to responses
//! whose upstream did not choose its own.
//!
//! An upstream that sends one of these headers knows its pages better than a proxy-wide
//! default (a page meant to be framed elsewhere, say), so its value always wins.

use switchyard_sdk::RequestHead;

use crate::target::Target;

/// Headers every response gets unless the upstream sent them.
const DEFAULTS: [(&str, &str); 3] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "SAMEORIGIN"),
    ("referrer-policy", "strict-origin-when-cross-origin"),
];

const STRICT_TRANSPORT_SECURITY: &str = "strict-transport-security";

/// The preset, with the HSTS value rendered once at configure time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SecurityPreset {
    hsts: String,
}

impl SecurityPreset {
    /// The preset with `Strict-Transport-Security: max-age=<hsts_max_age>; includeSubDomains`.
    pub(crate) fn new(hsts_max_age: u64) -> Self {
        SecurityPreset { hsts: format!("max-age={hsts_max_age}; includeSubDomains") }
    }

    /// Adds the missing headers to `resp`. HSTS only goes out on `https`: browsers ignore it over
    /// plain HTTP (RFC 6797 §8.1), where it would only mislead whoever reads the response.
    pub(crate) fn apply(&self, req: &dyn RequestHead, resp: &Target<'_>) {
        for (name, value) in DEFAULTS {
            if resp.first(name).is_none() {
                resp.set(name, value);
            }
        }
        if resp.first(STRICT_TRANSPORT_SECURITY).is_none() && req.scheme() == "https" {
            resp.set(STRICT_TRANSPORT_SECURITY, &self.hsts);
        }
    }
}
