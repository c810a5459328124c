//! A cluster CA and node certificates, for operators without a PKI of
//! their own (`seedling cluster certs`). Every node both accepts and dials,
//! so each node certificate serves as client and as server.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// A certificate and its private key, as PEM.
#[derive(Debug, Clone)]
pub struct CertifiedKey {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{0}")]
    Invalid(String),
    #[error("{what}: {source}")]
    Rcgen {
        what: &'static str,
        source: rcgen::Error,
    },
}

fn rcgen(what: &'static str) -> impl Fn(rcgen::Error) -> PkiError {
    move |source| PkiError::Rcgen { what, source }
}

fn params_valid_for(days: u32) -> Result<CertificateParams, PkiError> {
    if days == 0 {
        return Err(PkiError::Invalid(
            "a certificate must be valid for at least a day".into(),
        ));
    }
    let mut params = CertificateParams::default();
    let now = OffsetDateTime::now_utc();
    // A little slack for nodes whose clocks disagree.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(i64::from(days));
    Ok(params)
}

/// A new cluster CA, valid for `days`; it signs node certificates only.
pub fn new_ca(days: u32) -> Result<CertifiedKey, PkiError> {
    let mut params = params_valid_for(days)?;
    // Named apart from every other cluster's CA, so a refusal says "unknown
    // issuer" rather than a signature mismatch under a shared name.
    let minted = OffsetDateTime::now_utc().unix_timestamp_nanos();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("Seedling cluster CA {minted:x}"),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().map_err(rcgen("a new key"))?;
    let cert = params.self_signed(&key).map_err(rcgen("the CA"))?;
    Ok(CertifiedKey {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Whether `node` can name a node (and the files of its certificate).
pub fn is_node_name(node: &str) -> bool {
    !node.is_empty()
        && node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// A certificate for `node`, reachable as each of `hosts` (DNS names or IP
/// addresses), signed by `ca` and valid for `days`.
pub fn issue(
    ca: &CertifiedKey,
    node: &str,
    hosts: &[String],
    days: u32,
) -> Result<CertifiedKey, PkiError> {
    if !is_node_name(node) {
        return Err(PkiError::Invalid(format!(
            "node name {node:?}: use letters, digits, '-', '_' or '.'"
        )));
    }
    if hosts.is_empty() {
        return Err(PkiError::Invalid(format!(
            "{node}: name at least one host it is reached by"
        )));
    }
    let ca_key = KeyPair::from_pem(&ca.key).map_err(rcgen("the CA key"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key).map_err(rcgen("the CA certificate"))?;
    let mut params = params_valid_for(days)?;
    params.subject_alt_names = hosts
        .iter()
        .map(|host| match host.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => host.as_str().try_into().map(SanType::DnsName).map_err(|_| {
                PkiError::Invalid(format!(
                    "host {host:?} is neither an IP address nor a DNS name"
                ))
            }),
        })
        .collect::<Result<_, _>>()?;
    params.distinguished_name.push(DnType::CommonName, node);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().map_err(rcgen("a new key"))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(rcgen("the node certificate"))?;
    Ok(CertifiedKey {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}
