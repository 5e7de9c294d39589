//! The configuration file: TOML types ([`model`]), a recovering parser ([`parse`]), semantic
//! checks ([`validate`]) and diagnostics that name file:line:col for every problem at once.

pub mod diagnostics;
pub mod model;
mod parse;
mod validate;

use std::path::Path;

pub use diagnostics::{Collector, Diagnostic, Diagnostics, SourceFile};
pub use model::ConfigFile;
pub use validate::resolve_address;

/// Reads and checks a configuration file; returns the parsed file or every problem found.
pub fn load_file(path: &Path) -> Result<(SourceFile, ConfigFile), Diagnostics> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![Diagnostic {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        }])
    })?;
    let source = SourceFile::new(path, text);
    let config = load_source(&source)?;
    Ok((source, config))
}

/// Parses and checks configuration text.
pub fn load_source(source: &SourceFile) -> Result<ConfigFile, Diagnostics> {
    let config = parse::parse(source)?;
    let mut c = Collector::new(source);
    validate::validate(&config, &mut c);
    c.finish()?;
    Ok(config)
}
