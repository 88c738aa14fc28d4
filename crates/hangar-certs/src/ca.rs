//! The development CA: a self-signed root created on first use under the data dir
//! (`dev-ca.pem`, and `dev-ca.key` readable by its owner only), which signs short-lived
//! certificates for the apps' own hostnames. `hangar certs ca` prints the root so it can
//! be added to a trust store.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::OffsetDateTime;

use crate::{CertError, Issued};

/// The common name of the development CA.
pub const CA_NAME: &str = "Hangar development CA";

/// How long a certificate from the development CA lasts.
const LEAF_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

pub struct DevCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |error| CertError::Io {
        path: path.to_path_buf(),
        error,
    }
}

fn write_private(path: &Path, contents: &str) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(contents.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

impl DevCa {
    /// Loads the CA kept in `dir`, creating it the first time.
    pub fn load_or_create(dir: &Path) -> Result<DevCa, CertError> {
        let cert_path: PathBuf = dir.join("dev-ca.pem");
        let key_path: PathBuf = dir.join("dev-ca.key");
        if cert_path.exists() && key_path.exists() {
            let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
            let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
            let key = KeyPair::from_pem(&key_pem)?;
            let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
            return Ok(DevCa { cert_pem, issuer });
        }
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, CA_NAME);
        name.push(DnType::OrganizationName, "Hangar");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        write_private(&key_path, &key.serialize_pem())?;
        std::fs::write(&cert_path, &cert_pem).map_err(io(&cert_path))?;
        let issuer = Issuer::new(params, key);
        Ok(DevCa { cert_pem, issuer })
    }

    /// The root certificate, for trust stores.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Signs a certificate for `hostname` with a fresh key.
    pub fn issue(&self, hostname: &str) -> Result<Issued, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![hostname.to_string()])?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, hostname);
        params.distinguished_name = name;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::seconds(LEAF_LIFETIME.as_secs() as i64);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            chain_pem: cert.pem() + &self.cert_pem,
            key_pem: key.serialize_pem(),
            issuer: CA_NAME.to_string(),
            not_after: SystemTime::now() + LEAF_LIFETIME,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_persists_and_signs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = DevCa::load_or_create(dir.path()).expect("create");
        let again = DevCa::load_or_create(dir.path()).expect("load");
        assert_eq!(ca.cert_pem(), again.cert_pem());
        let issued = again.issue("web.localhost").expect("issue");
        let (issuer, not_after) = crate::inspect(&issued.chain_pem).expect("inspect");
        assert_eq!(issuer, CA_NAME);
        assert!(not_after > SystemTime::now() + Duration::from_secs(80 * 24 * 3600));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("dev-ca.key"))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
