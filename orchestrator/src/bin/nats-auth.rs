//! `nats-auth`: the one-time set-up of NATS isolation. `init` makes a NATS operator, a system
//! account and the control plane's account (JetStream enabled), and writes what each party
//! keeps: the nats-server configuration to include, the account signing seed the orchestrator
//! mints component users with, the orchestrator's own credentials, and the identity seeds to
//! keep offline. `creds` mints a component's credentials by hand (for the `external` runtime).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use operator_nats_auth::{AccountSigner, ComponentAccess, NatsSetup, ACCOUNT_SEED_FILE_ENV};

/// The file names `init` writes in its directory.
const SERVER_CONFIG_FILE: &str = "nats-auth.conf";
const SIGNING_SEED_FILE: &str = "account-signing.seed";
const ORCHESTRATOR_CREDS_FILE: &str = "orchestrator.creds";
const IDENTITY_SEEDS_FILE: &str = "identity.seeds";

#[derive(Parser)]
#[command(
    name = "nats-auth",
    version,
    about = "NATS isolation: decentralized JWT auth for the control plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generates the operator and accounts and writes the set-up files into DIR.
    Init {
        /// Where the files go (created when missing).
        #[arg(long)]
        dir: PathBuf,
        /// Replace files that already exist (every minted credential becomes invalid).
        #[arg(long)]
        force: bool,
    },
    /// Prints the credentials of one component of an operator, allowed only that operator's
    /// names (its defaults, or those given like the component's own variables).
    Creds {
        /// The account signing seed file `init` wrote.
        #[arg(long, env = ACCOUNT_SEED_FILE_ENV)]
        seed_file: PathBuf,
        /// The operator's name.
        #[arg(long)]
        operator: String,
        /// The component's name, recorded in the user JWT.
        #[arg(long, default_value = "component")]
        component: String,
        /// Component variables that change its names, as KEY=VALUE (e.g.
        /// ENTITY_OF_INTEREST_MESSAGE_STREAM=dataos-azure-entities); repeatable.
        #[arg(long = "env", value_parser = parse_key_value)]
        env: Vec<(String, String)>,
    },
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("'{s}' is not KEY=VALUE"))
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Init { dir, force } => init(&dir, force),
        Command::Creds {
            seed_file,
            operator,
            component,
            env,
        } => {
            let text = std::fs::read_to_string(&seed_file)
                .with_context(|| format!("cannot read {}", seed_file.display()))?;
            let signer = AccountSigner::from_seed_file_text(&text)?;
            let access = ComponentAccess::for_component(&operator, [], |name| {
                env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
            });
            let creds = signer.mint(
                &format!("{operator}/{component}"),
                Some(&access.permissions()),
            )?;
            print!("{}", creds.0);
            Ok(())
        }
    }
}

fn init(dir: &Path, force: bool) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let setup = NatsSetup::generate()?;
    let files = [
        (SERVER_CONFIG_FILE, setup.server_config.as_str(), 0o644),
        (SIGNING_SEED_FILE, setup.signing_seed_file.as_str(), 0o600),
        (
            ORCHESTRATOR_CREDS_FILE,
            setup.orchestrator_creds.0.as_str(),
            0o600,
        ),
        (IDENTITY_SEEDS_FILE, setup.identity_seeds.as_str(), 0o600),
    ];
    if !force {
        if let Some((name, _, _)) = files.iter().find(|(name, _, _)| dir.join(name).exists()) {
            bail!(
                "{} exists: a set-up is already there (--force replaces it, invalidating every credential)",
                dir.join(name).display()
            );
        }
    }
    for (name, content, mode) in files {
        write_file(&dir.join(name), content, mode)?;
    }
    println!(
        "wrote {dir}/{SERVER_CONFIG_FILE} (include it in nats-server's configuration, with JetStream)\n\
         wrote {dir}/{SIGNING_SEED_FILE} (the orchestrator's {ACCOUNT_SEED_FILE_ENV})\n\
         wrote {dir}/{ORCHESTRATOR_CREDS_FILE} (the orchestrator's NATS_CREDS_FILE)\n\
         wrote {dir}/{IDENTITY_SEEDS_FILE} (keep offline)",
        dir = dir.display()
    );
    Ok(())
}

/// Writes `content` with `mode` from the start: a seed is never readable by others, even briefly.
fn write_file(path: &Path, content: &str, mode: u32) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(content.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}
