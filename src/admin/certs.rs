//! The certificate endpoints: what each site serves (source, names, validity, ACME state) and
//! renewals on request.

use http::StatusCode;
use serde_json::{Value as Json, json};

use super::edit::normalize_host;
use crate::generation::Generation;
use crate::tls::material::unix_now;
use crate::tls::plan::SiteTlsPlan;
use crate::tls::{CertSource, TlsRuntime};

/// One site's certificate as the API shows it.
fn site_view(generation: &Generation, tls: &TlsRuntime, site: &SiteTlsPlan) -> Json {
    let plan = &generation.tls;
    let now = unix_now();
    let certificate = tls.material_of(plan, site).map(|m| {
        json!({
            "names": m.info.names,
            "not_before": m.info.not_before,
            "not_after": m.info.not_after,
            "seconds_left": m.info.remaining_s(now),
            "issuer": m.info.issuer,
            "serial": m.info.serial,
        })
    });
    let mut view = json!({
        "site": site.site,
        "hosts": site.hosts,
        "source": site.source.kind(),
        "http_to_https": site.http_to_https,
        "certificate": certificate,
    });
    match &site.source {
        CertSource::Files { cert, key, .. } => {
            view["files"] = json!({ "cert": cert.display().to_string(), "key": key.display().to_string() });
        }
        CertSource::Acme => {
            if let (Some(dir), Some(acme)) = (TlsRuntime::acme_dir(plan, site), &plan.acme) {
                let managed = tls.managed(&dir);
                let renews_at = managed.material.as_ref().map(|m| {
                    m.info.not_after - crate::tls::acme::renewal_window_s(m.info.not_after - m.info.not_before)
                });
                view["acme"] = json!({
                    "directory": acme.directory_url,
                    "storage": dir.display().to_string(),
                    "renews_at": renews_at,
                    "status": managed.status,
                });
            }
        }
        CertSource::SelfSigned => {
            view["local_ca"] = json!(plan.storage.local_ca_dir().join("ca.pem").display().to_string());
        }
        CertSource::None => {}
    }
    view
}

/// `GET /api/v1/certs`: every site's certificate.
pub fn certificates(generation: &Generation, tls: &TlsRuntime) -> Json {
    Json::Array(generation.tls.sites.iter().map(|s| site_view(generation, tls, s)).collect())
}

/// `GET /api/v1/certs/{host}`: the certificate of the site serving `host`.
pub fn certificate(generation: &Generation, tls: &TlsRuntime, host: &str) -> Option<Json> {
    let site = generation.tls.site_for(&normalize_host(host))?;
    Some(site_view(generation, tls, site))
}

/// `POST /api/v1/certs/{host}/renew`: orders a new ACME certificate now (answered at once; the
/// order runs in the background and its outcome shows in `GET /certs/{host}`), or issues a new
/// self-signed one at the next handshake.
pub fn renew(generation: &Generation, tls: &TlsRuntime, host: &str) -> (StatusCode, Json) {
    let plan = &generation.tls;
    let host = normalize_host(host);
    let Some(site) = plan.site_for(&host) else {
        return (StatusCode::NOT_FOUND, refusal(format!("no site serves {host}")));
    };
    match &site.source {
        CertSource::Acme => match TlsRuntime::acme_dir(plan, site) {
            Some(dir) => {
                tls.request_renewal(&dir);
                (
                    StatusCode::ACCEPTED,
                    json!({ "status": "renewal requested", "site": site.site, "follow": format!("/api/v1/certs/{host}") }),
                )
            }
            None => (StatusCode::CONFLICT, refusal("ACME is not configured".into())),
        },
        CertSource::SelfSigned => {
            if let Ok(ca) = tls.local_ca(&plan.storage.local_ca_dir()) {
                for h in &site.hosts {
                    ca.forget(Some(h));
                }
                ca.forget(Some(&host));
            }
            (
                StatusCode::OK,
                json!({ "status": "a new certificate is issued at the next handshake", "site": site.site }),
            )
        }
        CertSource::Files { .. } => {
            (StatusCode::CONFLICT, refusal("this site's certificate comes from files: replace them and reload".into()))
        }
        CertSource::None => (StatusCode::CONFLICT, refusal(format!("site {} has no certificate", site.site))),
    }
}

fn refusal(message: String) -> Json {
    json!({ "status": "error", "message": message })
}
