//! The language reference for admins, `docs/language.md`: every example
//! checks and runs against the bundled example data, and the reference
//! covers every form of the language's contract (when the contract is
//! beside the repository, as for its developers and in CI; recorded as
//! skipped elsewhere).

use dyngroups::dataset::{InputPaths, OpenInputs};
use std::path::Path;

fn reference() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/language.md")).unwrap()
}

/// The code blocks of a Markdown text tagged `tag`.
fn blocks<'t>(text: &'t str, tag: &str) -> Vec<&'t str> {
    text.split("```")
        .skip(1)
        .step_by(2)
        .filter_map(|block| block.strip_prefix(tag)?.strip_prefix('\n'))
        .collect()
}

fn example_inputs() -> OpenInputs {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data");
    OpenInputs::open(&InputPaths {
        users: data.join("users.csv"),
        enrollments: Some(data.join("enrollments.csv")),
        org: Some(data.join("org.csv")),
        memberships: Some(data.join("memberships.csv")),
        ..InputPaths::default()
    })
    .unwrap()
}

#[test]
fn every_example_of_the_reference_checks_and_runs_on_the_example_data() {
    let text = reference();
    let examples = blocks(&text, "rules");
    assert!(examples.len() >= 8, "{} examples", examples.len());
    let as_of = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
    for example in examples {
        let file = dyngroups::parse_rules(example).unwrap_or_else(|e| panic!("{example}\n{}", e.0.message));
        let inputs = example_inputs();
        let checked =
            dyngroups::check(&file, &inputs.schema(), as_of).unwrap_or_else(|e| panic!("{example}\n{:?}", e.errors));
        assert!(checked.warnings.is_empty(), "{example}\n{:?}", checked.warnings);
        let data = inputs.load(&checked.rules).unwrap();
        let evaluation = dyngroups::eval::evaluate(&checked.rules, &data, None);
        assert_eq!(evaluation.groups.len(), checked.rules.groups.len());
    }
}

/// The words of the contract's forms: keywords and operators, not the
/// placeholders (`FIELD`, `COND`) nor the example values.
fn contract_words(spec: &str) -> Vec<String> {
    let section = |from: &str, to: &str| {
        let start = spec
            .find(from)
            .unwrap_or_else(|| panic!("the contract has no `{from}`"));
        let end = start + spec[start..].find(to).unwrap_or(spec.len() - start);
        spec[start..end].to_string()
    };
    let atoms = section("### Atoms", "### Fields");
    let statuses = section("### Group status", "`member_of(K)` means");
    let mut words = Vec::new();
    for row in atoms.lines().chain(statuses.lines()).filter(|l| l.starts_with("| `")) {
        let first_cell = row.split('|').nth(1).unwrap();
        let meaning = row.split('|').nth(2).unwrap();
        let forms = first_cell.split('`').skip(1).step_by(2).map(|code| (code, true));
        let meanings = meaning.split('`').skip(1).step_by(2).map(|code| (code, false));
        for (code, is_form) in forms.chain(meanings) {
            for word in code.split(|c: char| c.is_whitespace() || "()[],.\"".contains(c)) {
                let keyword = is_form && word.chars().all(|c| c.is_ascii_lowercase() || c == '_');
                let operator = !word.is_empty() && word.chars().all(|c| "=!<>".contains(c));
                if (keyword || operator) && !word.is_empty() && !words.iter().any(|w| w == word) {
                    words.push(word.to_string());
                }
            }
        }
    }
    words
}

#[test]
fn the_reference_covers_every_form_of_the_contract() {
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/spec/RULES.md");
    let Ok(spec) = std::fs::read_to_string(spec) else {
        crate::skips::skipped(
            "language::the_reference_covers_every_form_of_the_contract",
            "needs the language contract beside the repository (../shared/spec/RULES.md)",
        );
        return;
    };
    let words = contract_words(&spec);
    for expected in ["contains", "in_branch", "member_of", "remove_only", "<=", "empty"] {
        assert!(
            words.iter().any(|w| w == expected),
            "{expected} not read from the contract: {words:?}"
        );
    }
    let text = reference();
    let missing: Vec<&String> = words
        .iter()
        .filter(|w| !text.contains(&format!("`{w}")) && !text.contains(&format!(" {w} ")))
        .collect();
    assert!(missing.is_empty(), "docs/language.md never shows {missing:?}");
}

#[test]
fn the_reference_shows_a_mistake_as_check_reports_it() {
    let text = reference();
    let shown = blocks(&text, "text")
        .into_iter()
        .find(|b| b.starts_with("$ dyngroups check groups.rules"))
        .expect("the mistake example");
    let (command, expected) = shown.split_once('\n').unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("groups.rules"),
        "group sales {\n    departmnet == \"Sales\"\n}\n",
    )
    .unwrap();
    let users = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/users.csv");
    let args: Vec<String> = command
        .split_whitespace()
        .skip(2)
        .map(|a| {
            if a == "examples/data/users.csv" {
                users.display().to_string()
            } else {
                a.to_string()
            }
        })
        .collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dyngroups"))
        .args(&args)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr), expected);
}
