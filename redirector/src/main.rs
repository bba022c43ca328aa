//! The `redirector` command: daemon, config check and operator CLI.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "redirector",
    version,
    about = "MySQL/MariaDB session redirector"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground (logs to stderr, RUST_LOG filters; SIGTERM/SIGINT stop it).
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file; exit 0 if it is valid.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Operator CLI over the REST API (admin.http_address).
    Ctl(redirector::admin::ctl::CtlArgs),
    /// Load or unload the eBPF programs, pinned under a bpffs directory.
    #[command(hide = true)]
    Ebpf {
        #[command(subcommand)]
        action: EbpfAction,
    },
}

#[derive(Subcommand)]
enum EbpfAction {
    /// Load every program the daemon runs (through the verifier) and pin
    /// the programs and maps under a bpffs directory.
    Load {
        #[arg(long, default_value = "/sys/fs/bpf/redirector")]
        pin: PathBuf,
    },
    /// Remove what `load` pinned.
    Unload {
        #[arg(long, default_value = "/sys/fs/bpf/redirector")]
        pin: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The CLI client prints its own results and errors; it does not log.
    if !matches!(cli.command, Command::Ctl(_)) {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_writer(std::io::stderr)
            // Colour codes only for a terminal: in a log file they are noise.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    let result = match cli.command {
        Command::Ctl(args) => return redirector::admin::ctl::main(args),
        Command::Run { config } => run(&config),
        Command::Check { config } => check(&config),
        Command::Ebpf { action } => ebpf(action),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn ebpf(action: EbpfAction) -> anyhow::Result<()> {
    use redirector::datapath::loader;
    match action {
        EbpfAction::Load { pin } => {
            let mut programs = loader::Programs::load(None)?;
            let names = programs.pin(&pin)?;
            println!("pinned under {}: {}", pin.display(), names.join(", "));
        }
        EbpfAction::Unload { pin } => {
            if loader::unpin(&pin)? {
                println!("removed {}", pin.display());
            } else {
                println!("nothing pinned under {}", pin.display());
            }
        }
    }
    Ok(())
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let config = redirector::config::Config::load(path)?;
    println!(
        "{}: configuration is valid ({} servers)",
        path.display(),
        config.servers.len()
    );
    Ok(())
}

fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let config = redirector::config::Config::load(path)?;
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    redirector::daemon::limit_malloc_arenas(workers);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    rt.block_on(redirector::run(config))
}
