//! `dyngroups repl` driven through its standard input, as a script would.

use crate::workspace::{Workspace, text};
use std::io::Write;
use std::process::{Command, Stdio};

fn session(w: &Workspace, script: &str) -> (String, String) {
    let root = env!("CARGO_MANIFEST_DIR");
    let data = |name: &str| format!("{root}/examples/data/{name}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dyngroups"))
        .args([
            "repl",
            "--users",
            &data("users.csv"),
            "--enrollments",
            &data("enrollments.csv"),
        ])
        .args(["--org", &data("org.csv"), "--memberships", &data("memberships.csv")])
        .args(["--rules", "groups.rules", "--as-of", "2026-11-22"])
        .current_dir(w.path(""))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    (text(&out.stdout), text(&out.stderr))
}

#[test]
fn a_scripted_session() {
    let rules = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/groups.rules")).unwrap();
    let w = Workspace::new(&[("groups.rules", &rules)]);
    let script = "department == \"sales\" and in_branch(\"EMEA\")\n\
                  departmnt == \"sales\"\n\
                  :fields\n\
                  :explain 1007\n\
                  country in [\"PT\",\n\
                  \"es\"]\n\
                  :save iberia \"Iberia\"\n\
                  :save iberia \"Again\"\n\
                  :group iberia\n\
                  :quit\n\
                  grade > 1\n";
    let (stdout, stderr) = session(&w, script);
    let blocks: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        blocks[0].split(" in ").next().unwrap(),
        "loaded 12 users and 19 enrollments"
    );
    // The good rule: count, share and a sample with identifying columns.
    assert!(blocks[1].starts_with("4 of 12 users (33.3%) in "), "{stdout}");
    assert_eq!(blocks[2], "user_id  email                  first_name  last_name");
    assert_eq!(blocks[3], "1001     ana.silva@acme.com     Ana         Silva");
    // The typo: a caret under the typed text and the fix.
    assert!(
        stdout.contains(
            "error: unknown field `departmnt` in the users\n --> <input>:1:1\n  |\n1 | departmnt == \"sales\"\n  | ^^^^^^^^^\n  = help: did you mean `department`?\n"
        ),
        "{stdout}"
    );
    // :fields lists both tables with types and samples.
    assert!(
        stdout.contains("users        department    text       Sales, sales, Engineering\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("enrollments  course        text       DSF-101, SEC-200, LEAD-300\n"),
        "{stdout}"
    );
    // :explain traces the last rule.
    assert!(
        stdout.contains(
            "the rule: user 1007 is not a member\n  false  and\n    true   department == \"sales\"    (department = \"SALES\")\n    false  in_branch(\"emea\")    (branch = \"AMER-US\")\n"
        ),
        "{stdout}"
    );
    // A rule over two lines, saved once; the second save is refused.
    assert!(stdout.contains("2 of 12 users (16.7%)"), "{stdout}");
    assert!(stdout.contains("saved group `iberia` to groups.rules\n"), "{stdout}");
    assert!(stdout.contains("error: group `iberia` is defined twice"), "{stdout}");
    assert!(stdout.contains("iberia: 2 members ("), "{stdout}");
    // :quit ends the session: the rule after it is never read.
    assert!(!stdout.contains("of 12 users (91"), "{stdout}");
    assert!(stderr.is_empty(), "{stderr}");
    let saved = w.read("groups.rules");
    assert!(
        saved.ends_with("\ngroup iberia \"Iberia\" {\n    country in [\"PT\",\n    \"es\"]\n}\n"),
        "{saved}"
    );
    let check = w.dyngroups(&["check", "groups.rules"]);
    assert_eq!(text(&check.stdout), "22 groups OK\n");
}
