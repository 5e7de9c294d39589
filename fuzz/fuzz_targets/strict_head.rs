#![no_main]
//! Fuzzes the strict HTTP/1 request-head checker (`proxy::strict::head`).
//!
//! Any byte string goes through `check_head`, `field_line` and `check_trailer_line`: none may
//! panic. When `check_head` accepts a head, it must be one a mainstream parser reads the same
//! way (a disagreement is how requests get smuggled), so the harness asserts that:
//!
//! - the head has no NUL, no bare LF and no bare CR;
//! - `httparse` (the parser hyper uses) parses it completely, with the same method, target,
//!   version and number of fields;
//! - the body framing `check_head` reports (none, `Content-Length: n`, chunked) is the one the
//!   fields `httparse` found give, and `upgrade` is set exactly when an `Upgrade` field is there.

use libfuzzer_sys::fuzz_target;
use switchyard::proxy::strict::head::{BodyFraming, check_head, check_trailer_line, field_line};

fuzz_target!(|data: &[u8]| {
    if let Ok((name, value)) = field_line(data) {
        assert!(!name.is_empty(), "field_line accepted an empty name: {data:?}");
        assert!(!value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0), "field_line kept a control byte");
    }
    let _ = check_trailer_line(data);

    let Ok(info) = check_head(data) else { return };
    assert!(!data.contains(&0), "accepted a head with a NUL");
    for (i, &b) in data.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && data[i - 1] == b'\r', "accepted a bare LF at byte {i}");
        }
        if b == b'\r' {
            assert_eq!(data.get(i + 1), Some(&b'\n'), "accepted a bare CR at byte {i}");
        }
    }
    assert!(data.ends_with(b"\r\n\r\n"), "accepted a head that does not end with an empty line");

    let line_ends = data.windows(2).filter(|w| w == b"\r\n").count();
    let mut headers = vec![httparse::EMPTY_HEADER; line_ends];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(data) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, data.len(), "httparse stops early in an accepted head"),
        other => panic!("check_head accepted a head httparse reads as {other:?}"),
    }

    let request_line = data.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = request_line.split(|&b| b == b' ');
    assert_eq!(request.method.map(str::as_bytes), parts.next(), "method");
    assert_eq!(request.path.map(str::as_bytes), parts.next(), "target");
    let version = parts.next().and_then(|v| v.last()).map(|&d| d - b'0');
    assert_eq!(request.version, version, "version");
    assert_eq!(request.headers.len(), line_ends - 2, "number of fields");

    let values = |name: &str| -> Vec<&[u8]> {
        request.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).map(|h| trim(h.value)).collect()
    };
    let lengths = values("content-length");
    let codings = values("transfer-encoding");
    match info.framing {
        BodyFraming::None => {
            assert!(lengths.is_empty() && codings.is_empty(), "framing None with {lengths:?} {codings:?}")
        }
        BodyFraming::Length(n) => {
            assert!(codings.is_empty(), "Content-Length framing with Transfer-Encoding {codings:?}");
            let [length] = lengths.as_slice() else { panic!("Content-Length framing from {lengths:?}") };
            let parsed = std::str::from_utf8(length).ok().and_then(|l| l.parse::<u64>().ok());
            assert_eq!(parsed, Some(n), "Content-Length {:?}", String::from_utf8_lossy(length));
            assert!(length.iter().all(u8::is_ascii_digit), "Content-Length {:?}", String::from_utf8_lossy(length));
        }
        BodyFraming::Chunked => {
            assert!(lengths.is_empty(), "chunked framing with Content-Length {lengths:?}");
            let [coding] = codings.as_slice() else { panic!("chunked framing from {codings:?}") };
            let last = coding.rsplit(|&b| b == b',').next().map(trim).unwrap_or_default();
            assert!(
                last.eq_ignore_ascii_case(b"chunked"),
                "chunked framing from {:?}",
                String::from_utf8_lossy(coding)
            );
            assert_eq!(request.version, Some(1), "chunked framing in HTTP/1.0");
        }
    }
    assert_eq!(info.upgrade, !values("upgrade").is_empty(), "upgrade");
});

/// `value` without surrounding spaces and tabs.
fn trim(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(value.len());
    let end = value.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |i| i + 1);
    &value[start..end]
}
