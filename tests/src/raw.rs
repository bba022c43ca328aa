//! A minimal raw MySQL client over a blocking `TcpStream`, for tests that
//! must control every byte a client sends (hostile names, partial packets,
//! silent connections): greeting, `HandshakeResponse41` with any user name,
//! `mysql_native_password`, packet framing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha1::{Digest, Sha1};

const LONG_PASSWORD: u32 = 1;
const PROTOCOL_41: u32 = 0x200;
const TRANSACTIONS: u32 = 0x2000;
const SECURE_CONNECTION: u32 = 0x8000;
const PLUGIN_AUTH: u32 = 1 << 19;
/// What the handshake response announces: a plain 4.1 client.
pub const CAPS: u32 = LONG_PASSWORD | PROTOCOL_41 | TRANSACTIONS | SECURE_CONNECTION | PLUGIN_AUTH;

/// One packet: header (3-byte length, sequence id) and payload.
pub fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let n = payload.len() as u32;
    let mut v = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
    v.extend_from_slice(payload);
    v
}

/// Reads one packet: (sequence id, payload).
pub fn read_packet(s: &mut impl Read) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 4];
    read_full(s, &mut h)?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize;
    let mut p = vec![0u8; len];
    read_full(s, &mut p)?;
    Ok((h[3], p))
}

/// `read_exact` that, like poll-based clients, tries again on EAGAIN: a
/// socket in a sockmap (the kernel path) can return EAGAIN from a blocking
/// read after a spurious wakeup.
fn read_full(s: &mut impl Read, mut buf: &mut [u8]) -> std::io::Result<()> {
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

/// The mysql_native_password response to `salt` (empty for no password).
pub fn native(password: &str, salt: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let s1 = Sha1::digest(password.as_bytes());
    let s2 = Sha1::digest(s1);
    let mut h = Sha1::new();
    h.update(&salt[..20.min(salt.len())]);
    h.update(s2);
    let x = h.finalize();
    s1.iter().zip(x.iter()).map(|(a, b)| a ^ b).collect()
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

/// A HandshakeResponse41 payload for `user` (any bytes) with `auth`.
pub fn handshake_response(user: &[u8], auth: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(&CAPS.to_le_bytes());
    r.extend_from_slice(&(16u32 << 20).to_le_bytes());
    r.push(45);
    r.extend_from_slice(&[0u8; 23]);
    r.extend_from_slice(user);
    r.push(0);
    r.push(auth.len() as u8);
    r.extend_from_slice(auth);
    r.extend_from_slice(b"mysql_native_password\0");
    r
}

/// Connects and reads the greeting; returns the stream and the scramble.
pub fn connect(addr: SocketAddr) -> Result<(TcpStream, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.set_nodelay(true)?;
    let (_, g) = read_packet(&mut s)?;
    if g.first() == Some(&0xFF) {
        bail!("refused at connect: {}", err_message(&g));
    }
    let scramble = greeting_scramble(&g)?;
    Ok((s, scramble))
}

/// Logs in as `user` with `password`: the logged-in stream, or the ERR
/// payload the server answered with.
pub fn login(
    addr: SocketAddr,
    user: &[u8],
    password: &str,
) -> Result<std::result::Result<TcpStream, Vec<u8>>> {
    let (mut s, scramble) = connect(addr)?;
    s.write_all(&packet(
        1,
        &handshake_response(user, &native(password, &scramble)),
    ))?;
    loop {
        let (seq, p) = read_packet(&mut s)?;
        match p.first().copied() {
            Some(0x00) => return Ok(Ok(s)),
            Some(0xFF) => return Ok(Err(p)),
            Some(0xFE) => {
                let nul = p
                    .get(1..)
                    .and_then(|r| r.iter().position(|&b| b == 0))
                    .context("auth switch without a plugin name")?
                    + 1;
                let salt = p.get(nul + 1..).unwrap_or(&[]);
                s.write_all(&packet(seq.wrapping_add(1), &native(password, salt)))?;
            }
            other => bail!("unexpected login packet {other:?}"),
        }
    }
}

/// The error code of an ERR payload.
pub fn err_code(p: &[u8]) -> u16 {
    u16::from_le_bytes([
        p.get(1).copied().unwrap_or(0),
        p.get(2).copied().unwrap_or(0),
    ])
}

/// The message of an ERR payload (after the SQLSTATE), lossy UTF-8.
pub fn err_message(p: &[u8]) -> String {
    String::from_utf8_lossy(p.get(9..).unwrap_or(&[])).into_owned()
}
