//! `dyngroups serve`: load the data once, then serve a rule tester page and
//! the JSON API of [`dyngroups::api`] over HTTP.
//!
//! ```sh
//! dyngroups serve --users examples/data/users.csv \
//!     --enrollments examples/data/enrollments.csv --org examples/data/org.csv \
//!     --rules examples/groups.rules
//! ```
//!
//! The server is synchronous (`tiny_http`): a few threads take requests,
//! and evaluations, which use every core through rayon, run at most
//! `--max-evaluations` at a time, each bounded by `--timeout`. It listens on
//! localhost unless told otherwise, and elsewhere only with a token.

use dyngroups::api::{Api, ApiError, ApiResult, ExplainRequest, RuleRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::io::{Cursor, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};
use tiny_http::{Header, Method, Request, Response, Server};

/// The server's options.
#[derive(clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    session: super::repl::SessionArgs,
    /// Where to listen. An address other than loopback needs `--token` or
    /// `--token-file`.
    #[arg(long, value_name = "ADDRESS", default_value = "127.0.0.1:8080")]
    listen: String,
    /// The token API requests must carry (`Authorization: Bearer TOKEN`).
    /// Prefer `--token-file`: a command line is visible to other users.
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    token: Option<String>,
    /// A file holding the token (its first line).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The largest request body, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 256 * 1024)]
    max_body: usize,
    /// How long a request waits for its evaluation, in seconds, before it
    /// is answered 503.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    timeout: f64,
    /// Evaluations running at once; more wait, within `--timeout`.
    #[arg(long, value_name = "N", default_value_t = 2)]
    max_evaluations: usize,
}

/// Threads taking requests. Evaluations run beside them, so a slow one
/// does not hold the page's files or checks back.
const REQUEST_THREADS: usize = 8;

/// The page's files, served from the binary: no CDN, no build step.
const PAGE: [(&str, &str, &str); 3] = [
    ("/", "text/html; charset=utf-8", include_str!("page/index.html")),
    ("/app.js", "text/javascript; charset=utf-8", include_str!("page/app.js")),
    ("/app.css", "text/css; charset=utf-8", include_str!("page/app.css")),
];

/// What every request shares.
struct Shared {
    api: Api,
    /// The SHA-256 of the token, if one is needed.
    token: Option<[u8; 32]>,
    max_body: usize,
    timeout: Duration,
    running: Gate,
}

/// Serves until killed; exit code 2 for bad options, 3 when the data or
/// the rules file cannot be loaded, 4 when the address cannot be bound.
pub fn main(args: ServeArgs) -> std::process::ExitCode {
    match serve(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err((code, message)) => {
            eprint!("{message}");
            std::process::ExitCode::from(code)
        }
    }
}

fn serve(args: ServeArgs) -> Result<(), (u8, String)> {
    let usage = |message: String| (2, format!("error: {message}\n"));
    let address: SocketAddr = args
        .listen
        .to_socket_addrs()
        .ok()
        .and_then(|mut all| all.next())
        .ok_or_else(|| {
            usage(format!(
                "`--listen {}` is not an address, e.g. 127.0.0.1:8080",
                args.listen
            ))
        })?;
    let token = match (&args.token, &args.token_file) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| usage(format!("cannot read the token file {}: {e}", path.display())))?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    if token.as_ref().is_some_and(|t| t.len() < 16) {
        return Err(usage("a token needs at least 16 characters".into()));
    }
    if token.is_none() && !address.ip().is_loopback() {
        return Err(usage(format!(
            "listening on {address} lets other machines read your users' data; \
             pass `--token-file FILE` (or `--token TOKEN`) so that requests need \
             `Authorization: Bearer TOKEN`, or listen on 127.0.0.1"
        )));
    }
    if args.max_evaluations == 0 || !args.timeout.is_finite() || args.timeout <= 0.0 {
        return Err(usage("`--max-evaluations` and `--timeout` must be above 0".into()));
    }
    let session = super::repl::open_session(&args.session, "").map_err(|message| (3, message))?;
    let server = Server::http(address).map_err(|e| (4, format!("error: cannot listen on {address}: {e}\n")))?;
    let bound = server
        .server_addr()
        .to_ip()
        .expect("a server bound to an IP address has one");
    let fragment = token.as_ref().map_or(String::new(), |t| format!("#token={t}"));
    println!("serving the rule tester on http://{bound}/{fragment} (Ctrl-C stops)");
    std::io::stdout().flush().ok();
    let shared = Arc::new(Shared {
        api: Api::new(session),
        token: token.map(|t| Sha256::digest(t.as_bytes()).into()),
        max_body: args.max_body,
        timeout: Duration::from_secs_f64(args.timeout),
        running: Gate::new(args.max_evaluations),
    });
    let server = Arc::new(server);
    let threads: Vec<_> = (0..REQUEST_THREADS)
        .map(|_| {
            let (server, shared) = (Arc::clone(&server), Arc::clone(&shared));
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    answer(&shared, request);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().ok();
    }
    Ok(())
}

type Answer = Response<Cursor<Vec<u8>>>;

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("headers made here are valid")
}

fn answer(shared: &Arc<Shared>, mut request: Request) {
    let response = respond(shared, &mut request)
        .with_header(header("Cache-Control", "no-store"))
        .with_header(header("X-Content-Type-Options", "nosniff"));
    // A client gone before its answer is no failure of the server.
    let _ = request.respond(response);
}

fn respond(shared: &Arc<Shared>, request: &mut Request) -> Answer {
    let url = request.url().to_string();
    let path = url.split(['?', '#']).next().unwrap_or_default();
    if let Some((_, content_type, body)) = PAGE.iter().find(|(p, ..)| *p == path) {
        return match request.method() {
            Method::Get | Method::Head => Response::from_data(body.as_bytes().to_vec())
                .with_header(header("Content-Type", content_type))
                .with_header(header(
                    "Content-Security-Policy",
                    "default-src 'self'; style-src 'self'; script-src 'self'",
                )),
            _ => failure(&ApiError::new(405, "method_not_allowed", format!("{path} takes GET"))),
        };
    }
    if !path.starts_with("/api/") {
        return failure(&ApiError::new(404, "not_found", format!("nothing at {path}")));
    }
    if let Some(expected) = &shared.token
        && !authorized(request, expected)
    {
        return failure(&ApiError::new(
            401,
            "unauthorized",
            "this server needs `Authorization: Bearer TOKEN` with the token it was started with",
        ))
        .with_header(header("WWW-Authenticate", "Bearer"));
    }
    match route(shared, request, path) {
        Ok(response) => response,
        Err(error) => failure(&error),
    }
}

/// Whether the request carries the token: both are hashed, then compared
/// byte by byte in full, so the time taken tells neither where they differ
/// nor the token's length.
fn authorized(request: &Request, expected: &[u8; 32]) -> bool {
    let given = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .and_then(|h| h.value.as_str().strip_prefix("Bearer "))
        .unwrap_or_default();
    let given: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
    given.iter().zip(expected).fold(0u8, |differ, (a, b)| differ | (a ^ b)) == 0
}

fn route(shared: &Arc<Shared>, request: &mut Request, path: &str) -> ApiResult<Answer> {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').skip(2).collect();
    let method = request.method().clone();
    let api = &shared.api;
    match (&method, parts.as_slice()) {
        (Method::Get, ["fields"]) => Ok(json(200, &api.fields())),
        (Method::Get, ["groups"]) => Ok(json(200, &api.groups())),
        (Method::Get, ["groups", key]) => {
            let key = key.to_string();
            evaluated(shared, move |api| api.group(&key))
        }
        (Method::Get, ["users", id, "groups"]) => {
            let id = user_id(id)?;
            evaluated(shared, move |api| api.user_groups(id))
        }
        (Method::Post, ["check"]) => {
            let rule: RuleRequest = body(shared, request)?;
            Ok(json(200, &api.check(&rule)?))
        }
        (Method::Post, ["preview"]) => {
            let rule: RuleRequest = body(shared, request)?;
            evaluated(shared, move |api| api.preview(&rule))
        }
        (Method::Post, ["explain"]) => {
            let asked: ExplainRequest = body(shared, request)?;
            evaluated(shared, move |api| api.explain(&asked))
        }
        (_, ["fields" | "groups"] | ["groups", _] | ["users", _, "groups"]) => {
            Err(ApiError::new(405, "method_not_allowed", format!("{path} takes GET")))
        }
        (_, ["check" | "preview" | "explain"]) => Err(ApiError::new(
            405,
            "method_not_allowed",
            format!("{path} takes POST with a JSON body"),
        )),
        _ => Err(ApiError::new(
            404,
            "not_found",
            format!("no API call at {path}; see docs/api.md"),
        )),
    }
}

fn user_id(text: &str) -> ApiResult<u32> {
    text.parse().map_err(|_| {
        ApiError::new(
            400,
            "bad_request",
            format!("`{text}` is not a user id (a whole number from 0 to 4294967295)"),
        )
    })
}

/// The request's JSON body, read up to `--max-body` bytes.
fn body<T: DeserializeOwned>(shared: &Shared, request: &mut Request) -> ApiResult<T> {
    let too_large = || {
        ApiError::new(
            413,
            "body_too_large",
            format!("the request body is over {} bytes", shared.max_body),
        )
    };
    if request.body_length().is_some_and(|length| length > shared.max_body) {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    request
        .as_reader()
        .take(shared.max_body as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ApiError::new(400, "bad_request", format!("cannot read the request body: {e}")))?;
    if bytes.len() > shared.max_body {
        return Err(too_large());
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            400,
            "bad_request",
            format!("the body is not the JSON this call takes: {e}"),
        )
    })
}

/// Runs an evaluation once one of `--max-evaluations` is free, and answers
/// with it if it ends within `--timeout` of the request; past that, with
/// 503. An evaluation cannot be stopped midway: one past its time finishes
/// on its own thread, still counted among those running, and its answer is
/// dropped.
fn evaluated<T: Serialize + Send + 'static>(
    shared: &Arc<Shared>,
    job: impl FnOnce(&Api) -> ApiResult<T> + Send + 'static,
) -> ApiResult<Answer> {
    let deadline = Instant::now() + shared.timeout;
    let busy = || {
        ApiError::new(
            503,
            "busy",
            format!(
                "the evaluation did not end within {:.1} s; try again, or start the server with a longer `--timeout`",
                shared.timeout.as_secs_f64()
            ),
        )
    };
    let permit = shared.running.enter(Arc::clone(shared), deadline).ok_or_else(busy)?;
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let answer = job(&permit.shared.api).map(|answer| serde_json::to_vec(&answer));
        drop(permit);
        let _ = send.send(answer);
    });
    match receive.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(Ok(Ok(body))) => Ok(json_bytes(200, body)),
        Ok(Ok(Err(e))) => Err(ApiError::new(500, "server_error", e.to_string())),
        Ok(Err(error)) => Err(error),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(busy()),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(ApiError::new(
            500,
            "server_error",
            "the evaluation failed; see the server's log",
        )),
    }
}

fn json(status: u16, value: &impl Serialize) -> Answer {
    json_bytes(status, serde_json::to_vec(value).expect("answers serialize"))
}

fn json_bytes(status: u16, body: Vec<u8>) -> Answer {
    Response::from_data(body)
        .with_status_code(status)
        .with_header(header("Content-Type", "application/json"))
}

fn failure(error: &ApiError) -> Answer {
    json(error.status, &serde_json::json!({ "error": error }))
}

/// A bound on evaluations running at once.
struct Gate {
    running: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

/// One running evaluation's place; given back when dropped.
struct Permit {
    shared: Arc<Shared>,
}

impl Gate {
    fn new(max: usize) -> Gate {
        Gate {
            running: Mutex::new(0),
            freed: Condvar::new(),
            max,
        }
    }

    /// A place, once one is free before `deadline`.
    fn enter(&self, shared: Arc<Shared>, deadline: Instant) -> Option<Permit> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        while *running >= self.max {
            let left = deadline.checked_duration_since(Instant::now())?;
            running = self
                .freed
                .wait_timeout(running, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *running += 1;
        Some(Permit { shared })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let gate = &self.shared.running;
        *gate.running.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        gate.freed.notify_one();
    }
}
