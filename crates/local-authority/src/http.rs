//! A minimal HTTP/1.1 server side: request heads, `Content-Length` and
//! chunked bodies, keep-alive, and response writing.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use async_io::{Async, Timer};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};

/// Largest request head (request line plus headers) accepted.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Largest request body accepted; larger ones get 413.
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// Longest chunk-size or trailer line accepted in a chunked body.
const MAX_LINE: usize = 1024;

/// A parsed request line and headers.
pub(crate) struct Head {
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) http10: bool,
    /// Names lowercased, values trimmed.
    pub(crate) headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Whether the connection must close after this request's response.
    pub(crate) fn wants_close(&self) -> bool {
        self.http10 || self.header_has_token("connection", "close")
    }
}

/// How a request's body is delimited.
enum Framing {
    Length(usize),
    Chunked,
}

/// Why a request could not be read.
pub(crate) enum ReadError {
    /// The connection failed or closed mid-request: drop it silently.
    Io,
    /// Answer with this status and close the connection.
    Status(u16),
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        ReadError::Io
    }
}

/// Why a request body could not be read.
pub(crate) enum BodyError {
    /// The connection failed or closed mid-body.
    Io,
    /// The body is malformed: 400.
    Malformed,
    /// The body exceeds [`MAX_BODY`]: 413.
    TooLarge,
}

impl From<io::Error> for BodyError {
    fn from(_: io::Error) -> Self {
        BodyError::Io
    }
}

/// One accepted connection with its read buffer (which may hold the start of
/// a pipelined next request).
pub(crate) struct Conn {
    stream: Async<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    pub(crate) fn new(stream: Async<TcpStream>) -> Self {
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads more bytes into the buffer; returns how many (0 at end of stream).
    async fn fill(&mut self) -> io::Result<usize> {
        let len = self.buf.len();
        self.buf.resize(len + 8192, 0);
        let res = self.stream.read(&mut self.buf[len..]).await;
        let n = *res.as_ref().unwrap_or(&0);
        self.buf.truncate(len + n);
        res
    }

    /// Reads the next request head. `Ok(None)` when the peer closed the
    /// connection cleanly between requests.
    pub(crate) async fn read_head(&mut self) -> Result<Option<Head>, ReadError> {
        loop {
            // Tolerate empty lines before a request line (RFC 9112 §2.2).
            let blank = self
                .buf
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            self.buf.drain(..blank);
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..pos + 4).collect();
                return parse_head(&head[..pos]).map(Some);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(ReadError::Status(431));
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Io)
                };
            }
        }
    }

    /// Reads the body that `head` announces, answering `Expect: 100-continue`.
    pub(crate) async fn read_body(&mut self, head: &Head) -> Result<Vec<u8>, BodyError> {
        let framing = framing(head)?;
        if let Framing::Length(len) = framing {
            if len > MAX_BODY {
                return Err(BodyError::TooLarge);
            }
        }
        let has_body = !matches!(framing, Framing::Length(0));
        let all_buffered = matches!(framing, Framing::Length(len) if self.buf.len() >= len);
        if has_body
            && !head.http10
            && !all_buffered
            && head
                .header("expect")
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            self.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        match framing {
            Framing::Length(len) => self.take(len).await,
            Framing::Chunked => self.read_chunked().await,
        }
    }

    /// Takes exactly `len` bytes from the stream.
    async fn take(&mut self, len: usize) -> Result<Vec<u8>, BodyError> {
        while self.buf.len() < len {
            if self.fill().await? == 0 {
                return Err(BodyError::Io);
            }
        }
        Ok(self.buf.drain(..len).collect())
    }

    /// Reads one CRLF-terminated line (without the CRLF).
    async fn line(&mut self) -> Result<Vec<u8>, BodyError> {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).take(pos).collect();
                return Ok(line);
            }
            if self.buf.len() > MAX_LINE {
                return Err(BodyError::Malformed);
            }
            if self.fill().await? == 0 {
                return Err(BodyError::Io);
            }
        }
    }

    async fn read_chunked(&mut self) -> Result<Vec<u8>, BodyError> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            let line = std::str::from_utf8(&line).map_err(|_| BodyError::Malformed)?;
            let size = line.split(';').next().unwrap_or("").trim();
            if size.is_empty() || size.len() > 8 {
                return Err(if size.is_empty() {
                    BodyError::Malformed
                } else {
                    BodyError::TooLarge
                });
            }
            let size = usize::from_str_radix(size, 16).map_err(|_| BodyError::Malformed)?;
            if size == 0 {
                // Trailer section: lines up to an empty one.
                while !self.line().await?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > MAX_BODY {
                return Err(BodyError::TooLarge);
            }
            let chunk = self.take(size + 2).await?;
            if !chunk.ends_with(b"\r\n") {
                return Err(BodyError::Malformed);
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }

    pub(crate) async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Writes a complete response with a correct `Content-Length`.
    ///
    /// Any `Content-Length` in `headers` is replaced; `Connection: close` is
    /// added when `close` is set and `headers` has no `Connection` header.
    pub(crate) async fn respond(
        &mut self,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
        close: bool,
    ) -> io::Result<()> {
        let mut out = head_bytes(
            status,
            headers
                .iter()
                .filter(|(n, _)| !n.eq_ignore_ascii_case("content-length")),
            body.len(),
            close,
        );
        out.extend_from_slice(body);
        self.write_all(&out).await
    }

    /// Writes a response head declaring `content_length` and `Connection: close`.
    pub(crate) async fn respond_head(
        &mut self,
        status: u16,
        headers: &[(String, String)],
        content_length: usize,
    ) -> io::Result<()> {
        let out = head_bytes(status, headers.iter(), content_length, true);
        self.write_all(&out).await
    }

    /// Closes the connection: no more writes, then discard what the peer
    /// still sends (bounded in bytes and time) so that it reads our answer
    /// instead of a reset.
    pub(crate) async fn close(mut self) {
        let _ = self.stream.get_ref().shutdown(Shutdown::Write);
        let drain = async {
            let mut scratch = [0u8; 4096];
            let mut total = 0usize;
            while total < 4 * MAX_BODY {
                match self.stream.read(&mut scratch).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        };
        drain
            .or(async {
                Timer::after(Duration::from_secs(1)).await;
            })
            .await;
    }
}

fn head_bytes<'a>(
    status: u16,
    headers: impl Iterator<Item = &'a (String, String)>,
    content_length: usize,
    close: bool,
) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    let mut has_connection = false;
    for (name, value) in headers {
        has_connection |= name.eq_ignore_ascii_case("connection");
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str(&format!("Content-Length: {content_length}\r\n"));
    if close && !has_connection {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(bytes: &[u8]) -> Result<Head, ReadError> {
    let bad = || ReadError::Status(400);
    let text = std::str::from_utf8(bytes).map_err(|_| bad())?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().ok_or_else(bad)?;
    let mut parts = request_line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) if !m.is_empty() && !t.is_empty() => (m, t, v),
        _ => return Err(bad()),
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(ReadError::Status(505)),
    };
    let mut headers = Vec::new();
    for line in lines {
        // Obsolete line folding and malformed fields are rejected.
        if line.starts_with([' ', '\t']) {
            return Err(bad());
        }
        let (name, value) = line.split_once(':').ok_or_else(bad)?;
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(bad());
        }
        headers.push((
            name.to_ascii_lowercase(),
            value.trim_matches([' ', '\t']).to_string(),
        ));
    }
    Ok(Head {
        method: method.to_string(),
        target: target.to_string(),
        http10,
        headers,
    })
}

fn framing(head: &Head) -> Result<Framing, BodyError> {
    let lengths: Vec<&str> = head
        .headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .collect();
    let has_transfer_encoding = head.headers.iter().any(|(n, _)| n == "transfer-encoding");
    if has_transfer_encoding {
        // Both framings at once is a smuggling vector: refuse it.
        if !lengths.is_empty() {
            return Err(BodyError::Malformed);
        }
        let last = head
            .headers
            .iter()
            .filter(|(n, _)| n == "transfer-encoding")
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .next_back()
            .unwrap_or("");
        return if last.eq_ignore_ascii_case("chunked") {
            Ok(Framing::Chunked)
        } else {
            Err(BodyError::Malformed)
        };
    }
    let Some(first) = lengths.first() else {
        return Ok(Framing::Length(0));
    };
    if lengths.iter().any(|l| l != first)
        || first.is_empty()
        || !first.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(BodyError::Malformed);
    }
    // An unrepresentable length is certainly too large.
    Ok(Framing::Length(first.parse().unwrap_or(usize::MAX)))
}

/// The reason phrase for common statuses.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}
