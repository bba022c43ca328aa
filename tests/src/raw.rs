//! A minimal raw MySQL client, to control capabilities, byte timing and
//! exactly what goes on the wire (pipelining, odd commands, half-close).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use sha1::{Digest, Sha1};

use crate::TEST_DB;

// Capability bits.
pub const LONG_PASSWORD: u32 = 1;
pub const CONNECT_WITH_DB: u32 = 8;
pub const LOCAL_FILES: u32 = 0x80;
pub const PROTOCOL_41: u32 = 0x200;
pub const TRANSACTIONS: u32 = 0x2000;
pub const SECURE_CONNECTION: u32 = 0x8000;
pub const MULTI_STATEMENTS: u32 = 1 << 16;
pub const MULTI_RESULTS: u32 = 1 << 17;
pub const PS_MULTI_RESULTS: u32 = 1 << 18;
pub const PLUGIN_AUTH: u32 = 1 << 19;
pub const SESSION_TRACK: u32 = 1 << 23;
pub const DEPRECATE_EOF: u32 = 1 << 24;

pub const FULL: u32 = LONG_PASSWORD
    | PROTOCOL_41
    | TRANSACTIONS
    | SECURE_CONNECTION
    | MULTI_STATEMENTS
    | MULTI_RESULTS
    | PS_MULTI_RESULTS
    | PLUGIN_AUTH
    | SESSION_TRACK
    | DEPRECATE_EOF
    | LOCAL_FILES;

pub fn read_packet(s: &mut impl Read) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 4];
    read_full(s, &mut h)?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize;
    let mut p = vec![0u8; len];
    read_full(s, &mut p)?;
    Ok((h[3], p))
}

/// `read_exact` that, like poll-based clients (libmariadb), tries again on
/// EAGAIN before the socket's own timeout: a socket in a sockmap (the eBPF
/// path) can return EAGAIN from a blocking read after a spurious wakeup.
pub fn read_full(s: &mut impl Read, mut buf: &mut [u8]) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !buf.is_empty() {
        match s.read(buf) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let n = payload.len() as u32;
    let mut v = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
    v.extend_from_slice(payload);
    v
}

pub fn native(pw: &str, salt: &[u8]) -> Vec<u8> {
    if pw.is_empty() {
        return Vec::new();
    }
    let s1 = Sha1::digest(pw.as_bytes());
    let s2 = Sha1::digest(s1);
    let mut h = Sha1::new();
    h.update(&salt[..20.min(salt.len())]);
    h.update(s2);
    let x = h.finalize();
    s1.iter().zip(x.iter()).map(|(a, b)| a ^ b).collect()
}

/// MariaDB's client_ed25519 answer to `nonce`: an Ed25519 signature with
/// the key whose expanded secret is SHA-512(password).
pub fn ed25519_sign(pw: &str, nonce: &[u8]) -> Vec<u8> {
    use ed25519_dalek::hazmat::{raw_sign, ExpandedSecretKey};
    use sha2::Digest as _;
    let expanded: [u8; 64] = sha2::Sha512::digest(pw.as_bytes()).into();
    let esk = ExpandedSecretKey::from_bytes(&expanded);
    let vk = ed25519_dalek::VerifyingKey::from(&esk);
    raw_sign::<sha2::Sha512>(&esk, nonce, &vk)
        .to_bytes()
        .to_vec()
}

/// The answer to an AuthSwitchRequest for `plugin`: client_ed25519 signs
/// the nonce, anything else gets a native scramble response.
fn switch_answer(plugin: &[u8], pw: &str, data: &[u8]) -> Vec<u8> {
    if plugin == b"client_ed25519" {
        ed25519_sign(pw, data)
    } else {
        native(pw, data)
    }
}

/// The 20-byte scramble of a HandshakeV10 payload.
pub fn greeting_scramble(g: &[u8]) -> Result<Vec<u8>> {
    let nul = g
        .get(1..)
        .and_then(|r| r.iter().position(|&b| b == 0))
        .context("greeting without a version string")?
        + 1;
    let p = nul + 1 + 4;
    let mut s = g.get(p..p + 8).context("short greeting")?.to_vec();
    let p2 = p + 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10;
    s.extend_from_slice(g.get(p2..p2 + 12).context("short greeting")?);
    Ok(s)
}

/// Connects and reads the greeting; returns the stream and the scramble.
pub fn connect(addr: SocketAddr) -> Result<(TcpStream, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.set_nodelay(true)?;
    let (_, g) = read_packet(&mut s)?;
    if g.first() == Some(&0xFF) {
        bail!("refused at connect: {}", err_text(&g));
    }
    let scramble = greeting_scramble(&g)?;
    Ok((s, scramble))
}

/// Capabilities of a plain `mysql_native_password` login (`login`).
pub const CAPS: u32 = LONG_PASSWORD | PROTOCOL_41 | TRANSACTIONS | SECURE_CONNECTION | PLUGIN_AUTH;

/// Logs in as `user` (any bytes) with `password` and [`CAPS`]: the
/// logged-in stream, or the ERR payload the server answered with.
pub fn login(
    addr: SocketAddr,
    user: &[u8],
    password: &str,
) -> Result<std::result::Result<TcpStream, Vec<u8>>> {
    Ok(login_bytes(addr, user, password, CAPS, None, None)?.map(|r| r.s))
}

pub struct Raw {
    pub s: TcpStream,
    pub caps: u32,
    pub scramble: Vec<u8>,
}

/// Result of a login attempt: Ok(Raw) or the ERR payload.
pub fn raw_login(
    addr: SocketAddr,
    user: &str,
    pw: &str,
    caps: u32,
    db: Option<&str>,
    plugin: Option<&str>,
) -> Result<std::result::Result<Raw, Vec<u8>>> {
    login_bytes(addr, user.as_bytes(), pw, caps, db, plugin)
}

fn login_bytes(
    addr: SocketAddr,
    user: &[u8],
    pw: &str,
    caps: u32,
    db: Option<&str>,
    plugin: Option<&str>,
) -> Result<std::result::Result<Raw, Vec<u8>>> {
    let (mut s, scramble) = connect(addr)?;
    let caps = caps | if db.is_some() { CONNECT_WITH_DB } else { 0 };
    let mut r = Vec::new();
    r.extend_from_slice(&caps.to_le_bytes());
    r.extend_from_slice(&(16u32 << 20).to_le_bytes());
    r.push(45);
    r.extend_from_slice(&[0u8; 23]);
    r.extend_from_slice(user);
    r.push(0);
    let auth = match plugin {
        Some("caching_sha2_password") => vec![0x55; 32],
        _ => native(pw, &scramble),
    };
    if caps & SECURE_CONNECTION != 0 {
        r.push(auth.len() as u8);
        r.extend_from_slice(&auth);
    } else {
        r.extend_from_slice(&auth);
        r.push(0);
    }
    if let Some(db) = db {
        r.extend_from_slice(db.as_bytes());
        r.push(0);
    }
    if caps & PLUGIN_AUTH != 0 {
        r.extend_from_slice(plugin.unwrap_or("mysql_native_password").as_bytes());
        r.push(0);
    }
    s.write_all(&packet(1, &r))?;
    loop {
        let (seq, p) = read_packet(&mut s)?;
        match <[u8]>::first(&p).copied() {
            Some(0x00) => {
                return Ok(Ok(Raw { s, caps, scramble }));
            }
            Some(0xFF) => return Ok(Err(p)),
            Some(0xFE) => {
                let nul = p[1..].iter().position(|&b| b == 0).unwrap() + 1;
                let salt = &p[nul + 1..];
                s.write_all(&packet(seq + 1, &switch_answer(&p[1..nul], pw, salt)))?;
            }
            other => bail!("unexpected login packet {other:?}"),
        }
    }
}

pub fn err_code(p: &[u8]) -> u16 {
    u16::from_le_bytes([p[1], p[2]])
}

pub fn err_text(p: &[u8]) -> String {
    String::from_utf8_lossy(p.get(9..).unwrap_or(&[])).into_owned()
}

/// One text-protocol result: rows as lossy strings, or an ERR code.
#[derive(Debug, PartialEq)]
pub enum Answer {
    Rows(Vec<Vec<Option<String>>>),
    Ok,
    Err(u16),
}

pub fn lenenc(p: &[u8], pos: &mut usize) -> Option<u64> {
    let b = p[*pos];
    *pos += 1;
    match b {
        0xFB => None,
        0xFC => {
            let v = u16::from_le_bytes([p[*pos], p[*pos + 1]]) as u64;
            *pos += 2;
            Some(v)
        }
        0xFD => {
            let v = u32::from_le_bytes([p[*pos], p[*pos + 1], p[*pos + 2], 0]) as u64;
            *pos += 3;
            Some(v)
        }
        0xFE => {
            let v = u64::from_le_bytes(p[*pos..*pos + 8].try_into().unwrap());
            *pos += 8;
            Some(v)
        }
        n => Some(n as u64),
    }
}

impl Raw {
    pub fn query(&mut self, sql: &str) -> Result<Answer> {
        let mut p = vec![3u8];
        p.extend_from_slice(sql.as_bytes());
        self.s.write_all(&packet(0, &p))?;
        self.read_answer()
    }

    /// Reads one complete text result (a single result set or OK/ERR).
    pub fn read_answer(&mut self) -> Result<Answer> {
        let (_, p) = read_packet(&mut self.s)?;
        match p[0] {
            0x00 => return Ok(Answer::Ok),
            0xFF => return Ok(Answer::Err(err_code(&p))),
            _ => {}
        }
        let mut pos = 0;
        let ncols = lenenc(&p, &mut pos).unwrap_or(0);
        for _ in 0..ncols {
            read_packet(&mut self.s)?;
        }
        if self.caps & DEPRECATE_EOF == 0 {
            let (_, eof) = read_packet(&mut self.s)?;
            assert_eq!(eof[0], 0xFE, "EOF after column definitions");
        }
        let mut rows = Vec::new();
        loop {
            let (_, p) = read_packet(&mut self.s)?;
            if p[0] == 0xFE && p.len() < 0xFFFFFF && (self.caps & DEPRECATE_EOF != 0 || p.len() < 9)
            {
                return Ok(Answer::Rows(rows));
            }
            if p[0] == 0xFF {
                return Ok(Answer::Err(err_code(&p)));
            }
            let mut pos = 0;
            let mut row = Vec::new();
            for _ in 0..ncols {
                match lenenc(&p, &mut pos) {
                    None => row.push(None),
                    Some(n) => {
                        let n = n as usize;
                        row.push(Some(String::from_utf8_lossy(&p[pos..pos + n]).into_owned()));
                        pos += n;
                    }
                }
            }
            rows.push(row);
        }
    }

    /// Runs a statement that answers with one packet (OK or ERR) and
    /// returns that packet's payload, byte for byte.
    pub fn reply(&mut self, sql: &str) -> Result<Vec<u8>> {
        let mut p = vec![3u8];
        p.extend_from_slice(sql.as_bytes());
        self.s.write_all(&packet(0, &p))?;
        let (_, reply) = read_packet(&mut self.s)?;
        ensure!(
            matches!(reply.first(), Some(0x00 | 0xFF)),
            "{sql}: not an OK or ERR packet: {reply:?}"
        );
        Ok(reply)
    }

    pub fn one(&mut self, sql: &str) -> Result<Option<String>> {
        match self.query(sql)? {
            Answer::Rows(r) => Ok(r
                .into_iter()
                .next()
                .and_then(|r| r.into_iter().next())
                .flatten()),
            other => bail!("{sql}: {other:?}"),
        }
    }

    /// COM_CHANGE_USER hashed with the connection's greeting scramble.
    pub fn change_user(&mut self, user: &str, pw: &str, plugin: Option<&str>) -> Result<Vec<u8>> {
        let mut p = vec![0x11u8];
        p.extend_from_slice(user.as_bytes());
        p.push(0);
        let auth = match plugin {
            Some("caching_sha2_password") => vec![0x55; 32],
            _ => native(pw, &self.scramble),
        };
        p.push(auth.len() as u8);
        p.extend_from_slice(&auth);
        p.extend_from_slice(TEST_DB.as_bytes());
        p.push(0);
        p.extend_from_slice(&45u16.to_le_bytes());
        if self.caps & PLUGIN_AUTH != 0 {
            p.extend_from_slice(plugin.unwrap_or("mysql_native_password").as_bytes());
            p.push(0);
        }
        self.s.write_all(&packet(0, &p))?;
        loop {
            let (seq, p) = read_packet(&mut self.s)?;
            if p[0] == 0xFE && p.len() > 1 {
                let nul = p[1..].iter().position(|&b| b == 0).unwrap() + 1;
                let salt = p[nul + 1..].to_vec();
                let answer = switch_answer(&p[1..nul], pw, &salt);
                self.s.write_all(&packet(seq + 1, &answer))?;
                continue;
            }
            return Ok(p);
        }
    }
}
