//! The signed sticky cookie that remembers a client's variant without letting the client pick it
//! (reading cookies is the SDK's `cookies::cookie_values`).
//!
//! The sticky cookie's value is `<variant>.<mac>`, where `<mac>` is the lowercase hex of the
//! first 16 bytes of HMAC-SHA256(secret, salt + "|" + variant). The MAC binds the salt too, so a
//! cookie of one split is not accepted by another split that shares the secret.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The length of the truncated MAC: 128 bits are far beyond guessing, and keep the cookie short.
const MAC_BYTES: usize = 16;

/// The sticky cookie of a split: its name and lifetime, and the key that signs it.
#[derive(Clone)]
pub struct StickyCookie {
    name: String,
    max_age: u64,
    /// HMAC keyed with the secret and already fed `salt|`; cloned per use, so neither the key
    /// schedule nor the salt is processed again per request.
    salted_mac: HmacSha256,
}

impl fmt::Debug for StickyCookie {
    /// Leaves the key out: a Debug print must not leak what signs the cookies.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StickyCookie").field("name", &self.name).field("max_age", &self.max_age).finish_non_exhaustive()
    }
}

impl StickyCookie {
    /// A cookie called `name`, kept by browsers for `max_age` seconds, signed with `secret`
    /// under `salt`.
    pub fn new(name: String, max_age: u64, secret: &[u8], salt: &str) -> Result<Self, String> {
        let mut salted_mac =
            HmacSha256::new_from_slice(secret).map_err(|e| format!("cookie_secret cannot key HMAC-SHA256: {e}"))?;
        salted_mac.update(salt.as_bytes());
        salted_mac.update(b"|");
        Ok(StickyCookie { name, max_age, salted_mac })
    }

    /// The cookie's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn mac_of(&self, variant: &str) -> HmacSha256 {
        let mut mac = self.salted_mac.clone();
        mac.update(variant.as_bytes());
        mac
    }

    /// The signed value that puts a client in `variant`: `<variant>.<mac>`.
    pub fn value_for(&self, variant: &str) -> String {
        let tag = self.mac_of(variant).finalize().into_bytes();
        let mut value = String::with_capacity(variant.len() + 1 + 2 * MAC_BYTES);
        value.push_str(variant);
        value.push('.');
        for byte in &tag[..MAC_BYTES] {
            value.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
            value.push(char::from(HEX_DIGITS[usize::from(byte & 0x0f)]));
        }
        value
    }

    /// The variant named by a cookie `value` whose MAC is right, or `None` for anything else
    /// (malformed, tampered, signed with another secret or salt). The MAC comparison takes the
    /// same time wherever the first wrong byte is.
    pub fn verified_variant<'v>(&self, value: &'v str) -> Option<&'v str> {
        // Split at the last dot: the MAC has none, a variant name may.
        let (variant, mac_hex) = value.rsplit_once('.')?;
        let tag = decode_mac(mac_hex)?;
        self.mac_of(variant).verify_truncated_left(&tag).ok()?;
        Some(variant)
    }

    /// The `Set-Cookie` value that stores `variant` in the browser; `secure` (for requests that
    /// came over https) keeps the cookie off plain-http requests.
    pub fn set_cookie(&self, variant: &str, secure: bool) -> String {
        format!(
            "{}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{}",
            self.name,
            self.value_for(variant),
            self.max_age,
            if secure { "; Secure" } else { "" }
        )
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Decodes exactly `2 * MAC_BYTES` lowercase hex digits. An early return here only tells a
/// client that its own text is not hex; it reveals nothing about the right MAC.
fn decode_mac(hex: &str) -> Option<[u8; MAC_BYTES]> {
    let digits = hex.as_bytes();
    if digits.len() != 2 * MAC_BYTES {
        return None;
    }
    let nibble = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    let mut tag = [0u8; MAC_BYTES];
    for (byte, pair) in tag.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie(secret: &str, salt: &str) -> StickyCookie {
        StickyCookie::new("switchyard_split".into(), 60, secret.as_bytes(), salt).unwrap_or_else(|e| panic!("{e}"))
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
