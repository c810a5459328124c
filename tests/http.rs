//! The least HTTP client the tests need to ask real servers (Prometheus,
//! MLflow, chromedriver, the review page) through their own APIs: one
//! request per connection (`Connection: close`, which chromedriver honours
//! where it ignores HTTP/1.0), so the answer ends with the connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// GET `path`: (status, body); `None` when nothing answers.
pub fn get(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    request(address, "GET", path, &[], None)
}

/// Any request, with extra headers and an optional JSON body: (status,
/// body); `None` when nothing answers.
pub fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    json: Option<&serde_json::Value>,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .ok()?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {address}\r\n"));
    }
    for (key, value) in headers {
        head.push_str(&format!("{key}: {value}\r\n"));
    }
    let body = json.map(|j| j.to_string()).unwrap_or_default();
    if json.is_some() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body.as_bytes()).ok()?;
    read_response(&mut stream)
}

/// Reads one response: by its `Content-Length` where it has one (some
/// servers, chromedriver among them, keep the connection open after it),
/// else chunked, else to the end of the connection.
fn read_response(stream: &mut TcpStream) -> Option<(u16, String)> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let header_end = loop {
        if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        bytes.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&bytes[..header_end]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let length = head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "content-length").then(|| value.trim().parse::<usize>().ok())?
    });
    let mut body = bytes.split_off(header_end + 4);
    match length {
        Some(length) => {
            while body.len() < length {
                let n = stream.read(&mut buf).ok()?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&buf[..n]);
            }
            body.truncate(length);
        }
        None => {
            stream.read_to_end(&mut body).ok()?;
        }
    }
    let body = String::from_utf8_lossy(&body).to_string();
    if head.contains("transfer-encoding: chunked") {
        return Some((status, dechunk(&body)?));
    }
    Some((status, body))
}

/// A chunked body's content.
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size + 2..)?;
    }
}

/// `text` for a URL's query string.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
