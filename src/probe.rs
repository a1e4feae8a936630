//! A minimal HTTP status probe for the CLI's own tools (`demo --nodes`, `bench`): enough to
//! wait for `/readyz` without an HTTP client dependency.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The status code of `GET path` on `127.0.0.1:port`, if anything answered.
pub async fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = vec![0u8; 64];
    let n = s.read(&mut buf).await.ok()?;
    std::str::from_utf8(&buf[..n])
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
