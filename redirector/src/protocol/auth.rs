//! `mysql_native_password` arithmetic (DESIGN.md §5).
//!
//! Stored hash = SHA1(SHA1(pw)), shown as `*` + 40 upper-case hex digits.
//! Client response = SHA1(pw) XOR SHA1(salt ‖ SHA1(SHA1(pw))).
//! Knowing the stored hash, a proxy recovers SHA1(pw) from one client
//! response and can answer any other server's scramble without the
//! plaintext.
//!
//! Implemented on the `sha1` crate directly rather than `mysql_common`:
//! these are four lines of hashing, and `mysql_common` would pull in a large
//! dependency tree (chrono, regex, flate2, …) the daemon does not need.

use rand::Rng;
use sha1::{Digest, Sha1};

use super::error::{ProtocolError, Result};

/// Length of a native-password scramble (salt) and of every hash here.
pub const SCRAMBLE_LEN: usize = 20;

/// A 20-byte SHA1 digest.
pub type Sha1Hash = [u8; 20];

fn sha1_parts(parts: &[&[u8]]) -> Sha1Hash {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// SHA1(password): what a client proves knowledge of.
pub fn sha1_password(password: &[u8]) -> Sha1Hash {
    sha1_parts(&[password])
}

/// SHA1(SHA1(password)): what the server stores (`mysql.user.authentication_string`).
pub fn double_sha1(password: &[u8]) -> Sha1Hash {
    sha1_parts(&[&sha1_password(password)])
}

/// The client's answer to `salt`, given SHA1(password).
pub fn scramble_response(sha1_password: &Sha1Hash, salt: &[u8]) -> Sha1Hash {
    let stage2 = sha1_parts(&[sha1_password]);
    let mask = sha1_parts(&[salt, &stage2]);
    xor20(sha1_password, &mask)
}

/// Checks a client's `response` to `salt` against the stored double SHA1
/// and, when it matches, returns SHA1(password).
///
/// The comparison runs in constant time. An empty password is a separate
/// case (no stored hash, empty response) the caller handles.
pub fn recover_sha1_password(
    client_response: &[u8],
    salt: &[u8],
    stored_double_sha1: &Sha1Hash,
) -> Option<Sha1Hash> {
    let response: &Sha1Hash = client_response.try_into().ok()?;
    let mask = sha1_parts(&[salt, stored_double_sha1]);
    let candidate = xor20(response, &mask);
    let check = sha1_parts(&[&candidate]);
    constant_time_eq(&check, stored_double_sha1).then_some(candidate)
}

/// Checks a native-password login: `stored` is the account's double SHA1,
/// `None` for an account without a password (then only an empty response
/// passes). Returns `None` when refused, `Some(None)` for a passwordless
/// login, `Some(Some(SHA1(password)))` otherwise.
pub fn verify_native_password(
    client_response: &[u8],
    salt: &[u8],
    stored: Option<&Sha1Hash>,
) -> Option<Option<Sha1Hash>> {
    match stored {
        None => client_response.is_empty().then_some(None),
        Some(stored) => recover_sha1_password(client_response, salt, stored).map(Some),
    }
}

fn xor20(a: &Sha1Hash, b: &Sha1Hash) -> Sha1Hash {
    let mut out = [0u8; 20];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = x ^ y;
    }
    out
}

/// Compares without an early exit so timing does not reveal the position of
/// the first differing byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Formats a stored hash as MariaDB shows it: `*` + 40 upper-case hex.
pub fn format_native_hash(hash: &Sha1Hash) -> String {
    let mut s = String::with_capacity(41);
    s.push('*');
    for b in hash {
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// Parses `*<40 hex>` (either case). An empty string means "no password"
/// and yields `None`.
pub fn parse_native_hash(s: &str) -> Result<Option<Sha1Hash>> {
    if s.is_empty() {
        return Ok(None);
    }
    let hex = s
        .strip_prefix('*')
        .filter(|h| h.len() == 40)
        .ok_or(ProtocolError::Malformed(
            "native password hash must be '*' followed by 40 hex digits",
        ))?;
    // Digit by digit: u8::from_str_radix would accept a '+' sign.
    fn nibble(c: u8) -> Result<u8> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(ProtocolError::Malformed(
                "native password hash has a non-hex digit",
            )),
        }
    }
    let mut out = [0u8; 20];
    for (o, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        *o = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Ok(Some(out))
}

/// A fresh 20-byte scramble. Bytes are printable ASCII without `$` or NUL
/// (like MariaDB's `generate_user_salt`): the greeting NUL-terminates the
/// second part, and some clients treat the scramble as a C string.
pub fn generate_scramble() -> [u8; SCRAMBLE_LEN] {
    let mut rng = rand::rng();
    let mut out = [0u8; SCRAMBLE_LEN];
    for b in &mut out {
        *b = loop {
            let c: u8 = rng.random_range(0x21..=0x7E);
            if c != b'$' {
                break c;
            }
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_password_vectors() {
        // MariaDB: SELECT PASSWORD('password').
        assert_eq!(
            format_native_hash(&double_sha1(b"password")),
            "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
        );
        // Computed independently: printf hash-pass | sha1sum -> xxd -r -p | sha1sum.
        assert_eq!(
            format_native_hash(&double_sha1(b"hash-pass")),
            "*92A2F4F14CD1EC79924377F19D56D316352A6EC3"
        );
    }

    #[test]
    fn hash_parse_format_round_trip() {
        let h = double_sha1(b"secret");
        let s = format_native_hash(&h);
        assert_eq!(s.len(), 41);
        assert_eq!(parse_native_hash(&s).unwrap(), Some(h));
        assert_eq!(parse_native_hash(&s.to_lowercase()).unwrap(), Some(h));
        assert_eq!(parse_native_hash("").unwrap(), None);
        for bad in [
            "2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19",
            "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E1",
            "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E199",
            "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1EZZ",
            "*+470C0C06DEE42FD1618BB99005ADCA2EC9D1E19",
            "*ééééééééééééééééééééééééééééééééééééééé",
        ] {
            assert!(parse_native_hash(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scramble_and_recover() {
        let salt = generate_scramble();
        let pw = sha1_password(b"password");
        let stored = double_sha1(b"password");
        let resp = scramble_response(&pw, &salt);
        assert_eq!(recover_sha1_password(&resp, &salt, &stored), Some(pw));
        // The recovered SHA1(pw) answers a different server's scramble the
        // same way the real client would.
        let salt2 = generate_scramble();
        assert_eq!(
            scramble_response(&pw, &salt2),
            scramble_response(&sha1_password(b"password"), &salt2)
        );
        // Wrong password, wrong salt, wrong length: rejected.
        let wrong = scramble_response(&sha1_password(b"passwore"), &salt);
        assert_eq!(recover_sha1_password(&wrong, &salt, &stored), None);
        assert_eq!(recover_sha1_password(&resp, &salt2, &stored), None);
        assert_eq!(recover_sha1_password(&resp[..19], &salt, &stored), None);
        assert_eq!(recover_sha1_password(&[], &salt, &stored), None);
    }

    #[test]
    fn verify_with_and_without_password() {
        let salt = generate_scramble();
        let stored = double_sha1(b"pw");
        let resp = scramble_response(&sha1_password(b"pw"), &salt);
        assert_eq!(
            verify_native_password(&resp, &salt, Some(&stored)),
            Some(Some(sha1_password(b"pw")))
        );
        assert_eq!(verify_native_password(&[], &salt, Some(&stored)), None);
        assert_eq!(verify_native_password(&[], &salt, None), Some(None));
        assert_eq!(verify_native_password(&resp, &salt, None), None);
    }

    #[test]
    fn fixed_scramble_vector() {
        // Fixed salt and password: the response was computed independently
        // with Python's hashlib.
        let salt = b"abcdefghijklmnopqrst";
        let resp = scramble_response(&sha1_password(b"password"), salt);
        let hex: String = resp.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "bfdd49584b917d42c758edd2a7a541f721843041");
    }

    #[test]
    fn scramble_is_printable_and_varies() {
        let a = generate_scramble();
        let b = generate_scramble();
        assert_ne!(a, b);
        assert!(a.iter().all(|&c| (0x21..=0x7E).contains(&c) && c != b'$'));
    }

    #[test]
    fn constant_time_eq_basics() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
