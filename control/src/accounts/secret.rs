//! Random token values and their hashes (ring: already in the tree through
//! rustls, so no other crypto crate).

use super::AccountError;
use ring::rand::{SecureRandom, SystemRandom};

/// Prefix of every token, so secret scanners and people recognise one.
pub const TOKEN_PREFIX: &str = "trellis_";
/// Random bytes in a token's secret part: 256 bits, beyond guessing.
pub const SECRET_BYTES: usize = 32;
/// Random bytes in a token id: ids only need to be unique per account.
const ID_BYTES: usize = 8;

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> Result<String, AccountError> {
    let mut buf = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| AccountError::Random)?;
    Ok(hex(&buf))
}

/// A new token id and token value: `trellis_<id>_<secret>`.
pub fn new_token() -> Result<(String, String), AccountError> {
    let id = format!("tok-{}", random_hex(ID_BYTES)?);
    let token = format!("{TOKEN_PREFIX}{id}_{}", random_hex(SECRET_BYTES)?);
    Ok((id, token))
}

/// Hex SHA-256 of a token: what is stored and looked up.
pub fn sha256_hex(token: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_shaped() {
        let (id1, t1) = new_token().unwrap();
        let (id2, t2) = new_token().unwrap();
        assert_ne!(t1, t2);
        assert_ne!(id1, id2);
        assert!(t1.starts_with(&format!("trellis_{id1}_")), "{t1}");
        assert_eq!(
            t1.len(),
            "trellis_".len() + id1.len() + 1 + 2 * SECRET_BYTES
        );
    }

    #[test]
    fn sha256_matches_a_known_vector() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
