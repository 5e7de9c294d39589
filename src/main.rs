//! The `switchyard` command line: `run`, `check`, `reload`, `upgrade` and `demo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchyard::admin::client as control;
use switchyard::admin::logs::{self, LogSettings};
use switchyard::demo::{EchoOrigin, demo_config};
use switchyard::plugin::PluginEngine;
use switchyard::proxy::server::RunOptions;
use switchyard::{generation, proxy};

/// mimalloc instead of the system allocator: a request through a plugin chain makes many small,
/// short-lived allocations (header names and values, strings crossing the plugin boundary), and
/// glibc's malloc spent about 14 µs of CPU per chained request on them in the load comparison.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "A reverse proxy on Pingora whose every traffic decision is a WebAssembly plugin"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy with a configuration file.
    Run {
        /// The TOML configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Take the listening sockets over from a running Switchyard (then send it SIGQUIT):
        /// a restart or binary upgrade without refusing a connection.
        #[arg(long)]
        upgrade: bool,
        /// Development TLS: sites without `tls` get certificates from a local CA (created once
        /// in the storage directory, its path printed), and HTTPS listens on 127.0.0.1:8443
        /// when the configuration has no `tls_listen`.
        #[arg(long)]
        dev: bool,
    },
    /// Tell the running proxy to reload its configuration: through its admin listener
    /// (`[admin] listen`, with the outcome printed), else SIGHUP to the pid in `[server] pid_file`.
    Reload {
        /// The running proxy's configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Upgrade the running proxy with no refused connection: it starts this program's binary
    /// again (the new version, if the file was replaced) and hands it the listening sockets.
    /// Through its admin listener (`[admin] listen`, with the outcome printed), else SIGUSR2 to
    /// the pid in `[server] pid_file`, waiting for the pid file to name the new process.
    Upgrade {
        /// The running proxy's configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Check a configuration file (and load its plugins) without serving: exit 0, or print every
    /// problem as file:line:col and exit 1.
    Check {
        /// The TOML configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Run the built-in demo: two in-process backends behind the proxy, no configuration needed.
    Demo {
        /// Where the demo proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
}

/// Installs the logger: `[log]` of the configuration `run` serves (read before it loads, so its
/// plugin loading is logged there too), else text on stderr.
fn init_logging(command: &Command) {
    let settings = match command {
        Command::Run { config, .. } => switchyard::config::load_file(config)
            .ok()
            .map(|(source, file)| file.log.settings(source.base_dir()))
            .unwrap_or_else(LogSettings::standard),
        _ => LogSettings::standard(),
    };
    if let Err(e) = logs::init(&settings) {
        eprintln!("switchyard: {e}");
        std::process::exit(1);
    }
}

fn engine_or_exit() -> std::sync::Arc<PluginEngine> {
    match PluginEngine::new() {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("switchyard: cannot start the plugin engine: {e:#}");
            std::process::exit(1);
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.command);
    match cli.command {
        Command::Check { config } => {
            let engine = engine_or_exit();
            match generation::load(&config, &engine) {
                Ok(g) => {
                    let names: Vec<_> = g.plugins.iter().map(|p| p.name().to_string()).collect();
                    println!(
                        "{}: ok ({} upstreams, {} routes, plugins: {})",
                        config.display(),
                        g.upstreams.len(),
                        g.routes.len(),
                        names.join(", ")
                    );
                    ExitCode::SUCCESS
                }
                Err(problems) => {
                    eprintln!("{problems}");
                    eprintln!("{}: {} problem(s)", config.display(), problems.0.len());
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config, upgrade, dev } => {
            switchyard::tls::plan::set_dev_mode(dev);
            let engine = engine_or_exit();
            match generation::load(&config, &engine) {
                Ok(g) => {
                    if upgrade {
                        // Started by a running process's upgrade: it hands the sockets over now.
                        proxy::upgrade::tell_starter_ready();
                    }
                    let options = RunOptions { config_path: Some(config), engine, upgrade };
                    proxy::server::run_server(g, options)
                }
                Err(problems) => {
                    eprintln!("{problems}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Reload { config } => report(control::reload_running(&config)),
        Command::Upgrade { config } => report(control::upgrade_running(&config)),
        Command::Demo { listen } => run_demo(listen),
    }
}

fn run_demo(listen: SocketAddr) -> ExitCode {
    // The origins get their own runtime thread; Pingora runs its own.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        };
        runtime.block_on(async move {
            match (EchoOrigin::start("backend-a").await, EchoOrigin::start("backend-b").await) {
                (Ok(a), Ok(b)) => {
                    let _ = tx.send(Ok((a.addr, b.addr)));
                    std::future::pending::<()>().await;
                }
                (Err(e), _) | (_, Err(e)) => {
                    let _ = tx.send(Err(e.to_string()));
                }
            }
        });
    });
    let (a, b) = match rx.recv() {
        Ok(Ok(addrs)) => addrs,
        Ok(Err(e)) => {
            eprintln!("switchyard demo: cannot start the demo backends: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("switchyard demo: cannot start the demo backends: {e}");
            return ExitCode::FAILURE;
        }
    };
    let engine = engine_or_exit();
    let text = demo_config(listen, a, b);
    match generation::load_text(std::path::Path::new("<demo>"), &text, &engine) {
        Ok(g) => {
            println!("Switchyard demo on http://{listen} (backends: backend-a on {a}, backend-b on {b})");
            println!("Try:");
            println!("  curl -i http://{listen}/            # round-robin over backend-a and backend-b");
            println!("  curl -i http://{listen}/api/users   # /api goes to backend-b, with the prefix stripped");
            println!("  curl -i -b /tmp/switchyard-demo.jar -c /tmp/switchyard-demo.jar http://{listen}/ab");
            println!("                                      # A/B split: x-variant names your variant; repeat it and");
            println!("                                      # the cookie in the jar keeps you there");
            println!("The demo's configuration:\n{text}");
            proxy::server::run_server(g, RunOptions { config_path: None, engine, upgrade: false })
        }
        Err(problems) => {
            eprintln!("{problems}");
            ExitCode::FAILURE
        }
    }
}

fn report(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}
