//! SCRAM-SHA-256 verifiers (RFC 5802, RFC 7677), the form PostgreSQL stores a password in:
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`. The operator makes one to set a
//! password (so the password itself is never sent in a statement) and checks the stored one
//! against the password it is given, to see a password changed by hand.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The server's default `scram_iterations`.
const ITERATIONS: u32 = 4096;
const SALT_BYTES: usize = 16;

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length: `new_from_slice` cannot fail here.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return [0; 32],
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one block: SCRAM's `Hi()`.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut previous = hmac(password, &block);
    let mut result = previous;
    for _ in 1..iterations {
        previous = hmac(password, &previous);
        for (r, p) in result.iter_mut().zip(previous.iter()) {
            *r ^= p;
        }
    }
    result
}

/// The password as SCRAM hashes it: SASLprep'd when it can be (as the server and libpq do).
fn prepared(password: &str) -> Vec<u8> {
    match stringprep::saslprep(password) {
        Ok(prepared) => prepared.into_owned().into_bytes(),
        Err(_) => password.as_bytes().to_vec(),
    }
}

/// StoredKey and ServerKey of `password` with `salt` and `iterations`.
fn keys(password: &str, salt: &[u8], iterations: u32) -> ([u8; 32], [u8; 32]) {
    let salted = hi(&prepared(password), salt, iterations);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    let server_key = hmac(&salted, b"Server Key");
    (stored_key, server_key)
}

/// A new verifier of `password`, with a random salt.
pub fn verifier(password: &str) -> String {
    let mut salt = [0u8; SALT_BYTES];
    rand::rng().fill_bytes(&mut salt);
    let (stored, server) = keys(password, &salt, ITERATIONS);
    format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored),
        STANDARD.encode(server)
    )
}

/// Whether `stored` (a role's `rolpassword`) is a SCRAM verifier of `password`. Anything else
/// (no password, an MD5 hash, a malformed value) is not.
pub fn matches(stored: &str, password: &str) -> bool {
    let Some(rest) = stored.strip_prefix("SCRAM-SHA-256$") else {
        return false;
    };
    let Some((params, keys_part)) = rest.split_once('$') else {
        return false;
    };
    let Some((iterations, salt)) = params.split_once(':') else {
        return false;
    };
    let Some((stored_key, server_key)) = keys_part.split_once(':') else {
        return false;
    };
    let (Ok(iterations), Ok(salt), Ok(stored_key), Ok(server_key)) = (
        iterations.parse::<u32>(),
        STANDARD.decode(salt),
        STANDARD.decode(stored_key),
        STANDARD.decode(server_key),
    ) else {
        return false;
    };
    if iterations == 0 {
        return false;
    }
    let (expected_stored, expected_server) = keys(password, &salt, iterations);
    expected_stored[..] == stored_key[..] && expected_server[..] == server_key[..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_matches_its_password_and_no_other() {
        let made = verifier("correct horse");
        assert!(made.starts_with("SCRAM-SHA-256$4096:"), "{made}");
        assert!(!made.contains("correct horse"));
        assert!(matches(&made, "correct horse"));
        assert!(!matches(&made, "correct horse "));
        assert_ne!(made, verifier("correct horse"), "a new salt each time");
    }

    #[test]
    fn a_verifier_made_by_postgresql_is_checked() {
        // PostgreSQL 15: CREATE ROLE r PASSWORD 'pencil';
        // SELECT rolpassword FROM pg_authid WHERE rolname = 'r';
        let made = "SCRAM-SHA-256$4096:MFp9QFn/iqwQjZSfkk9o2w==$Qe+gFhoEKlrLKyUbQY27MVBGaBPUKngzfOWCcpIi5e0=:tEzmmnRglqWaue1L8EjXTCc2ksHo0pFJJbPvTtpJbvY=";
        assert!(matches(made, "pencil"));
        assert!(!matches(made, "Pencil"));
    }

    #[test]
    fn other_forms_never_match() {
        for stored in [
            "",
            "md5a3556571e93b0d20722ba62be61e8c2d",
            "SCRAM-SHA-256$x:c2FsdA==$a:b",
            "SCRAM-SHA-256$0:c2FsdA==$YQ==:Yg==",
            "SCRAM-SHA-256$4096:c2FsdA==",
        ] {
            assert!(!matches(stored, "pencil"), "{stored}");
        }
    }
}
