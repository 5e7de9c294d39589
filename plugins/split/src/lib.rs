//! The built-in A/B split: puts each request of a route into one of several weighted variants —
//! a tag of the route's upstream, or another upstream — and keeps each client in its variant.
//! One type serves two roles: the split decides, and the response filter (which the host runs
//! first on the same routes) hands the client its sticky cookie and, optionally, a header naming
//! the variant.
//!
//! # Configuration
//!
//! Both roles get the same JSON:
//!
//! ```json
//! {
//!   "variants": [
//!     {"name": "a", "tag": "a", "weight": 90},
//!     {"name": "b", "upstream": "api-v2", "weight": 10}
//!   ],
//!   "sticky": "cookie",
//!   "sticky_header": null,
//!   "cookie": null,
//!   "cookie_max_age": 2592000,
//!   "cookie_secret": null,
//!   "override_header": "x-switchyard-variant",
//!   "override_cookie": "switchyard_variant",
//!   "response_header": null,
//!   "salt": null
//! }
//! ```
//!
//! - `variants` (required, at least one): each has exactly one of `tag` (only the route
//!   upstream's backends with that tag) or `upstream` (another `[[upstream]]`); `name` defaults
//!   to the tag or upstream and must be unique; `weight` is a whole number ≥ 0, default 1, and
//!   the weights must not all be 0. 100/0 is a tag switch, 90/10 a canary. A variant of weight 0
//!   gets no new clients but stays reachable through the overrides.
//! - `sticky`: what keeps a client in its variant. `"cookie"` (default): a signed cookie set on
//!   the first response. `"header"`: the stable hash of the `sticky_header` request header (the
//!   client IP when it is missing). `"client_ip"`: the stable hash of the client IP. `"none"`: a
//!   fresh random draw per request.
//! - `sticky_header`: required with, and only with, `sticky = "header"`.
//! - `cookie`: the sticky cookie's name. Default: `switchyard_split_` and 8 hex digits hashed
//!   from the variants' names and targets (not their weights, not their order) and the `salt`
//!   when one is set. So splits with the same variants (on other routes, or after a ramp) share
//!   one cookie and keep a client in the same variant site-wide, while splits with other
//!   variants get their own cookie and never overwrite each other's. Adding, removing, renaming
//!   or re-targeting a variant gives a new default name, so every client is assigned afresh; set
//!   `cookie` to keep one name across such edits. Splits sharing a cookie must also share their
//!   `cookie_secret`, or each refuses the other's cookie and replaces it: give splits with
//!   different secrets their own `cookie`.
//! - `cookie_max_age` (seconds, > 0): the sticky cookie's lifetime.
//! - `cookie_secret`: the HMAC key that signs the sticky cookie. Without it the key is derived
//!   from the salt and the variants' names and targets: instances, reloads and weight edits agree
//!   on it, so a canary ramp keeps every client in its variant (except the clients of a variant
//!   whose weight drops to 0, which move). Any other variant edit changes the key. But that key
//!   comes from the configuration alone: anyone who knows or guesses the variants can compute it
//!   and forge a cookie for the variant they want. **When clients must not be able to choose
//!   their variant, set `cookie_secret`** (the same on every instance) **and disable the
//!   overrides** below. With a secret, only the secret and the salt sign the cookie.
//! - `override_header`, `override_cookie`: a request carrying one of them with a variant's name is
//!   put in that variant, whatever its weight, and gets no sticky cookie. Meant for testers and
//!   QA; `""` disables each. Leave them on only if any client may pick any variant.
//! - `response_header`: when set, responses carry this header with the variant's name.
//! - `salt`: mixed into the stable hash and the cookie's MAC, so two splits bucket the same
//!   client independently. Default: the cookie name, so splits sharing a cookie also bucket a
//!   client alike under `sticky = "header"` or `"client_ip"`; give splits their own salt to make
//!   them independent.
//!
//! # Decision order
//!
//! 1. An override naming an existing variant.
//! 2. `sticky = "cookie"`: a cookie with a valid MAC naming a variant of weight > 0; otherwise
//!    (absent, malformed, tampered, or its variant's weight is now 0) a random draw by weight and
//!    a fresh `Set-Cookie`. Dropping a variant's weight to 0 therefore moves all its clients.
//! 3. `sticky = "header"` / `"client_ip"`: `stable_hash(salt, key) mod total weight`, mapped onto
//!    the weights laid end to end. No client IP at all means a random draw.
//! 4. `sticky = "none"`: a random draw by weight.
//!
//! Each decision counts one on the plugin counter `variant_<name>`; an ignored sticky cookie also
//! counts on `cookie_reassigned`.

mod assign;
mod config;
mod cookie;

use switchyard_sdk::{
    LogLevel, RequestHead, ResponseFilter, ResponseHead, SPLIT_VARIANT_CONTEXT_KEY, Split, SplitChoice, export_plugin,
    host,
};

use crate::assign::{Draws, Variant};
use crate::config::{SplitConfig, Stickiness};
use switchyard_sdk::cookies::cookie_values;

/// Context key under which `choose` leaves what the response side needs: the chosen variant's
/// name, followed by [`ISSUE_COOKIE`] when the client must be given a fresh sticky cookie. Set
/// only when the response side has something to do (a cookie to issue, or `response_header`).
/// [`SPLIT_VARIANT_CONTEXT_KEY`] holds the name too, but later plugins may write there; this key
/// is the split's own. One key rather than two saves a call into the host per request.
pub const RESPONSE_CONTEXT_KEY: &str = "split.response";

/// The suffix of a [`RESPONSE_CONTEXT_KEY`] value asking for a fresh sticky cookie (variant names
/// have no spaces).
pub const ISSUE_COOKIE: &str = " +cookie";

/// What `choose` left for the response side: the variant's name, and whether to issue a cookie.
fn response_note(value: &str) -> (&str, bool) {
    match value.strip_suffix(ISSUE_COOKIE) {
        Some(name) => (name, true),
        None => (value, false),
    }
}

/// The A/B split, configured; see the crate documentation.
#[derive(Debug)]
pub struct AbSplit {
    config: SplitConfig,
    /// Whether `choose` looks at cookies at all, so requests of a cookie-less split do not copy
    /// their `Cookie` headers out of the host.
    reads_cookies: bool,
    /// The random draws of `sticky = "cookie"` and `"none"`.
    draws: Draws,
}

impl AbSplit {
    fn from_config(config: &str) -> Result<Self, String> {
        let config = SplitConfig::parse(config)?;
        let reads_cookies = config.override_cookie.is_some() || matches!(config.stickiness, Stickiness::Cookie(_));
        Ok(AbSplit { config, reads_cookies, draws: Draws::seeded() })
    }

    /// The variant an override header or cookie names, if it names one that exists.
    fn overridden(&self, req: &dyn RequestHead, cookies: &[String]) -> Option<&Variant> {
        let variants = &self.config.variants;
        if let Some(header) = &self.config.override_header
            && let Some(variant) = req.header_all(header).iter().find_map(|value| variants.by_name(value.trim()))
        {
            return Some(variant);
        }
        let name = self.config.override_cookie.as_deref()?;
        cookie_values(cookies, name).find_map(|value| variants.by_name(value))
    }

    /// The variant the stickiness mode gives a request without an override, and whether the
    /// client must be given a fresh sticky cookie for it.
    fn assigned(&self, req: &dyn RequestHead, cookies: &[String]) -> Option<(&Variant, bool)> {
        let variants = &self.config.variants;
        match &self.config.stickiness {
            Stickiness::Cookie(sticky) => {
                let mut had_cookie = false;
                for value in cookie_values(cookies, sticky.name()) {
                    had_cookie = true;
                    let kept = sticky.verified_variant(value).and_then(|name| variants.by_name(name));
                    if let Some(variant) = kept.filter(|v| v.weight > 0) {
                        return Some((variant, false));
                    }
                }
                if had_cookie {
                    host::counter_add("cookie_reassigned", 1);
                }
                Some((variants.random(&self.draws)?, true))
            }
            Stickiness::Header(header) => match req.header(header) {
                Some(value) if !value.trim().is_empty() => variants.by_key(&self.config.salt, value.trim()),
                _ => self.by_client_ip(req),
            }
            .map(|v| (v, false)),
            Stickiness::ClientIp => self.by_client_ip(req).map(|v| (v, false)),
            Stickiness::None => variants.random(&self.draws).map(|v| (v, false)),
        }
    }

    /// The client IP's variant; a random draw when the host does not know the IP, since hashing
    /// the empty string would put every such client in one variant.
    fn by_client_ip(&self, req: &dyn RequestHead) -> Option<&Variant> {
        let ip = req.client_ip();
        if ip.is_empty() {
            self.config.variants.random(&self.draws)
        } else {
            self.config.variants.by_key(&self.config.salt, &ip)
        }
    }
}

impl Split for AbSplit {
    fn configure(config: &str) -> Result<Self, String> {
        AbSplit::from_config(config)
    }

    /// Runs after routing for requests of a route using this split. Returns the variant's tag
    /// or upstream — always some once configured — and records the variant's name in the
    /// request context and on the `variant_<name>` counter.
    fn choose(&self, req: &dyn RequestHead, _upstream: &str) -> Option<SplitChoice> {
        let cookies = if self.reads_cookies { req.header_all("cookie") } else { Vec::new() };
        let (variant, issue_cookie) = match self.overridden(req, &cookies) {
            Some(variant) => (variant, false),
            None => self.assigned(req, &cookies)?,
        };
        // The host keeps this name (it writes the tag or upstream there only for splits that
        // leave the key unset), for later plugins and the log.
        req.set_context(SPLIT_VARIANT_CONTEXT_KEY, &variant.name);
        if issue_cookie {
            req.set_context(RESPONSE_CONTEXT_KEY, &variant.issue_cookie_note);
        } else if self.config.response_header.is_some() {
            req.set_context(RESPONSE_CONTEXT_KEY, &variant.name);
        }
        host::counter_add(&variant.counter, 1);
        Some(variant.target.choice())
    }
}

impl ResponseFilter for AbSplit {
    fn configure(config: &str) -> Result<Self, String> {
        AbSplit::from_config(config)
    }

    /// Runs first in the response chain of the routes using this split. Appends the sticky
    /// cookie `choose` asked for (with `Secure` when the client came over HTTPS), and sets
    /// `response_header` to the variant's name; does nothing for a request `choose` did not see.
    /// A header the host refuses is logged, never fatal.
    fn on_response(&self, req: &dyn RequestHead, resp: &dyn ResponseHead) {
        let note = req.context(RESPONSE_CONTEXT_KEY);
        // Without a note, only the response header may still name a variant `choose` saw.
        let seen = match note {
            None if self.config.response_header.is_some() => req.context(SPLIT_VARIANT_CONTEXT_KEY),
            _ => None,
        };
        let (name, issue_cookie) = match (&note, &seen) {
            (Some(note), _) => response_note(note),
            (None, Some(seen)) => (seen.as_str(), false),
            (None, None) => return,
        };
        if issue_cookie && let Stickiness::Cookie(sticky) = &self.config.stickiness {
            let secure = req.scheme().eq_ignore_ascii_case("https");
            if let Err(e) = resp.append_header("set-cookie", &sticky.set_cookie(name, secure)) {
                host::log(LogLevel::Warn, &format!("cannot add the sticky cookie: {e}"));
            }
        }
        if let Some(header) = &self.config.response_header
            && let Err(e) = resp.set_header(header, name)
        {
            host::log(LogLevel::Warn, &format!("cannot set {header}: {e}"));
        }
    }
}

export_plugin!(AbSplit: split, response_filter);
// The declaration covers the router and filter roles only: `choose` draws at random and counts,
// and splits are always called. The response side depends on nothing but the context values
// `choose` left and the configuration, so the proxy may add the same cookie and header again from
// memory for responses whose requests carry the same values.
switchyard_sdk::declare_deterministic!();

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testkit::{TestRequest, TestResponse, reset_test_host};

    const CANARY: &str = r#"{"variants": [{"name": "a", "tag": "a", "weight": 90},
                                          {"name": "b", "upstream": "api-v2", "weight": 10}]"#;

    /// `CANARY` with more keys: `canary(r#""sticky": "none""#)`.
    fn canary(extra: &str) -> String {
        if extra.is_empty() { format!("{CANARY}}}") } else { format!("{CANARY}, {extra}}}") }
    }

    fn split(config: &str) -> AbSplit {
        <AbSplit as Split>::configure(config).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `choose` and returns the variant name it recorded.
    fn variant(split: &AbSplit, req: &TestRequest) -> String {
        assert!(split.choose(req, "api").is_some(), "no choice");
        req.context(SPLIT_VARIANT_CONTEXT_KEY).unwrap_or_else(|| panic!("no variant recorded"))
    }

    /// Whether `choose` asked the response side to issue a sticky cookie for `req`.
    fn issues_cookie(req: &TestRequest) -> bool {
        req.context(RESPONSE_CONTEXT_KEY).is_some_and(|note| response_note(&note).1)
    }

    /// Runs the response filter over a fresh 200 and returns its `set-cookie` values.
    fn set_cookies(split: &AbSplit, req: &TestRequest) -> Vec<String> {
        let resp = TestResponse::new(200);
        split.on_response(req, &resp);
        resp.headers().into_iter().filter(|(n, _)| n == "set-cookie").map(|(_, v)| v).collect()
    }

    /// `name=value` of a `Set-Cookie` line, as a browser sends it back.
    fn cookie_pair(set_cookie: &str) -> String {
        set_cookie.split(';').next().unwrap_or_default().to_string()
    }

    /// The name of a `name=value` cookie pair.
    fn cookie_name(pair: &str) -> &str {
        pair.split_once('=').map_or(pair, |(name, _)| name)
    }

    fn assert_share(count: usize, total: usize, percent: f64) {
        let share = 100.0 * count as f64 / total as f64;
        assert!((share - percent).abs() <= 2.0, "{count}/{total} = {share:.2}% is not within 2 points of {percent}%");
    }

    /// A fresh client of a cookie split: its variant and the cookie pair it was given.
    fn new_client(split: &AbSplit) -> (String, String) {
        let req = TestRequest::get("/");
        let name = variant(split, &req);
        let issued = set_cookies(split, &req);
        assert_eq!(issued.len(), 1, "a new client gets exactly one cookie: {issued:?}");
        (name, cookie_pair(&issued[0]))
    }

    fn client_in(split: &AbSplit, wanted: &str) -> String {
        (0..200)
            .map(|_| new_client(split))
            .find(|(name, _)| name == wanted)
            .map(|(_, cookie)| cookie)
            .unwrap_or_else(|| panic!("no client landed in {wanted} in 200 tries"))
    }

    #[test]
    fn weighted_random_splits_90_10() {
        reset_test_host();
        let s = split(&canary(r#""sticky": "none""#));
        let mut b = 0;
        for _ in 0..10_000 {
            let req = TestRequest::get("/");
            match s.choose(&req, "api") {
                Some(SplitChoice::Tag(tag)) if tag == "a" => {}
                Some(SplitChoice::Upstream(name)) if name == "api-v2" => b += 1,
                other => panic!("unexpected choice {other:?}"),
            }
            assert!(!issues_cookie(&req), "sticky = none sets no cookie");
        }
        assert_share(b, 10_000, 10.0);
        let host = reset_test_host();
        assert_eq!(host.counters.get("variant_b"), Some(&(b as u64)));
        assert_eq!(host.counters.get("variant_a"), Some(&(10_000 - b as u64)));
    }

    #[test]
    fn new_cookie_clients_are_assigned_90_10() {
        reset_test_host();
        let s = split(&canary(""));
        let b = (0..10_000).filter(|_| new_client(&s).0 == "b").count();
        assert_share(b, 10_000, 10.0);
    }

    #[test]
    fn a_tag_switch_sends_everything_to_the_first_and_overrides_still_reach_the_other() {
        reset_test_host();
        let s = split(r#"{"variants": [{"tag": "blue", "weight": 100}, {"tag": "green", "weight": 0}]}"#);
        for _ in 0..1000 {
            assert_eq!(s.choose(&TestRequest::get("/"), "api"), Some(SplitChoice::Tag("blue".into())));
        }
        let by_header = TestRequest::get("/").with_header("X-Switchyard-Variant", " green ");
        assert_eq!(s.choose(&by_header, "api"), Some(SplitChoice::Tag("green".into())));
        let by_cookie = TestRequest::get("/").with_header("cookie", "a=1; switchyard_variant=green");
        assert_eq!(s.choose(&by_cookie, "api"), Some(SplitChoice::Tag("green".into())));
        for forced in [&by_header, &by_cookie] {
            assert_eq!(forced.context(SPLIT_VARIANT_CONTEXT_KEY).as_deref(), Some("green"));
            assert!(!issues_cookie(forced), "an override must not stick");
            assert!(set_cookies(&s, forced).is_empty());
        }
        // An override naming no variant is ignored.
        let unknown = TestRequest::get("/").with_header("x-switchyard-variant", "purple");
        assert_eq!(s.choose(&unknown, "api"), Some(SplitChoice::Tag("blue".into())));
        assert!(issues_cookie(&unknown));
    }

    #[test]
    fn an_override_beats_a_valid_sticky_cookie() {
        reset_test_host();
        let s = split(r#"{"variants": [{"tag": "a"}, {"tag": "b"}], "cookie_secret": "s"}"#);
        let cookie = client_in(&s, "a");
        let req = TestRequest::get("/").with_header("cookie", &cookie).with_header("x-switchyard-variant", "b");
        assert_eq!(variant(&s, &req), "b");
    }

    #[test]
    fn disabled_overrides_are_ignored() {
        reset_test_host();
        let s = split(
            r#"{"variants": [{"tag": "blue", "weight": 1}, {"tag": "green", "weight": 0}],
                "override_header": "", "override_cookie": ""}"#,
        );
        let req = TestRequest::get("/")
            .with_header("x-switchyard-variant", "green")
            .with_header("cookie", "switchyard_variant=green");
        assert_eq!(s.choose(&req, "api"), Some(SplitChoice::Tag("blue".into())));
    }

    #[test]
    fn the_cookie_from_a_response_keeps_a_client_in_its_variant() {
        reset_test_host();
        // 50/50, so staying put 100 times in a row cannot happen by chance.
        let s = split(r#"{"variants": [{"tag": "a"}, {"upstream": "api-v2", "name": "b"}]}"#);
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let (first, cookie) = new_client(&s);
            for i in 0..100 {
                let req = if i % 2 == 0 {
                    TestRequest::get("/").with_header("cookie", &format!("theme=dark;  {cookie} ;lang=en"))
                } else {
                    // Browsers may also spread cookies over several headers.
                    TestRequest::get("/").with_header("cookie", "theme=dark").with_header("Cookie", &cookie)
                };
                assert_eq!(variant(&s, &req), first, "request {i} left {first}");
                assert!(!issues_cookie(&req));
                assert!(set_cookies(&s, &req).is_empty(), "a kept client is not sent the cookie again");
            }
            if !seen.contains(&first) {
                seen.push(first);
            }
        }
        assert_eq!(reset_test_host().counters.get("cookie_reassigned"), None);
    }

    #[test]
    fn tampered_cookies_are_ignored_and_replaced() {
        reset_test_host();
        let s = split(r#"{"variants": [{"tag": "a"}, {"tag": "b"}]}"#);
        let cookie = client_in(&s, "a");
        let name = cookie_name(&cookie);
        let (_, mac) = cookie.rsplit_once('.').unwrap_or_else(|| panic!("no mac in {cookie}"));
        let flipped_mac = format!("{}{}", if mac.starts_with('0') { '1' } else { '0' }, &mac[1..]);
        let tampered = [
            format!("{name}=b.{mac}"),
            format!("{name}=a.{flipped_mac}"),
            format!("{name}=garbage"),
            format!("{name}="),
            format!("{name}=c.0123456789abcdef0123456789abcdef"),
        ];
        for bad in &tampered {
            let req = TestRequest::get("/").with_header("cookie", bad);
            let name = variant(&s, &req);
            let issued = set_cookies(&s, &req);
            assert_eq!(issued.len(), 1, "{bad} got no fresh cookie");
            let fresh = cookie_pair(&issued[0]);
            assert_ne!(&fresh, bad);
            // The fresh cookie is valid and names the variant just chosen.
            let back = TestRequest::get("/").with_header("cookie", &fresh);
            assert_eq!(variant(&s, &back), name);
            assert!(!issues_cookie(&back));
        }
        assert_eq!(reset_test_host().counters.get("cookie_reassigned"), Some(&(tampered.len() as u64)));
    }

    #[test]
    fn a_cookie_signed_with_another_secret_is_ignored() {
        reset_test_host();
        let config =
            |secret: &str| format!(r#"{{"variants": [{{"tag": "a"}}, {{"tag": "b"}}], "cookie_secret": "{secret}"}}"#);
        let one = split(&config("one"));
        let two = split(&config("two"));
        let cookie = client_in(&one, "a");
        let req = TestRequest::get("/").with_header("cookie", &cookie);
        two.choose(&req, "api");
        assert!(issues_cookie(&req), "a foreign cookie was accepted");
        // The same secret in another instance, even after a config edit, accepts it.
        let edited = split(r#"{"variants": [{"tag": "a", "weight": 3}, {"tag": "b"}], "cookie_secret": "one"}"#);
        for instance in [&one, &edited] {
            let req = TestRequest::get("/").with_header("cookie", &cookie);
            assert_eq!(variant(instance, &req), "a");
            assert!(!issues_cookie(&req));
        }
    }

    /// Whether `split` keeps a client sending `cookies` in `expected` without reissuing a cookie.
    fn keeps(split: &AbSplit, cookies: &str, expected: &str) -> bool {
        let req = TestRequest::get("/").with_header("cookie", cookies);
        variant(split, &req) == expected && !issues_cookie(&req)
    }

    #[test]
    fn without_a_secret_a_weight_edit_keeps_every_sticky_client() {
        reset_test_host();
        let text = r#"{"variants": [{"tag": "a", "weight": 90}, {"tag": "b", "weight": 10}]}"#;
        let cookie = client_in(&split(text), "b");
        // Pooled instances and reloads of the same text accept each other's cookies.
        assert!(keeps(&split(text), &cookie, "b"));
        // A canary ramp, a reordered list, an unrelated key: the client stays in b.
        for edited in [
            r#"{"variants": [{"tag": "a", "weight": 80}, {"tag": "b", "weight": 20}]}"#,
            r#"{"variants": [{"tag": "b", "weight": 50}, {"tag": "a", "weight": 50}]}"#,
            r#"{"variants": [{"tag": "a", "weight": 90}, {"tag": "b", "weight": 10}], "response_header": "x-v"}"#,
        ] {
            assert!(keeps(&split(edited), &cookie, "b"), "{edited} moved the client");
        }
        assert_eq!(reset_test_host().counters.get("cookie_reassigned"), None);
    }

    #[test]
    fn without_a_secret_renaming_a_variant_reassigns_the_clients() {
        reset_test_host();
        let cookie = client_in(&split(r#"{"variants": [{"tag": "a"}, {"tag": "b"}], "cookie": "exp"}"#), "a");
        // Same cookie name, but b is now called c: the key changed, so even a's cookie is refused.
        let renamed = split(r#"{"variants": [{"tag": "a"}, {"name": "c", "tag": "b"}], "cookie": "exp"}"#);
        let req = TestRequest::get("/").with_header("cookie", &cookie);
        renamed.choose(&req, "api");
        assert!(issues_cookie(&req), "a cookie of the old variants was accepted");
        assert_eq!(reset_test_host().counters.get("cookie_reassigned"), Some(&1));
    }

    #[test]
    fn splits_with_other_variants_keep_their_own_cookies_side_by_side() {
        reset_test_host();
        let checkout = split(r#"{"variants": [{"tag": "a"}, {"tag": "b"}]}"#);
        let search = split(r#"{"variants": [{"tag": "old"}, {"tag": "new"}]}"#);
        let (checkout_cookie, search_cookie) = (client_in(&checkout, "b"), client_in(&search, "new"));
        assert_ne!(cookie_name(&checkout_cookie), cookie_name(&search_cookie));
        // The browser sends both cookies to both routes; neither split disturbs the other's.
        let both = format!("{checkout_cookie}; {search_cookie}");
        for _ in 0..20 {
            assert!(keeps(&checkout, &both, "b"));
            assert!(keeps(&search, &both, "new"));
        }
        // A split with the same variants on another route shares the cookie (and the client's
        // variant), whatever its weights.
        let elsewhere = split(r#"{"variants": [{"tag": "a", "weight": 3}, {"tag": "b", "weight": 1}]}"#);
        assert!(keeps(&elsewhere, &both, "b"));
        assert_eq!(reset_test_host().counters.get("cookie_reassigned"), None);
    }

    #[test]
    fn a_cookie_for_a_variant_whose_weight_dropped_to_zero_is_reassigned() {
        reset_test_host();
        let before = split(r#"{"variants": [{"tag": "a"}, {"tag": "b"}], "cookie_secret": "s"}"#);
        let cookie = client_in(&before, "b");
        let after = split(r#"{"variants": [{"tag": "a"}, {"tag": "b", "weight": 0}], "cookie_secret": "s"}"#);
        let req = TestRequest::get("/").with_header("cookie", &cookie);
        assert_eq!(variant(&after, &req), "a");
        let issued = set_cookies(&after, &req);
        assert_eq!(issued.len(), 1);
        // The same cookie (a weight edit keeps the name), now naming a.
        assert!(issued[0].starts_with(&format!("{}=a.", cookie_name(&cookie))), "{issued:?}");
    }

    #[test]
    fn header_stickiness_is_stable_per_value_and_splits_90_10() {
        reset_test_host();
        let s = split(&canary(r#""sticky": "header", "sticky_header": "x-user""#));
        let of = |user: &str| variant(&s, &TestRequest::get("/").with_header("X-User", user));
        for user in ["alice", "bob", "carol", "dave"] {
            let first = of(user);
            assert!((0..100).all(|_| of(user) == first), "{user} moved");
        }
        let b = (0..10_000).filter(|i| of(&format!("user-{i}")) == "b").count();
        assert_share(b, 10_000, 10.0);
        // No cookie business in header mode.
        let req = TestRequest::get("/").with_header("x-user", "alice");
        s.choose(&req, "api");
        assert!(set_cookies(&s, &req).is_empty());
    }

    #[test]
    fn header_stickiness_falls_back_to_the_client_ip() {
        reset_test_host();
        let s = split(&canary(r#""sticky": "header", "sticky_header": "x-user""#));
        let by_ip = split(&canary(r#""sticky": "client_ip""#));
        // Both hash under the default salt, so a missing header must give the IP's variant.
        let mut seen = Vec::new();
        for i in 0..200 {
            let ip = format!("192.0.2.{i}");
            let without_header = variant(&s, &TestRequest::get("/").with_client_ip(&ip));
            assert_eq!(without_header, variant(&by_ip, &TestRequest::get("/").with_client_ip(&ip)));
            let blank_header = TestRequest::get("/").with_client_ip(&ip).with_header("x-user", "  ");
            assert_eq!(variant(&s, &blank_header), without_header);
            if !seen.contains(&without_header) {
                seen.push(without_header);
            }
        }
        assert_eq!(seen.len(), 2, "200 addresses all landed in {seen:?}");
    }

    #[test]
    fn client_ip_stickiness_is_stable_per_address_and_splits_90_10() {
        reset_test_host();
        let s = split(&canary(r#""sticky": "client_ip""#));
        let of = |ip: &str| variant(&s, &TestRequest::get("/").with_client_ip(ip));
        for ip in ["10.0.0.1", "2001:db8::1", "203.0.113.9"] {
            let first = of(ip);
            assert!((0..100).all(|_| of(ip) == first), "{ip} moved");
        }
        let b =
            (0..10_000u32).filter(|i| of(&format!("10.{}.{}.{}", i >> 16, (i >> 8) & 0xff, i & 0xff)) == "b").count();
        assert_share(b, 10_000, 10.0);
    }

    #[test]
    fn different_salts_bucket_the_same_clients_independently() {
        reset_test_host();
        let with_salt = |salt: &str| {
            split(&format!(
                r#"{{"variants": [{{"tag": "a"}}, {{"tag": "b"}}], "sticky": "client_ip", "salt": "{salt}"}}"#
            ))
        };
        let (first, second) = (with_salt("checkout-test"), with_salt("search-test"));
        let agree = (0..10_000)
            .filter(|i| {
                let ip = format!("198.51.{}.{}", i / 256, i % 256);
                variant(&first, &TestRequest::get("/").with_client_ip(&ip))
                    == variant(&second, &TestRequest::get("/").with_client_ip(&ip))
            })
            .count();
        // Independent 50/50 splits agree on about half the clients; equal salts would agree on all.
        assert_share(agree, 10_000, 50.0);
    }

    #[test]
    fn the_response_filter_adds_the_cookie_only_on_assignment_and_names_the_variant() {
        reset_test_host();
        let s = split(
            r#"{"variants": [{"name": "control", "tag": "a", "weight": 1}, {"name": "new", "tag": "b", "weight": 0}],
                "response_header": "x-variant", "cookie_secret": "s"}"#,
        );
        let first = TestRequest::get("/");
        assert_eq!(s.choose(&first, "api"), Some(SplitChoice::Tag("a".into())));
        // A later plugin writes over split.variant; the header still names the variant.
        first.set_context(SPLIT_VARIANT_CONTEXT_KEY, "a");
        let resp = TestResponse::new(200).with_header("set-cookie", "session=1");
        s.on_response(&first, &resp);
        let issued: Vec<_> = resp.headers().into_iter().filter(|(n, _)| n == "set-cookie").map(|(_, v)| v).collect();
        assert_eq!(issued.len(), 2, "the upstream's own cookie must survive: {issued:?}");
        assert_eq!(issued[0], "session=1");
        assert!(issued[1].starts_with("switchyard_split_") && issued[1].contains("=control."), "{issued:?}");
        assert_eq!(resp.header("x-variant").as_deref(), Some("control"));

        let returning = TestRequest::get("/").with_header("cookie", &cookie_pair(&issued[1]));
        s.choose(&returning, "api");
        let resp = TestResponse::new(200);
        s.on_response(&returning, &resp);
        assert_eq!(resp.header("set-cookie"), None);
        assert_eq!(resp.header("x-variant").as_deref(), Some("control"));

        let forced = TestRequest::get("/").with_header("x-switchyard-variant", "new");
        s.choose(&forced, "api");
        let resp = TestResponse::new(200);
        s.on_response(&forced, &resp);
        assert_eq!(resp.header("set-cookie"), None);
        assert_eq!(resp.header("x-variant").as_deref(), Some("new"));
    }

    #[test]
    fn the_response_filter_adds_no_header_unless_configured_or_chosen() {
        reset_test_host();
        let quiet = split(&canary(r#""sticky": "none""#));
        let req = TestRequest::get("/");
        quiet.choose(&req, "api");
        let resp = TestResponse::new(200);
        quiet.on_response(&req, &resp);
        assert!(resp.headers().is_empty(), "{:?}", resp.headers());
        // A request the split never saw (say the split trapped) passes untouched.
        let loud = split(&canary(r#""response_header": "x-variant""#));
        let resp = TestResponse::new(502);
        loud.on_response(&TestRequest::get("/"), &resp);
        assert!(resp.headers().is_empty(), "{:?}", resp.headers());
    }

    #[test]
    fn the_cookie_is_secure_only_over_https() {
        reset_test_host();
        let s = split(&canary(r#""cookie_max_age": 600"#));
        let plain = TestRequest::get("/");
        s.choose(&plain, "api");
        let plain = set_cookies(&s, &plain);
        assert_eq!(plain.len(), 1);
        assert!(plain[0].ends_with("; Path=/; Max-Age=600; HttpOnly; SameSite=Lax"), "{plain:?}");
        let tls = TestRequest::get("/").with_scheme("https");
        s.choose(&tls, "api");
        let tls = set_cookies(&s, &tls);
        assert_eq!(tls.len(), 1);
        assert!(tls[0].ends_with("; Path=/; Max-Age=600; HttpOnly; SameSite=Lax; Secure"), "{tls:?}");
    }

    #[test]
    fn both_roles_reject_a_bad_config_with_its_reason() {
        let bad = r#"{"variants": [{"tag": "a", "upstream": "b"}]}"#;
        for error in [<AbSplit as Split>::configure(bad).err(), <AbSplit as ResponseFilter>::configure(bad).err()] {
            let error = error.unwrap_or_else(|| panic!("accepted {bad}"));
            assert!(error.contains("variants[0]") && error.contains("not both"), "{error}");
        }
    }
}
