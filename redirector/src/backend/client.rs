//! A minimal MySQL client over a session's own backend connection: the
//! mover must read and rebuild state *on that connection* (session state is
//! per connection), with the session's capability flags, so a client crate
//! that opens its own connections cannot do this job.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::protocol::constants::capability::CLIENT_DEPRECATE_EOF;
use crate::protocol::constants::command::{
    COM_INIT_DB, COM_QUERY, COM_QUIT, COM_STMT_CLOSE, COM_STMT_PREPARE,
};
use crate::protocol::{ErrPacket, PacketIo, PacketIoError};

/// Largest reply packet the mover reads (state queries return small rows).
const MAX_REPLY: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("server error {}: {}", .0.code, crate::peer_text::escaped(&.0.message))]
    Server(ErrPacket),
    #[error("backend {0}")]
    Io(#[from] PacketIoError),
    #[error("unexpected reply: {0}")]
    Unexpected(&'static str),
}

impl From<std::io::Error> for ConnError {
    fn from(e: std::io::Error) -> Self {
        ConnError::Io(PacketIoError::Io(e))
    }
}

impl ConnError {
    pub fn server_code(&self) -> Option<u16> {
        match self {
            ConnError::Server(e) => Some(e.code),
            _ => None,
        }
    }
}

/// One text-protocol row; `None` is SQL NULL.
pub type Row = Vec<Option<Vec<u8>>>;

/// Result of a query: rows (empty for statements without a result set).
#[derive(Debug, Default)]
pub struct QueryResult {
    pub rows: Vec<Row>,
}

/// A statement prepared by [`BackendConn::prepare`].
#[derive(Debug, Clone, Copy)]
pub struct Prepared {
    pub id: u32,
    pub params: u16,
    pub columns: u16,
}

pub struct BackendConn<S> {
    io: PacketIo<S>,
    caps: u32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> BackendConn<S> {
    /// `caps` are the capabilities the connection was logged in with.
    pub fn new(stream: S, caps: u32) -> Self {
        Self {
            io: PacketIo::new(stream),
            caps,
        }
    }

    /// Gives the stream back. Errors if the server sent more than was asked
    /// for (the connection would be out of step with the relay).
    pub fn into_inner(self) -> Result<S, ConnError> {
        if !self.io.buf.is_empty() {
            tracing::warn!(bytes = ?&self.io.buf[..self.io.buf.len().min(64)], "unsolicited data from the backend");
            return Err(ConnError::Unexpected("unsolicited data from the backend"));
        }
        Ok(self.io.io)
    }

    /// Ends use of a borrowed stream ([`BackendConn`] over `&mut S`), with
    /// the same check as [`BackendConn::into_inner`].
    pub fn finish(self) -> Result<(), ConnError> {
        self.into_inner().map(drop)
    }

    async fn command(&mut self, cmd: u8, body: &[u8]) -> Result<(), ConnError> {
        let mut payload = Vec::with_capacity(body.len() + 1);
        payload.push(cmd);
        payload.extend_from_slice(body);
        self.io.write(0, &payload).await?;
        Ok(())
    }

    async fn read(&mut self) -> Result<bytes::Bytes, ConnError> {
        Ok(self.io.read(MAX_REPLY).await?.payload)
    }

    /// Runs one statement; returns its rows (text protocol).
    pub async fn query(&mut self, sql: &str) -> Result<QueryResult, ConnError> {
        tracing::debug!(sql = %crate::peer_text::escaped(sql), "mover query");
        self.command(COM_QUERY, sql.as_bytes()).await?;
        let first = self.read().await?;
        match first.first() {
            Some(0x00) => return Ok(QueryResult::default()),
            Some(0xff) => return Err(server_error(&first)),
            Some(0xfb) => return Err(ConnError::Unexpected("LOCAL INFILE request")),
            None => return Err(ConnError::Unexpected("empty reply")),
            _ => {}
        }
        let columns = redirector_common::mysql::read_lenenc(&first, 0)
            .map(|(n, _)| n)
            .ok_or(ConnError::Unexpected("bad column count"))?;
        for _ in 0..columns {
            self.read().await?;
        }
        if self.caps & CLIENT_DEPRECATE_EOF == 0 {
            self.read().await?;
        }
        let mut result = QueryResult::default();
        // A row that does not parse is reported after the whole response
        // is read, so the connection stays in step.
        let mut bad = None;
        loop {
            let p = self.read().await?;
            match p.first() {
                Some(0xff) => return Err(server_error(&p)),
                Some(0xfe) if p.len() < 0xffffff => {
                    // EOF or OK ending the rows; one result set is all we send.
                    return match bad {
                        Some(e) => Err(e),
                        None => Ok(result),
                    };
                }
                _ => match parse_text_row(&p, columns as usize) {
                    Ok(row) => result.rows.push(row),
                    Err(e) => bad = Some(e),
                },
            }
        }
    }

    /// A command (`payload` = command byte and body) whose reply is one
    /// OK or ERR packet.
    pub async fn ok_or_err(&mut self, payload: &[u8]) -> Result<(), ConnError> {
        self.io.write(0, payload).await?;
        let p = self.read().await?;
        match p.first() {
            Some(0x00) => Ok(()),
            Some(0xff) => Err(server_error(&p)),
            _ => Err(ConnError::Unexpected("reply is neither OK nor ERR")),
        }
    }

    /// COM_INIT_DB: selects the default schema.
    pub async fn init_db(&mut self, schema: &str) -> Result<(), ConnError> {
        self.command(COM_INIT_DB, schema.as_bytes()).await?;
        let p = self.read().await?;
        match p.first() {
            Some(0x00) => Ok(()),
            Some(0xff) => Err(server_error(&p)),
            _ => Err(ConnError::Unexpected("COM_INIT_DB reply")),
        }
    }

    /// Prepares a statement (binary protocol) and reads its definitions.
    pub async fn prepare(&mut self, sql: &[u8]) -> Result<Prepared, ConnError> {
        self.command(COM_STMT_PREPARE, sql).await?;
        let p = self.read().await?;
        if p.first() == Some(&0xff) {
            return Err(server_error(&p));
        }
        let ok = redirector_common::mysql::parse_prepare_ok(&p)
            .ok_or(ConnError::Unexpected("bad COM_STMT_PREPARE reply"))?;
        let eof = self.caps & CLIENT_DEPRECATE_EOF == 0;
        for n in [ok.num_params, ok.num_columns] {
            if n > 0 {
                for _ in 0..n {
                    self.read().await?;
                }
                if eof {
                    self.read().await?;
                }
            }
        }
        Ok(Prepared {
            id: ok.stmt_id,
            params: ok.num_params,
            columns: ok.num_columns,
        })
    }

    /// COM_STMT_CLOSE (no reply).
    pub async fn close_statement(&mut self, id: u32) -> Result<(), ConnError> {
        self.command(COM_STMT_CLOSE, &id.to_le_bytes()).await
    }

    /// COM_QUIT, then close.
    pub async fn quit(mut self) {
        let _ = self.command(COM_QUIT, &[]).await;
        let _ = self.io.io.shutdown().await;
    }
}

fn server_error(payload: &[u8]) -> ConnError {
    match ErrPacket::parse(payload) {
        Ok(e) => ConnError::Server(e),
        Err(_) => ConnError::Unexpected("malformed ERR packet"),
    }
}

fn parse_text_row(p: &[u8], columns: usize) -> Result<Row, ConnError> {
    let mut row = Vec::with_capacity(columns);
    let mut pos = 0;
    for _ in 0..columns {
        if p.get(pos) == Some(&0xfb) {
            row.push(None);
            pos += 1;
            continue;
        }
        let (len, start) = redirector_common::mysql::read_lenenc(p, pos)
            .ok_or(ConnError::Unexpected("bad row"))?;
        let end = start
            .checked_add(len as usize)
            .filter(|&e| e <= p.len())
            .ok_or(ConnError::Unexpected("row value past the packet"))?;
        row.push(Some(p[start..end].to_vec()));
        pos = end;
    }
    Ok(row)
}

/// Encodes a packet for tests of the row parser.
#[cfg(test)]
fn lenenc_str(out: &mut bytes::BytesMut, s: &[u8]) {
    use bytes::BufMut;
    out.put_u8(s.len() as u8);
    out.put_slice(s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn text_row_with_null_and_values() {
        let mut p = BytesMut::new();
        lenenc_str(&mut p, b"sql_mode");
        p.extend_from_slice(&[0xfb]);
        lenenc_str(&mut p, b"");
        let row = parse_text_row(&p, 3).unwrap();
        assert_eq!(row, vec![Some(b"sql_mode".to_vec()), None, Some(vec![])]);
        assert!(parse_text_row(&p[..4], 3).is_err());
        assert!(parse_text_row(&[0x05, b'a'], 1).is_err());
    }

    #[test]
    fn server_error_is_parsed() {
        let payload = ErrPacket::new(1146, b"42S02", "no such table")
            .to_payload(crate::protocol::constants::capability::CLIENT_PROTOCOL_41);
        match server_error(&payload) {
            ConnError::Server(e) => assert_eq!(e.code, 1146),
            other => panic!("{other:?}"),
        }
    }
}
