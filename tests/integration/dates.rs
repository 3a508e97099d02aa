//! Dates and text encodings as admins export them, through the command
//! line: day- or month-first dates load as dates when the cells tell which
//! (or `--date-format` says), timestamps load as their dates, and anything
//! else is an error naming the file, column, row and the option to use,
//! never text that quietly compares wrong.

use crate::workspace::{Workspace, text};

/// `dyngroups run --no-state` of `rule` over `users.csv` as of 2026-11-22,
/// with `extra` options: the exit code, and the members or the error.
fn run(w: &Workspace, rule: &str, extra: &[&str]) -> (Option<i32>, String) {
    w.write("groups.rules", &format!("group g {{ {rule} }}\n"));
    w.write("members.csv", "");
    let mut args = vec!["--no-state", "--members-out", "members.csv"];
    args.extend_from_slice(extra);
    let out = w.run(&args);
    let said = if out.status.success() {
        w.read("members.csv")
            .lines()
            .skip(1)
            .map(|l| l.replace("g,", ""))
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        let stderr = text(&out.stderr);
        stderr[stderr.find("error").unwrap_or(0)..].trim_end().to_string()
    };
    (out.status.code(), said)
}

#[test]
fn dates_written_day_first_load_as_dates_when_the_cells_tell() {
    let w = Workspace::new(&[(
        "users.csv",
        "user_id,start_date\n1,30/11/2025\n2,03/12/2026\n3,\n4,01/01/2026\n",
    )]);
    assert_eq!(run(&w, "start_date >= 2026-01-01", &[]), (Some(0), "2 4".to_string()));
    assert_eq!(run(&w, "start_date < 2025-12-01", &[]), (Some(0), "1".to_string()));
    // Month first, told by 11/30/2025.
    w.write("users.csv", "user_id,start_date\n1,11/30/2025\n2,12/03/2026\n");
    assert_eq!(run(&w, "start_date >= 2026-01-01", &[]), (Some(0), "2".to_string()));
}

#[test]
fn dates_that_could_be_day_or_month_first_need_the_date_format() {
    let w = Workspace::new(&[("users.csv", "user_id,start_date\n1,03/12/2026\n2,04/01/2026\n")]);
    let (code, error) = run(&w, "start_date >= 2026-02-01", &[]);
    assert_eq!(code, Some(3));
    assert_eq!(
        error,
        "error: users.csv: column `start_date`, row 2: holds dates like `03/12/2026` that may be written day or \
         month first: say which with `--date-format users.start_date=%d/%m/%Y` (day first) or \
         `--date-format users.start_date=%m/%d/%Y` (month first)"
    );
    let day_first = ["--date-format", "users.start_date=%d/%m/%Y"];
    assert_eq!(
        run(&w, "start_date >= 2026-02-01", &day_first),
        (Some(0), "1".to_string())
    );
    let month_first = ["--date-format", "users.start_date=%m/%d/%Y"];
    assert_eq!(
        run(&w, "start_date >= 2026-02-01", &month_first),
        (Some(0), "1 2".to_string())
    );
    // A cell the format does not read is named.
    w.write("users.csv", "user_id,start_date\n1,03/12/2026\n2,2026-01-04\n");
    let (code, error) = run(&w, "start_date >= 2026-02-01", &day_first);
    assert_eq!(code, Some(3));
    assert!(
        error.ends_with("row 3: `2026-01-04` is not a date written as `--date-format users.start_date=%d/%m/%Y` says"),
        "{error}"
    );
    // A format that is not one.
    let out = w.run(&["--no-state", "--date-format", "users.start_date"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("write INPUT.COLUMN=FORMAT, e.g. `users.start_date=%d/%m/%Y`"));
}

#[test]
fn timestamps_load_as_their_dates() {
    let users = "user_id,start_date\n1,2026-11-21 23:30:00\n2,2026-11-21T23:30:00-02:00\n3,2026-11-20T08:00:00Z\n";
    let w = Workspace::new(&[("users.csv", users)]);
    // 2 is 2026-11-22 01:30 UTC.
    assert_eq!(run(&w, "start_date >= 2026-11-22", &[]), (Some(0), "2".to_string()));
    assert_eq!(run(&w, "start_date == 2026-11-21", &[]), (Some(0), "1".to_string()));
}

#[test]
fn one_date_written_another_way_is_an_error_not_text() {
    let users = "user_id,start_date\n1,2025-11-02\n2,2026-01-15\n3,11/30/2025\n4,2026-03-01\n";
    let w = Workspace::new(&[("users.csv", users)]);
    let (code, error) = run(&w, "start_date >= 2026-01-01", &[]);
    assert_eq!(code, Some(3));
    assert_eq!(
        error,
        "error: users.csv: column `start_date`, row 4: `11/30/2025` is not a date written like the column's other \
         dates (YYYY-MM-DD): fix the export, or say how the column's dates are written with \
         `--date-format users.start_date=FORMAT`"
    );
    // Version numbers and other text stay text.
    w.write("users.csv", "user_id,version\n1,1.2.3\n2,10.4.1\n");
    assert_eq!(run(&w, "version == \"1.2.3\"", &[]), (Some(0), "1".to_string()));
}

#[test]
fn a_date_compared_with_a_text_column_is_not_told_to_be_quoted() {
    let w = Workspace::new(&[("users.csv", "user_id,start_date\n1,soon\n")]);
    let (code, error) = run(&w, "start_date >= 2026-01-01", &[]);
    assert_eq!(code, Some(1));
    assert!(!error.contains("quotes"), "{error}");
    assert!(error.contains("`--date-format users.start_date=%d/%m/%Y`"), "{error}");
}

#[test]
fn a_windows_1252_file_gets_the_fix_or_loads_with_its_encoding() {
    let w = Workspace::new(&[]);
    let mut users = b"user_id,last_name\n1,Garc".to_vec();
    users.extend([0xED, b'a', b'\n']); // "García" in Windows-1252
    users.extend(b"2,Silva\n");
    std::fs::write(w.path("users.csv"), users).unwrap();
    let (code, error) = run(&w, "last_name == \"garcía\"", &[]);
    assert_eq!(code, Some(3));
    assert_eq!(
        error,
        "error: users.csv: column `last_name`, row 2: is not UTF-8 text: the file was likely saved as Windows-1252 \
         or Latin-1. Save it as UTF-8 (a spreadsheet's \"CSV UTF-8\"), or read it as it is with \
         `--encoding windows-1252`"
    );
    let encoding = ["--encoding", "windows-1252"];
    assert_eq!(
        run(&w, "last_name == \"garcía\"", &encoding),
        (Some(0), "1".to_string())
    );
    let out = w.run(&["--no-state", "--encoding", "klingon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("`klingon` is not a text encoding"));
}
