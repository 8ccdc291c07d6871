//! The certificates of a local control plane, as controller-runtime's envtest
//! makes them: one CA, a serving certificate for 127.0.0.1/localhost, an admin
//! client certificate in `system:masters`, and a service-account signing key.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::Error;

/// Paths of the generated PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The CA certificate (serving and client CA).
    pub ca_cert: PathBuf,
    /// kube-apiserver's serving certificate.
    pub serving_cert: PathBuf,
    /// kube-apiserver's serving key.
    pub serving_key: PathBuf,
    /// The admin client certificate (CN=cmp-admin, O=system:masters).
    pub admin_cert: PathBuf,
    /// The admin client key.
    pub admin_key: PathBuf,
    /// The service-account signing key.
    pub service_account_key: PathBuf,
    /// Its public half, which verifies tokens.
    pub service_account_public_key: PathBuf,
}

fn cert_error(what: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |source| Error::Certificates { what: what.to_string(), source }
}

/// Writes fresh certificates into `dir`.
pub fn generate(dir: &Path) -> Result<CertFiles, Error> {
    generate_for(dir, &[], &[])
}

/// [`generate`], with a serving certificate valid also for `ips` and `names`
/// (a node's API server: the address pods reach, the `kubernetes` Service's
/// ClusterIP and names).
pub fn generate_for(dir: &Path, ips: &[std::net::IpAddr], names: &[&str]) -> Result<CertFiles, Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error("CA parameters"))?;
    ca_params.distinguished_name.push(DnType::CommonName, "cmp-local-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate().map_err(cert_error("CA key"))?;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(cert_error("CA certificate"))?;

    let mut serving =
        CertificateParams::new(vec!["localhost".to_string()]).map_err(cert_error("serving parameters"))?;
    serving.subject_alt_names.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    serving.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    for name in names {
        let name = (*name).try_into().map_err(cert_error("serving certificate's names"))?;
        serving.subject_alt_names.push(SanType::DnsName(name));
    }
    serving.distinguished_name.push(DnType::CommonName, "localhost");
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    serving.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    let serving_key = KeyPair::generate().map_err(cert_error("serving key"))?;
    let serving_cert = serving.signed_by(&serving_key, &ca).map_err(cert_error("serving certificate"))?;

    let mut admin = CertificateParams::new(Vec::<String>::new()).map_err(cert_error("admin parameters"))?;
    admin.distinguished_name.push(DnType::CommonName, "cmp-admin");
    admin.distinguished_name.push(DnType::OrganizationName, "system:masters");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    admin.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let admin_key = KeyPair::generate().map_err(cert_error("admin key"))?;
    let admin_cert = admin.signed_by(&admin_key, &ca).map_err(cert_error("admin certificate"))?;

    let service_account_key = KeyPair::generate().map_err(cert_error("service-account key"))?;

    let files = CertFiles {
        ca_cert: dir.join("ca.crt"),
        serving_cert: dir.join("apiserver.crt"),
        serving_key: dir.join("apiserver.key"),
        admin_cert: dir.join("admin.crt"),
        admin_key: dir.join("admin.key"),
        service_account_key: dir.join("sa.key"),
        service_account_public_key: dir.join("sa.pub"),
    };
    write(&files.ca_cert, &ca.pem())?;
    write(&files.serving_cert, &serving_cert.pem())?;
    write(&files.serving_key, &serving_key.serialize_pem())?;
    write(&files.admin_cert, &admin_cert.pem())?;
    write(&files.admin_key, &admin_key.serialize_pem())?;
    write(&files.service_account_key, &service_account_key.serialize_pem())?;
    write(&files.service_account_public_key, &service_account_key.public_key_pem())?;
    Ok(files)
}

fn write(path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}
