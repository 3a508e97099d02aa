//! The admin workflows of the command line: importing static groups from
//! spreadsheets, the mass-removal guard, exports, a user's groups, SCIM.

use crate::workspace::{Workspace, text};
use std::path::Path;

fn exists(path: &Path) -> bool {
    path.exists()
}

/// Whether a run has been committed to the workspace's state.
fn has_state(w: &Workspace) -> bool {
    let out = w.dyngroups(&["history"]);
    out.status.success() && text(&out.stdout).lines().count() > 1
}

const USERS: &str = "user_id,email,institutional_id,department\n\
1,ana@acme.com,S-100,Sales\n2,ben@acme.com,S-101,Eng\n3,cho@acme.com,S-102,Sales\n4,dev@acme.com,S-103,Eng\n";

const RULES: &str =
    "group sales { department == \"sales\" }\ngroup council_sales { member_of(council) and member_of(sales) }\n";

#[test]
fn a_spreadsheet_import_with_unknown_identifiers_commits_nothing() {
    // `;`-separated, with a byte-order mark and CRLF, as spreadsheets export.
    let memberships = "\u{feff}group;institutional_id;note\r\ncouncil;s-100;chair\r\ncouncil;S-999;\r\n;;\r\n\
                       council;S-102;\r\ncouncil;S-102;again\r\nsales;S-101;\r\ncouncil;X-1\r\nboard;S-888;\r\n";
    let w = Workspace::new(&[("users.csv", USERS), ("groups.rules", RULES), ("m.csv", memberships)]);
    let import = [
        "--memberships",
        "m.csv",
        "--match-by",
        "institutional_id",
        "--import-report",
        "report.txt",
        "--diff-out",
        "diff.csv",
    ];
    let out = w.run(&import);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "error: m.csv: 6 of 8 rows are bad, more than `--max-bad-rows` allows; nothing was committed\n"
    );
    let report = w.read("report.txt");
    assert_eq!(
        report,
        "import of m.csv (users matched by `institutional_id`): 8 rows read, 2 matched, 6 bad\n\
         \x20 blank: 1\n\
         \x20 malformed: 1\n\
         \x20 unknown identifier: 2\n\
         \x20 duplicate: 1\n\
         \x20 rule group: 1\n\
         \x20 line 3: unknown identifier: no user has institutional_id `S-999`\n\
         \x20 line 4: blank: no cells\n\
         \x20 line 6: duplicate: `S-102` is already in `council` (line 5)\n\
         \x20 line 7: rule group: `sales` has a rule; its members come from the rule\n\
         \x20 line 8: malformed: 2 cells, but the header has 3\n\
         \x20 line 9: unknown identifier: no user has institutional_id `S-888`\n\
         \x20 group `council`: 2 members\n"
    );
    assert_eq!(text(&out.stdout), report, "the report is printed too");
    assert!(!exists(&w.path("diff.csv")));
    assert!(!has_state(&w), "nothing committed");

    // Accepting up to 6 bad rows (or 75%) lets the run go on.
    for limit in ["6", "75%"] {
        let mut args = import.to_vec();
        args.extend_from_slice(&["--max-bad-rows", limit, "--dry-run"]);
        let out = w.run(&args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let mut args = import.to_vec();
    args.extend_from_slice(&["--max-bad-rows", "6", "--members-out", "members.csv"]);
    assert_eq!(w.run(&args).status.code(), Some(0));
    assert_eq!(
        w.read("members.csv"),
        "group,user_id\ncouncil_sales,1\ncouncil_sales,3\nsales,1\nsales,3\n"
    );
}

#[test]
fn the_import_report_as_json() {
    let w = Workspace::new(&[
        ("users.csv", USERS),
        ("groups.rules", RULES),
        ("m.csv", "group,email\ncouncil,ANA@acme.com\ncouncil,zed@acme.com\n"),
    ]);
    let out = w.run(&[
        "--memberships",
        "m.csv",
        "--match-by",
        "email",
        "--import-report",
        "r.json",
        "--max-bad-rows",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&w.read("r.json")).unwrap();
    assert_eq!(report["rows_read"], 2);
    assert_eq!(report["rows_matched"], 1);
    assert_eq!(report["groups"]["council"], 1);
    assert_eq!(report["problems"][0]["line"], 3);
    assert_eq!(report["problems"][0]["kind"], "unknown_identifier");
}

#[test]
fn matching_by_a_column_that_is_not_unique_is_an_error() {
    let users = "user_id,email,department\n1,a@acme.com,Sales\n2,A@ACME.com,Eng\n";
    let w = Workspace::new(&[
        ("users.csv", users),
        ("groups.rules", RULES),
        ("m.csv", "group,email\ncouncil,a@acme.com\n"),
    ]);
    let out = w.run(&["--memberships", "m.csv", "--match-by", "email"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        text(&out.stderr),
        "error: users.csv: column `email`, row 3: `A@ACME.com` is also on row 2: memberships can be matched \
         only by a column whose values are unique\n"
    );
    let out = w.run(&["--memberships", "m.csv", "--match-by", "username"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("m.csv: column `username`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_template_for_memberships() {
    let w = Workspace::new(&[]);
    let out = w.dyngroups(&["template", "memberships"]);
    assert_eq!(text(&out.stdout), "group,user_id\n");
    let out = w.dyngroups(&["template", "memberships", "--match-by", "email", "--out", "t.csv"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(w.read("t.csv"), "group,email\n");
}

fn staff(count: u32, department: &str) -> String {
    let mut users = String::from("user_id,email,institutional_id,department\n");
    for id in 1..=count {
        users += &format!("{id},u{id}@acme.com,S-{id},{department}\n");
    }
    users
}

#[test]
fn the_mass_removal_guard_stops_a_broken_export_until_allowed() {
    let w = Workspace::new(&[("users.csv", &staff(300, "Sales")), ("groups.rules", RULES)]);
    assert_eq!(w.run(&[]).status.code(), Some(0));
    // The next export lost its department column's values.
    w.write("users.csv", &staff(300, ""));
    let out = w.run(&["--diff-out", "diff.csv"]);
    assert_eq!(out.status.code(), Some(5));
    let stderr = text(&out.stderr);
    assert_eq!(
        &stderr[stderr.find("error:").unwrap()..],
        "error: the mass-removal guard stopped the run; nothing was written or committed\n\
         \x20 1 group would lose more than 10% of their members (and at least 100):\n\
         \x20   sales: 300 -> 0 members (-300)\n\
         \x20 the run would remove 300 of the 300 memberships committed last, more than 20% (and at least 100)\n\
         \x20 = help: check the input data; if the removals are right, run again with `--allow-mass-removal` \
         (every group) or `--allow-mass-removal KEY`\n"
    );
    assert!(!w.path("diff.csv").exists());
    let history = text(&w.dyngroups(&["history"]).stdout);
    assert_eq!(history.lines().count(), 2, "still one committed run:\n{history}");

    // Allowing another group does not help; allowing this one does.
    let out = w.run(&["--allow-mass-removal", "council_sales"]);
    assert_eq!(out.status.code(), Some(5));
    let out = w.run(&["--allow-mass-removal", "sales", "--diff-out", "diff.csv"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(w.read("diff.csv").lines().count(), 1 + 300);

    // 120 of 300 leaving is 40%: tripped unless the share allows it.
    w.write("users.csv", &staff(300, "Sales"));
    assert_eq!(w.run(&["--allow-mass-removal"]).status.code(), Some(0));
    let mut users = staff(180, "Sales");
    users += &staff(300, "Eng")
        .lines()
        .skip(181)
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    w.write("users.csv", &users);
    assert_eq!(w.run(&["--dry-run"]).status.code(), Some(5));
    assert_eq!(
        w.run(&[
            "--dry-run",
            "--mass-removal-share",
            "50",
            "--mass-removal-run-share",
            "50"
        ])
        .status
        .code(),
        Some(0)
    );
    assert_eq!(
        w.run(&["--dry-run", "--mass-removal-min", "121"]).status.code(),
        Some(0)
    );
}

#[test]
fn groups_members_with_columns_unassigned_and_a_users_groups() {
    let users = "user_id,email,institutional_id,department,note,phone,balance\n\
                 1,ana@acme.com,S-100,Sales,\"=HYPERLINK(\"\"http://x\"\")\",+351 21 000,-5\n\
                 2,ben@acme.com,S-101,Eng,@sum,,3\n\
                 3,cho@acme.com,S-102,Sales,fine,,\n\
                 4,dev@acme.com,S-103,Eng,,,\n";
    let rules = "group sales \"Sales team\" { department == \"sales\" include [4] }\n\
                 group everyone paused { true }\n";
    let w = Workspace::new(&[
        ("users.csv", users),
        ("groups.rules", rules),
        ("m.csv", "group,email\ncouncil,ben@acme.com\n"),
    ]);
    let import = ["--memberships", "m.csv", "--match-by", "email"];
    assert_eq!(w.run(&import).status.code(), Some(0));
    w.write(
        "users.csv",
        &users.replace("3,cho@acme.com,S-102,Sales", "3,cho@acme.com,S-102,Eng"),
    );
    assert_eq!(w.run(&import).status.code(), Some(0));

    let groups = w.dyngroups(&["groups", "--out", "groups.csv"]);
    assert_eq!(groups.status.code(), Some(0), "{}", text(&groups.stderr));
    let listed = w.read("groups.csv");
    let rows: Vec<Vec<&str>> = listed.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(
        rows[0],
        [
            "group",
            "name",
            "kind",
            "status",
            "members",
            "last_change_run",
            "last_change_at"
        ]
    );
    let row = |key: &str| rows.iter().find(|r| r[0] == key).unwrap()[..6].to_vec();
    assert_eq!(row("council"), ["council", "council", "static", "active", "1", "1"]);
    assert_eq!(row("everyone"), ["everyone", "everyone", "rule", "paused", "0", ""]);
    assert_eq!(row("sales"), ["sales", "Sales team", "rule", "active", "2", "2"]);

    // Members with user columns, safe to open in a spreadsheet.
    let sales_of_run_1 = |extra: &[&str]| {
        let mut args = vec!["members", "--group", "sales", "--run", "1", "--users", "users.csv"];
        args.extend_from_slice(extra);
        w.dyngroups(&args)
    };
    let out = sales_of_run_1(&["--with", "note,phone,balance"]);
    assert_eq!(
        text(&out.stdout),
        "user_id,note,phone,balance\n1,\"'=HYPERLINK(\"\"http://x\"\")\",'+351 21 000,-5\n3,fine,,\n4,,,\n"
    );
    let out = sales_of_run_1(&["--with", "note", "--raw"]);
    assert!(text(&out.stdout).contains("1,\"=HYPERLINK("), "{}", text(&out.stdout));
    let out = w.dyngroups(&["members", "--group", "sales", "--users", "users.csv", "--with", "nope"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("column `nope`: is not a column of the users file"));

    let out = w.dyngroups(&[
        "unassigned",
        "--group",
        "sales",
        "--users",
        "users.csv",
        "--with",
        "email,note",
    ]);
    assert_eq!(
        text(&out.stdout),
        "user_id,email,note\n2,ben@acme.com,'@sum\n3,cho@acme.com,fine\n"
    );

    let out = w.dyngroups(&["groups-of", "--user", "4", "--rules", "groups.rules"]);
    assert_eq!(
        text(&out.stdout),
        "user 4 is in 1 groups after run 2\nsales  Sales team  include\n"
    );
    let out = w.dyngroups(&["groups-of", "--user", "2", "--run", "1"]);
    assert_eq!(
        text(&out.stdout),
        "user 2 is in 1 groups after run 1\ncouncil  council  static\n"
    );
}

#[test]
fn scim_batches_apply_exactly_the_diff() {
    let w = Workspace::new(&[("users.csv", &staff(250, "Sales")), ("groups.rules", RULES)]);
    assert_eq!(w.run(&[]).status.code(), Some(0));
    // 1..=50 leave Sales, 251..=300 join.
    let mut users = staff(300, "Sales");
    users = users
        .lines()
        .map(|l| match l.split(',').next().and_then(|id| id.parse::<u32>().ok()) {
            Some(id) if id <= 50 => format!("{}\n", l.replace(",Sales", ",Eng")),
            _ => format!("{l}\n"),
        })
        .collect();
    w.write("users.csv", &users);
    let out = w.run(&["--diff-out", "diff.csv", "--scim-out", "scim", "--scim-batch", "30"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("4 SCIM requests written to scim"),
        "{}",
        text(&out.stdout)
    );

    let manifest: serde_json::Value = serde_json::from_str(&w.read("scim/manifest.json")).unwrap();
    let requests = manifest["requests"].as_array().unwrap();
    let mut applied = Vec::new();
    for request in requests {
        assert_eq!(request["method"], "PATCH");
        let group = request["group"].as_str().unwrap();
        assert_eq!(request["path"], format!("/Groups/{group}"));
        let body: serde_json::Value =
            serde_json::from_str(&w.read(&format!("scim/{}", request["file"].as_str().unwrap()))).unwrap();
        assert_eq!(body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:PatchOp");
        let mut changes = 0;
        for op in body["Operations"].as_array().unwrap() {
            assert_eq!(op["path"], "members");
            let change = match op["op"].as_str().unwrap() {
                "add" => "add",
                "remove" => "remove",
                other => panic!("unexpected op {other}"),
            };
            for member in op["value"].as_array().unwrap() {
                applied.push(format!("{group},{},{change}", member["value"].as_str().unwrap()));
                changes += 1;
            }
        }
        assert!(changes <= 30);
        assert_eq!(
            changes,
            request["adds"].as_u64().unwrap() + request["removes"].as_u64().unwrap()
        );
    }
    applied.sort();
    let mut diff: Vec<String> = w.read("diff.csv").lines().skip(1).map(String::from).collect();
    diff.sort();
    assert_eq!(applied, diff, "the batches' union is the diff");
    assert_eq!(diff.len(), 100);

    // The first request, as a SCIM server receives it.
    let first = &requests[0]["file"];
    assert_eq!(first, "00001-sales.json");
    let body = w.read("scim/00001-sales.json");
    let expected_removes: Vec<String> = (1..=30)
        .map(|id| format!("        {{\n          \"value\": \"{id}\"\n        }}"))
        .collect();
    assert_eq!(
        body,
        format!(
            "{{\n  \"Operations\": [\n    {{\n      \"op\": \"remove\",\n      \"path\": \"members\",\n      \"value\": [\n{}\n      ]\n    }}\n  ],\n  \"schemas\": [\n    \"urn:ietf:params:scim:api:messages:2.0:PatchOp\"\n  ]\n}}\n",
            expected_removes.join(",\n")
        )
    );

    // A rerun writes an empty set: nothing to send.
    let out = w.run(&["--scim-out", "scim"]);
    assert_eq!(out.status.code(), Some(0));
    let manifest: serde_json::Value = serde_json::from_str(&w.read("scim/manifest.json")).unwrap();
    assert_eq!(manifest["requests"], serde_json::json!([]));
    assert_eq!(std::fs::read_dir(w.path("scim")).unwrap().count(), 1);
}
