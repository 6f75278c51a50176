//! TLS material for the mock endpoint, generated once into `--tls-dir` with rcgen: a mock CA
//! (`kms-ca.pem`, the file a client names explicitly to trust it), and a server certificate for
//! `localhost` and `127.0.0.1` (`kms-cert.pem`, `kms-key.pem` mode 0600). The CA key is not kept:
//! if any file is missing, all three are made anew.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub const CA_FILE: &str = "kms-ca.pem";
pub const CERT_FILE: &str = "kms-cert.pem";
pub const KEY_FILE: &str = "kms-key.pem";

/// Why the TLS material could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: not a usable PEM certificate or key")]
    Pem { path: PathBuf },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The server's certificate chain and key, and the CA PEM to hand to clients.
pub struct TlsMaterial {
    pub ca_pem: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// Loads the material from `dir`, generating it first when incomplete.
pub fn load_or_generate(dir: &Path) -> Result<TlsMaterial, TlsError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io(dir))?;
    let (ca, cert, key) = (dir.join(CA_FILE), dir.join(CERT_FILE), dir.join(KEY_FILE));
    if !(ca.exists() && cert.exists() && key.exists()) {
        generate(&ca, &cert, &key)?;
    }
    let ca_pem = fs::read_to_string(&ca).map_err(io(&ca))?;
    let chain = CertificateDer::pem_file_iter(&cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|_| TlsError::Pem { path: cert.clone() })?;
    let key_der =
        PrivateKeyDer::from_pem_file(&key).map_err(|_| TlsError::Pem { path: key.clone() })?;
    if chain.is_empty() {
        return Err(TlsError::Pem { path: cert });
    }
    Ok(TlsMaterial {
        ca_pem,
        chain,
        key: key_der,
    })
}

fn generate(ca_path: &Path, cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        "Sealed Inference MOCK KMS TLS CA (simulation only)",
    );
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "localhost (MOCK KMS, simulation only)");
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&server_key, &issuer)?;

    write_file(ca_path, ca_cert.pem().as_bytes(), false)?;
    write_file(cert_path, cert.pem().as_bytes(), false)?;
    write_file(key_path, server_key.serialize_pem().as_bytes(), true)
}

fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    if private {
        let _ = fs::remove_file(path);
    }
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(bytes).map_err(io)
}
