//! Reading cookies from a request's `Cookie` headers (RFC 6265 `name=value` pairs).

/// The values of every cookie called `name` in `cookie_headers` (all `Cookie` header values of a
/// request, in order). Accepts `a=b; c=d` with or without spaces, spreads over several headers,
/// and values in double quotes. Pieces without `=` are skipped.
pub fn cookie_values<'h>(cookie_headers: &'h [String], name: &'h str) -> impl Iterator<Item = &'h str> {
    cookie_headers.iter().flat_map(|header| header.split(';')).filter_map(move |pair| {
        let (key, value) = pair.split_once('=')?;
        if key.trim() != name {
            return None;
        }
        let value = value.trim();
        Some(value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn finds_a_cookie_among_others_with_or_without_spaces() {
        let h = headers(&["theme=dark;sid=1;  switchyard_split = a.00 ;lang=en"]);
        assert_eq!(cookie_values(&h, "switchyard_split").collect::<Vec<_>>(), ["a.00"]);
        assert_eq!(cookie_values(&h, "sid").collect::<Vec<_>>(), ["1"]);
        assert_eq!(cookie_values(&h, "theme=dark").count(), 0);
        assert_eq!(cookie_values(&h, "missing").count(), 0);
    }

    #[test]
    fn finds_cookies_across_several_headers_in_order() {
        let h = headers(&["a=1; b=2", "garbage; b=3", "b=\"4\""]);
        assert_eq!(cookie_values(&h, "b").collect::<Vec<_>>(), ["2", "3", "4"]);
        // Names are case-sensitive, as browsers treat them.
        assert_eq!(cookie_values(&h, "B").count(), 0);
    }
}
