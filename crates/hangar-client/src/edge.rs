//! App addresses and certificates: `/apps/{app}/ip_assignments`,
//! `/apps/{app}/certificates`, and the development CA's root.

use hangar_types::edge::{
    AddCertificateRequest, AllocateIpRequest, CertificateDetail, CertificateList,
    ImportCertificateRequest, IpAssignment, IpAssignments,
};
use reqwest::Method;

use crate::{Client, Result};

/// Escapes a hostname for a path segment (a wildcard's `*` becomes `%2A`).
fn segment(s: &str) -> String {
    s.replace('*', "%2A")
}

impl Client {
    pub async fn list_ips(&self, app: &str) -> Result<IpAssignments> {
        self.call(
            Method::GET,
            &format!("/apps/{app}/ip_assignments"),
            Self::NONE,
            &[],
        )
        .await
    }

    pub async fn allocate_ip(&self, app: &str, req: &AllocateIpRequest) -> Result<IpAssignment> {
        self.call(
            Method::POST,
            &format!("/apps/{app}/ip_assignments"),
            Some(req),
            &[],
        )
        .await
    }

    pub async fn release_ip(&self, app: &str, ip: &str) -> Result<()> {
        self.call_raw(
            Method::DELETE,
            &format!("/apps/{app}/ip_assignments/{ip}"),
            Self::NONE,
            &[],
        )
        .await
        .map(|_| ())
    }

    pub async fn list_certificates(&self, app: &str) -> Result<CertificateList> {
        self.call(
            Method::GET,
            &format!("/apps/{app}/certificates"),
            Self::NONE,
            &[],
        )
        .await
    }

    pub async fn add_certificate(&self, app: &str, hostname: &str) -> Result<CertificateDetail> {
        let body = AddCertificateRequest {
            hostname: hostname.to_string(),
        };
        self.call(
            Method::POST,
            &format!("/apps/{app}/certificates/acme"),
            Some(&body),
            &[],
        )
        .await
    }

    pub async fn import_certificate(
        &self,
        app: &str,
        req: &ImportCertificateRequest,
    ) -> Result<CertificateDetail> {
        self.call(
            Method::POST,
            &format!("/apps/{app}/certificates/custom"),
            Some(req),
            &[],
        )
        .await
    }

    pub async fn certificate(&self, app: &str, hostname: &str) -> Result<CertificateDetail> {
        self.call(
            Method::GET,
            &format!("/apps/{app}/certificates/{}", segment(hostname)),
            Self::NONE,
            &[],
        )
        .await
    }

    pub async fn check_certificate(&self, app: &str, hostname: &str) -> Result<CertificateDetail> {
        self.call(
            Method::POST,
            &format!("/apps/{app}/certificates/{}/check", segment(hostname)),
            Self::NONE,
            &[],
        )
        .await
    }

    pub async fn remove_certificate(&self, app: &str, hostname: &str) -> Result<()> {
        self.call_raw(
            Method::DELETE,
            &format!("/apps/{app}/certificates/{}", segment(hostname)),
            Self::NONE,
            &[],
        )
        .await
        .map(|_| ())
    }

    /// The development CA's root certificate, in PEM.
    pub async fn dev_ca(&self) -> Result<String> {
        self.call_raw(Method::GET, "/certificates/dev_ca", Self::NONE, &[])
            .await
    }
}
