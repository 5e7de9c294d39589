//! The signed sticky cookie that remembers a client's variant without letting the client pick it
//! (reading cookies is the SDK's `cookies::cookie_values`).
//!
//! The sticky cookie's value is `<variant>.<mac>`, where `<mac>` is the lowercase hex of the
//! first 16 bytes of HMAC-SHA256(secret, salt + "|" + variant). The MAC binds the salt too, so a
//! cookie of one split is not accepted by another split that shares the secret.
//!
//! The value depends on nothing but the variant, so the value and the `Set-Cookie` lines of each
//! configured variant are signed once, when the split is configured. Issuing a cookie is then a
//! copy, and checking one a constant-time comparison with the known value: no HMAC per request.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The length of the truncated MAC: 128 bits are far beyond guessing, and keep the cookie short.
const MAC_BYTES: usize = 16;

/// A configured variant's cookie, signed at configuration time.
#[derive(Clone)]
struct SignedVariant {
    variant: String,
    /// The lowercase hex MAC, `2 * MAC_BYTES` digits.
    mac_hex: String,
    /// The `Set-Cookie` line for plain-http requests.
    set_cookie: String,
    /// The `Set-Cookie` line for https requests (with `Secure`).
    set_cookie_secure: String,
}

/// The sticky cookie of a split: its name and lifetime, and the key that signs it.
#[derive(Clone)]
pub struct StickyCookie {
    name: String,
    max_age: u64,
    /// HMAC keyed with the secret and already fed `salt|`; cloned per use, so neither the key
    /// schedule nor the salt is processed again for a variant outside the configuration.
    salted_mac: HmacSha256,
    /// The configured variants' cookies, signed once.
    signed: Vec<SignedVariant>,
}

impl fmt::Debug for StickyCookie {
    /// Leaves the key and the MACs out: a Debug print must not leak what signs the cookies.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StickyCookie").field("name", &self.name).field("max_age", &self.max_age).finish_non_exhaustive()
    }
}

impl StickyCookie {
    /// A cookie called `name`, kept by browsers for `max_age` seconds, signed with `secret`
    /// under `salt`, with the values of `variants` signed ahead.
    pub fn new<'v>(
        name: String,
        max_age: u64,
        secret: &[u8],
        salt: &str,
        variants: impl IntoIterator<Item = &'v str>,
    ) -> Result<Self, String> {
        let mut salted_mac =
            HmacSha256::new_from_slice(secret).map_err(|e| format!("cookie_secret cannot key HMAC-SHA256: {e}"))?;
        salted_mac.update(salt.as_bytes());
        salted_mac.update(b"|");
        let mut cookie = StickyCookie { name, max_age, salted_mac, signed: Vec::new() };
        cookie.signed = variants
            .into_iter()
            .map(|variant| {
                let mac_hex = cookie.mac_hex(variant);
                let value = format!("{variant}.{mac_hex}");
                SignedVariant {
                    variant: variant.to_string(),
                    mac_hex,
                    set_cookie: cookie.set_cookie_line(&value, false),
                    set_cookie_secure: cookie.set_cookie_line(&value, true),
                }
            })
            .collect();
        Ok(cookie)
    }

    /// The cookie's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn known(&self, variant: &str) -> Option<&SignedVariant> {
        self.signed.iter().find(|signed| signed.variant == variant)
    }

    /// The lowercase hex of the truncated MAC of `variant`, computed.
    fn mac_hex(&self, variant: &str) -> String {
        let mut mac = self.salted_mac.clone();
        mac.update(variant.as_bytes());
        let tag = mac.finalize().into_bytes();
        let mut hex = String::with_capacity(2 * MAC_BYTES);
        for byte in &tag[..MAC_BYTES] {
            hex.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
            hex.push(char::from(HEX_DIGITS[usize::from(byte & 0x0f)]));
        }
        hex
    }

    /// The signed value that puts a client in `variant`: `<variant>.<mac>`.
    pub fn value_for(&self, variant: &str) -> String {
        match self.known(variant) {
            Some(signed) => format!("{variant}.{}", signed.mac_hex),
            None => format!("{variant}.{}", self.mac_hex(variant)),
        }
    }

    /// The variant named by a cookie `value` whose MAC is right, or `None` for anything else
    /// (malformed, tampered, signed with another secret or salt). The MAC comparison takes the
    /// same time wherever the first wrong digit is.
    pub fn verified_variant<'v>(&self, value: &'v str) -> Option<&'v str> {
        // Split at the last dot: the MAC has none, a variant name may.
        let (variant, mac_hex) = value.rsplit_once('.')?;
        if mac_hex.len() != 2 * MAC_BYTES {
            return None;
        }
        let matches = match self.known(variant) {
            Some(signed) => signed.mac_hex.as_bytes().ct_eq(mac_hex.as_bytes()),
            None => self.mac_hex(variant).as_bytes().ct_eq(mac_hex.as_bytes()),
        };
        bool::from(matches).then_some(variant)
    }

    /// The `Set-Cookie` value that stores `variant` in the browser; `secure` (for requests that
    /// came over https) keeps the cookie off plain-http requests.
    pub fn set_cookie(&self, variant: &str, secure: bool) -> String {
        match self.known(variant) {
            Some(signed) if secure => signed.set_cookie_secure.clone(),
            Some(signed) => signed.set_cookie.clone(),
            None => self.set_cookie_line(&self.value_for(variant), secure),
        }
    }

    fn set_cookie_line(&self, value: &str, secure: bool) -> String {
        format!(
            "{}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{}",
            self.name,
            self.max_age,
            if secure { "; Secure" } else { "" }
        )
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    /// A cookie with the variants `a` and `a.b` signed ahead.
    fn cookie(secret: &str, salt: &str) -> StickyCookie {
        signed_ahead(secret, salt, &["a", "a.b"])
    }

    fn signed_ahead(secret: &str, salt: &str, variants: &[&str]) -> StickyCookie {
        StickyCookie::new("switchyard_split".into(), 60, secret.as_bytes(), salt, variants.iter().copied())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_mac_is_the_truncated_hmac_of_salt_and_variant() {
        // Computed independently of StickyCookie, straight from the documented formula.
        let mut mac = HmacSha256::new_from_slice(b"secret").unwrap_or_else(|e| panic!("{e}"));
        mac.update(b"salt|b");
        let full = mac.finalize().into_bytes();
        let expected: String = full[..16].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(cookie("secret", "salt").value_for("b"), format!("b.{expected}"));
    }

    #[test]
    fn accepts_its_own_values_and_nothing_else() {
        let c = cookie("secret", "salt");
        let good = c.value_for("a.b");
        assert_eq!(c.verified_variant(&good), Some("a.b"));
        let (_, mac) = good.rsplit_once('.').unwrap_or_else(|| panic!("no dot in {good}"));
        assert_eq!(c.verified_variant(&format!("b.{mac}")), None, "variant swapped");
        let mut flipped = good.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(c.verified_variant(&String::from_utf8_lossy(&flipped)), None, "mac changed");
        assert_eq!(c.verified_variant(&good.to_uppercase()), None, "uppercase hex");
        assert_eq!(c.verified_variant(&good[..good.len() - 2]), None, "mac truncated");
        for garbage in ["", "a", "a.", ".", "a.zz", "a.b.c"] {
            assert_eq!(c.verified_variant(garbage), None, "{garbage:?}");
        }
        assert_eq!(cookie("other", "salt").verified_variant(&good), None, "other secret");
        assert_eq!(cookie("secret", "other").verified_variant(&good), None, "other salt");
    }

    #[test]
    fn values_signed_ahead_are_the_values_computed_per_call() {
        let ahead = cookie("secret", "salt");
        let computed = signed_ahead("secret", "salt", &[]);
        for variant in ["a", "a.b", "c"] {
            assert_eq!(ahead.value_for(variant), computed.value_for(variant), "{variant}");
            for secure in [false, true] {
                assert_eq!(ahead.set_cookie(variant, secure), computed.set_cookie(variant, secure), "{variant}");
            }
            // Each accepts the other's values: same key, same salt.
            assert_eq!(ahead.verified_variant(&computed.value_for(variant)), Some(variant));
            assert_eq!(computed.verified_variant(&ahead.value_for(variant)), Some(variant));
        }
        // A value signed under another key is refused by the ahead-signed path too.
        let other = signed_ahead("other", "salt", &[]);
        assert_eq!(ahead.verified_variant(&other.value_for("a")), None);
        assert_eq!(ahead.verified_variant(&other.value_for("c")), None);
    }

    #[test]
    fn set_cookie_carries_the_attributes_and_secure_only_when_asked() {
        let c = cookie("secret", "salt");
        let value = c.value_for("a");
        assert_eq!(
            c.set_cookie("a", false),
            format!("switchyard_split={value}; Path=/; Max-Age=60; HttpOnly; SameSite=Lax")
        );
        assert_eq!(
            c.set_cookie("a", true),
            format!("switchyard_split={value}; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure")
        );
    }

    #[test]
    fn debug_output_hides_the_key() {
        let printed = format!("{:?}", cookie("hunter2", "salt"));
        assert!(printed.contains("switchyard_split") && !printed.contains("salted_mac"), "{printed}");
    }
}
