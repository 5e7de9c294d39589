//! Logging: the process's `tracing` subscriber (text or JSON lines, to stderr or a file, with the
//! access log on or off) and the live feed behind `GET /api/v1/logs/stream`, which gets every
//! line as a JSON object while someone is listening, plus the last few hundred for a new
//! listener. Nothing is formatted for the feed while nobody listens.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::broadcast;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Lines a new listener gets from before it connected.
const RECENT_LINES: usize = 200;
/// Lines a slow listener may fall behind before it skips ahead.
const CHANNEL_LINES: usize = 1024;

/// The target of the access log's events (one per request).
pub const ACCESS_TARGET: &str = "switchyard::access";
/// The target of the admin API's audit events (one per change).
pub const AUDIT_TARGET: &str = "switchyard::audit";

/// Recent log lines and the listeners of new ones.
pub struct LogFeed {
    recent: Mutex<VecDeque<Arc<str>>>,
    sender: broadcast::Sender<Arc<str>>,
}

impl std::fmt::Debug for LogFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFeed").field("listeners", &self.sender.receiver_count()).finish()
    }
}

impl LogFeed {
    /// The process's feed.
    pub fn global() -> &'static LogFeed {
        static FEED: OnceLock<LogFeed> = OnceLock::new();
        FEED.get_or_init(|| LogFeed {
            recent: Mutex::new(VecDeque::new()),
            sender: broadcast::channel(CHANNEL_LINES).0,
        })
    }

    /// Whether anyone listens (only then are lines formatted for the feed).
    pub fn has_listeners(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    /// The recent lines and a receiver of the lines to come.
    pub fn subscribe(&self) -> (Vec<Arc<str>>, broadcast::Receiver<Arc<str>>) {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        // Subscribed under the lock, so no line falls between the two.
        let receiver = self.sender.subscribe();
        (recent.iter().cloned().collect(), receiver)
    }

    fn push(&self, line: &str) {
        let line: Arc<str> = Arc::from(line.trim_end());
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT_LINES {
            recent.pop_front();
        }
        recent.push_back(line.clone());
        let _ = self.sender.send(line);
    }
}

/// Collects one formatted event and hands it to the feed when dropped.
struct FeedWriter(Vec<u8>);

impl Write for FeedWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for FeedWriter {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            LogFeed::global().push(&String::from_utf8_lossy(&self.0));
        }
    }
}

/// How the process logs (`[log]`; a restart applies changes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogSettings {
    /// JSON lines instead of text.
    pub json: bool,
    /// Append to this file instead of stderr.
    pub file: Option<std::path::PathBuf>,
    /// The `tracing` filter (`SWITCHYARD_LOG` overrides it). Default `info`.
    pub level: Option<String>,
    /// One line per request on the `switchyard::access` target. Default on.
    pub access_log: bool,
}

impl LogSettings {
    /// Text to stderr at `info`, with the access log.
    pub fn standard() -> Self {
        LogSettings { access_log: true, ..Default::default() }
    }
}

/// Installs the process's subscriber; `Err` when the log file cannot be opened.
pub fn init(settings: &LogSettings) -> Result<(), String> {
    let mut directives =
        std::env::var("SWITCHYARD_LOG").ok().or_else(|| settings.level.clone()).unwrap_or_else(|| "info".to_string());
    if !settings.access_log {
        directives.push_str(&format!(",{ACCESS_TARGET}=off"));
    }
    let filter =
        tracing_subscriber::EnvFilter::try_new(&directives).map_err(|e| format!("log level `{directives}`: {e}"))?;
    let writer: tracing_subscriber::fmt::writer::BoxMakeWriter = match &settings.file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open the log file {}: {e}", path.display()))?;
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(Mutex::new(file))
        }
        None => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
    };
    let ansi = settings.file.is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let output = if settings.json {
        tracing_subscriber::fmt::layer().json().flatten_event(true).with_writer(writer).boxed()
    } else {
        tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(writer).boxed()
    };
    let feed = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_writer(|| FeedWriter(Vec::new()))
        .with_filter(tracing_subscriber::filter::filter_fn(|_| LogFeed::global().has_listeners()));
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .with(feed)
        .try_init()
        .map_err(|e| format!("cannot install the logger: {e}"))
}
