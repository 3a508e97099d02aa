//! `dyngroups serve` through real HTTP on a loopback port: each API call,
//! the token, the limits and bad input; and the page, driven in headless
//! Chromium.

use crate::workspace::{EXAMPLE, text};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running `dyngroups serve`, killed when dropped.
struct Served {
    child: Child,
    /// `127.0.0.1:PORT`.
    address: String,
    /// What the server printed on its first lines, up to its address.
    url: String,
}

/// The example's inputs as `serve` takes them (no `--rules`), from the
/// repository root, with `users` as the users file.
fn example_inputs(users: &str) -> Vec<String> {
    let mut args: Vec<String> = EXAMPLE.iter().map(|a| a.to_string()).collect();
    let rules = args.iter().position(|a| a == "--rules").unwrap();
    args.drain(rules..rules + 2);
    let at = args.iter().position(|a| a == "--users").unwrap() + 1;
    args[at] = users.to_string();
    args
}

impl Served {
    /// Starts the server on a free loopback port with the example data and
    /// `extra` options, and waits until it listens.
    fn start(users: &str, extra: &[&str]) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dyngroups"))
            .arg("serve")
            .args(example_inputs(users))
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("the server says where it listens").unwrap();
            if let Some(rest) = line.strip_prefix("serving the rule tester on ") {
                break rest.split(' ').next().unwrap().to_string();
            }
        };
        let address = url.trim_start_matches("http://").split('/').next().unwrap().to_string();
        Served { child, address, url }
    }

    /// One request: the status and the body.
    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.address).unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.address,
            body.len()
        );
        for (name, value) in headers {
            head += &format!("{name}: {value}\r\n");
        }
        head += "\r\n";
        stream.write_all(head.as_bytes()).unwrap();
        // A server that refuses a body early may close before reading it.
        let _ = stream.write_all(body);
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let response = text(&response);
        let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, body.to_string())
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map_or(Vec::new(), |b| b.to_string().into_bytes());
        let (status, text) = self.request(method, path, &[], &body);
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON from {path}: {text}")),
        )
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A state whose last committed run is the example's.
fn committed_example() -> tempfile::TempDir {
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dyngroups"))
        .arg("run")
        .args(EXAMPLE)
        .args(["--state", state.path().to_str().unwrap()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    state
}

/// A server over the next day's users, with the rules file and a state
/// whose last committed run is the example's (kept while the server runs).
fn the_next_day() -> (tempfile::TempDir, Served) {
    let state = committed_example();
    let served = Served::start(
        "examples/data/users_next.csv",
        &[
            "--rules",
            "examples/groups.rules",
            "--state",
            state.path().to_str().unwrap(),
        ],
    );
    (state, served)
}

#[test]
fn each_api_call_answers_over_http() {
    let (_state, served) = the_next_day();

    let (status, fields) = served.call("GET", "/api/fields", None);
    assert_eq!(status, 200);
    assert_eq!(fields["users"], 12);
    let names: Vec<&str> = fields["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"department") && names.contains(&"course"), "{names:?}");
    assert!(fields["keywords"].as_array().unwrap().contains(&json!("in_branch(")));
    assert!(fields["groups"].as_array().unwrap().contains(&json!("sales_emea")));

    // A typo: where it is, what is wrong, what would be right.
    let (status, checked) = served.call(
        "POST",
        "/api/check",
        Some(json!({"rule": "grade >= 3 and departmnt == \"Sales\""})),
    );
    assert_eq!(status, 200);
    assert_eq!(checked["ok"], false);
    let diagnostic = &checked["diagnostics"][0];
    assert_eq!(
        (diagnostic["line"].as_u64(), diagnostic["column"].as_u64()),
        (Some(1), Some(16))
    );
    assert_eq!(diagnostic["end_column"], 25);
    assert_eq!(diagnostic["help"], "did you mean `department`?");
    assert!(
        diagnostic["rendered"]
            .as_str()
            .unwrap()
            .contains("               ^^^^^^^^^")
    );
    let (_, checked) = served.call("POST", "/api/check", Some(json!({"rule": "department == \"Sales\""})));
    assert_eq!(checked, json!({"ok": true, "diagnostics": []}));

    let (status, preview) = served.call(
        "POST",
        "/api/preview",
        Some(json!({"rule": "department == \"Sales\"", "sample": 2})),
    );
    assert_eq!(status, 200);
    assert_eq!(
        (preview["matched"].as_u64(), preview["users"].as_u64()),
        (Some(5), Some(12))
    );
    assert_eq!(preview["sample"]["columns"][0], "user_id");
    let sampled: Vec<&str> = preview["sample"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap())
        .collect();
    assert_eq!(sampled, ["1001", "1005"]);
    let (status, refused) = served.call("POST", "/api/preview", Some(json!({"rule": "grade >= \"x\""})));
    assert_eq!(status, 422);
    assert_eq!(refused["error"]["code"], "invalid_rule");
    assert_eq!(refused["error"]["diagnostics"][0]["column"], 10);

    let (status, explained) = served.call(
        "POST",
        "/api/explain",
        Some(json!({"rule": "department == \"Sales\" and grade >= 8", "user_id": 1001})),
    );
    assert_eq!(status, 200);
    assert_eq!(explained["member"], false);
    assert_eq!(explained["root"]["label"], "and");
    assert_eq!(explained["root"]["children"][1]["verdict"], false);
    assert_eq!(explained["root"]["children"][1]["values"][0], "grade = 7");
    let (status, _) = served.call(
        "POST",
        "/api/explain",
        Some(json!({"rule": "grade >= 8", "user_id": 99})),
    );
    assert_eq!(status, 404);

    let (_, groups) = served.call("GET", "/api/groups", None);
    assert_eq!(groups["has_state"], true);
    assert_eq!(groups["groups"].as_array().unwrap().len(), 21);
    assert_eq!(
        groups["groups"][2],
        json!({"key": "sales_emea", "name": "Sales, EMEA", "status": "active"})
    );
    // The changes `run` would make: 1002 left Sales, 1013 joined.
    let (status, group) = served.call("GET", "/api/groups/sales_emea", None);
    assert_eq!(status, 200);
    assert_eq!(group["members"], 4);
    assert_eq!(
        group["changes"],
        json!({"added": 1, "removed": 1, "added_sample": [1013], "removed_sample": [1002]})
    );
    let (status, _) = served.call("GET", "/api/groups/no_such_group", None);
    assert_eq!(status, 404);

    let (status, of_user) = served.call("GET", "/api/users/1002/groups", None);
    assert_eq!(status, 200);
    let keys: Vec<&str> = of_user["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["key"].as_str().unwrap())
        .collect();
    assert!(keys.contains(&"sales_emea"), "committed before 1002 left: {keys:?}");
    let (status, _) = served.call("GET", "/api/users/abc/groups", None);
    assert_eq!(status, 400);

    // The page and its files come from the binary.
    let (status, page) = served.request("GET", "/", &[], b"");
    assert_eq!(status, 200);
    assert!(page.contains("<script src=\"/app.js\""));
    assert_eq!(served.request("GET", "/app.js", &[], b"").0, 200);
}

#[test]
fn bad_requests_get_a_4xx_and_a_message() {
    let served = Served::start("examples/data/users.csv", &["--max-body", "2000"]);
    let post = |path: &str, body: &[u8]| -> (u16, Value) {
        let (status, text) = served.request("POST", path, &[("Content-Type", "application/json")], body);
        (status, serde_json::from_str(&text).unwrap())
    };
    let (status, error) = post("/api/preview", b"{\"rule\": ");
    assert_eq!(status, 400);
    assert!(
        error["error"]["message"].as_str().unwrap().contains("not the JSON"),
        "{error}"
    );
    let (status, error) = post("/api/check", br#"{"rule": "grade > 1", "rules": "x"}"#);
    assert_eq!(status, 400);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `rules`"),
        "{error}"
    );
    let (status, _) = post("/api/explain", br#"{"rule": "grade > 1", "user_id": -4}"#);
    assert_eq!(status, 400);
    let huge = format!("{{\"rule\": \"{}\"}}", "x".repeat(5000));
    let (status, error) = post("/api/check", huge.as_bytes());
    assert_eq!(status, 413);
    assert_eq!(error["error"]["code"], "body_too_large");
    assert_eq!(served.call("GET", "/api/check", None).0, 405);
    assert_eq!(served.call("DELETE", "/api/groups", None).0, 405);
    assert_eq!(served.call("GET", "/api/nothing", None).0, 404);
    assert_eq!(served.request("GET", "/etc/passwd", &[], b"").0, 404);
    // No rules file: no groups, and no state: no committed groups.
    assert_eq!(served.call("GET", "/api/groups", None).1["groups"], json!([]));
    assert_eq!(served.call("GET", "/api/users/1001/groups", None).0, 409);
    // After all of that the server still answers.
    assert_eq!(served.call("GET", "/api/fields", None).0, 200);
}

#[test]
fn evaluations_are_bounded_in_number_and_time() {
    let served = Served::start("examples/data/users.csv", &["--max-evaluations", "1"]);
    // Many at once through one evaluation at a time: every one answered.
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..16)
            .map(|i| {
                let served = &served;
                scope.spawn(move || {
                    served
                        .call(
                            "POST",
                            "/api/preview",
                            Some(json!({"rule": format!("grade >= {}", i % 9)})),
                        )
                        .0
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    drop(served);
    // A time limit no evaluation meets: 503, and the server goes on.
    let served = Served::start("examples/data/users.csv", &["--timeout", "0.000001"]);
    let (status, error) = served.call("POST", "/api/preview", Some(json!({"rule": "grade >= 3"})));
    assert_eq!(status, 503, "{error}");
    assert_eq!(error["error"]["code"], "busy");
    assert_eq!(
        served.call("POST", "/api/check", Some(json!({"rule": "grade >= 3"}))).0,
        200
    );
}

#[test]
fn a_token_guards_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token-of-the-lms\n").unwrap();
    let served = Served::start(
        "examples/data/users.csv",
        &["--token-file", token_file.to_str().unwrap()],
    );
    assert!(
        served.url.ends_with("/#token=s3cret-token-of-the-lms"),
        "{}",
        served.url
    );
    let (status, _) = served.request("GET", "/api/fields", &[], b"");
    assert_eq!(status, 401);
    for wrong in [
        "Bearer s3cret-token-of-the-lm",
        "Bearer s3cret-token-of-the-lms2",
        "s3cret-token-of-the-lms",
    ] {
        let (status, _) = served.request("GET", "/api/fields", &[("Authorization", wrong)], b"");
        assert_eq!(status, 401, "{wrong}");
    }
    let (status, _) = served.request(
        "GET",
        "/api/fields",
        &[("Authorization", "Bearer s3cret-token-of-the-lms")],
        b"",
    );
    assert_eq!(status, 200);
    // The page holds no data; it sends the token from its address.
    assert_eq!(served.request("GET", "/", &[], b"").0, 200);
}

#[test]
fn listening_beyond_loopback_needs_a_token() {
    let serve = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_dyngroups"))
            .arg("serve")
            .args(example_inputs("examples/data/users.csv"))
            .args(extra)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap()
    };
    let out = serve(&["--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--token-file"), "{}", text(&out.stderr));
    let out = serve(&["--listen", "0.0.0.0:0", "--token", "short"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("at least 16 characters"),
        "{}",
        text(&out.stderr)
    );
    let out = serve(&["--listen", "nowhere"]);
    assert_eq!(out.status.code(), Some(2));
}

/// The page in real headless Chromium, driven by Playwright
/// (`tests/browser/tester.py`): a typo gets its caret message, the fixed
/// rule its count, a user an explanation; the screenshot lands in the
/// target directory. `.ci/run` installs Chromium and Playwright and sets
/// `DYNGROUPS_REQUIRE_BROWSER`; elsewhere, without them, the test is
/// recorded as skipped.
#[test]
fn the_page_tests_a_rule_in_chromium() {
    let present = Path::new("/usr/bin/chromium").exists()
        && Command::new("python3")
            .args(["-c", "import playwright.sync_api"])
            .output()
            .is_ok_and(|o| o.status.success());
    let test = "serve::the_page_tests_a_rule_in_chromium";
    if !crate::skips::tool_present(
        present,
        test,
        "DYNGROUPS_REQUIRE_BROWSER",
        "Chromium at /usr/bin/chromium and python3 with playwright",
    ) {
        return;
    }
    let served = Served::start("examples/data/users.csv", &["--rules", "examples/groups.rules"]);
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rule-tester.png");
    let out = Command::new("python3")
        .arg("tests/browser/tester.py")
        .arg(&served.url)
        .arg(&screenshot)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000);
}

/// A request of `docs/api.md` and the answer shown for it.
struct DocumentedCall {
    method: String,
    path: String,
    body: String,
    status: u16,
    answer: Value,
}

/// The `http` blocks of `docs/api.md`, a request then its answer.
fn documented_calls() -> Vec<DocumentedCall> {
    let page = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api.md")).unwrap();
    let blocks: Vec<&str> = page
        .split("```http\n")
        .skip(1)
        .map(|rest| rest.split("\n```").next().unwrap())
        .collect();
    assert!(
        blocks.len() >= 16 && blocks.len().is_multiple_of(2),
        "{} http blocks",
        blocks.len()
    );
    blocks
        .chunks(2)
        .map(|pair| {
            let (request, answer) = (pair[0], pair[1]);
            let mut words = request.lines().next().unwrap().split(' ');
            let (method, path) = (words.next().unwrap(), words.next().unwrap());
            let body = request.split_once("\n\n").map_or("", |(_, body)| body);
            let status = answer.split(' ').nth(1).unwrap().parse().unwrap();
            // `…` marks items left out of a list.
            let json = answer.split_once("\n\n").unwrap().1.replace('…', "\"…\"");
            let json = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{path}: {e}\n{json}"));
            DocumentedCall {
                method: method.to_string(),
                path: path.to_string(),
                body: body.to_string(),
                status,
                answer: json,
            }
        })
        .collect()
}

/// Whether `actual` holds what `shown` shows: every field shown, with its
/// value; a list ending in `…` starts with the items before it, any other
/// list is whole; `elapsed_ms` is any number.
fn shows(actual: &Value, shown: &Value, at: &str) {
    match (actual, shown) {
        (Value::Object(actual), Value::Object(shown)) => {
            for (key, value) in shown {
                let found = actual.get(key).unwrap_or_else(|| panic!("{at}.{key} is missing"));
                if key == "elapsed_ms" {
                    assert!(found.is_number(), "{at}.{key}");
                } else {
                    shows(found, value, &format!("{at}.{key}"));
                }
            }
        }
        (Value::Array(actual), Value::Array(shown)) => {
            let (items, partial) = match shown.split_last() {
                Some((last, items)) if last == "…" => (items, true),
                _ => (shown.as_slice(), false),
            };
            assert!(
                actual.len() >= items.len() && (partial || actual.len() == items.len()),
                "{at}: {} items, {} shown",
                actual.len(),
                items.len()
            );
            for (i, (a, s)) in actual.iter().zip(items).enumerate() {
                shows(a, s, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(actual, shown, "{at}"),
    }
}

/// Every request of `docs/api.md`, sent to the server it describes, gets
/// the answer shown there.
#[test]
fn the_api_reference_examples_are_what_the_server_answers() {
    let (_state, served) = the_next_day();
    for call in documented_calls() {
        let (method, path) = (&call.method, &call.path);
        let (status, text) = served.request(
            method,
            path,
            &[("Content-Type", "application/json")],
            call.body.as_bytes(),
        );
        assert_eq!(status, call.status, "{method} {path}: {text}");
        let actual: Value = serde_json::from_str(&text).unwrap();
        shows(&actual, &call.answer, &format!("{method} {path}"));
    }
}
