//! A tiny HTTP/1.1 server for auth and redirect tests: each request is handed to a closure,
//! and every request is recorded so tests can assert which headers reached which host.
//! A response body can also be streamed (huge, or trickled) instead of held in memory.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names lowercased.
    pub headers: BTreeMap<String, String>,
    /// As many bytes as `Content-Length` said.
    pub body: Vec<u8>,
}

/// Writes a streamed body; it returns when done or when the client has gone.
pub type BodyWriter = Box<dyn FnOnce(&mut dyn Write) + Send>;

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Instead of `body`: the declared length (none: the body ends when the connection
    /// closes) and the writer.
    pub stream: Option<(Option<u64>, BodyWriter)>,
}

impl Response {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
            stream: None,
        }
    }

    /// A body produced by `writer` as it goes, e.g. more than memory holds, or a trickle.
    pub fn streamed(
        status: u16,
        length: Option<u64>,
        writer: impl FnOnce(&mut dyn Write) + Send + 'static,
    ) -> Response {
        Response {
            stream: Some((length, Box::new(writer))),
            ..Response::new(status, Vec::new())
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Response {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
}

pub struct Server {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    pub fn start(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Server {
        Self::start_at(0, handler)
    }

    /// On a given port (0: any), for servers that must name their own address.
    pub fn start_at(
        port: u16,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> Server {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let handler = Arc::new(handler);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let log = log.clone();
                let handler = handler.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() || line.is_empty() {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let method = parts.next().unwrap_or("").to_string();
                    let path = parts.next().unwrap_or("").to_string();
                    let mut headers = BTreeMap::new();
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                        }
                    }
                    let mut body = Vec::new();
                    if let Some(n) = headers
                        .get("content-length")
                        .and_then(|v| v.parse::<usize>().ok())
                    {
                        body = vec![0; n];
                        let _ = reader.read_exact(&mut body);
                    }
                    let req = Request {
                        method,
                        path,
                        headers,
                        body,
                    };
                    log.lock().expect("log").push(req.clone());
                    let mut resp = handler(&req);
                    let length = match &resp.stream {
                        Some((length, _)) => *length,
                        None => Some(resp.body.len() as u64),
                    };
                    let mut out = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", resp.status);
                    if let Some(n) = length {
                        out.push_str(&format!("Content-Length: {n}\r\n"));
                    }
                    for (k, v) in &resp.headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str("\r\n");
                    let _ = stream.write_all(out.as_bytes());
                    match resp.stream.take() {
                        Some((_, writer)) => writer(&mut stream),
                        None => {
                            let _ = stream.write_all(&resp.body);
                        }
                    }
                });
            }
        });
        Server { port, requests }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("log").clone()
    }
}

/// Fetches `req`'s path from a real registry at `upstream` (`http://host:port`), with its
/// `Accept`: (status, content type, body).
pub fn fetch(upstream: &str, req: &Request) -> (u16, String, Vec<u8>) {
    let mut r = ureq::get(&format!("{upstream}{}", req.path));
    if let Some(a) = req.headers.get("accept") {
        r = r.set("Accept", a);
    }
    match r.call() {
        Ok(resp) => {
            let ct = resp.content_type().to_string();
            let status = resp.status();
            let mut body = Vec::new();
            resp.into_reader()
                .read_to_end(&mut body)
                .expect("read upstream");
            (status, ct, body)
        }
        Err(ureq::Error::Status(code, _)) => (code, String::new(), Vec::new()),
        Err(e) => panic!("upstream: {e}"),
    }
}

/// Answers `req` from a real registry at `upstream`: a front that adds auth in front of
/// `docker-registry`.
pub fn forward(upstream: &str, req: &Request) -> Response {
    let (status, ct, body) = fetch(upstream, req);
    let resp = Response::new(status, body);
    if ct.is_empty() {
        resp
    } else {
        resp.header("Content-Type", &ct)
    }
}
