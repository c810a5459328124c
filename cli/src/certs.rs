//! `seedling cluster certs init|issue NODE`: a cluster CA and node
//! certificates for operators who have no PKI of their own. Every node
//! both accepts and dials, so each certificate serves as client and server.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use seedling_proto::pki;

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create the cluster CA (ca.pem, ca.key) that node certificates are checked against
    Init {
        /// Directory for the CA files; keep ca.key off the nodes
        #[arg(long, default_value = "cluster-certs")]
        dir: PathBuf,
        /// How long the CA is valid, in days
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Replace files that already exist
        #[arg(long)]
        force: bool,
    },
    /// Issue NODE.pem and NODE.key, signed by the CA in --dir
    Issue {
        /// The node's name (its certificate's common name and file names)
        node: String,
        /// A name or IP address other nodes reach it by (repeat); [default: localhost and 127.0.0.1]
        #[arg(long = "host")]
        hosts: Vec<String>,
        #[arg(long, default_value = "cluster-certs")]
        dir: PathBuf,
        /// How long the certificate is valid, in days
        #[arg(long, default_value_t = 365)]
        days: u32,
        #[arg(long)]
        force: bool,
    },
}

pub fn run(command: CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Init { dir, days, force } => init(&dir, days, force),
        CertsCommand::Issue {
            node,
            hosts,
            dir,
            days,
            force,
        } => issue(&dir, &node, &hosts, days, force),
    }
}

fn init(dir: &Path, days: u32, force: bool) -> anyhow::Result<()> {
    let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    refuse_to_overwrite(&[&cert_path, &key_path], force)?;
    let ca = pki::new_ca(days)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_public(&cert_path, &ca.cert)?;
    write_secret(&key_path, &ca.key)?;
    println!(
        "cluster CA written: {} (give it to every node), {} (keep it off the nodes)",
        cert_path.display(),
        key_path.display()
    );
    Ok(())
}

fn issue(dir: &Path, node: &str, hosts: &[String], days: u32, force: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        pki::is_node_name(node),
        "node name {node:?}: use letters, digits, '-', '_' or '.' (it names the files)"
    );
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {}: create the CA first with `seedling cluster certs init --dir {}`",
                path.display(),
                dir.display()
            )
        })
    };
    let ca = pki::CertifiedKey {
        cert: read(CA_CERT)?,
        key: read(CA_KEY)?,
    };
    let (cert_path, key_path) = (
        dir.join(format!("{node}.pem")),
        dir.join(format!("{node}.key")),
    );
    refuse_to_overwrite(&[&cert_path, &key_path], force)?;
    let hosts: Vec<String> = if hosts.is_empty() {
        vec!["localhost".into(), "127.0.0.1".into()]
    } else {
        hosts.to_vec()
    };
    let issued = pki::issue(&ca, node, &hosts, days)?;
    write_public(&cert_path, &issued.cert)?;
    write_secret(&key_path, &issued.key)?;
    println!(
        "node certificate for {node} ({}) written: {}, {}",
        hosts.join(", "),
        cert_path.display(),
        key_path.display()
    );
    Ok(())
}

fn refuse_to_overwrite(paths: &[&Path], force: bool) -> anyhow::Result<()> {
    if let Some(existing) = paths.iter().find(|p| p.exists())
        && !force
    {
        anyhow::bail!(
            "{} exists; pass --force to replace it (nodes holding the old files stop being trusted)",
            existing.display()
        );
    }
    Ok(())
}

fn write_public(path: &Path, pem: &str) -> anyhow::Result<()> {
    std::fs::write(path, pem).with_context(|| format!("cannot write {}", path.display()))
}

/// A private key is readable by its owner only, from the moment it exists.
fn write_secret(path: &Path, pem: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(pem.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}
