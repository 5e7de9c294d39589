//! Compiled components, kept so that loading the same plugin bytes again skips Cranelift: in
//! memory by the component's sha256 (an upstream's inline balancer and a reload reuse them), and
//! on disk under a directory keyed by the engine's compatibility hash (a restart reuses them).
//!
//! A disk entry is wasmtime's serialized component followed by the sha256 of those bytes.
//! Deserializing runs native code from the file, so only entries whose checksum matches are
//! used, files are written atomically (temporary file, then rename) with mode 0600 in a 0700
//! directory, and any entry that fails to load is removed and compiled again. The directory must
//! be as trusted as the binary itself: it is the user's cache directory by default.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use sha2::Digest;
use wasmtime::Engine;
use wasmtime::component::Component;

/// The environment variable that sets the disk cache directory, or turns it off with `off`.
pub const CACHE_DIR_ENV: &str = "SWITCHYARD_PLUGIN_CACHE";

/// Where a component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompileSource {
    /// Compiled by an earlier load in this process.
    Memory,
    /// Compiled by an earlier process, read from the disk cache.
    Disk,
    /// Compiled now.
    Compiled,
}

/// The in-memory and on-disk caches of compiled components.
#[derive(Debug)]
pub struct CompileCache {
    memory: Mutex<HashMap<String, Component>>,
    dir: Option<PathBuf>,
    temp_counter: AtomicU64,
}

impl CompileCache {
    /// A cache that keeps compiled components under `dir` (`None`: in memory only).
    pub fn new(dir: Option<PathBuf>) -> Self {
        CompileCache { memory: Mutex::new(HashMap::new()), dir, temp_counter: AtomicU64::new(0) }
    }

    /// The default disk directory: `$SWITCHYARD_PLUGIN_CACHE` (`off` for none), else
    /// `$XDG_CACHE_HOME/switchyard/compiled`, else `$HOME/.cache/switchyard/compiled`.
    pub fn default_dir() -> Option<PathBuf> {
        match std::env::var_os(CACHE_DIR_ENV) {
            Some(v) if v == "off" || v.is_empty() => return None,
            Some(v) => return Some(PathBuf::from(v)),
            None => {}
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("switchyard").join("compiled"))
    }

    /// The compiled component of `bytes` (whose sha256 is `sha256`), from memory, from disk, or
    /// compiled now and stored in both.
    pub fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha256: &str,
    ) -> wasmtime::Result<(Component, CompileSource)> {
        if let Some(c) = self.memory.lock().ok().and_then(|m| m.get(sha256).cloned()) {
            return Ok((c, CompileSource::Memory));
        }
        let file = self.dir.as_ref().map(|dir| dir.join(engine_key(engine)).join(format!("{sha256}.cwasm")));
        let (component, source) = match file.as_deref().and_then(|f| read_entry(engine, f)) {
            Some(c) => (c, CompileSource::Disk),
            None => {
                let c = Component::new(engine, bytes)?;
                if let Some(f) = &file
                    && let Err(e) = self.write_entry(&c, f)
                {
                    tracing::debug!("cannot store the compiled plugin in {}: {e}", f.display());
                }
                (c, CompileSource::Compiled)
            }
        };
        if let Ok(mut m) = self.memory.lock() {
            m.insert(sha256.to_string(), component.clone());
        }
        Ok((component, source))
    }

    /// Forgets the in-memory components whose sha256 is not in `keep` (the disk keeps them).
    pub fn retain(&self, keep: &HashSet<&str>) {
        if let Ok(mut m) = self.memory.lock() {
            m.retain(|sha, _| keep.contains(sha.as_str()));
        }
    }

    /// How many components are held in memory.
    pub fn len_in_memory(&self) -> usize {
        self.memory.lock().map_or(0, |m| m.len())
    }

    fn write_entry(&self, component: &Component, file: &Path) -> std::io::Result<()> {
        let dir = file.parent().ok_or_else(|| std::io::Error::other("no parent directory"))?;
        create_private_dir(dir)?;
        let mut data = component.serialize().map_err(std::io::Error::other)?;
        let checksum = sha2::Sha256::digest(&data);
        data.extend_from_slice(&checksum);
        let temp = dir.join(format!(
            ".{}.{}.{}.tmp",
            file.file_name().and_then(|n| n.to_str()).unwrap_or("entry"),
            std::process::id(),
            self.temp_counter.fetch_add(1, Relaxed)
        ));
        let written = (|| {
            let mut f = private_file(&temp)?;
            f.write_all(&data)?;
            f.sync_all()?;
            std::fs::rename(&temp, file)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written
    }
}

/// A directory name that changes whenever the engine could not run another's compiled code
/// (wasmtime version, target, settings).
fn engine_key(engine: &Engine) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("engine-{:016x}", h.finish())
}

/// A disk entry, if it exists, is intact, and loads; a damaged or incompatible one is removed.
fn read_entry(engine: &Engine, file: &Path) -> Option<Component> {
    let data = std::fs::read(file).ok()?;
    let intact = data.len() > 32 && {
        let (body, checksum) = data.split_at(data.len() - 32);
        sha2::Sha256::digest(body).as_slice() == checksum
    };
    let loaded = if intact {
        let body = &data[..data.len() - 32];
        // SAFETY: the bytes are what `Component::serialize` wrote for an engine with the same
        // compatibility hash (the directory name), unchanged since (the checksum), in a private
        // directory; wasmtime still checks the header and refuses an incompatible artifact.
        unsafe { Component::deserialize(engine, body) }.ok()
    } else {
        None
    };
    if loaded.is_none() {
        tracing::warn!("discarding the unusable compiled plugin {}", file.display());
        let _ = std::fs::remove_file(file);
    }
    loaded
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component: no imports, no exports.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        Engine::new(&config).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_component_is_compiled_once_then_found_in_memory_then_on_disk() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let engine = engine();
        let sha = crate::plugin::sha256_hex(EMPTY_COMPONENT);
        let cache = CompileCache::new(Some(dir.path().to_path_buf()));
        let load = |cache: &CompileCache| cache.component(&engine, EMPTY_COMPONENT, &sha).map(|(_, s)| s).ok();
        assert_eq!(load(&cache), Some(CompileSource::Compiled));
        assert_eq!(load(&cache), Some(CompileSource::Memory));
        // A new process: nothing in memory, the disk entry is used.
        let fresh = CompileCache::new(Some(dir.path().to_path_buf()));
        assert_eq!(load(&fresh), Some(CompileSource::Disk));
        let entry = dir.path().join(engine_key(&engine)).join(format!("{sha}.cwasm"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&entry).map(|m| m.permissions().mode() & 0o777).ok();
        assert_eq!(mode, Some(0o600));
        fresh.retain(&HashSet::new());
        assert_eq!(fresh.len_in_memory(), 0);
    }

    #[test]
    fn a_damaged_disk_entry_is_discarded_and_compiled_again() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let engine = engine();
        let sha = crate::plugin::sha256_hex(EMPTY_COMPONENT);
        let first = CompileCache::new(Some(dir.path().to_path_buf()));
        assert!(first.component(&engine, EMPTY_COMPONENT, &sha).is_ok());
        let entry = dir.path().join(engine_key(&engine)).join(format!("{sha}.cwasm"));
        let mut data = std::fs::read(&entry).unwrap_or_else(|e| panic!("{e}"));
        data[40] ^= 0xff;
        std::fs::write(&entry, &data).unwrap_or_else(|e| panic!("{e}"));
        let second = CompileCache::new(Some(dir.path().to_path_buf()));
        let source = second.component(&engine, EMPTY_COMPONENT, &sha).map(|(_, s)| s).ok();
        assert_eq!(source, Some(CompileSource::Compiled));
        // The damaged entry was replaced by a good one.
        let third = CompileCache::new(Some(dir.path().to_path_buf()));
        assert_eq!(third.component(&engine, EMPTY_COMPONENT, &sha).map(|(_, s)| s).ok(), Some(CompileSource::Disk));
    }
}
