//! A deterministic synthetic population for benchmarks and demos: users with
//! realistic skew (Zipf-distributed departments, roles, countries, branches,
//! email domains), ~10 enrollments per user over ~5,000 courses, an org tree
//! of ~500 units, and optionally a rules file mixing the rule families admins
//! write. The same seed gives the same files, on any machine.
//!
//! By default the files have the shape of real exports ([`Shape::Export`]):
//! user ids with gaps in no particular row order, enrollments by course, not
//! by user, and rules whose `contains`/`starts_with`/`ends_with` literals
//! are mostly distinct.

use crate::output::OutputError;
use arrow_array::builder::{BooleanBuilder, Date32Builder, Float64Builder, StringBuilder, UInt32Builder};
use arrow_array::{ArrayRef, RecordBatch};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rayon::prelude::*;
use std::fmt::Write as _;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

/// What to generate.
#[derive(Clone, Debug)]
pub struct SynthSpec {
    /// Number of users.
    pub users: u32,
    /// Seed of the random generator.
    pub seed: u64,
    /// Number of groups in the rules file (none when 0).
    pub rules: usize,
    /// The as-of date relative dates in the data are drawn around.
    pub as_of: chrono::NaiveDate,
    /// How the files are laid out.
    pub shape: Shape,
}

/// How [`generate`] lays out the population.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Shape {
    /// As systems export them: user ids from 1 with gaps (deleted
    /// accounts), a few near 2^32 - 1, rows in random order; enrollments
    /// ordered by course within each block of 65,536 users; rules with
    /// thousands of distinct `contains`/`starts_with`/`ends_with` literals
    /// and more negations and `or`s.
    #[default]
    Export,
    /// User ids equal to rows, enrollments user by user, and the rules mix
    /// of earlier benchmarks.
    Sequential,
}

/// SplitMix64: small, fast, and fixed forever (unlike a library's default
/// generator), so a seed always means the same data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        r.next();
        r
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64 * n as f64) as usize
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// Zipf(1.1) over `n` items: item 0 is the most common.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: usize) -> Zipf {
        let mut total = 0.0;
        let cumulative = (0..n)
            .map(|k| {
                total += 1.0 / ((k + 1) as f64).powf(1.1);
                total
            })
            .collect::<Vec<_>>();
        Zipf(cumulative.into_iter().map(|c| c / total).collect())
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        self.0.partition_point(|&c| c < u).min(self.0.len() - 1)
    }
}

const FIRST_NAMES: &[&str] = &[
    "Ana", "Ben", "Chloé", "Dev", "Eva", "Farid", "Grace", "Hiro", "Inés", "Jonas", "Kemal", "Lena", "Mia", "Noah",
    "Olga", "Pedro", "Qi", "Rosa", "Sven", "Tariq", "Uma", "Viktor", "Wen", "Xavier", "Yara", "Zoë", "İlker", "Łukasz",
    "Søren",
];
const LAST_NAMES: &[&str] = &[
    "Silva",
    "Okafor",
    "Martin",
    "Patel",
    "Schulz",
    "Haddad",
    "Lee",
    "Tanaka",
    "García",
    "Berg",
    "Yılmaz",
    "Novák",
    "Smith",
    "Müller",
    "Rossi",
    "Dubois",
    "Kowalski",
    "Nguyen",
    "Kim",
    "Ivanova",
    "O'Brien",
    "Andersson",
    "Costa",
];
const DOMAINS: &[&str] = &[
    "acme.com",
    "ACME.com",
    "partner.io",
    "contractor.acme.com",
    "mail.example",
    "acme.co.uk",
    "acme.de",
    "vendor.net",
];
const STATUSES: &[&str] = &["active", "terminated", "on_leave", "Active"];
const COURSE_STATUSES: &[&str] = &["completed", "in_progress", "enrolled", "failed", "Completed"];

fn departments() -> Vec<String> {
    let base = [
        "Sales",
        "Engineering",
        "Support",
        "Marketing",
        "Finance",
        "HR",
        "Legal",
        "Operations",
        "Product",
        "Design",
        "Research",
        "Security",
        "Facilities",
        "Procurement",
        "Logistics",
    ];
    base.iter().flat_map(|d| [d.to_string(), d.to_lowercase()]).collect()
}

fn roles() -> Vec<String> {
    (0..50).map(|i| format!("Role {i:02}")).collect()
}

fn countries() -> Vec<String> {
    (0..60)
        .map(|i| format!("{}{}", (b'A' + (i / 26) as u8) as char, (b'A' + (i % 26) as u8) as char))
        .collect()
}

/// The org tree: HQ, 6 regions, 8 countries each, 10 units each (~535).
fn org_units() -> Vec<(String, Option<String>)> {
    let mut units = vec![("HQ".to_string(), None)];
    for r in 0..6 {
        let region = format!("R{r}");
        units.push((region.clone(), Some("HQ".to_string())));
        for c in 0..8 {
            let country = format!("R{r}-C{c}");
            units.push((country.clone(), Some(region.clone())));
            for u in 0..10 {
                units.push((format!("R{r}-C{c}-U{u}"), Some(country.clone())));
            }
        }
    }
    units
}

fn course(i: usize) -> String {
    format!("C-{i:04}")
}

const COURSES: usize = 5_000;
const CHUNK: u32 = 1 << 16;
/// Rows of a Parquet row group: files of a million rows hold several, as
/// exports written in batches do.
const ROWS_PER_ROW_GROUP: usize = 1 << 17;

/// The user id of each users row. [`Shape::Export`]: ids from 1 with one
/// gap in four (a deleted account), one user in a thousand near 2^32 - 1
/// (ids imported from another system), shuffled.
fn user_ids(spec: &SynthSpec) -> Vec<u32> {
    if spec.shape == Shape::Sequential {
        return (0..spec.users).collect();
    }
    let mut rng = Rng::new(spec.seed, u64::MAX - 1);
    let high = spec.users / 1000;
    let mut next = 1u32;
    let mut ids: Vec<u32> = (0..spec.users - high)
        .map(|_| {
            if rng.chance(0.25) {
                next += 1 + rng.below(3) as u32;
            }
            next += 1;
            next - 1
        })
        .collect();
    ids.extend((0..high).map(|k| u32::MAX - 2 * k));
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.below(i + 1));
    }
    ids
}

fn write_parquet(path: &Path, batches: impl Iterator<Item = RecordBatch>) -> Result<(), OutputError> {
    let error = |e: &dyn std::fmt::Display| OutputError {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut batches = batches.peekable();
    let Some(first) = batches.peek() else { return Ok(()) };
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROWS_PER_ROW_GROUP))
        .build();
    let file = File::create(path).map_err(|e| error(&e))?;
    let mut writer = ArrowWriter::try_new(file, first.schema(), Some(props)).map_err(|e| error(&e))?;
    for batch in batches {
        writer.write(&batch).map_err(|e| error(&e))?;
    }
    writer.close().map_err(|e| error(&e))?;
    Ok(())
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(columns).expect("columns of one length")
}

/// Users and enrollments of one chunk of users rows, as two batches.
fn chunk(spec: &SynthSpec, index: u32, ids: &[u32], pools: &Pools) -> (RecordBatch, RecordBatch) {
    let mut rng = Rng::new(spec.seed, u64::from(index));
    let start = index * CHUNK;
    let end = spec.users.min(start + CHUNK);
    let today = crate::checked::days_since_epoch(spec.as_of);
    let n = (end - start) as usize;
    let mut user_id = UInt32Builder::with_capacity(n);
    let mut text: Vec<StringBuilder> = (0..9).map(|_| StringBuilder::new()).collect();
    let mut start_date = Date32Builder::with_capacity(n);
    let mut last_login = Date32Builder::with_capacity(n);
    let mut grade = Float64Builder::with_capacity(n);
    let mut salary = Float64Builder::with_capacity(n);
    let mut is_manager = BooleanBuilder::with_capacity(n);
    let mut remote = BooleanBuilder::with_capacity(n);
    // (user id, course, status, enrolled at, score)
    let mut enrollments: Vec<(u32, usize, &str, i32, Option<f64>)> = Vec::new();
    for row in start..end {
        let id = ids[row as usize];
        user_id.append_value(id);
        let first = FIRST_NAMES[pools.first.sample(&mut rng)];
        let last = LAST_NAMES[pools.last.sample(&mut rng)];
        let domain = DOMAINS[pools.domain.sample(&mut rng)];
        let mut email = String::new();
        let _ = write!(email, "{}.{}{}@{domain}", first.to_lowercase(), last.to_lowercase(), id);
        let values: [Option<&str>; 9] = [
            Some(&email),
            Some(first),
            Some(last),
            (!rng.chance(0.02)).then(|| pools.departments[pools.department.sample(&mut rng)].as_str()),
            Some(pools.roles[pools.role.sample(&mut rng)].as_str()),
            Some(pools.countries[pools.country.sample(&mut rng)].as_str()),
            Some(pools.leaves[pools.branch.sample(&mut rng)].as_str()),
            Some(STATUSES[[0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3][rng.below(11)]]),
            (!rng.chance(0.05)).then(|| pools.cost_centers[rng.below(pools.cost_centers.len())].as_str()),
        ];
        for (builder, value) in text.iter_mut().zip(values) {
            builder.append_option(value);
        }
        start_date.append_option((!rng.chance(0.01)).then(|| today - rng.below(20 * 365) as i32));
        last_login.append_option((!rng.chance(0.2)).then(|| today - rng.below(400) as i32));
        grade.append_option((!rng.chance(0.01)).then(|| (1 + pools.grade.sample(&mut rng)) as f64));
        salary.append_value(30_000.0 + rng.below(170_000) as f64 + rng.below(100) as f64 / 100.0);
        is_manager.append_option((!rng.chance(0.01)).then(|| rng.chance(0.1)));
        remote.append_value(rng.chance(0.3));
        for _ in 0..rng.below(21) {
            let status = COURSE_STATUSES[[0, 0, 0, 0, 0, 1, 1, 2, 3, 4][rng.below(10)]];
            let course = pools.course.sample(&mut rng);
            let enrolled = today - rng.below(5 * 365) as i32;
            let score = status.eq_ignore_ascii_case("completed").then(|| rng.below(101) as f64);
            enrollments.push((id, course, status, enrolled, score));
        }
    }
    if spec.shape == Shape::Export {
        enrollments.sort_by_key(|e| e.1);
    }
    let mut e_user = UInt32Builder::with_capacity(enrollments.len());
    let mut e_course = StringBuilder::new();
    let mut e_status = StringBuilder::new();
    let mut e_enrolled = Date32Builder::with_capacity(enrollments.len());
    let mut e_score = Float64Builder::with_capacity(enrollments.len());
    for (id, course_index, status, enrolled, score) in enrollments {
        e_user.append_value(id);
        e_course.append_value(course(course_index));
        e_status.append_value(status);
        e_enrolled.append_value(enrolled);
        e_score.append_option(score);
    }
    let names = [
        "email",
        "first_name",
        "last_name",
        "department",
        "role",
        "country",
        "branch",
        "status",
        "cost_center",
    ];
    let mut columns: Vec<(&str, ArrayRef)> = vec![("user_id", Arc::new(user_id.finish()))];
    for (name, mut builder) in names.into_iter().zip(text) {
        columns.push((name, Arc::new(builder.finish())));
    }
    columns.extend([
        ("start_date", Arc::new(start_date.finish()) as ArrayRef),
        ("last_login", Arc::new(last_login.finish())),
        ("grade", Arc::new(grade.finish())),
        ("salary", Arc::new(salary.finish())),
        ("is_manager", Arc::new(is_manager.finish())),
        ("remote", Arc::new(remote.finish())),
    ]);
    let enrollments = batch(vec![
        ("user_id", Arc::new(e_user.finish())),
        ("course", Arc::new(e_course.finish())),
        ("status", Arc::new(e_status.finish())),
        ("enrolled_at", Arc::new(e_enrolled.finish())),
        ("score", Arc::new(e_score.finish())),
    ]);
    (batch(columns), enrollments)
}

struct Pools {
    departments: Vec<String>,
    roles: Vec<String>,
    countries: Vec<String>,
    leaves: Vec<String>,
    cost_centers: Vec<String>,
    first: Zipf,
    last: Zipf,
    domain: Zipf,
    department: Zipf,
    role: Zipf,
    country: Zipf,
    branch: Zipf,
    grade: Zipf,
    course: Zipf,
}

impl Pools {
    fn new() -> Pools {
        let leaves: Vec<String> = org_units()
            .into_iter()
            .map(|(code, _)| code)
            .filter(|c| c.matches('-').count() == 2)
            .collect();
        let departments = departments();
        let roles = roles();
        let countries = countries();
        Pools {
            first: Zipf::new(FIRST_NAMES.len()),
            last: Zipf::new(LAST_NAMES.len()),
            domain: Zipf::new(DOMAINS.len()),
            department: Zipf::new(departments.len()),
            role: Zipf::new(roles.len()),
            country: Zipf::new(countries.len()),
            branch: Zipf::new(leaves.len()),
            grade: Zipf::new(12),
            course: Zipf::new(COURSES),
            cost_centers: (0..200).map(|i| format!("CC-{i:03}")).collect(),
            departments,
            roles,
            countries,
            leaves,
        }
    }
}

/// Writes `users.parquet`, `enrollments.parquet`, `org.parquet` and, when
/// asked, `rules.rules` into `dir`.
pub fn generate(spec: &SynthSpec, dir: &Path) -> Result<(), OutputError> {
    std::fs::create_dir_all(dir).map_err(|e| OutputError {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let pools = Pools::new();
    let ids = user_ids(spec);
    let chunks: Vec<(RecordBatch, RecordBatch)> = (0..spec.users.div_ceil(CHUNK))
        .into_par_iter()
        .map(|i| chunk(spec, i, &ids, &pools))
        .collect();
    let (users, enrollments): (Vec<_>, Vec<_>) = chunks.into_iter().unzip();
    rayon::join(
        || write_parquet(&dir.join("users.parquet"), users.into_iter()),
        || write_parquet(&dir.join("enrollments.parquet"), enrollments.into_iter()),
    )
    .0?;
    let units = org_units();
    let mut branch = StringBuilder::new();
    let mut parent = StringBuilder::new();
    for (code, up) in &units {
        branch.append_value(code);
        parent.append_option(up.as_deref());
    }
    write_parquet(
        &dir.join("org.parquet"),
        std::iter::once(batch(vec![
            ("branch", Arc::new(branch.finish())),
            ("parent", Arc::new(parent.finish())),
        ])),
    )?;
    if spec.rules > 0 {
        let path = dir.join("rules.rules");
        std::fs::write(&path, rules_text(spec, &pools)).map_err(|e| OutputError {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

/// One atom of a family, as rule text. In the export shape, most text
/// tests name a literal of their own: part of one person's email, as an
/// admin picks out a few people or an address pattern.
fn atom(rng: &mut Rng, pools: &Pools, family: usize, shape: Shape) -> String {
    let quote = crate::ast::quote;
    let distinct_text = shape == Shape::Export && rng.chance(0.7);
    match family {
        2 if distinct_text => {
            let last = LAST_NAMES[pools.last.sample(rng)].to_lowercase();
            format!("email contains {}", quote(&format!("{last}{}", 1 + rng.below(999))))
        }
        3 if distinct_text => match rng.below(2) {
            0 => {
                let first = FIRST_NAMES[pools.first.sample(rng)].to_lowercase();
                let last: String = LAST_NAMES[pools.last.sample(rng)]
                    .to_lowercase()
                    .chars()
                    .take(1 + rng.below(4))
                    .collect();
                format!("email starts_with {}", quote(&format!("{first}.{last}")))
            }
            _ => format!(
                "email ends_with {}",
                quote(&format!("{}@{}", rng.below(100), DOMAINS[pools.domain.sample(rng)]))
            ),
        },
        0 => {
            let (field, value) = match rng.below(4) {
                0 => ("department", pools.departments[pools.department.sample(rng)].clone()),
                1 => ("role", pools.roles[pools.role.sample(rng)].clone()),
                2 => ("country", pools.countries[pools.country.sample(rng)].clone()),
                _ => ("status", STATUSES[rng.below(3)].to_string()),
            };
            format!("{field} == {}", quote(&value))
        }
        1 => {
            let items: Vec<String> = (0..3 + rng.below(6))
                .map(|_| quote(&pools.countries[pools.country.sample(rng)]))
                .collect();
            format!("country in [{}]", items.join(", "))
        }
        2 => match rng.below(2) {
            0 => format!(
                "email contains {}",
                quote(&format!("@{}", DOMAINS[pools.domain.sample(rng)].to_lowercase()))
            ),
            _ => format!(
                "email contains {}",
                quote(&LAST_NAMES[pools.last.sample(rng)].to_lowercase())
            ),
        },
        3 => match rng.below(2) {
            0 => format!(
                "first_name starts_with {}",
                quote(
                    &FIRST_NAMES[rng.below(FIRST_NAMES.len())]
                        .chars()
                        .take(2)
                        .collect::<String>()
                )
            ),
            _ => format!("email ends_with {}", quote(DOMAINS[pools.domain.sample(rng)])),
        },
        4 => format!("start_date >= today - {}d", 30 * (1 + rng.below(24))),
        5 => {
            let low = 1 + rng.below(8);
            format!("grade >= {low} and grade <= {}", low + rng.below(5))
        }
        6 => match rng.below(2) {
            0 => format!("completed({})", quote(&course(pools.course.sample(rng)))),
            _ => format!("enrolled({})", quote(&course(pools.course.sample(rng)))),
        },
        7 => match rng.below(2) {
            0 => format!("count(enrollment(status == \"completed\")) >= {}", 1 + rng.below(10)),
            _ => format!(
                "count(enrollment(course == {})) >= 1",
                quote(&course(pools.course.sample(rng)))
            ),
        },
        _ => {
            let units = org_units();
            format!("in_branch({})", quote(&units[rng.below(units.len())].0))
        }
    }
}

/// Families and their shares (per cent): categorical equality 15, `in` 10,
/// `contains` 5, `starts_with`/`ends_with` 5, relative dates 5, numeric
/// ranges 5, enrollment existence 15, enrollment counts 5, `in_branch` 5,
/// and/or/not combinations of 2-6 atoms 30.
const SHARES: [usize; 9] = [15, 10, 5, 5, 5, 5, 15, 5, 5];

/// The export shape's shares: `contains` 6 and `starts_with`/`ends_with`
/// 6 (at least 10% of rules test text), enrollment existence 13.
const EXPORT_SHARES: [usize; 9] = [15, 10, 6, 6, 5, 5, 13, 5, 5];

fn family(rng: &mut Rng, shape: Shape) -> Option<usize> {
    let shares = match shape {
        Shape::Export => &EXPORT_SHARES,
        Shape::Sequential => &SHARES,
    };
    let mut roll = rng.below(100);
    for (family, share) in shares.iter().enumerate() {
        if roll < *share {
            return Some(family);
        }
        roll -= share;
    }
    None
}

/// The rules file [`generate`] writes for `spec` (`spec.rules` groups).
pub fn rules(spec: &SynthSpec) -> String {
    rules_text(spec, &Pools::new())
}

/// Rules of one family only (index into the shares: 0 categorical equality,
/// 1 `in`, 2 `contains`, 3 `starts_with`/`ends_with`, 4 relative dates,
/// 5 numeric ranges, 6 enrollment existence, 7 enrollment counts,
/// 8 `in_branch`), for per-family benchmarks.
pub fn family_rules(spec: &SynthSpec, family: usize) -> String {
    let pools = Pools::new();
    let mut rng = Rng::new(spec.seed, family as u64);
    (0..spec.rules)
        .map(|g| format!("group f{g:05} {{ {} }}\n", atom(&mut rng, &pools, family, spec.shape)))
        .collect()
}

/// Names of the families of [`family_rules`].
pub const FAMILIES: [&str; 9] = [
    "equality",
    "in_list",
    "contains",
    "starts_ends",
    "relative_date",
    "numeric_range",
    "enrollment",
    "count",
    "in_branch",
];

fn rules_text(spec: &SynthSpec, pools: &Pools) -> String {
    let mut rng = Rng::new(spec.seed, u64::MAX);
    let mut out = String::new();
    // The export shape's combinations negate and unite big atoms more
    // often, as rules like "staff outside Sales or new hires" do.
    let (negated, and) = match spec.shape {
        Shape::Export => (0.25, 0.6),
        Shape::Sequential => (0.2, 0.6),
    };
    for g in 0..spec.rules {
        let rule = match family(&mut rng, spec.shape) {
            Some(f) => atom(&mut rng, pools, f, spec.shape),
            None => {
                let parts: Vec<String> = (0..2 + rng.below(5))
                    .map(|_| {
                        let f = rng.below(SHARES.len());
                        let a = atom(&mut rng, pools, f, spec.shape);
                        if rng.chance(negated) {
                            format!("not ({a})")
                        } else {
                            format!("({a})")
                        }
                    })
                    .collect();
                parts.join(if rng.chance(and) { " and " } else { " or " })
            }
        };
        let _ = writeln!(out, "group g{g:05} \"Generated group {g}\" {{\n    {rule}\n}}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_rules_and_the_shares_hold() {
        let spec = SynthSpec {
            users: 10,
            seed: 7,
            rules: 2000,
            as_of: chrono::NaiveDate::MIN,
            shape: Shape::Sequential,
        };
        let pools = Pools::new();
        let text = rules_text(&spec, &pools);
        assert_eq!(text, rules_text(&spec, &pools));
        let file = crate::parse_rules(&text).unwrap();
        assert_eq!(file.groups.len(), 2000);
        let combos = file
            .groups
            .iter()
            .filter(|g| matches!(g.rule.kind, crate::ast::ExprKind::And(_) | crate::ast::ExprKind::Or(_)))
            .count();
        // Combinations are 30%, plus numeric ranges (an `and` of two) 5%.
        assert!((600..800).contains(&combos), "{combos}");
    }

    #[test]
    fn zipf_favours_the_first_items() {
        let z = Zipf::new(10);
        let mut rng = Rng::new(1, 0);
        let mut counts = [0; 10];
        for _ in 0..10_000 {
            counts[z.sample(&mut rng)] += 1;
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[9], "{counts:?}");
    }
}
