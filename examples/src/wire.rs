//! The examples' protocol: one line of UTF-8 each way. The caller sends `ping`; the service
//! answers `pong from <its SPIFFE ID>`. A service that refuses or ends a connection says why
//! in one line starting with `refused:` or `closed:` before it closes. Lines are bounded
//! ([`MAX_LINE`]) because the peer controls them.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

/// Longest line either side accepts, in bytes (with its newline).
pub const MAX_LINE: usize = 1024;

/// A line that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The peer closed the connection.
    #[error("the connection was closed by the peer")]
    Closed,
    /// The peer sent more than [`MAX_LINE`] bytes without a newline.
    #[error("the peer sent a line longer than {MAX_LINE} bytes (wire::MAX_LINE)")]
    TooLong,
    /// The transport failed (for TLS: an alert, such as a refused certificate).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads one line, without its newline.
pub async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<String, WireError> {
    let mut buf = Vec::new();
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Err(WireError::Closed);
        }
        let (chunk, found) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1),
            None => (available, available.len()),
        };
        if buf.len() + chunk.len() >= MAX_LINE {
            return Err(WireError::TooLong);
        }
        buf.extend_from_slice(chunk);
        let newline = found > chunk.len();
        r.consume(found);
        if newline {
            return Ok(String::from_utf8_lossy(&buf).into_owned());
        }
    }
}

/// Writes `line` and a newline, and flushes.
pub async fn write_line<W: AsyncWrite + Unpin>(w: &mut W, line: &str) -> std::io::Result<()> {
    w.write_all(line.as_bytes()).await?;
    w.write_all(b"\n").await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_lines_and_bounds_them() {
        let mut r = tokio::io::BufReader::new(&b"ping\npong from x\nunfinished"[..]);
        assert_eq!(read_line(&mut r).await.unwrap(), "ping");
        assert_eq!(read_line(&mut r).await.unwrap(), "pong from x");
        assert!(matches!(read_line(&mut r).await, Err(WireError::Closed)));

        let long = vec![b'a'; MAX_LINE + 10];
        let mut r = tokio::io::BufReader::with_capacity(64, &long[..]);
        assert!(matches!(read_line(&mut r).await, Err(WireError::TooLong)));
    }
}
