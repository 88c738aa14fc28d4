//! App IP assignments and certificates (machines-api.md §11–12): the request and
//! response bodies of `/apps/{app}/ip_assignments` and `/apps/{app}/certificates`.

use serde::{Deserialize, Serialize};

/// `POST /apps/{app}/ip_assignments`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AllocateIpRequest {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_slug: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpNetwork {
    pub name: String,
    pub org_slug: String,
}

/// One address an app holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpAssignment {
    pub ip: String,
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    pub shared: bool,
    #[serde(default)]
    pub egress: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<IpNetwork>,
    pub created_at: String,
    /// `v4`, `shared_v4`, `v6` or `private_v6` (flyctl shows it as the Type column).
    #[serde(rename = "type", default)]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpAssignments {
    pub ips: Vec<IpAssignment>,
}

/// `POST /apps/{app}/certificates/acme`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AddCertificateRequest {
    #[serde(default)]
    pub hostname: String,
}

/// `POST /apps/{app}/certificates/custom`: a certificate the user brings.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImportCertificateRequest {
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub fullchain: String,
    #[serde(default)]
    pub private_key: String,
}

impl std::fmt::Debug for ImportCertificateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportCertificateRequest")
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateSummary {
    pub hostname: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_provider: Option<String>,
    pub acme_dns_configured: bool,
    pub acme_alpn_configured: bool,
    pub acme_http_configured: bool,
    pub ownership_txt_configured: bool,
    pub configured: bool,
    pub acme_requested: bool,
    pub has_custom_certificate: bool,
    pub has_fly_certificate: bool,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateList {
    pub certificates: Vec<CertificateSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    pub total_count: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuedCertificate {
    #[serde(rename = "type")]
    pub kind: String,
    pub expires_at: String,
    pub certificate_authority: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Certificate {
    pub source: String,
    pub status: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    pub issued: Vec<IssuedCertificate>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    pub dns_configured: bool,
    pub alpn_configured: bool,
    pub http_configured: bool,
    pub ownership_txt_configured: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsRequirements {
    pub a: Vec<String>,
    pub aaaa: Vec<String>,
    pub cname: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationError {
    pub code: String,
    pub message: String,
    pub remediation: String,
    pub timestamp: String,
}

/// `GET /apps/{app}/certificates/{hostname}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateDetail {
    pub hostname: String,
    pub configured: bool,
    pub acme_requested: bool,
    /// `pending_validation` or `active`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limited_until: Option<String>,
    pub certificates: Vec<Certificate>,
    pub validation: Validation,
    pub dns_requirements: DnsRequirements,
    pub validation_errors: Vec<ValidationError>,
}
