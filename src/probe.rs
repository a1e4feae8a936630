//! A minimal HTTP status probe for the CLI's own tools (`demo --nodes`, `bench`, `load`): enough to
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

/// `method path` with an optional JSON body and bearer token on `127.0.0.1:port`:
/// `(status, body)`. HTTP/1.0, so the body ends when the server closes.
pub async fn http_json(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> Option<(u16, serde_json::Value)> {
    http_json_to(&format!("127.0.0.1:{port}"), method, path, token, body).await
}

/// As [`http_json`], to any `host:port`.
pub async fn http_json_to(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> Option<(u16, serde_json::Value)> {
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let (status, body) = http_text_to(addr, method, path, token, &payload).await?;
    Some((
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    ))
}

/// As [`http_json`], with the body as text (`/metrics`, say).
pub async fn http_text(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    payload: &str,
) -> Option<(u16, String)> {
    http_text_to(&format!("127.0.0.1:{port}"), method, path, token, payload).await
}

/// As [`http_text`], to any `host:port`.
pub async fn http_text_to(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    payload: &str,
) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{payload}",
        payload.len()
    );
    s.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.ok()?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    Some((status, body.to_string()))
}
