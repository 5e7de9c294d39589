//! A chunked request body, followed byte by byte as it arrives: chunk sizes of hexadecimal
//! digits only, extensions without control characters (a bare LF in one is how parsers are made
//! to disagree), CRLF after every line and every chunk's data, and a trailer section of valid
//! field lines that never names a framing field.

use super::Violation;
use super::head::check_trailer_line;

/// The longest chunk-size line (size and extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Hex digits in a chunk size (16 fill 64 bits).
const MAX_SIZE_DIGITS: u8 = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Reading the size's digits.
    Size { digits: u8, size: u64 },
    /// Whitespace after the size, before `;`.
    SizeSpace { size: u64 },
    /// Inside chunk extensions.
    Extension { size: u64 },
    /// The CR of the size line was read.
    SizeLf { size: u64 },
    /// Chunk data still to come.
    Data { left: u64 },
    /// Expecting the CR after a chunk's data.
    DataCr,
    /// Expecting the LF after a chunk's data.
    DataLf,
    /// Inside the trailer section (after the zero-size chunk's line).
    Trailers,
    /// The body is complete.
    Done,
}

/// Follows one chunked body.
#[derive(Debug)]
pub struct ChunkedBody {
    state: State,
    /// Bytes of the current chunk-size line, against [`MAX_CHUNK_LINE`].
    line_len: usize,
    /// The trailer line being read.
    trailer_line: Vec<u8>,
    /// Trailer section bytes so far, against the limit.
    trailer_bytes: usize,
    max_trailer_bytes: usize,
}

impl ChunkedBody {
    /// A body about to start, whose trailer section may take up to `max_trailer_bytes`.
    pub fn new(max_trailer_bytes: usize) -> Self {
        ChunkedBody {
            state: State::Size { digits: 0, size: 0 },
            line_len: 0,
            trailer_line: Vec::new(),
            trailer_bytes: 0,
            max_trailer_bytes,
        }
    }

    /// Whether the body has ended.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Follows `bytes`, the body's next bytes. Returns how many belong to the body: all of
    /// them, or fewer when the body ends inside `bytes` (the rest is the next request).
    pub fn scan(&mut self, bytes: &[u8]) -> Result<usize, Violation> {
        let mut i = 0;
        while i < bytes.len() {
            if let State::Data { left } = self.state {
                let take = left.min((bytes.len() - i) as u64);
                i += take as usize;
                self.state = if take == left { State::DataCr } else { State::Data { left: left - take } };
                continue;
            }
            if self.state == State::Done {
                break;
            }
            self.step(bytes[i])?;
            i += 1;
        }
        Ok(i)
    }

    fn step(&mut self, b: u8) -> Result<(), Violation> {
        let bad = |detail: &str| Err(Violation::bad("chunked", detail.to_string()));
        if matches!(self.state, State::Size { .. } | State::SizeSpace { .. } | State::Extension { .. }) {
            self.line_len += 1;
            if self.line_len > MAX_CHUNK_LINE {
                return bad("a chunk-size line is too long");
            }
        }
        self.state = match self.state {
            State::Size { digits, size } => match (b as char).to_digit(16) {
                Some(_) if digits == MAX_SIZE_DIGITS => return bad("a chunk size has too many digits"),
                Some(d) => State::Size { digits: digits + 1, size: (size << 4) | u64::from(d) },
                None if digits == 0 => return bad("a chunk size is missing or not hexadecimal"),
                None => match b {
                    b'\r' => State::SizeLf { size },
                    b';' => State::Extension { size },
                    b' ' | b'\t' => State::SizeSpace { size },
                    b'\n' => return bad("a chunk-size line ends in LF without CR"),
                    _ => return bad("a chunk size is followed by something other than an extension or CRLF"),
                },
            },
            State::SizeSpace { size } => match b {
                b' ' | b'\t' => State::SizeSpace { size },
                b';' => State::Extension { size },
                _ => return bad("whitespace after a chunk size that is not followed by an extension"),
            },
            State::Extension { size } => match b {
                b'\r' => State::SizeLf { size },
                b'\n' => return bad("a bare LF in a chunk extension"),
                b'\t' => State::Extension { size },
                0..=0x1f | 0x7f => return bad("a control character in a chunk extension"),
                _ => State::Extension { size },
            },
            State::SizeLf { size } => match b {
                b'\n' => {
                    self.line_len = 0;
                    if size == 0 { State::Trailers } else { State::Data { left: size } }
                }
                _ => return bad("a bare CR in a chunk-size line"),
            },
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return bad("a chunk's data is longer than its size, or not followed by CRLF"),
            },
            State::DataLf => match b {
                b'\n' => State::Size { digits: 0, size: 0 },
                _ => return bad("a chunk's data is followed by CR without LF"),
            },
            State::Trailers => return self.trailer_byte(b),
            State::Data { .. } | State::Done => unreachable!("handled by scan"),
        };
        Ok(())
    }

    fn trailer_byte(&mut self, b: u8) -> Result<(), Violation> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > self.max_trailer_bytes {
            return Err(Violation::new(431, "trailer", "the trailer section is too large"));
        }
        if b != b'\n' {
            self.trailer_line.push(b);
            return Ok(());
        }
        let Some(line) = self.trailer_line.strip_suffix(b"\r") else {
            return Err(Violation::bad("chunked", "a trailer line ends in LF without CR"));
        };
        if line.is_empty() {
            self.state = State::Done;
        } else {
            check_trailer_line(line)?;
        }
        self.trailer_line.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `body` in pieces of `step` bytes; the bytes that belonged to the body.
    fn scan_in_pieces(body: &[u8], step: usize) -> Result<(usize, bool), Violation> {
        let mut chunked = ChunkedBody::new(1024);
        let mut used = 0;
        for piece in body.chunks(step) {
            let n = chunked.scan(piece)?;
            used += n;
            if n < piece.len() {
                break;
            }
        }
        Ok((used, chunked.is_done()))
    }

    #[test]
    fn valid_bodies_end_where_they_end_whatever_the_pieces() {
        let body = b"5\r\nhello\r\n1a;name=value;q=\"x y\"\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Sum: 1\r\n\r\nGET / HTTP/1.1";
        let end = body.len() - "GET / HTTP/1.1".len();
        for step in [1, 2, 3, 7, 64, body.len()] {
            assert_eq!(scan_in_pieces(body, step).unwrap(), (end, true), "pieces of {step}");
        }
        assert_eq!(scan_in_pieces(b"000\r\n\r\n", 1).unwrap(), (7, true));
        assert!(scan_in_pieces(b"5 ;ext\r\nhello\r\n0\r\n\r\n", 4).unwrap().1);
        assert_eq!(scan_in_pieces(b"5\r\nhel", 4).unwrap(), (6, false), "an unfinished body takes everything");
    }

    #[test]
    fn malformed_framing_is_refused() {
        for (body, expected) in [
            (&b"\r\n\r\n"[..], "missing"),
            (b";ext\r\n", "missing"),
            (b"0x5\r\nhello\r\n0\r\n\r\n", "followed by something"),
            (b"-1\r\n", "missing"),
            (b"+5\r\n", "missing"),
            (b"5\nhello\r\n0\r\n\r\n", "LF without CR"),
            (b"5;ext\nhello\r\n0\r\n\r\n", "bare LF in a chunk extension"),
            (b"5;e\x00\r\nhello\r\n", "control character"),
            (b"5\rhello", "bare CR"),
            (b"5\r\nhelloX\r\n", "longer than its size"),
            (b"5\r\nhello\rX", "CR without LF"),
            (b"5 5\r\n", "whitespace after"),
            (b"11111111111111111\r\n", "too many digits"),
            (b"0\r\nContent-Length: 5\r\n\r\n", "trailer field is named"),
            (b"0\r\nTransfer-Encoding: chunked\r\n\r\n", "trailer field is named"),
            (b"0\r\nHost: other\r\n\r\n", "trailer field is named"),
            (b"0\r\nX-A: 1\n\r\n", "trailer line ends in LF"),
            (b"0\r\n folded\r\n\r\n", "obs-fold"),
        ] {
            let error = scan_in_pieces(body, 3).expect_err(&String::from_utf8_lossy(body));
            assert!(error.detail.contains(expected), "{:?}: {}", String::from_utf8_lossy(body), error.detail);
        }
    }

    #[test]
    fn lines_and_trailers_are_bounded() {
        let long_extension = format!("1;{}\r\n", "a".repeat(MAX_CHUNK_LINE));
        assert!(scan_in_pieces(long_extension.as_bytes(), 100).is_err());
        let big_trailer = format!("0\r\nX-A: {}\r\n\r\n", "a".repeat(2000));
        assert_eq!(scan_in_pieces(big_trailer.as_bytes(), 100).unwrap_err().status, 431);
        let size = b"ffffffffffffffff\r\n";
        assert_eq!(scan_in_pieces(size, 5).unwrap(), (size.len(), false), "the largest size is accepted");
    }
}
