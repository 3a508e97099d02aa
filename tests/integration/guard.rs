//! The guards of a daily run: a static group missing from the memberships
//! input, and removals beyond a day's churn, stop the run before anything is
//! written or committed; a realistic day of churn over thousands of groups
//! passes with the default thresholds.

use crate::workspace::{Workspace, text};

/// Committed runs in the workspace's state.
fn committed_runs(w: &Workspace) -> usize {
    let out = w.dyngroups(&["history"]);
    if !out.status.success() {
        return 0;
    }
    text(&out.stdout).lines().count().saturating_sub(1)
}

/// The part of stderr from the first `error:` on.
fn error_of(stderr: &[u8]) -> String {
    let stderr = text(stderr);
    stderr[stderr.find("error:").expect("an error")..].to_string()
}

const USERS: &str = "user_id,department\n1,Sales\n2,Sales\n3,Eng\n4,Eng\n";
const RULES: &str = "group sales { department == \"sales\" }\n";

#[test]
fn a_static_group_missing_from_the_memberships_input_stops_the_run() {
    let memberships = "group,user_id\ncouncil,1\ncouncil,3\nboard,2\n";
    let w = Workspace::new(&[("users.csv", USERS), ("groups.rules", RULES), ("m.csv", memberships)]);
    let out = w.run(&["--memberships", "m.csv"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // Forgotten `--memberships`: both groups would be deleted.
    let out = w.run(&["--diff-out", "diff.csv"]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(
        error_of(&out.stderr),
        "error: 2 static groups of the last run this run has no `--memberships` input for them; \
         nothing was evaluated, written or committed\n\
         \x20 board: 1 members\n\
         \x20 council: 2 members\n\
         \x20 = help: pass the memberships export with `--memberships FILE`; to delete a group on purpose, \
         run again with `--delete-static KEY` (repeatable) or `--delete-static` (every such group)\n"
    );
    assert!(!w.path("diff.csv").exists());

    // A header-only export, and one that left a group out.
    w.write("empty.csv", "group,user_id\n");
    let out = w.run(&["--memberships", "empty.csv", "--dry-run"]);
    assert_eq!(out.status.code(), Some(5));
    w.write("m.csv", "group,user_id\ncouncil,1\ncouncil,3\n");
    let out = w.run(&["--memberships", "m.csv"]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(
        error_of(&out.stderr).lines().take(2).collect::<Vec<_>>(),
        [
            "error: 1 static group of the last run the memberships input m.csv does not name it; \
             nothing was evaluated, written or committed",
            "  board: 1 members"
        ]
    );
    assert_eq!(committed_runs(&w), 1);

    // Deleting another group does not help; deleting this one does, and the
    // table says where it went.
    let out = w.run(&["--memberships", "m.csv", "--delete-static", "council"]);
    assert_eq!(out.status.code(), Some(5));
    let out = w.run(&["--memberships", "m.csv", "--delete-static", "board"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let board = text(&out.stdout)
        .lines()
        .find(|l| l.starts_with("board "))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "));
    assert_eq!(
        board.as_deref(),
        Some("board (gone from the memberships input) 0 +0 -1")
    );
    assert_eq!(committed_runs(&w), 2);
    // A group gone without members is no loss: the next run passes.
    let out = w.run(&["--memberships", "m.csv"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// A small deterministic generator, so that the population is the same on
/// every run.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[derive(Clone)]
struct Staff {
    id: u32,
    department: u64,
    country: u64,
    grade: u64,
    /// Days before 2026-11-22.
    hired_days_ago: i64,
}

fn users_csv(staff: &[Staff], department: impl Fn(&Staff) -> String) -> String {
    let as_of = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
    let mut out = String::from("user_id,department,country,grade,start_date\n");
    for s in staff {
        let start = as_of - chrono::Duration::days(s.hired_days_ago);
        out += &format!("{},{},c{},{},{start}\n", s.id, department(s), s.country, s.grade);
    }
    out
}

fn memberships_csv(staff: &[Staff]) -> String {
    let mut out = String::from("group,user_id\n");
    for s in staff.iter().filter(|s| s.id % 40 == 0) {
        out += &format!("council,{}\n", s.id);
    }
    out
}

/// About 2,300 groups of the kinds admins write, from whole departments
/// (about 200 of 4,000 users) and their complements down to a few users
/// each, with time-relative rules.
fn rules(rng: &mut Lcg) -> String {
    let mut rules = String::new();
    let mut group = |rule: String| rules += &format!("group g{} {{ {rule} }}\n", rules.lines().count());
    for d in 0..20 {
        group(format!("department == \"d{d}\""));
        group(format!("not (department == \"d{d}\")"));
        for c in 0..30 {
            group(format!("department == \"d{d}\" and country == \"c{c}\""));
        }
        for g in 1..=10 {
            group(format!("department == \"d{d}\" and grade >= {g}"));
        }
        for days in [30, 90, 180, 365, 730] {
            group(format!("department == \"d{d}\" and start_date >= today - {days}d"));
        }
    }
    for c in 0..30 {
        for g in 1..=10 {
            group(format!("country == \"c{c}\" and grade == {g}"));
        }
    }
    for days in (10..=400).step_by(10) {
        group(format!("start_date >= today - {days}d"));
    }
    for _ in 0..1000 {
        let (a, b, c, g) = (rng.below(20), rng.below(20), rng.below(30), 1 + rng.below(10));
        group(format!(
            "department in [\"d{a}\", \"d{b}\"] and country == \"c{c}\" and grade >= {g}"
        ));
    }
    group("member_of(council) and grade > 5".into());
    rules
}

#[test]
fn a_day_of_churn_over_thousands_of_groups_passes_and_broken_exports_stop() {
    let mut rng = Lcg(7);
    let staff: Vec<Staff> = (1..=4000)
        .map(|id| Staff {
            id,
            department: rng.below(20),
            country: rng.below(30),
            grade: 1 + rng.below(10),
            hired_days_ago: rng.below(3 * 365) as i64,
        })
        .collect();
    let department = |s: &Staff| format!("d{}", s.department);
    let rules = rules(&mut rng);
    assert!(rules.lines().count() > 2000);
    let w = Workspace::new(&[
        ("users.csv", &users_csv(&staff, department)),
        ("groups.rules", &rules),
        ("m.csv", &memberships_csv(&staff)),
    ]);
    let out = w.run(&["--memberships", "m.csv"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // The next day: 5% of users left, 2% moved department, 2% joined; the
    // memberships export follows, and time-relative rules move by a day.
    let mut next: Vec<Staff> = staff.iter().filter(|_| rng.below(100) >= 5).cloned().collect();
    for s in next.iter_mut() {
        s.hired_days_ago += 1;
        if rng.below(100) < 2 {
            s.department = rng.below(20);
        }
    }
    next.extend((4001..4081).map(|id| Staff {
        id,
        department: rng.below(20),
        country: rng.below(30),
        grade: 1 + rng.below(10),
        hired_days_ago: 0,
    }));
    w.write("next.csv", &users_csv(&next, department));
    w.write("m_next.csv", &memberships_csv(&next));
    // A dry run of the next day over `users`, with `memberships` if any.
    let next_day = |users: &str, memberships: Option<&str>| {
        let mut args = vec![
            "run",
            "--rules",
            "groups.rules",
            "--users",
            users,
            "--as-of",
            "2026-11-23",
            "--dry-run",
        ];
        if let Some(memberships) = memberships {
            args.extend(["--memberships", memberships]);
        }
        w.dyngroups(&args)
    };
    let out = next_day("next.csv", Some("m_next.csv"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let changes = text(&out.stdout);
    let removed: u64 = changes
        .lines()
        .find_map(|l| l.strip_prefix("changes since the last committed run: +"))
        .and_then(|l| l.split(" -").nth(1))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a changes line");
    assert!(
        removed > 5_000,
        "a real day of churn removes many memberships: {removed}"
    );

    // An emptied column the rules use: whole departments would empty.
    w.write("broken.csv", &users_csv(&next, |_| String::new()));
    let out = next_day("broken.csv", Some("m_next.csv"));
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stdout));
    let error = error_of(&out.stderr);
    assert!(error.contains("groups would lose more than 10%"), "{error}");
    assert!(error.contains("    g0: 227 -> 0 members (-227)\n"), "{error}");
    assert!(error.contains("and 131 more"), "long lists are cut: {error}");

    // A truncated file: the run would remove about half of all memberships.
    let truncated: String = w
        .read("next.csv")
        .lines()
        .take(2000)
        .map(|l| l.to_string() + "\n")
        .collect();
    w.write("truncated.csv", &truncated);
    w.write("m_truncated.csv", &memberships_csv(&next[..1999]));
    let out = next_day("truncated.csv", Some("m_truncated.csv"));
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stdout));
    assert!(
        error_of(&out.stderr).contains("the run would remove"),
        "{}",
        error_of(&out.stderr)
    );

    // A missing memberships file.
    let out = next_day("next.csv", None);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stdout));
    assert!(error_of(&out.stderr).contains("council: "));
    assert_eq!(committed_runs(&w), 1, "nothing broken was committed");
}
