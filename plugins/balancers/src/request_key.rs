//! The part of a request the `hash` strategy hashes, parsed from the `key` setting
//! (`client_ip`, `header:<name>`, `cookie:<name>`, `path`, `query:<param>`), and how to read it.
//!
//! A key the request does not carry, or carries empty, falls back to the client's IP address:
//! hashing "nothing" would send every such request to one backend.

use switchyard_sdk::RequestHead;
use switchyard_sdk::cookies::cookie_values;

/// What the `key` setting names; the default is [`RequestKey::ClientIp`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum RequestKey {
    /// The client's IP address.
    #[default]
    ClientIp,
    /// The first value of a header (name stored lowercased).
    Header(String),
    /// A cookie from the `cookie` header(s), by exact name.
    Cookie(String),
    /// The request path, without the query.
    Path,
    /// A query parameter's raw (undecoded) value, by exact name.
    Query(String),
}

/// How the `key` setting is spelled, for error messages.
const KEY_FORMS: &str = "client_ip, path, header:<name>, cookie:<name> or query:<param>";

impl RequestKey {
    /// Parses the `key` setting, with an error that says what is wrong with it.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let named = |kind: &str, name: &str| -> Result<String, String> {
            if name.is_empty() {
                Err(format!("`key` {text:?} needs a {kind} name after the colon"))
            } else if !name.bytes().all(is_token_byte) {
                Err(format!("`key` {text:?}: {name:?} is not a valid {kind} name"))
            } else {
                Ok(name.to_string())
            }
        };
        match text.split_once(':') {
            None if text == "client_ip" => Ok(RequestKey::ClientIp),
            None if text == "path" => Ok(RequestKey::Path),
            Some(("header", name)) => named("header", name).map(|n| RequestKey::Header(n.to_ascii_lowercase())),
            Some(("cookie", name)) => named("cookie", name).map(RequestKey::Cookie),
            Some(("query", name)) => {
                if name.is_empty() {
                    Err(format!("`key` {text:?} needs a parameter name after the colon"))
                } else if name.contains(['&', '=', '#', '?']) || name.contains(char::is_whitespace) {
                    Err(format!("`key` {text:?}: {name:?} is not a valid query parameter name"))
                } else {
                    Ok(RequestKey::Query(name.to_string()))
                }
            }
            _ => Err(format!("unknown `key` {text:?}; expected {KEY_FORMS}")),
        }
    }

    /// The text to hash for `req`: the named part, or the client IP when it is missing or empty.
    pub(crate) fn read(&self, req: &dyn RequestHead) -> String {
        let named = match self {
            RequestKey::ClientIp => None,
            RequestKey::Header(name) => req.header(name),
            RequestKey::Cookie(name) => cookie_values(&req.header_all("cookie"), name).next().map(str::to_string),
            RequestKey::Path => Some(req.path().into_owned()),
            RequestKey::Query(name) => req.query().and_then(|query| query_value(&query, name).map(str::to_string)),
        };
        named.filter(|value| !value.is_empty()).unwrap_or_else(|| req.client_ip())
    }
}

/// An RFC 9110 token character: what header names and (RFC 6265) cookie names are made of.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// The raw value of the first parameter `name` in a query string (`a=1&b=2`); a parameter written
/// without `=` has an empty value.
fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (pair_name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (pair_name == name).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::testkit::TestRequest;

    fn read(key: &str, req: &TestRequest) -> String {
        match RequestKey::parse(key) {
            Ok(key) => key.read(req),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(RequestKey::parse("client_ip"), Ok(RequestKey::ClientIp));
        assert_eq!(RequestKey::parse("path"), Ok(RequestKey::Path));
        assert_eq!(RequestKey::parse("header:X-User"), Ok(RequestKey::Header("x-user".into())));
        assert_eq!(RequestKey::parse("cookie:Session_ID"), Ok(RequestKey::Cookie("Session_ID".into())));
        assert_eq!(RequestKey::parse("query:user.id"), Ok(RequestKey::Query("user.id".into())));
    }

    #[test]
    fn rejects_malformed_keys_naming_the_problem() {
        let error = |text: &str| RequestKey::parse(text).err().unwrap_or_else(|| panic!("{text:?} was accepted"));
        assert!(error("header:").contains("needs a header name"), "{}", error("header:"));
        assert!(error("header:x user").contains("not a valid header name"), "{}", error("header:x user"));
        assert!(error("cookie:").contains("needs a cookie name"), "{}", error("cookie:"));
        assert!(error("cookie:a=b").contains("not a valid cookie name"), "{}", error("cookie:a=b"));
        assert!(error("query:").contains("needs a parameter name"), "{}", error("query:"));
        assert!(error("query:a&b").contains("not a valid query parameter name"), "{}", error("query:a&b"));
        for unknown in ["ip", "client-ip", "Path", "headers:x", "", "path:x"] {
            let message = error(unknown);
            assert!(message.contains("unknown `key`") && message.contains("cookie:<name>"), "{message}");
        }
    }

    #[test]
    fn reads_the_client_ip() {
        let req = TestRequest::get("/a?u=1").with_client_ip("192.0.2.7").with_header("x-user", "bob");
        assert_eq!(read("client_ip", &req), "192.0.2.7");
    }

    #[test]
    fn reads_a_header_case_insensitively_and_takes_the_first_value() {
        let req = TestRequest::get("/").with_header("X-User", "alice").with_header("x-user", "mallory");
        assert_eq!(read("header:x-user", &req), "alice");
        assert_eq!(read("header:X-USER", &req), "alice");
    }

    #[test]
    fn reads_a_cookie_from_a_cookie_list() {
        let req = TestRequest::get("/")
            .with_header("cookie", "theme=dark;xsid=wrong; sid=abc=1 ;lang=en")
            .with_header("cookie", "sid=later; quoted=\"q v\"");
        assert_eq!(read("cookie:sid", &req), "abc=1");
        assert_eq!(read("cookie:theme", &req), "dark");
        assert_eq!(read("cookie:lang", &req), "en");
        // A second `cookie` header (HTTP/2 sends one per cookie) is searched too.
        assert_eq!(read("cookie:quoted", &req), "q v");
        // Names are exact: no prefix or case-insensitive matches.
        let req = req.with_client_ip("198.51.100.1");
        assert_eq!(read("cookie:SID", &req), "198.51.100.1");
        assert_eq!(read("cookie:id", &req), "198.51.100.1");
    }

    #[test]
    fn reads_the_path_without_the_query() {
        let req = TestRequest::get("/cart/42?x=1");
        assert_eq!(read("path", &req), "/cart/42");
    }

    #[test]
    fn reads_a_raw_query_parameter() {
        let req = TestRequest::get("/p?ab=1&a=caf%C3%A9&a=2&flag");
        assert_eq!(read("query:a", &req), "caf%C3%A9");
        assert_eq!(read("query:ab", &req), "1");
        let req = TestRequest::get("/p?user=a=b").with_client_ip("203.0.113.9");
        assert_eq!(read("query:user", &req), "a=b");
    }

    #[test]
    fn missing_or_empty_keys_fall_back_to_the_client_ip() {
        let req = TestRequest::get("/p?empty=&flag").with_client_ip("203.0.113.9").with_header("x-blank", "");
        for key in ["header:x-user", "header:x-blank", "cookie:sid", "query:user", "query:empty", "query:flag"] {
            assert_eq!(read(key, &req), "203.0.113.9", "{key}");
        }
        let no_query = TestRequest::get("/p").with_client_ip("203.0.113.9");
        assert_eq!(read("query:user", &no_query), "203.0.113.9");
    }
}
