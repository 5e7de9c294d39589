//! The split's JSON configuration: the file format ([`RawConfig`]), its validation, and the
//! checked model the plugin runs on ([`SplitConfig`]).
//!
//! Shape errors (an unknown key, a wrong type) come from serde and stop at the first one; every
//! rule beyond the shape is checked afterwards and all broken rules are reported together.

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::assign::{Target, Variant, VariantTable};
use crate::cookie::StickyCookie;
use switchyard_sdk::stable_hash::stable_hash;

/// The default cookie name is this prefix and 8 hex digits naming the variants.
const DEFAULT_COOKIE_PREFIX: &str = "switchyard_split_";
/// Separates the default signing key from any other use of the same inputs.
const DEFAULT_KEY_CONTEXT: &str = "switchyard split cookie key v1";
const DEFAULT_COOKIE_MAX_AGE: u64 = 30 * 24 * 60 * 60;
const DEFAULT_OVERRIDE_HEADER: &str = "x-switchyard-variant";
const DEFAULT_OVERRIDE_COOKIE: &str = "switchyard_variant";

/// The configuration as written; see the crate documentation for every key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Optional in the format only so that its absence gets an error saying how to write it.
    #[serde(default)]
    variants: Option<Vec<RawVariant>>,
    #[serde(default)]
    sticky: Sticky,
    #[serde(default)]
    sticky_header: Option<String>,
    #[serde(default)]
    cookie: Option<String>,
    #[serde(default = "default_cookie_max_age")]
    cookie_max_age: u64,
    #[serde(default)]
    cookie_secret: Option<String>,
    #[serde(default = "default_override_header")]
    override_header: String,
    #[serde(default = "default_override_cookie")]
    override_cookie: String,
    #[serde(default)]
    response_header: Option<String>,
    #[serde(default)]
    salt: Option<String>,
}

/// One variant as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariant {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    upstream: Option<String>,
    /// A JSON number rather than `u32`, so a negative or fractional weight gets an error that
    /// names the variant and the key instead of serde's bare "expected u32".
    #[serde(default)]
    weight: Option<serde_json::Number>,
}

/// What keeps a client in its variant from one request to the next.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Sticky {
    #[default]
    Cookie,
    Header,
    ClientIp,
    None,
}

fn default_cookie_max_age() -> u64 {
    DEFAULT_COOKIE_MAX_AGE
}
fn default_override_header() -> String {
    DEFAULT_OVERRIDE_HEADER.to_string()
}
fn default_override_cookie() -> String {
    DEFAULT_OVERRIDE_COOKIE.to_string()
}

/// How a client without an override is put into a variant.
#[derive(Debug)]
pub enum Stickiness {
    /// A signed cookie remembers the variant; new clients are assigned at random by weight.
    Cookie(StickyCookie),
    /// The stable hash of this request header's value picks the variant (the client IP when the
    /// header is missing).
    Header(String),
    /// The stable hash of the client IP picks the variant.
    ClientIp,
    /// Every request is assigned at random by weight.
    None,
}

/// The checked configuration.
#[derive(Debug)]
pub struct SplitConfig {
    /// The variants with their weights.
    pub variants: VariantTable,
    /// How clients stay in their variant.
    pub stickiness: Stickiness,
    /// Mixed into the stable hash so different splits bucket the same client independently.
    pub salt: String,
    /// A request header naming the variant to force, if enabled.
    pub override_header: Option<String>,
    /// A request cookie naming the variant to force, if enabled.
    pub override_cookie: Option<String>,
    /// A response header that reports the chosen variant, if enabled.
    pub response_header: Option<String>,
}

impl SplitConfig {
    /// Parses and checks the JSON configuration `config`.
    pub fn parse(config: &str) -> Result<Self, String> {
        let raw: RawConfig = switchyard_sdk::parse_config(config)?;
        raw.check().map_err(|problems| format!("invalid split config: {}", problems.join("; ")))
    }
}

/// The variants' identity: each one's name, target kind and target, sorted, every field
/// length-prefixed (`1:a3:tag1:a1:b3:tag1:b`) so no two different lists give the same text.
/// Weights are left out on purpose, so a ramp (10% → 20%) keeps the default cookie name and key
/// and with them every sticky client; the order is left out so reordering the list does too.
fn variant_identity(variants: &VariantTable) -> String {
    let mut entries: Vec<[&str; 3]> =
        variants.iter().map(|v| [v.name.as_str(), v.target.kind(), v.target.value()]).collect();
    entries.sort_unstable();
    let mut identity = String::new();
    for field in entries.iter().flatten() {
        identity.push_str(&field.len().to_string());
        identity.push(':');
        identity.push_str(field);
    }
    identity
}

/// `switchyard_split_` and 8 hex digits of the variants' identity and the explicit `salt`, if
/// any: splits with the same variants share their cookie (a client keeps its variant across
/// routes), splits with other variants never overwrite each other's. The salt is in because the
/// MAC binds it: two splits with different salts would refuse each other's cookie and keep
/// replacing it. (The secret is not: even a short hash of it in a public name would let anyone
/// test guesses of a weak secret.)
fn default_cookie_name(identity: &str, salt: Option<&str>) -> String {
    let key = match salt {
        None => identity.to_string(),
        Some(salt) => format!("{}:{salt}{identity}", salt.len()),
    };
    format!("{DEFAULT_COOKIE_PREFIX}{:08x}", stable_hash(DEFAULT_COOKIE_PREFIX, &key) >> 32)
}

/// The signing key without `cookie_secret`: SHA-256 of the salt and the variants' identity.
/// Instances and reloads with the same variants agree on it whatever the weights; but it is
/// derived from the configuration, so whoever knows the variants can forge a cookie.
fn default_cookie_key(salt: &str, identity: &str) -> Vec<u8> {
    let mut hash = Sha256::new();
    for part in [DEFAULT_KEY_CONTEXT, salt, identity] {
        // Length-prefixed, so no two different inputs run together into the same bytes.
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize().to_vec()
}

impl RawConfig {
    /// Builds the model, or returns every rule the configuration breaks.
    fn check(self) -> Result<SplitConfig, Vec<String>> {
        let mut problems = Vec::new();
        let variants = match self.variants {
            Some(raw) => check_variants(raw, &mut problems),
            None => {
                problems.push(
                    "`variants` is missing: the split needs its variants, e.g. split = { variants = [{ tag = \"a\", \
                     weight = 90 }, { tag = \"b\", weight = 10 }] } on the route (a split given by name alone has \
                     none)"
                        .into(),
                );
                VariantTable::new(Vec::new())
            }
        };
        let identity = variant_identity(&variants);
        let cookie = self.cookie.unwrap_or_else(|| default_cookie_name(&identity, self.salt.as_deref()));

        let salt = self.salt.unwrap_or_else(|| cookie.clone());
        if self.sticky != Sticky::Header && self.sticky_header.is_some() {
            problems.push("\"sticky_header\" is only used with sticky = \"header\"".into());
        }
        let stickiness = match self.sticky {
            Sticky::Cookie => {
                let secret = match &self.cookie_secret {
                    Some(secret) => secret.as_bytes().to_vec(),
                    None => default_cookie_key(&salt, &identity),
                };
                match StickyCookie::new(
                    cookie.clone(),
                    self.cookie_max_age,
                    &secret,
                    &salt,
                    variants.iter().map(|v| v.name.as_str()),
                ) {
                    Ok(cookie) => Some(Stickiness::Cookie(cookie)),
                    Err(problem) => {
                        problems.push(problem);
                        None
                    }
                }
            }
            Sticky::Header => match self.sticky_header {
                Some(name) => {
                    check_header_name("sticky_header", &name, &mut problems);
                    Some(Stickiness::Header(name))
                }
                None => {
                    problems.push(
                        "sticky = \"header\" needs \"sticky_header\", the header that keys the assignment".into(),
                    );
                    None
                }
            },
            Sticky::ClientIp => Some(Stickiness::ClientIp),
            Sticky::None => Some(Stickiness::None),
        };

        check_cookie_name("cookie", &cookie, &mut problems);
        if self.cookie_max_age == 0 {
            problems.push("cookie_max_age must be above 0 (a Max-Age of 0 deletes the cookie at once)".into());
        }
        if self.cookie_secret.as_deref() == Some("") {
            problems.push("cookie_secret must not be empty; leave it out to derive one from the variants".into());
        }
        let override_header = enabled(self.override_header);
        if let Some(name) = &override_header {
            check_header_name("override_header", name, &mut problems);
        }
        let override_cookie = enabled(self.override_cookie);
        if let Some(name) = &override_cookie {
            check_cookie_name("override_cookie", name, &mut problems);
            if *name == cookie && self.sticky == Sticky::Cookie {
                problems.push(format!("override_cookie and cookie are both {name:?}; they must differ"));
            }
        }
        if let Some(name) = &self.response_header {
            check_header_name("response_header", name, &mut problems);
        }

        // A missing stickiness always comes with a problem, so this only returns early on problems.
        let (true, Some(stickiness)) = (problems.is_empty(), stickiness) else {
            return Err(problems);
        };
        Ok(SplitConfig {
            variants,
            stickiness,
            salt,
            override_header,
            override_cookie,
            response_header: self.response_header,
        })
    }
}

fn enabled(name: String) -> Option<String> {
    if name.is_empty() { None } else { Some(name) }
}

fn check_variants(raw: Vec<RawVariant>, problems: &mut Vec<String>) -> VariantTable {
    if raw.is_empty() {
        problems.push("variants: at least one variant is required".into());
    }
    let mut variants: Vec<Variant> = Vec::with_capacity(raw.len());
    for (index, variant) in raw.into_iter().enumerate() {
        let at = format!("variants[{index}]");
        let target = match (variant.tag, variant.upstream) {
            (Some(tag), None) => Target::Tag(tag),
            (None, Some(upstream)) => Target::Upstream(upstream),
            (Some(_), Some(_)) => {
                problems.push(format!("{at}: set exactly one of \"tag\" or \"upstream\", not both"));
                continue;
            }
            (None, None) => {
                problems.push(format!("{at}: set exactly one of \"tag\" or \"upstream\"; it has neither"));
                continue;
            }
        };
        let target_value = target.value().to_string();
        if target_value.is_empty() {
            problems.push(format!("{at}: the {} must not be empty", target.kind()));
            continue;
        }
        let name = variant.name.unwrap_or(target_value);
        let at = format!("{at} ({name:?})");
        if !is_cookie_value_safe(&name) {
            problems.push(format!(
                "{at}: a variant name must be non-empty visible ASCII without spaces, quotes, commas, semicolons \
                 or backslashes (it travels in a cookie and a header)"
            ));
        }
        if let Some(earlier) = variants.iter().position(|v| v.name == name) {
            problems.push(format!("{at}: the name is already used by variants[{earlier}]; names must be unique"));
        }
        let weight = match variant.weight {
            None => 1,
            Some(number) => match number.as_u64().and_then(|w| u32::try_from(w).ok()) {
                Some(weight) => weight,
                None => {
                    problems.push(format!("{at}: weight must be a whole number from 0 to {}, not {number}", u32::MAX));
                    0
                }
            },
        };
        variants.push(Variant::new(name, target, weight));
    }
    let table = VariantTable::new(variants);
    if table.total_weight() == 0 && !table.is_empty() {
        problems.push("variants: the total weight is 0; at least one variant needs a weight above 0".into());
    }
    table
}

/// An HTTP token (RFC 9110 `tchar`), which is what a header or cookie name must be.
fn is_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A cookie value without quoting (RFC 6265 `cookie-octet`), also safe in a header and a
/// metric name.
fn is_cookie_value_safe(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic() && !b"\",;\\".contains(&b))
}

fn check_header_name(key: &str, name: &str, problems: &mut Vec<String>) {
    if !is_token(name) {
        problems.push(format!("{key}: {name:?} is not a valid header name"));
    }
}

fn check_cookie_name(key: &str, name: &str, problems: &mut Vec<String>) {
    if !is_token(name) {
        problems.push(format!("{key}: {name:?} is not a valid cookie name"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(config: &str) -> String {
        match SplitConfig::parse(config) {
            Ok(_) => panic!("accepted {config}"),
            Err(e) => e,
        }
    }

    fn assert_rejected(config: &str, expected: &[&str]) {
        let error = rejected(config);
        for part in expected {
            assert!(error.contains(part), "error {error:?} does not mention {part:?}");
        }
    }

    #[test]
    fn defaults_fill_in_everything_but_the_variants() {
        let config = SplitConfig::parse(r#"{"variants": [{"tag": "a", "weight": 90}, {"upstream": "api-v2"}]}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        let a = config.variants.by_name("a").map(|v| (&v.target, v.weight));
        assert_eq!(a, Some((&Target::Tag("a".into()), 90)));
        let v2 = config.variants.by_name("api-v2").map(|v| (&v.target, v.weight));
        assert_eq!(v2, Some((&Target::Upstream("api-v2".into()), 1)));
        assert_eq!(config.variants.total_weight(), 91);
        let cookie_name = default_cookie_name(&variant_identity(&config.variants), None);
        assert!(cookie_name.starts_with("switchyard_split_") && cookie_name.len() == "switchyard_split_".len() + 8);
        assert_eq!(config.salt, cookie_name, "the salt defaults to the cookie name");
        assert_eq!(config.override_header.as_deref(), Some("x-switchyard-variant"));
        assert_eq!(config.override_cookie.as_deref(), Some("switchyard_variant"));
        assert_eq!(config.response_header, None);
        match &config.stickiness {
            Stickiness::Cookie(cookie) => {
                let set_cookie = cookie.set_cookie("a", false);
                assert!(set_cookie.starts_with(&format!("{cookie_name}=a.")), "{set_cookie}");
                assert!(set_cookie.contains("; Max-Age=2592000;"), "{set_cookie}");
            }
            other => panic!("default stickiness is {other:?}"),
        }
    }

    #[test]
    fn empty_override_names_disable_the_overrides() {
        let config =
            SplitConfig::parse(r#"{"variants": [{"tag": "a"}], "override_header": "", "override_cookie": ""}"#)
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.override_header, None);
        assert_eq!(config.override_cookie, None);
    }

    #[test]
    fn rejects_a_missing_or_empty_variant_list() {
        assert_rejected("{}", &["`variants` is missing", "split = { variants = [{ tag = \"a\""]);
        assert_rejected(r#"{"variants": []}"#, &["at least one variant is required"]);
    }

    #[test]
    fn rejects_a_variant_with_both_tag_and_upstream() {
        assert_rejected(r#"{"variants": [{"tag": "a", "upstream": "b"}]}"#, &["variants[0]", "not both"]);
    }

    #[test]
    fn rejects_a_variant_with_neither_tag_nor_upstream() {
        assert_rejected(r#"{"variants": [{"tag": "a"}, {"name": "b", "weight": 3}]}"#, &["variants[1]", "neither"]);
    }

    #[test]
    fn rejects_duplicate_names() {
        assert_rejected(
            r#"{"variants": [{"tag": "a"}, {"name": "a", "upstream": "api-v2"}]}"#,
            &["variants[1] (\"a\")", "already used by variants[0]", "unique"],
        );
    }

    #[test]
    fn rejects_a_total_weight_of_zero() {
        assert_rejected(
            r#"{"variants": [{"tag": "a", "weight": 0}, {"tag": "b", "weight": 0}]}"#,
            &["total weight is 0"],
        );
    }

    #[test]
    fn rejects_bad_weights_naming_the_variant() {
        assert_rejected(r#"{"variants": [{"tag": "a", "weight": -1}]}"#, &["variants[0] (\"a\")", "weight", "-1"]);
        assert_rejected(r#"{"variants": [{"tag": "a", "weight": 2.5}]}"#, &["weight", "2.5"]);
    }

    #[test]
    fn rejects_sticky_header_without_its_header() {
        assert_rejected(r#"{"variants": [{"tag": "a"}], "sticky": "header"}"#, &["needs \"sticky_header\""]);
        assert_rejected(
            r#"{"variants": [{"tag": "a"}], "sticky": "client_ip", "sticky_header": "x-user"}"#,
            &["only used with sticky = \"header\""],
        );
    }

    #[test]
    fn rejects_unknown_keys_anywhere() {
        assert_rejected(r#"{"variants": [{"tag": "a"}], "stickyness": "cookie"}"#, &["unknown field `stickyness`"]);
        assert_rejected(r#"{"variants": [{"tag": "a", "wieght": 2}]}"#, &["unknown field `wieght`"]);
        assert_rejected(r#"{"variants": [{"tag": "a"}], "sticky": "session"}"#, &["unknown variant `session`"]);
    }

    #[test]
    fn rejects_names_that_cannot_travel_in_a_cookie_or_header() {
        assert_rejected(r#"{"variants": [{"name": "a b", "tag": "a"}]}"#, &["variants[0] (\"a b\")", "cookie"]);
        assert_rejected(r#"{"variants": [{"tag": "a"}], "cookie": "bad name"}"#, &["cookie: \"bad name\""]);
        assert_rejected(r#"{"variants": [{"tag": "a"}], "response_header": "x:y"}"#, &["response_header"]);
        assert_rejected(
            r#"{"variants": [{"tag": "a"}], "cookie": "same", "override_cookie": "same"}"#,
            &["override_cookie and cookie"],
        );
    }

    /// The cookie a config gives its sticky clients: its name and the value that puts a client
    /// in `variant`. Equal values mean the same key and salt.
    fn sticky(config: &str, variant: &str) -> (String, String) {
        match SplitConfig::parse(config).map(|c| c.stickiness) {
            Ok(Stickiness::Cookie(cookie)) => (cookie.name().to_string(), cookie.value_for(variant)),
            other => panic!("{config}: {other:?}"),
        }
    }

    #[test]
    fn the_default_cookie_name_follows_the_variants_not_their_weights_or_order() {
        let name = |config: &str| sticky(config, "a").0;
        let canary = name(r#"{"variants": [{"tag": "a", "weight": 90}, {"tag": "b", "weight": 10}]}"#);
        assert!(canary.starts_with("switchyard_split_"), "{canary}");
        let hex = &canary["switchyard_split_".len()..];
        assert!(hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()), "{canary}");
        // Same variants elsewhere (another route, a ramp, another order): the same cookie.
        assert_eq!(name(r#"{"variants": [{"tag": "a", "weight": 80}, {"tag": "b", "weight": 20}]}"#), canary);
        assert_eq!(name(r#"{"variants": [{"tag": "b", "weight": 1}, {"tag": "a", "weight": 3}]}"#), canary);
        // Other variants: another cookie, so two splits never overwrite each other's.
        for other in [
            r#"{"variants": [{"tag": "a"}, {"tag": "c"}]}"#,
            r#"{"variants": [{"tag": "a"}, {"name": "b", "upstream": "b"}]}"#,
            r#"{"variants": [{"tag": "a"}]}"#,
        ] {
            assert_ne!(name(other), canary, "{other}");
        }
        // Another salt would refuse this split's cookies, so it gets its own.
        assert_ne!(name(r#"{"variants": [{"tag": "a"}, {"tag": "b"}], "salt": "search"}"#), canary);
        // An explicit name wins.
        assert_eq!(name(r#"{"variants": [{"tag": "a"}, {"tag": "b"}], "cookie": "exp"}"#), "exp");
    }

    #[test]
    fn without_a_secret_weight_edits_keep_the_key() {
        // An explicit cookie name, so only the key (and the salt, the cookie name) can differ.
        let before =
            sticky(r#"{"variants": [{"tag": "a", "weight": 90}, {"tag": "b", "weight": 10}], "cookie": "exp"}"#, "a");
        for after in [
            r#"{"variants": [{"tag": "a", "weight": 80}, {"tag": "b", "weight": 20}], "cookie": "exp"}"#,
            r#"{"variants": [{"tag": "b", "weight": 50}, {"tag": "a", "weight": 50}], "cookie": "exp"}"#,
            r#"{"variants": [{"tag": "a"}, {"tag": "b"}], "cookie": "exp", "cookie_max_age": 60, "response_header": "x-v"}"#,
        ] {
            assert_eq!(sticky(after, "a"), before, "{after}");
        }
    }

    #[test]
    fn without_a_secret_other_variants_or_salt_change_the_key_and_a_secret_replaces_it() {
        let base = r#"{"variants": [{"tag": "a"}, {"tag": "b"}], "cookie": "exp"}"#;
        let value = |config: &str| sticky(config, "a").1;
        for changed in [
            // b renamed: the variant a's cookie is not valid any more either.
            r#"{"variants": [{"tag": "a"}, {"name": "c", "tag": "b"}], "cookie": "exp"}"#,
            // b sends elsewhere.
            r#"{"variants": [{"tag": "a"}, {"name": "b", "tag": "b2"}], "cookie": "exp"}"#,
            r#"{"variants": [{"tag": "a"}, {"name": "b", "upstream": "b"}], "cookie": "exp"}"#,
            r#"{"variants": [{"tag": "a"}, {"tag": "b"}], "cookie": "exp", "salt": "other"}"#,
            r#"{"variants": [{"tag": "a"}, {"tag": "b"}], "cookie": "exp", "cookie_secret": "s"}"#,
        ] {
            assert_ne!(value(changed), value(base), "{changed}");
        }
        // With a secret the variants do not matter: only the secret and the salt sign.
        let with_secret = |variants: &str, secret: &str| {
            value(&format!(r#"{{"variants": {variants}, "cookie": "exp", "cookie_secret": "{secret}"}}"#))
        };
        let two = r#"[{"tag": "a"}, {"tag": "b"}]"#;
        assert_eq!(with_secret(two, "s"), with_secret(r#"[{"tag": "a"}, {"tag": "c", "weight": 5}]"#, "s"));
        assert_ne!(with_secret(two, "s"), with_secret(two, "t"));
    }

    #[test]
    fn lists_every_problem_at_once() {
        let error = rejected(
            r#"{"variants": [{"tag": "a", "weight": 0}, {"tag": "a", "weight": 0}], "sticky": "header",
                "cookie_max_age": 0}"#,
        );
        for part in ["already used", "total weight is 0", "sticky_header", "cookie_max_age"] {
            assert!(error.contains(part), "error {error:?} does not mention {part:?}");
        }
    }
}
