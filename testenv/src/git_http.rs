//! A git server over HTTP with basic authentication, standing for a hosted
//! remote (GitHub, GitLab, Gitea): git's own smart-HTTP server,
//! `git http-backend`, run as CGI behind a small axum front on loopback.
//! Anyone may clone; only the configured user may push. A request without
//! the right credentials gets 401, as a host answers it. [`GitHttpServer::start_tls`]
//! serves the same over HTTPS with a certificate from a CA of its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use base64::Engine;
use tokio::io::AsyncWriteExt;

use crate::Error;

struct Server {
    root: PathBuf,
    authorization: String,
}

/// A running smart-HTTP git server; dropping it stops it.
pub struct GitHttpServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    scheme: &'static str,
}

impl GitHttpServer {
    /// Serves the bare repositories under `root` on 127.0.0.1, with pushes allowed to `username`:`password` only.
    pub async fn start(root: &Path, username: &str, password: &str) -> Result<Self, Error> {
        Self::start_at(root, username, password, std::net::Ipv4Addr::LOCALHOST).await
    }

    /// Like [`GitHttpServer::start`], listening on `address` (a node's bridge, for pods to reach).
    pub async fn start_at(
        root: &Path,
        username: &str,
        password: &str,
        address: std::net::Ipv4Addr,
    ) -> Result<Self, Error> {
        let (listener, router) = Self::bind(root, username, password, address).await?;
        let addr = listener.local_addr().map_err(|source| Error::Io { path: root.to_path_buf(), source })?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self { addr, task, scheme: "http" })
    }

    /// The same over HTTPS, with a serving certificate for 127.0.0.1 and
    /// localhost signed by a CA written to `certs` (`certs/ca.crt`, which a
    /// client must be told to trust).
    pub async fn start_tls(root: &Path, username: &str, password: &str, certs: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(certs).map_err(|source| Error::Io { path: certs.to_path_buf(), source })?;
        let files = crate::certs::generate(certs)?;
        let config = cmp_core::tls::server_config(&files.serving_cert, &files.serving_key).map_err(|e| Error::Io {
            path: files.serving_cert.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let (listener, router) = Self::bind(root, username, password, std::net::Ipv4Addr::LOCALHOST).await?;
        let addr = listener.local_addr().map_err(|source| Error::Io { path: root.to_path_buf(), source })?;
        let task = tokio::spawn(cmp_core::tls::serve("git", listener, config, router, std::future::pending()));
        Ok(Self { addr, task, scheme: "https" })
    }

    async fn bind(
        root: &Path,
        username: &str,
        password: &str,
        address: std::net::Ipv4Addr,
    ) -> Result<(tokio::net::TcpListener, axum::Router), Error> {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        let server = Arc::new(Server { root: root.to_path_buf(), authorization: format!("Basic {token}") });
        let listener = tokio::net::TcpListener::bind((address, 0))
            .await
            .map_err(|source| Error::Io { path: root.to_path_buf(), source })?;
        Ok((listener, axum::Router::new().fallback(cgi).with_state(server)))
    }

    /// The URL of the repository `name` (a folder under the root), `http(s)://<address>:<port>/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("{}://{}/{name}", self.scheme, self.addr)
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn status(code: StatusCode, message: &str) -> Response {
    let mut response = Response::new(Body::from(message.to_string()));
    *response.status_mut() = code;
    response
}

/// One request through `git http-backend` (CGI/1.1): pushes (`git-receive-pack`) need the credentials.
async fn cgi(State(server): State<Arc<Server>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let query = uri.query().unwrap_or_default();
    let pushing = uri.path().ends_with("/git-receive-pack") || query.contains("service=git-receive-pack");
    let authorized = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(server.authorization.as_str());
    if pushing && !authorized {
        let mut response = status(StatusCode::UNAUTHORIZED, "credentials required to push");
        response.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Basic realm=\"git\""));
        return response;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let mut command = tokio::process::Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &server.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", uri.path())
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if authorized {
        command.env("REMOTE_USER", "writer");
    }
    let Ok(mut child) = command.spawn() else {
        return status(StatusCode::INTERNAL_SERVER_ERROR, "git http-backend did not start");
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&body).await;
    }
    let Ok(output) = child.wait_with_output().await else {
        return status(StatusCode::INTERNAL_SERVER_ERROR, "git http-backend failed");
    };
    // CGI output: headers, a blank line, the body.
    let out = output.stdout;
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    let split = split.or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((end, gap)) = split else {
        return status(StatusCode::BAD_GATEWAY, &String::from_utf8_lossy(&output.stderr));
    };
    let mut response = Response::new(Body::from(out[end + gap..].to_vec()));
    for line in String::from_utf8_lossy(&out[..end]).lines() {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().and_then(|c| c.parse::<u16>().ok());
            *response.status_mut() = code.and_then(|c| StatusCode::from_u16(c).ok()).unwrap_or(StatusCode::OK);
        } else if let (Ok(name), Ok(value)) =
            (axum::http::HeaderName::try_from(name), axum::http::HeaderValue::try_from(value))
        {
            response.headers_mut().insert(name, value);
        }
    }
    response
}
