//! Certificates for the edge proxy: a development CA that lives in the data dir and
//! signs certificates for `<app>.<app-domain>` ([`ca`]), and ACME issuance for custom
//! hostnames through TLS-ALPN-01 or HTTP-01 challenges ([`acme`]). It produces PEM; it
//! neither stores certificates nor serves them — the server records them and the proxy
//! answers the challenges and handshakes.

pub mod acme;
pub mod ca;

use std::time::{Duration, SystemTime};

/// A certificate chain with its private key, in PEM.
#[derive(Clone)]
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
    /// The issuer's common name (or whole name when it has none).
    pub issuer: String,
    pub not_after: SystemTime,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("issuer", &self.issuer)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {error}")]
    Io {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("ACME: {0}")]
    Acme(String),
}

/// The issuer and expiry of the first certificate in a PEM chain.
pub fn inspect(chain_pem: &str) -> Result<(String, SystemTime), CertError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes())
        .map_err(|e| CertError::Invalid(format!("certificate is not valid PEM: {e}")))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| CertError::Invalid(format!("certificate is not valid X.509: {e}")))?;
    let issuer = cert
        .issuer()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| cert.issuer().to_string());
    let secs = cert.validity().not_after.timestamp();
    let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    Ok((issuer, not_after))
}

/// Checks an imported certificate: valid PEM, not expired, and naming `hostname` (in its
/// subject alternative names or common name, wildcards matching one label).
pub fn check_covers(chain_pem: &str, hostname: &str) -> Result<(String, SystemTime), CertError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes())
        .map_err(|e| CertError::Invalid(format!("fullchain is not valid PEM: {e}")))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| CertError::Invalid(format!("fullchain is not a valid certificate: {e}")))?;
    let mut names: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    names.extend(
        cert.subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .map(str::to_ascii_lowercase),
    );
    let host = hostname.to_ascii_lowercase();
    let covered = names.iter().any(|n| {
        *n == host
            || n.strip_prefix("*.")
                .is_some_and(|base| host.split_once('.').is_some_and(|(_, rest)| rest == base))
    });
    if !covered {
        return Err(CertError::Invalid(format!(
            "the certificate does not name {hostname} (it names {})",
            if names.is_empty() {
                "nothing".into()
            } else {
                names.join(", ")
            }
        )));
    }
    let (issuer, not_after) = inspect(chain_pem)?;
    if not_after <= SystemTime::now() {
        return Err(CertError::Invalid(
            "the certificate has expired; import a current one".into(),
        ));
    }
    Ok((issuer, not_after))
}

/// Whether a certificate expiring at `not_after` is due for renewal: Let's Encrypt's
/// advice, in the last third of a 90-day life (30 days before expiry).
pub fn due_for_renewal(not_after: SystemTime, now: SystemTime) -> bool {
    not_after
        .duration_since(now)
        .map_or(true, |left| left < Duration::from_secs(30 * 24 * 3600))
}

/// Checks that `hostname` is a DNS name a certificate can be issued for.
pub fn validate_hostname(hostname: &str) -> Result<(), CertError> {
    let bad = |why: &str| {
        Err(CertError::Invalid(format!(
            "{hostname:?} is not a valid hostname: {why}"
        )))
    };
    if hostname.is_empty() || hostname.len() > 253 {
        return bad("it must be 1 to 253 characters");
    }
    let labels: Vec<&str> = hostname.split('.').collect();
    if labels.len() < 2 {
        return bad("it needs at least two labels, like app.example.com");
    }
    for (i, label) in labels.iter().enumerate() {
        if *label == "*" && i == 0 {
            continue;
        }
        if label.is_empty() || label.len() > 63 {
            return bad("each label must be 1 to 63 characters");
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return bad("use lowercase letters, digits and hyphens");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label cannot start or end with a hyphen");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert!(validate_hostname("www.example.com").is_ok());
        assert!(validate_hostname("*.example.com").is_ok());
        assert!(validate_hostname("localhost").is_err());
        assert!(validate_hostname("a..b").is_err());
        assert!(validate_hostname("Bad.example.com").is_err());
        assert!(validate_hostname("-a.example.com").is_err());
        assert!(validate_hostname("a.*.com").is_err());
    }

    #[test]
    fn imported_certificates_must_name_the_host() {
        let dir = std::env::temp_dir().join(format!("hangar-certs-{}", std::process::id()));
        let ca = ca::DevCa::load_or_create(&dir).expect("ca");
        let issued = ca.issue("shop.example.com").expect("issue");
        assert!(check_covers(&issued.chain_pem, "shop.example.com").is_ok());
        let err = check_covers(&issued.chain_pem, "other.example.com").expect_err("not named");
        assert!(err.to_string().contains("does not name"), "{err}");
        assert!(check_covers("junk", "shop.example.com").is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn renewal_window() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert!(!due_for_renewal(
            now + Duration::from_secs(60 * 24 * 3600),
            now
        ));
        assert!(due_for_renewal(
            now + Duration::from_secs(10 * 24 * 3600),
            now
        ));
        assert!(due_for_renewal(now - Duration::from_secs(1), now));
    }
}
