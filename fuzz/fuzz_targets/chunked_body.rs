#![no_main]
//! Fuzzes the chunked request-body follower (`proxy::strict::chunked::ChunkedBody`).
//!
//! The first input byte picks a split point and the trailer limit; the rest is the bytes after a
//! request head. The body is scanned whole, in two pieces split at that point, and one byte at a
//! time: a network may deliver it in any pieces, so all three must give the same answer (the
//! same number of body bytes and completion, or the same violation). Then:
//!
//! - a body that is not finished took every byte it was given;
//! - a finished body ends with CRLF, and scanning just its bytes finishes it again.

use libfuzzer_sys::fuzz_target;
use switchyard::proxy::strict::Violation;
use switchyard::proxy::strict::chunked::ChunkedBody;

/// Scans `body` in `pieces` as the connection does: stop at the first piece the body ends in.
fn scan<'a>(max_trailer: usize, pieces: impl IntoIterator<Item = &'a [u8]>) -> Result<(usize, bool), Violation> {
    let mut chunked = ChunkedBody::new(max_trailer);
    let mut used = 0;
    for piece in pieces {
        let n = chunked.scan(piece)?;
        assert!(n <= piece.len(), "scan claims {n} bytes of a {}-byte piece", piece.len());
        used += n;
        if n < piece.len() {
            assert!(chunked.is_done(), "scan stopped early in an unfinished body");
            break;
        }
    }
    Ok((used, chunked.is_done()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else { return };
    let split = usize::from(first) % (body.len() + 1);
    let max_trailer = [0, 1, 16, 64, 1024, 8192][usize::from(first >> 5) % 6];

    let whole = scan(max_trailer, [body]);
    let (a, b) = body.split_at(split);
    let halves = scan(max_trailer, [a, b]);
    assert_eq!(whole, halves, "split at {split}");
    let bytes = scan(max_trailer, body.chunks(1));
    assert_eq!(whole, bytes, "byte by byte");

    if let Ok((used, done)) = whole {
        if done {
            assert!(body[..used].ends_with(b"\r\n"), "a finished body does not end with CRLF");
            assert_eq!(scan(max_trailer, [&body[..used]]), Ok((used, true)), "the body alone");
        } else {
            assert_eq!(used, body.len(), "an unfinished body left bytes");
        }
    }
});
