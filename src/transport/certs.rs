//! Certificates as mosquitto's documentation makes them, which webpki alone refuses:
//!
//! - **X.509 v1** certificates (no extensions), from mosquitto-tls(7)'s recipe
//!   (`openssl x509 -req ...` without `-extfile`). webpki refuses every v1 certificate
//!   (`UnsupportedCertVersion`). A v1 *client* certificate is verified here with the same
//!   checks webpki makes of a leaf that has no extensions: it must be signed directly by a CA
//!   of `cafile`/`capath` (signature checked with ring's algorithms, the ones rustls uses) and
//!   be within its validity period. A v1 leaf signed by an intermediate is refused (a chain
//!   through intermediates is webpki's to check, and webpki will not take a v1 leaf). A v1
//!   *server* certificate needs no verification by midge, only a check that the key is its.
//! - **Chains** completed from `cafile` as OpenSSL does: a `certfile` holding only the leaf is
//!   sent with the intermediate CAs of `cafile` that lead to a root, so a client that trusts
//!   only the root connects.
//!
//! Only what these checks need is parsed, with a bounded DER reader: a malformed certificate
//! is refused, never a panic.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore};
use rustls::{PeerIncompatible, SignatureScheme};
use std::sync::Arc;

/// One DER element: its tag, its contents, and the whole encoding (tag and length included).
struct Tlv<'a> {
    tag: u8,
    contents: &'a [u8],
    whole: &'a [u8],
}

/// Reads the element at the start of `input`; returns it and what follows.
fn tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, b| (a << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    Some((
        Tlv {
            tag,
            contents: &rest[..len],
            whole: &input[..header + len],
        },
        &rest[len..],
    ))
}

/// The parts of a certificate these checks use.
pub(crate) struct Cert<'a> {
    /// `version` absent (v1) rather than `[0] 2` (v3).
    pub(crate) v1: bool,
    /// The whole TBSCertificate encoding: what the signature covers.
    tbs: &'a [u8],
    /// Issuer and subject Names, as encoded (tag included).
    pub(crate) issuer: &'a [u8],
    pub(crate) subject: &'a [u8],
    not_before: &'a [u8],
    not_after: &'a [u8],
    /// The SubjectPublicKeyInfo, tag included.
    pub(crate) spki: &'a [u8],
    /// The signature AlgorithmIdentifier's contents and the signature's bits.
    sig_alg: &'a [u8],
    signature: &'a [u8],
}

/// Parses a DER certificate; `None` if it is malformed.
pub(crate) fn parse(der: &[u8]) -> Option<Cert<'_>> {
    let (cert, _) = tlv(der)?;
    let (tbs, rest) = tlv(cert.contents)?;
    let (sig_alg, rest) = tlv(rest)?;
    let (sig, _) = tlv(rest)?;
    let (&unused, signature) = sig.contents.split_first()?;
    if cert.tag != 0x30 || tbs.tag != 0x30 || sig_alg.tag != 0x30 || sig.tag != 0x03 || unused != 0
    {
        return None;
    }
    let (mut field, mut rest) = tlv(tbs.contents)?;
    let v1 = field.tag != 0xa0;
    if !v1 {
        (field, rest) = tlv(rest)?; // serial number
    }
    let (_inner_sig_alg, rest) = tlv(rest)?;
    let (issuer, rest) = tlv(rest)?;
    let (validity, rest) = tlv(rest)?;
    let (subject, rest) = tlv(rest)?;
    let (spki, _) = tlv(rest)?;
    let (not_before, after) = tlv(validity.contents)?;
    let (not_after, _) = tlv(after)?;
    let _ = field;
    Some(Cert {
        v1,
        tbs: tbs.whole,
        issuer: issuer.whole,
        subject: subject.whole,
        not_before: not_before.contents,
        not_after: not_after.contents,
        spki: spki.whole,
        sig_alg: sig_alg.contents,
        signature,
    })
}

/// Seconds since the Unix epoch of a UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`), the forms RFC 5280 allows.
fn time(value: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(value).ok()?.strip_suffix('Z')?;
    let (year, rest) = match s.len() {
        12 => {
            let yy: u64 = s[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        14 => (s[..4].parse().ok()?, &s[4..]),
        _ => return None,
    };
    if !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |i: usize| rest[i..i + 2].parse::<u64>().ok();
    let (month, day, h, m, sec) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days from 1970-01-01 to year-month-day (proleptic Gregorian; Howard Hinnant's method).
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146097 + doe).checked_sub(719468)?;
    Some(days * 86400 + h * 3600 + m * 60 + sec)
}

/// The algorithm contents and the key bits of a SubjectPublicKeyInfo given with or without
/// its outer tag (webpki keeps trust anchors' without it).
fn spki_parts(spki: &[u8]) -> Option<(&[u8], &[u8])> {
    let (first, rest) = tlv(spki)?;
    let (alg, bits) = if rest.is_empty() && first.contents.first() == Some(&0x30) {
        let (alg, rest) = tlv(first.contents)?;
        (alg, tlv(rest)?.0)
    } else {
        (first, tlv(rest)?.0)
    };
    let (&unused, key) = bits.contents.split_first()?;
    (alg.tag == 0x30 && bits.tag == 0x03 && unused == 0).then_some((alg.contents, key))
}

/// A Name with its tag, whether or not `name` has it (webpki keeps anchors' without it).
fn same_name(name: &[u8], tagged: &[u8]) -> bool {
    name == tagged || tlv(tagged).is_some_and(|(t, _)| t.contents == name)
}

/// Verifies a v1 leaf as webpki verifies a leaf without extensions: signed by a CA of
/// `roots`, valid at `now`.
pub(crate) fn verify_v1(
    cert: &Cert<'_>,
    roots: &RootCertStore,
    algs: &WebPkiSupportedAlgorithms,
    now: UnixTime,
) -> Result<(), CertificateError> {
    let (from, until) = match (time(cert.not_before), time(cert.not_after)) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err(CertificateError::BadEncoding),
    };
    let now = now.as_secs();
    if now < from {
        return Err(CertificateError::NotValidYet);
    }
    if now > until {
        return Err(CertificateError::Expired);
    }
    let mut issuer_found = false;
    for anchor in roots.roots.iter() {
        if !same_name(anchor.subject.as_ref(), cert.issuer) {
            continue;
        }
        issuer_found = true;
        let Some((key_alg, key)) = spki_parts(anchor.subject_public_key_info.as_ref()) else {
            continue;
        };
        let verified = algs.all.iter().any(|alg| {
            alg.signature_alg_id().as_ref() == cert.sig_alg
                && alg.public_key_alg_id().as_ref() == key_alg
                && alg.verify_signature(key, cert.tbs, cert.signature).is_ok()
        });
        if verified {
            return Ok(());
        }
    }
    Err(if issuer_found {
        CertificateError::BadSignature
    } else {
        CertificateError::UnknownIssuer
    })
}

/// A handshake signature made with the key of a v1 certificate (webpki would refuse to read
/// the certificate for it).
fn verify_v1_signature(
    algs: &WebPkiSupportedAlgorithms,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, Error> {
    let parsed = parse(cert).ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let (key_alg, key) =
        spki_parts(parsed.spki).ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let candidates = algs
        .mapping
        .iter()
        .find(|(scheme, _)| *scheme == dss.scheme)
        .map(|(_, a)| *a)
        .ok_or(Error::PeerIncompatible(
            PeerIncompatible::NoSignatureSchemesInCommon,
        ))?;
    let ok = candidates.iter().any(|alg| {
        alg.public_key_alg_id().as_ref() == key_alg
            && alg.verify_signature(key, message, dss.signature()).is_ok()
    });
    if ok {
        Ok(HandshakeSignatureValid::assertion())
    } else {
        Err(Error::InvalidCertificate(CertificateError::BadSignature))
    }
}

/// webpki's client verifier, with v1 client certificates verified by [`verify_v1`].
#[derive(Debug)]
pub(crate) struct ClientVerifier {
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) algs: WebPkiSupportedAlgorithms,
    /// `crlfile` is set: a v1 certificate's revocation is not checked here, so it is
    /// refused (fail closed) rather than accepted unchecked.
    pub(crate) crls: bool,
}

impl ClientVerifier {
    fn is_v1(cert: &CertificateDer<'_>) -> bool {
        parse(cert).is_some_and(|c| c.v1)
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        match parse(end_entity) {
            Some(cert) if cert.v1 && self.crls => Err(Error::InvalidCertificate(
                CertificateError::UnknownRevocationStatus,
            )),
            Some(cert) if cert.v1 => {
                // Intermediates a client sends are not needed for a leaf signed by a root.
                let _ = intermediates;
                verify_v1(&cert, &self.roots, &self.algs, now)
                    .map(|()| ClientCertVerified::assertion())
                    .map_err(Error::InvalidCertificate)
            }
            _ => self
                .inner
                .verify_client_cert(end_entity, intermediates, now),
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        if Self::is_v1(cert) {
            verify_v1_signature(&self.algs, message, cert, dss)
        } else {
            self.inner.verify_tls12_signature(message, cert, dss)
        }
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        if Self::is_v1(cert) {
            verify_v1_signature(&self.algs, message, cert, dss)
        } else {
            self.inner.verify_tls13_signature(message, cert, dss)
        }
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The server's certificate chain and key, checked to belong together. rustls'
/// `with_single_cert` makes the same check through webpki, which cannot read a v1
/// certificate: here the certificate's SubjectPublicKeyInfo is compared with the key's.
pub(crate) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, String> {
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| e.to_string())?;
    let leaf = chain
        .first()
        .and_then(|c| parse(c))
        .ok_or("the certificate cannot be read")?;
    if let Some(public) = signing.public_key() {
        if public.as_ref() != leaf.spki {
            return Err("the private key does not match the certificate".into());
        }
    }
    Ok(CertifiedKey::new(chain, signing))
}

/// A server that has one certificate chain for every client (as `with_single_cert`).
#[derive(Debug)]
pub(crate) struct SingleCert(pub(crate) Arc<CertifiedKey>);

impl ResolvesServerCert for SingleCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// `chain` (leaf first, from `certfile`) completed with the CAs of `cas` (from `cafile`) that
/// issued its last certificate, up to but not including a self-signed root, as OpenSSL
/// builds the chain mosquitto sends. Bounded by the number of CAs.
pub(crate) fn complete_chain(
    mut chain: Vec<CertificateDer<'static>>,
    cas: &[CertificateDer<'static>],
) -> Vec<CertificateDer<'static>> {
    for _ in 0..cas.len() {
        let Some(last) = chain.last().and_then(|c| parse(c)) else {
            break;
        };
        if last.issuer == last.subject {
            break; // a root: the client has it or will not trust it
        }
        let issuer = cas.iter().find(|ca| {
            parse(ca).is_some_and(|p| p.subject == last.issuer && p.issuer != p.subject)
        });
        match issuer {
            Some(ca) if !chain.contains(ca) => chain.push(ca.clone()),
            _ => break,
        }
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_as_rfc_5280_writes_them() {
        assert_eq!(time(b"700101000000Z"), Some(0));
        assert_eq!(time(b"231114221320Z"), Some(1_700_000_000));
        assert_eq!(time(b"20231114221320Z"), Some(1_700_000_000));
        assert_eq!(time(b"491231235959Z"), Some(2_524_607_999));
        for bad in [
            &b"231114221320"[..],
            b"2311142213Z",
            b"23111422132xZ",
            b"231314221320Z",
            b"",
        ] {
            assert_eq!(time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn malformed_input_is_refused_without_panic() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x30, 0x05, 0x30],
        ] {
            assert!(parse(bad).is_none());
        }
        // Every truncation of a real certificate is refused, none panics.
        let der = include_bytes!("../../tests/data/v1-client.der");
        assert!(parse(der).is_some_and(|c| c.v1));
        for n in 0..der.len() {
            let _ = parse(&der[..n]);
        }
    }
}
