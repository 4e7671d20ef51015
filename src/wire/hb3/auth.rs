//! Heartbeat's message authentication, as configured in `authkeys`.
//!
//! `auth N` picks the signing key; `<index> <method> [secret]` lines define
//! the keys a receiver accepts (several, for key rollover). An authentication
//! string is `"<index> <digest>"`:
//! - `sha1`: HMAC-SHA1, 40 lower-case hex digits;
//! - `md5`: HMAC-MD5, 32 lower-case hex digits;
//! - `crc`: a keyless 32-bit CRC (`%lx`), which detects corruption only.
//!
//! Key indexes are 0 to [`MAX_KEY_INDEX`] (Heartbeat's `MAXAUTH` is 16).
//! Digests are compared in constant time. (Parsing the `authkeys` file is the
//! configuration module's job, `config::heartbeat::AuthKeys`; this module
//! takes the keys it found.)

use hmac::{Hmac, Mac};

use super::Hb3Error;

/// Heartbeat's CRC: polynomial 0x04C11DB7, not reflected, initial value 0,
/// complemented at the end (the POSIX `cksum` CRC without the length suffix).
const HEARTBEAT_CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_CKSUM);

/// The highest key index Heartbeat accepts (`MAXAUTH` - 1).
pub const MAX_KEY_INDEX: u8 = 15;

/// An `authkeys` method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// `sha1`: HMAC-SHA1.
    Sha1,
    /// `md5`: HMAC-MD5.
    Md5,
    /// `crc`: 32-bit CRC, no key (integrity against corruption only).
    Crc,
}

impl AuthMethod {
    /// The method's name in `authkeys`.
    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::Sha1 => "sha1",
            AuthMethod::Md5 => "md5",
            AuthMethod::Crc => "crc",
        }
    }

    /// The method named `name` in `authkeys`. Names are exact, as in
    /// Heartbeat, which loads the plugin file of that name (`SHA1` is not
    /// `sha1`).
    pub fn from_name(name: &str) -> Option<Self> {
        [AuthMethod::Sha1, AuthMethod::Md5, AuthMethod::Crc]
            .into_iter()
            .find(|m| m.name() == name)
    }

    /// Whether the method takes a secret (`crc` does not).
    pub fn needs_key(self) -> bool {
        self != AuthMethod::Crc
    }
}

/// One `authkeys` key.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey {
    /// The key's index (the number before the method in `authkeys`),
    /// 0 to [`MAX_KEY_INDEX`].
    pub index: u8,
    /// The method.
    pub method: AuthMethod,
    /// The secret (ignored by `crc`).
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("AuthKey")
            .field("index", &self.index)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

impl AuthKey {
    /// A key.
    pub fn new(index: u8, method: AuthMethod, secret: impl Into<Vec<u8>>) -> Self {
        Self {
            index,
            method,
            secret: secret.into(),
        }
    }

    /// The digest of `data` as Heartbeat writes it (lower-case hex).
    pub fn digest_hex(&self, data: &[u8]) -> String {
        match self.method {
            AuthMethod::Sha1 => to_hex(&hmac_sha1(&self.secret, data)),
            AuthMethod::Md5 => to_hex(&hmac_md5(&self.secret, data)),
            AuthMethod::Crc => format!("{:x}", HEARTBEAT_CRC.checksum(data)),
        }
    }

    /// Whether `digest` (as received) is the digest of `data`, in constant
    /// time for the keyed methods.
    fn verify(&self, data: &[u8], digest: &str) -> bool {
        let received = from_lower_hex(digest);
        match (self.method, received) {
            (AuthMethod::Sha1, Some(d)) => check_hmac_sha1(&self.secret, data, &d),
            (AuthMethod::Md5, Some(d)) => check_hmac_md5(&self.secret, data, &d),
            (AuthMethod::Sha1 | AuthMethod::Md5, None) => false,
            (AuthMethod::Crc, _) => digest == format!("{:x}", HEARTBEAT_CRC.checksum(data)),
        }
    }
}

/// HMAC of `data` under `key` with the hash `$hash`, as bytes; and a
/// constant-time check of a received digest.
macro_rules! hmac_functions {
    ($mac:ident, $check:ident, $hash:ty) => {
        fn $mac(key: &[u8], data: &[u8]) -> Vec<u8> {
            // HMAC takes keys of any length (longer ones are hashed first),
            // so `new_from_slice` cannot fail; an empty MAC would never verify.
            match <Hmac<$hash> as Mac>::new_from_slice(key) {
                Ok(mut mac) => {
                    mac.update(data);
                    mac.finalize().into_bytes().to_vec()
                }
                Err(_) => Vec::new(),
            }
        }

        fn $check(key: &[u8], data: &[u8], digest: &[u8]) -> bool {
            match <Hmac<$hash> as Mac>::new_from_slice(key) {
                Ok(mut mac) => {
                    mac.update(data);
                    mac.verify_slice(digest).is_ok()
                }
                Err(_) => false,
            }
        }
    };
}
hmac_functions!(hmac_sha1, check_hmac_sha1, sha1::Sha1);
hmac_functions!(hmac_md5, check_hmac_md5, md5::Md5);

/// Lower-case hex of `bytes`.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Bytes of an even-length lower-case hex string (what Heartbeat writes).
fn from_lower_hex(text: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if text.len() % 2 != 0 {
        return None;
    }
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

/// The keys of an `authkeys` file: one signs, all verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<AuthKey>,
    signing: usize,
}

impl Keyring {
    /// A keyring with one key, which signs and verifies.
    pub fn single(key: AuthKey) -> Self {
        Self {
            keys: vec![key],
            signing: 0,
        }
    }

    /// A keyring from `authkeys` keys, signing with the one at `signing_index`
    /// (`auth N`); `None` if no key has that index or two share an index.
    pub fn new(keys: Vec<AuthKey>, signing_index: u8) -> Option<Self> {
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.index == k.index) {
                return None;
            }
        }
        let signing = keys.iter().position(|k| k.index == signing_index)?;
        Some(Self { keys, signing })
    }

    /// The signing key.
    pub fn signing_key(&self) -> &AuthKey {
        &self.keys[self.signing]
    }

    /// The key with `index`, if configured.
    pub fn key(&self, index: u8) -> Option<&AuthKey> {
        self.keys.iter().find(|k| k.index == index)
    }

    /// The authentication string for `data`: `"<index> <digest>"`.
    pub fn sign(&self, data: &[u8]) -> String {
        let key = self.signing_key();
        format!("{} {}", key.index, key.digest_hex(data))
    }

    /// Check an authentication string against `data`; returns the key index.
    pub fn verify(&self, auth: &[u8], data: &[u8]) -> Result<u8, Hb3Error> {
        let malformed = || Hb3Error::MalformedAuth {
            value: String::from_utf8_lossy(&auth[..auth.len().min(200)]).into_owned(),
        };
        let text = std::str::from_utf8(auth).map_err(|_| malformed())?;
        let (index, digest) = text.split_once(' ').ok_or_else(malformed)?;
        if index.is_empty()
            || index.len() > 3
            || !index.bytes().all(|c| c.is_ascii_digit())
            || digest.is_empty()
            || digest.len() > 128
            || !digest
                .bytes()
                .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(malformed());
        }
        // Heartbeat never writes an index above 15; a number that does not
        // even fit a byte is garbage, not an unknown key.
        let index: u8 = index.parse().map_err(|_| malformed())?;
        let key = self.key(index).ok_or(Hb3Error::UnknownKeyIndex { index })?;
        if key.verify(data, digest) {
            Ok(index)
        } else {
            Err(Hb3Error::AuthenticationFailed { index })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha1_matches_rfc_2202_case_2() {
        let key = AuthKey::new(1, AuthMethod::Sha1, "Jefe");
        assert_eq!(
            key.digest_hex(b"what do ya want for nothing?"),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }

    #[test]
    fn hmac_md5_matches_rfc_2202_case_2() {
        let key = AuthKey::new(1, AuthMethod::Md5, "Jefe");
        assert_eq!(
            key.digest_hex(b"what do ya want for nothing?"),
            "750c783e6ab0b503eaa86e310a5db738"
        );
    }

    #[test]
    fn crc_matches_the_posix_cksum_crc_without_length() {
        // cksum's CRC of "123456789" without the length suffix is 0x765e7680.
        let key = AuthKey::new(2, AuthMethod::Crc, "");
        assert_eq!(key.digest_hex(b"123456789"), "765e7680");
        let ring = Keyring::single(key);
        assert_eq!(ring.verify(b"2 765e7680", b"123456789"), Ok(2));
    }

    #[test]
    fn wrong_key_and_unknown_index_are_told_apart() {
        let ring = Keyring::single(AuthKey::new(1, AuthMethod::Sha1, "testsecret"));
        let other = Keyring::single(AuthKey::new(1, AuthMethod::Sha1, "wrong"));
        let sig = other.sign(b"data");
        assert_eq!(
            ring.verify(sig.as_bytes(), b"data"),
            Err(Hb3Error::AuthenticationFailed { index: 1 })
        );
        let sig = ring.sign(b"data").replacen('1', "2", 1);
        assert_eq!(
            ring.verify(sig.as_bytes(), b"data"),
            Err(Hb3Error::UnknownKeyIndex { index: 2 })
        );
    }

    #[test]
    fn upper_case_or_short_digests_are_refused() {
        let ring = Keyring::single(AuthKey::new(1, AuthMethod::Sha1, "k"));
        let sig = ring.sign(b"x");
        assert!(ring.verify(sig.to_uppercase().as_bytes(), b"x").is_err());
        assert!(ring.verify(&sig.as_bytes()[..sig.len() - 2], b"x").is_err());
        assert!(ring.verify(b"1", b"x").is_err());
        assert!(ring.verify(b" abc", b"x").is_err());
    }

    #[test]
    fn rollover_keyring_verifies_every_key_and_signs_with_one() {
        let ring = Keyring::new(
            vec![
                AuthKey::new(1, AuthMethod::Sha1, "old"),
                AuthKey::new(3, AuthMethod::Md5, "new"),
            ],
            3,
        )
        .unwrap();
        assert!(ring.sign(b"m").starts_with("3 "));
        let old = Keyring::single(AuthKey::new(1, AuthMethod::Sha1, "old"));
        assert_eq!(ring.verify(old.sign(b"m").as_bytes(), b"m"), Ok(1));
        assert!(Keyring::new(vec![AuthKey::new(1, AuthMethod::Crc, "")], 2).is_none());
    }
}
