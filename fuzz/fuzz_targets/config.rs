#![no_main]
//! Fuzzes configuration loading: TOML text through `config::load_source`, the parse and the
//! semantic checks that `switchyard check` runs before it loads any plugin (loading plugins and
//! reading the files a configuration names are left out: they do I/O).
//!
//! Input bytes are read as UTF-8 (lossily). Loading must not panic, and every diagnostic must
//! point inside the text: line 0 (the file as a whole) or a line of the text and a column from 1
//! to one past that line's last character, in this file; diagnostics come sorted by place.

use libfuzzer_sys::fuzz_target;
use switchyard::config::{SourceFile, load_source};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let source = SourceFile::new("fuzz.toml", text.as_ref());
    let Err(diagnostics) = load_source(&source) else { return };
    assert!(!diagnostics.0.is_empty(), "an error without diagnostics");
    let lines: Vec<&str> = text.split('\n').collect();
    let mut previous = (0, 0);
    for d in &diagnostics.0 {
        let printed = d.to_string();
        assert!(printed.starts_with("fuzz.toml:"), "{printed}");
        assert_eq!(d.file, source.path, "{printed}");
        assert!(!d.message.is_empty(), "{printed}");
        assert!((d.line, d.column) >= previous, "diagnostics out of order at {printed}");
        previous = (d.line, d.column);
        if d.line == 0 {
            assert_eq!(d.column, 0, "{printed}");
            continue;
        }
        assert!(d.line <= lines.len(), "line {} of a {}-line text: {printed}", d.line, lines.len());
        let width = lines[d.line - 1].chars().count();
        assert!((1..=width + 1).contains(&d.column), "column {} of a {width}-character line: {printed}", d.column);
    }
});
