//! `switchyard-componentize IN.wasm OUT.wasm`: turns a wasm32 core module built with
//! `switchyard-sdk` into a WebAssembly component that Switchyard loads as a plugin.
//!
//! The SDK's bindings leave the WIT worlds the module implements in custom sections;
//! `wit-component` reads them and wraps the module in the matching component.

use std::process::ExitCode;

use anyhow::{Context, bail};

fn componentize(input: &str, output: &str) -> anyhow::Result<()> {
    let module = std::fs::read(input).with_context(|| format!("reading {input}"))?;
    if wasmparser_is_component(&module) {
        bail!("{input} is already a component");
    }
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .with_context(|| format!("{input}: not a module built with switchyard-sdk"))?
        .validate(true)
        .encode()
        .with_context(|| format!("{input}: encoding the component"))?;
    let tmp = format!("{output}.tmp");
    std::fs::write(&tmp, &component).with_context(|| format!("writing {tmp}"))?;
    std::fs::rename(&tmp, output).with_context(|| format!("renaming {tmp} to {output}"))?;
    Ok(())
}

/// A component's preamble has layer 1 in bytes 6..8; a core module has layer 0.
fn wasmparser_is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0]
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: switchyard-componentize IN.wasm OUT.wasm");
        return ExitCode::from(2);
    };
    match componentize(input, output) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard-componentize: {e:#}");
            ExitCode::FAILURE
        }
    }
}
