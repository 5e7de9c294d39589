//! One HTTP/1.x request head, checked against RFC 9110/9112 where they call a request invalid:
//! the request line, every field line's syntax, and the fields that frame the body or name the
//! target (`Transfer-Encoding`, `Content-Length`, `Host`). What passes has exactly one reading,
//! which [`HeadInfo`] gives: how the body ends and whether the client asks for an upgrade.

use super::Violation;

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: the request ends with its head.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked, ending with a zero-size chunk and the trailer section.
    Chunked,
}

/// What a valid head says about the bytes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadInfo {
    pub framing: BodyFraming,
    /// The request carries `Upgrade`: the connection may become a tunnel if the backend answers 101.
    pub upgrade: bool,
}

/// Field names that frame a message or name its target: never accepted in a trailer section.
const FRAMING_FIELDS: [&str; 3] = ["content-length", "transfer-encoding", "host"];

/// Transfer codings that exist but the proxy does not decode (answered 501, not 400).
const KNOWN_CODINGS: [&str; 5] = ["gzip", "x-gzip", "deflate", "compress", "x-compress"];

/// `tchar` of RFC 9110 §5.6.2: allowed in a method and a field name.
const TCHAR: u8 = 1;
/// Allowed in a field value: visible ASCII, space, tab or obs-text (never CR, LF, NUL or another
/// control).
const FIELD: u8 = 2;
/// Visible ASCII: allowed in a request target.
const VISIBLE: u8 = 4;
/// Allowed in a registered host name (RFC 3986 §3.2.2 `reg-name`, percent signs included).
const REG_NAME: u8 = 8;

/// The classes of each byte value, one bit per class above: every byte of every request head
/// is checked against one of them, so the check is one table load rather than a chain of
/// comparisons.
const CLASSES: [u8; 256] = {
    const fn one_of(b: u8, set: &[u8]) -> bool {
        let mut i = 0;
        while i < set.len() {
            if set[i] == b {
                return true;
            }
            i += 1;
        }
        false
    }
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let visible = b >= 0x21 && b <= 0x7e;
        let mut class = 0;
        if b.is_ascii_alphanumeric() || one_of(b, b"!#$%&'*+-.^_`|~") {
            class |= TCHAR;
        }
        if b == b'\t' || b == b' ' || visible || b >= 0x80 {
            class |= FIELD;
        }
        if visible {
            class |= VISIBLE;
        }
        if b.is_ascii_alphanumeric() || one_of(b, b"-._~%!$&'()*+,;=") {
            class |= REG_NAME;
        }
        table[i] = class;
        i += 1;
    }
    table
};

/// Whether `b` is in `class`.
fn is(class: u8, b: u8) -> bool {
    CLASSES[b as usize] & class != 0
}

/// Checks the request head `head`: the request line, the field lines and the empty line that
/// ends it, every line ending in CRLF.
pub fn check_head(head: &[u8]) -> Result<HeadInfo, Violation> {
    let mut lines = Lines { rest: head };
    let request_line = lines.next_line()?.ok_or_else(|| Violation::bad("request-line", "empty request"))?;
    let request = RequestLine::parse(request_line)?;
    let mut fields = Fields::default();
    loop {
        let line = lines.next_line()?.ok_or_else(|| Violation::bad("head-end", "the head does not end"))?;
        if line.is_empty() {
            break;
        }
        let (name, value) = field_line(line)?;
        fields.note(name, value);
    }
    if !lines.rest.is_empty() {
        return Err(Violation::bad("head-end", "bytes after the end of the head"));
    }
    fields.framing_and_target(&request)
}

/// Splits a head into CRLF-terminated lines; a bare LF is a violation, and a bare CR is left
/// in the line for the byte checks to find.
struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Lines<'a> {
    fn next_line(&mut self) -> Result<Option<&'a [u8]>, Violation> {
        let Some(lf) = memchr::memchr(b'\n', self.rest) else {
            return Ok(None);
        };
        if lf == 0 || self.rest[lf - 1] != b'\r' {
            return Err(Violation::bad("bare-lf", "a line ends in LF without CR"));
        }
        let line = &self.rest[..lf - 1];
        self.rest = &self.rest[lf + 1..];
        Ok(Some(line))
    }
}

/// The parts of a request line that later checks need.
struct RequestLine<'a> {
    method: &'a [u8],
    http10: bool,
    /// The authority of an absolute-form target (`http://host:port/…`), which `Host` must equal.
    authority: Option<&'a [u8]>,
}

impl<'a> RequestLine<'a> {
    fn parse(line: &'a [u8]) -> Result<RequestLine<'a>, Violation> {
        let mut parts = line.split(|&b| b == b' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Violation::bad(
                "request-line",
                "the request line is not `method target version` with single spaces",
            ));
        };
        if method.is_empty() || !method.iter().all(|&b| is(TCHAR, b)) {
            return Err(Violation::bad("request-line", "the method is not a token"));
        }
        let http10 = match version {
            b"HTTP/1.1" => false,
            b"HTTP/1.0" => true,
            [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] if major.is_ascii_digit() && minor.is_ascii_digit() => {
                // 400 rather than 505: every refusal of a malformed request is a 4xx.
                return Err(Violation::bad("version", "only HTTP/1.0 and HTTP/1.1 are served over this connection"));
            }
            _ => return Err(Violation::bad("request-line", "the HTTP version is malformed")),
        };
        if target.is_empty() || !target.iter().all(|&b| is(VISIBLE, b)) {
            return Err(Violation::bad("target", "the request target is empty or has a byte outside visible ASCII"));
        }
        if target.contains(&b'#') {
            return Err(Violation::bad("target", "the request target has a fragment"));
        }
        let authority = match target {
            [b'/', ..] => None,
            b"*" if method == b"OPTIONS" => None,
            _ if method == b"CONNECT" => {
                check_authority(target, true)?;
                Some(target)
            }
            _ => Some(absolute_form_authority(target)?),
        };
        Ok(RequestLine { method, http10, authority })
    }
}

/// The authority of an absolute-form target, which must use `http` or `https`.
fn absolute_form_authority(target: &[u8]) -> Result<&[u8], Violation> {
    let lower = |n: usize| target.get(..n).map(|p| p.to_ascii_lowercase());
    let after_scheme = if lower(7).as_deref() == Some(b"http://") {
        &target[7..]
    } else if lower(8).as_deref() == Some(b"https://") {
        &target[8..]
    } else {
        return Err(Violation::bad("target", "the request target is neither a path, `*` nor an http(s) URL"));
    };
    let end = after_scheme.iter().position(|&b| b == b'/' || b == b'?').unwrap_or(after_scheme.len());
    let authority = &after_scheme[..end];
    check_authority(authority, false)?;
    Ok(authority)
}

/// Checks `host[:port]` (a `Host` value or a target's authority): a registered name, an IPv4
/// address or a bracketed IP literal, and a port of 1 to 5 digits. No user information.
fn check_authority(value: &[u8], port_required: bool) -> Result<(), Violation> {
    let invalid = || Violation::bad("host", "the host is not a valid `host[:port]`");
    let (host, port) = if value.first() == Some(&b'[') {
        let close = value.iter().position(|&b| b == b']').ok_or_else(invalid)?;
        let literal = &value[1..close];
        if literal.is_empty() || !literal.iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return Err(invalid());
        }
        match &value[close + 1..] {
            [] => (&value[..=close], None),
            [b':', port @ ..] => (&value[..=close], Some(port)),
            _ => return Err(invalid()),
        }
    } else {
        match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
            None => (value, None),
        }
    };
    if host.is_empty() || (host[0] != b'[' && !host.iter().all(|&b| is(REG_NAME, b))) {
        return Err(invalid());
    }
    match port {
        Some(port) if port.is_empty() || port.len() > 5 || !port.iter().all(u8::is_ascii_digit) => Err(invalid()),
        None if port_required => Err(invalid()),
        _ => Ok(()),
    }
}

/// Splits a field line into its name and its value without surrounding whitespace, checking
/// both: a token name right before the colon, a value of field bytes only.
pub fn field_line(line: &[u8]) -> Result<(&[u8], &[u8]), Violation> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(Violation::bad("obs-fold", "a field line is folded onto the previous one (obs-fold)"));
    }
    let colon = memchr::memchr(b':', line).ok_or_else(|| Violation::bad("field-line", "a field line has no colon"))?;
    let name = &line[..colon];
    if name.is_empty() {
        return Err(Violation::bad("field-name", "a field name is empty"));
    }
    if matches!(name.last(), Some(b' ' | b'\t')) {
        return Err(Violation::bad("field-name", "whitespace between a field name and its colon"));
    }
    if !name.iter().all(|&b| is(TCHAR, b)) {
        return Err(Violation::bad("field-name", "a field name has a byte that is not a token character"));
    }
    let value = trim_ows(&line[colon + 1..]);
    if let Some(b) = value.iter().find(|&&b| !is(FIELD, b)) {
        let what = match b {
            b'\r' => "a bare CR",
            0 => "a NUL",
            _ => "a control character",
        };
        return Err(Violation::bad("field-value", format!("a field value has {what}")));
    }
    Ok((name, value))
}

/// `value` without leading and trailing spaces and tabs.
fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(value.len());
    let end = value.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |i| i + 1);
    &value[start..end]
}

/// Checks a trailer field line: the field-line syntax, and none of the fields that frame a
/// message or name its target.
pub fn check_trailer_line(line: &[u8]) -> Result<(), Violation> {
    let (name, _) = field_line(line)?;
    if FRAMING_FIELDS.iter().any(|f| name.eq_ignore_ascii_case(f.as_bytes())) {
        return Err(Violation::bad(
            "trailer",
            format!("a trailer field is named {}, which only the head may carry", String::from_utf8_lossy(name)),
        ));
    }
    Ok(())
}

/// How often a field appeared, and its first value (no allocation per request).
#[derive(Default, Clone, Copy)]
struct Seen<'a> {
    count: usize,
    first: Option<&'a [u8]>,
}

impl<'a> Seen<'a> {
    fn note(&mut self, value: &'a [u8]) {
        self.count += 1;
        self.first.get_or_insert(value);
    }

    /// The value of a field that appeared exactly once.
    fn once(&self) -> Option<&'a [u8]> {
        if self.count == 1 { self.first } else { None }
    }
}

/// The fields the framing and target checks look at.
#[derive(Default)]
struct Fields<'a> {
    content_length: Seen<'a>,
    transfer_encoding: Seen<'a>,
    host: Seen<'a>,
    upgrade: bool,
}

impl<'a> Fields<'a> {
    fn note(&mut self, name: &'a [u8], value: &'a [u8]) {
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        if is("content-length") {
            self.content_length.note(value);
        } else if is("transfer-encoding") {
            self.transfer_encoding.note(value);
        } else if is("host") {
            self.host.note(value);
        } else if is("upgrade") {
            self.upgrade = true;
        }
    }

    fn framing_and_target(&self, request: &RequestLine<'_>) -> Result<HeadInfo, Violation> {
        match (self.host.count, self.host.once(), request.http10) {
            (0, _, true) => {}
            (0, _, false) => return Err(Violation::bad("host", "an HTTP/1.1 request without Host")),
            (_, Some(host), _) => {
                if !host.is_empty() {
                    check_authority(host, false)?;
                }
                if let Some(authority) = request.authority
                    && request.method != b"CONNECT"
                    && !authority.eq_ignore_ascii_case(host)
                {
                    return Err(Violation::bad("host", "Host differs from the authority of the request target"));
                }
            }
            _ => return Err(Violation::bad("host", "more than one Host field")),
        }
        let (te, cl) = (self.transfer_encoding, self.content_length);
        let framing = match (te.count, cl.count) {
            (0, 0) => BodyFraming::None,
            (0, 1) => BodyFraming::Length(content_length(cl.first.unwrap_or_default())?),
            (0, _) => return Err(Violation::bad("content-length", "more than one Content-Length field")),
            (_, 1..) => return Err(Violation::bad("cl-and-te", "both Content-Length and Transfer-Encoding")),
            (1, 0) => {
                if request.http10 {
                    return Err(Violation::bad("transfer-encoding", "Transfer-Encoding in an HTTP/1.0 request"));
                }
                check_transfer_codings(te.first.unwrap_or_default())?;
                BodyFraming::Chunked
            }
            (_, 0) => return Err(Violation::bad("transfer-encoding", "more than one Transfer-Encoding field")),
        };
        Ok(HeadInfo { framing, upgrade: self.upgrade })
    }
}

/// A `Content-Length` value: decimal digits only, fitting in 64 bits.
fn content_length(value: &[u8]) -> Result<u64, Violation> {
    let malformed = || Violation::bad("content-length", "Content-Length is not a decimal number of bytes");
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(malformed());
    }
    std::str::from_utf8(value).ok().and_then(|v| v.parse::<u64>().ok()).ok_or_else(malformed)
}

/// Accepts exactly `chunked` as the transfer coding list. A list whose last coding is not
/// `chunked`, that names it twice, gives it parameters or has empty elements is malformed
/// (400); other codings are not implemented here (501).
fn check_transfer_codings(list: &[u8]) -> Result<(), Violation> {
    let codings: Vec<&[u8]> = list.split(|&b| b == b',').map(trim_ows).collect();
    if codings.iter().any(|c| c.is_empty()) {
        return Err(Violation::bad("transfer-encoding", "Transfer-Encoding has an empty element"));
    }
    let name = |c: &[u8]| trim_ows(c.split(|&b| b == b';').next().unwrap_or_default()).to_ascii_lowercase();
    let last = codings.last().copied().unwrap_or_default();
    if name(last) != b"chunked" {
        return Err(Violation::bad("transfer-encoding", "the last transfer coding is not chunked"));
    }
    if last.contains(&b';') {
        return Err(Violation::bad("transfer-encoding", "the chunked coding has parameters"));
    }
    let others = &codings[..codings.len() - 1];
    if others.iter().any(|c| name(c) == b"chunked") {
        return Err(Violation::bad("transfer-encoding", "chunked is applied more than once"));
    }
    if let Some(other) = others.first() {
        let other = String::from_utf8_lossy(&name(other)).into_owned();
        let known = KNOWN_CODINGS.contains(&other.as_str());
        let detail = if known {
            format!("the transfer coding {other} is not supported")
        } else {
            format!("the transfer coding {other} is unknown")
        };
        return Err(Violation::new(501, "transfer-encoding", detail));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(head: &str) -> Result<HeadInfo, Violation> {
        check_head(head.as_bytes())
    }

    fn rejected(head: &str) -> (u16, String) {
        let v = check(head).expect_err(head);
        (v.status, v.detail.into_owned())
    }

    #[test]
    fn plain_requests_pass_with_their_framing() {
        let info = check("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n").unwrap();
        assert_eq!(info, HeadInfo { framing: BodyFraming::None, upgrade: false });
        let info = check("POST /a?b=c HTTP/1.1\r\nhost: a:8080\r\nContent-Length: 0012\r\n\r\n").unwrap();
        assert_eq!(info.framing, BodyFraming::Length(12));
        let info = check("PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  Chunked \r\n\r\n").unwrap();
        assert_eq!(info.framing, BodyFraming::Chunked);
        let info = check("GET /ws HTTP/1.1\r\nHost: [::1]:80\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n");
        assert!(info.unwrap().upgrade);
        assert!(check("GET / HTTP/1.0\r\n\r\n").is_ok(), "HTTP/1.0 needs no Host");
        assert!(check("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").is_ok());
        assert!(check("GET http://A.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n").is_ok());
        assert!(check("GET / HTTP/1.1\r\nHost: a\r\nX-Obs: caf\u{e9}\r\n\r\n").is_ok(), "obs-text is allowed");
    }

    #[test]
    fn content_length_must_be_one_plain_number() {
        for bad in ["+5", "-1", "0x10", "", " ", "5 5", "5,5", "1e3", "18446744073709551616"] {
            let head = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(rejected(&head).0, 400, "{bad:?}");
        }
        let (_, detail) = rejected("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n");
        assert!(detail.contains("more than one"), "{detail}");
        let same = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(rejected(same).0, 400, "even equal duplicates are refused");
    }

    #[test]
    fn transfer_encoding_is_chunked_alone_or_refused() {
        let head = |te: &str| format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n");
        for (te, status) in [
            ("chunked, chunked", 400),
            ("chunked, gzip", 400),
            ("gzip", 400),
            ("identity", 400),
            (",chunked", 400),
            ("chunked;q=1", 400),
            ("gzip, chunked", 501),
            ("foo, chunked", 501),
            ("\u{b}chunked", 400),
        ] {
            assert_eq!(rejected(&head(te)).0, status, "{te:?}");
        }
        let two = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(rejected(two).1.contains("more than one"));
        let both = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(rejected(both).1.contains("both"));
        let http10 = "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(rejected(http10).1.contains("HTTP/1.0"));
    }

    #[test]
    fn field_lines_follow_the_grammar() {
        for (head, expected) in [
            ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", "whitespace between"),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n", "obs-fold"),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r2\r\n\r\n", "bare CR"),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\u{0}2\r\n\r\n", "NUL"),
            ("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\u{7f}\r\n\r\n", "control"),
            ("GET / HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n", "empty"),
            ("GET / HTTP/1.1\r\nHost: a\r\nX(A): 1\r\n\r\n", "token"),
            ("GET / HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n", "no colon"),
            ("GET / HTTP/1.1\r\nHost: a\nX-A: 1\r\n\r\n", "LF without CR"),
            ("GET / HTTP/1.1\r\nHost: a\r\n\n", "LF without CR"),
        ] {
            let (status, detail) = rejected(head);
            assert_eq!(status, 400, "{head:?}");
            assert!(detail.contains(expected), "{head:?}: {detail}");
        }
    }

    #[test]
    fn the_request_line_and_host_are_checked() {
        for head in [
            "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
            "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /#frag HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n",
            "G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: user@a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a:80x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: [zz]\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nHost: b\r\n\r\n",
            "GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(rejected(head).0, 400, "{head:?}");
        }
        assert!(rejected("GET / HTTP/2.0\r\nHost: a\r\n\r\n").1.contains("only HTTP/1.0 and HTTP/1.1"));
        assert_eq!(rejected("GET / HTTP/1\r\nHost: a\r\n\r\n").0, 400);
    }

    #[test]
    fn the_byte_classes_are_the_rfc_sets() {
        for b in 0..=255u8 {
            let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is(TCHAR, b), tchar, "tchar {b:#x}");
            let field = b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80;
            assert_eq!(is(FIELD, b), field, "field byte {b:#x}");
            assert_eq!(is(VISIBLE, b), (0x21..=0x7e).contains(&b), "visible {b:#x}");
            let reg_name = b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b);
            assert_eq!(is(REG_NAME, b), reg_name, "reg-name {b:#x}");
        }
    }

    #[test]
    fn trailers_may_not_carry_framing_fields() {
        assert!(check_trailer_line(b"X-Checksum: abc").is_ok());
        for line in ["Content-Length: 5", "transfer-encoding: chunked", "HOST: b", "X : y", " folded"] {
            assert!(check_trailer_line(line.as_bytes()).is_err(), "{line}");
        }
    }
}
