//! Reading a listener's (or an outgoing link's) PEM files: certificates, private key and CA
//! certificates, with errors that name the option and the file ([`TlsError`]).

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

use super::tls::TlsError;
use crate::config::TlsSettings;

fn pem_problem(e: pem::Error, what: &str) -> String {
    match e {
        pem::Error::Io(e) => format!("cannot read: {e}"),
        pem::Error::NoItemsFound => format!("no {what} found (a PEM file is expected)"),
        other => format!("not a valid PEM file: {other}"),
    }
}

/// Every certificate of a PEM file (at least one).
pub(crate) fn load_certs(
    option: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |problem: String| TlsError::File {
        option,
        path: path.to_path_buf(),
        problem,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(pem_problem(e, "certificate")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(pem_problem(e, "certificate")))?;
    if certs.is_empty() {
        return Err(err("no certificate found (a PEM file is expected)".into()));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1; not encrypted).
pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        option: "keyfile",
        path: path.to_path_buf(),
        problem: pem_problem(e, "unencrypted private key (PKCS#8, PKCS#1 or SEC1)"),
    })
}

/// The certificate revocation lists of `crlfile` (PEM, one or more).
pub(crate) fn load_crls(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateRevocationListDer<'static>>, TlsError> {
    let err = |problem: String| TlsError::File {
        option: "crlfile",
        path: path.to_path_buf(),
        problem,
    };
    let crls = rustls::pki_types::CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| err(pem_problem(e, "certificate revocation list")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(pem_problem(e, "certificate revocation list")))?;
    if crls.is_empty() {
        return Err(err(
            "no certificate revocation list (X509 CRL) in this file".into(),
        ));
    }
    Ok(crls)
}

/// The client CAs of `cafile` and `capath`, or `None` when neither is set.
pub(crate) fn load_roots(s: &TlsSettings) -> Result<Option<RootCertStore>, TlsError> {
    if s.cafile.is_none() && s.capath.is_none() {
        return Ok(None);
    }
    let mut roots = RootCertStore::empty();
    let mut add = |option: &'static str, path: &Path, certs: Vec<CertificateDer<'static>>| {
        for cert in certs {
            roots.add(cert).map_err(|e| TlsError::File {
                option,
                path: path.to_path_buf(),
                problem: format!("not a usable CA certificate: {e}"),
            })?;
        }
        Ok::<(), TlsError>(())
    };
    if let Some(cafile) = &s.cafile {
        add("cafile", cafile, load_certs("cafile", cafile)?)?;
    }
    if let Some(capath) = &s.capath {
        let err = |problem: String| TlsError::File {
            option: "capath",
            path: capath.clone(),
            problem,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(capath)
            .map_err(|e| err(format!("cannot read: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let mut found = 0;
        for file in files {
            // Like OpenSSL's hashed directories, files that hold no certificate are skipped.
            match load_certs("capath", &file) {
                Ok(certs) => {
                    found += certs.len();
                    add("capath", &file, certs)?;
                }
                Err(_) => continue,
            }
        }
        if found == 0 {
            return Err(err("no CA certificate found in this directory".into()));
        }
    }
    Ok(Some(roots))
}
