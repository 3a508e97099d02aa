//! Random syntax trees and data sets for property tests.

use chrono::NaiveDate;
use dyngroups::ast::*;
use dyngroups::data::{Column, OpenTable, TextColumn};
use dyngroups::{Span, Spanned};
use proptest::prelude::*;

fn sp<T>(value: T) -> Spanned<T> {
    Spanned::new(value, Span::default())
}

fn e(kind: ExprKind) -> Expr {
    Expr {
        kind,
        span: Span::default(),
    }
}

fn field(name: impl Into<String>) -> FieldRef {
    FieldRef {
        name: name.into(),
        span: Span::default(),
    }
}

pub fn cmp_op() -> impl Strategy<Value = CmpOp> {
    prop::sample::select(vec![CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge])
}

fn date_in(years: std::ops::Range<i32>) -> impl Strategy<Value = NaiveDate> {
    (years, 1u32..=12, 1u32..=31)
        .prop_map(|(y, m, d)| (0..4).find_map(|back| NaiveDate::from_ymd_opt(y, m, d - back)).unwrap())
}

fn today() -> impl Strategy<Value = Literal> {
    let unit = prop::sample::select(vec![DateUnit::Days, DateUnit::Weeks, DateUnit::Months, DateUnit::Years]);
    prop::option::of((-400i64..400, unit).prop_map(|(amount, unit)| DateOffset { amount, unit }))
        .prop_map(Literal::Today)
}

// ---- Any syntax (for print/parse round trips) ----

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,12}",
        prop::sample::select(vec![
            "",
            "a\"b",
            "back\\slash",
            "line\nbreak",
            "tab\there",
            "\r\u{7}",
            "😀 İ ß Σ"
        ])
        .prop_map(String::from),
    ]
}

fn any_field() -> impl Strategy<Value = FieldRef> {
    prop_oneof![
        "[a-z_][a-z0-9_]{0,8}".prop_map(field),
        prop::sample::select(vec![
            "Cost Center",
            "and",
            "not",
            "départment",
            "count",
            "enrollment",
            "x-y",
            "",
            "1st"
        ])
        .prop_map(field),
    ]
}

fn any_literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        any_text().prop_map(Literal::Text),
        any::<f64>()
            .prop_filter("finite", |n| n.is_finite())
            .prop_map(Literal::Number),
        (-1000i32..1000).prop_map(|n| Literal::Number(f64::from(n) / 4.0)),
        date_in(1000..9999).prop_map(Literal::Date),
        today(),
        any::<bool>().prop_map(Literal::Bool),
    ]
}

fn any_field_test() -> impl Strategy<Value = FieldTest> {
    let text_op = prop::sample::select(vec![
        TextOp::Contains,
        TextOp::StartsWith,
        TextOp::EndsWith,
        TextOp::Matches,
    ]);
    prop_oneof![
        Just(FieldTest::IsTrue),
        (cmp_op(), any_literal()).prop_map(|(op, l)| FieldTest::Compare(op, sp(l))),
        (any::<bool>(), prop::collection::vec(any_literal().prop_map(sp), 0..4)).prop_map(|(negated, items)| {
            FieldTest::In {
                negated,
                items: sp(items),
            }
        }),
        (text_op, any_text()).prop_map(|(op, t)| FieldTest::Text(op, sp(t))),
        any::<bool>().prop_map(|negated| FieldTest::IsEmpty { negated }),
    ]
}

fn any_key() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_-]{0,10}"
}

pub fn any_expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(|b| e(ExprKind::Bool(b))),
        (any_field(), any_field_test()).prop_map(|(f, t)| e(ExprKind::Field(f, t))),
        any_text().prop_map(|t| e(ExprKind::Completed(sp(t)))),
        any_text().prop_map(|t| e(ExprKind::Enrolled(sp(t)))),
        any_text().prop_map(|t| e(ExprKind::InBranch(sp(t)))),
        prop_oneof![any_key(), any_text()].prop_map(|k| e(ExprKind::MemberOf(sp(k)))),
        Just(e(ExprKind::Enrollment(None))),
    ];
    leaf.prop_recursive(4, 40, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(|v| e(ExprKind::Or(v))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(|v| e(ExprKind::And(v))),
            inner.clone().prop_map(|x| e(ExprKind::Not(Box::new(x)))),
            inner.clone().prop_map(|x| e(ExprKind::Enrollment(Some(Box::new(x))))),
            (prop::option::of(inner), cmp_op(), 0u32..100).prop_map(|(c, op, n)| {
                e(ExprKind::Count {
                    condition: c.map(Box::new),
                    op,
                    count: sp(f64::from(n)),
                })
            }),
        ]
    })
}

fn id_list() -> impl Strategy<Value = IdList> {
    prop::collection::vec(any::<u64>().prop_map(sp), 0..4).prop_map(|ids| IdList {
        ids,
        span: Span::default(),
    })
}

pub fn any_rules_file() -> impl Strategy<Value = RulesFile> {
    let status = prop::option::of(
        prop::sample::select(vec![
            GroupStatus::Active,
            GroupStatus::Draft,
            GroupStatus::Paused,
            GroupStatus::AddOnly,
            GroupStatus::RemoveOnly,
        ])
        .prop_map(sp),
    );
    let group = (
        any_key(),
        prop::option::of(any_text()),
        status,
        any_expr(),
        prop::collection::vec(id_list(), 0..2),
        prop::collection::vec(id_list(), 0..2),
    )
        .prop_map(|(key, name, status, rule, includes, excludes)| GroupDef {
            key: sp(key),
            name: name.map(sp),
            status,
            rule,
            includes,
            excludes,
            span: Span::default(),
        });
    prop::collection::vec(group, 0..4).prop_map(|groups| RulesFile { groups })
}

// ---- Type-correct rules over a fixed schema, and data for it ----

const NAMES: &[&str] = &[
    "Ana",
    "ana",
    "ANA",
    "",
    "İstanbul",
    "istanbul",
    "ß",
    "SS",
    "Σίσυφος",
    "σ",
    "a,b",
    "x\"y",
    // For `\d`, `\w`, `\s`, `\b`, which are ASCII: a non-ASCII digit,
    // a no-break space, a letter with an accent.
    "٣",
    "ana b",
    "Ana\u{a0}b",
    "café 7",
];
const DEPTS: &[&str] = &["Sales", "sales", "SALES", "Eng", "", "Ünit"];
const BRANCHES: &[&str] = &["HQ", "EMEA", "EMEA-PT", "emea-uk", "AMER", "ZZ"];
const COURSES: &[&str] = &["C1", "c1", "C2", "Ç3", ""];
const STATUSES: &[&str] = &["completed", "Completed", "in_progress"];
const NUMBERS: &[f64] = &[-1.5, 0.0, 3.0, 7.25, 10.0, f64::NAN];
const PATTERNS: &[&str] = &[
    "^a",
    "(?i)sales",
    "s$",
    "İ",
    ".",
    "^$",
    "[Σσ]",
    "\\d",
    "^\\w+$",
    "a\\sb",
    "(?i)\\bana\\b",
    "[\\d,]",
    "f\\b",
    "^\\W",
];
const NEEDLES: &[&str] = &["a", "S", "", "ß", "İ", "σ", "ss", "i̇"];

/// The as-of date of generated cases: a month end, so month steps clamp.
pub fn as_of() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 3, 31).unwrap()
}

fn dates() -> Vec<NaiveDate> {
    [
        "2024-01-31",
        "2024-02-29",
        "2024-03-31",
        "2023-12-31",
        "2024-02-28",
        "2023-03-31",
    ]
    .iter()
    .map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap())
    .collect()
}

fn pick<T: Clone + std::fmt::Debug + 'static>(pool: &[T]) -> impl Strategy<Value = T> + use<T> {
    prop::sample::select(pool.to_vec())
}

fn text_literal(pool: &'static [&'static str]) -> impl Strategy<Value = Literal> {
    pick(pool).prop_map(|s| Literal::Text(s.to_string()))
}

fn number_literal() -> impl Strategy<Value = Literal> {
    pick(&NUMBERS[..5]).prop_map(Literal::Number)
}

fn date_literal() -> impl Strategy<Value = Literal> {
    prop_oneof![pick(&dates()).prop_map(Literal::Date), today()]
}

/// Tests on a column of the given kind, with literals of its type.
fn typed_test(kind: Kind) -> BoxedStrategy<FieldTest> {
    let empty = any::<bool>().prop_map(|negated| FieldTest::IsEmpty { negated });
    let list = |lit: BoxedStrategy<Literal>| {
        (any::<bool>(), prop::collection::vec(lit.prop_map(sp), 1..4)).prop_map(|(negated, items)| FieldTest::In {
            negated,
            items: sp(items),
        })
    };
    match kind {
        Kind::Text(pool) => {
            let text_op = pick(&[TextOp::Contains, TextOp::StartsWith, TextOp::EndsWith]);
            prop_oneof![
                (cmp_op(), text_literal(pool)).prop_map(|(op, l)| FieldTest::Compare(op, sp(l))),
                list(text_literal(pool).boxed()),
                (text_op, pick(NEEDLES)).prop_map(|(op, t)| FieldTest::Text(op, sp(t.to_string()))),
                pick(PATTERNS).prop_map(|p| FieldTest::Text(TextOp::Matches, sp(p.to_string()))),
                empty,
            ]
            .boxed()
        }
        Kind::Number => prop_oneof![
            (cmp_op(), number_literal()).prop_map(|(op, l)| FieldTest::Compare(op, sp(l))),
            list(number_literal().boxed()),
            empty,
        ]
        .boxed(),
        Kind::Date => prop_oneof![
            (cmp_op(), date_literal()).prop_map(|(op, l)| FieldTest::Compare(op, sp(l))),
            list(date_literal().boxed()),
            empty,
        ]
        .boxed(),
        Kind::Boolean => prop_oneof![
            Just(FieldTest::IsTrue),
            (pick(&[CmpOp::Eq, CmpOp::Ne]), any::<bool>())
                .prop_map(|(op, b)| FieldTest::Compare(op, sp(Literal::Bool(b)))),
            empty,
        ]
        .boxed(),
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Text(&'static [&'static str]),
    Number,
    Date,
    Boolean,
}

/// A column test; the field name sometimes in another letter case.
fn column_atom(columns: Vec<(&'static str, Kind)>) -> impl Strategy<Value = Expr> {
    (pick(&columns), any::<bool>()).prop_flat_map(|((name, kind), shout)| {
        let name = if shout { name.to_uppercase() } else { name.to_string() };
        typed_test(kind).prop_map(move |t| e(ExprKind::Field(field(name.clone()), t)))
    })
}

fn bool_tree(leaf: BoxedStrategy<Expr>) -> BoxedStrategy<Expr> {
    leaf.prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(|v| e(ExprKind::Or(v))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(|v| e(ExprKind::And(v))),
            inner.prop_map(|x| e(ExprKind::Not(Box::new(x)))),
        ]
    })
    .boxed()
}

fn enrollment_condition() -> BoxedStrategy<Expr> {
    let column = column_atom(vec![
        ("course", Kind::Text(COURSES)),
        ("status", Kind::Text(STATUSES)),
        ("grade", Kind::Number),
        ("done", Kind::Date),
    ]);
    // `true` and `false` hold for every enrollment row or for none.
    let constant = any::<bool>().prop_map(|b| e(ExprKind::Bool(b)));
    bool_tree(prop_oneof![6 => column, 1 => constant].boxed())
}

/// A rule for group number `index`: it may refer to earlier groups only.
fn user_rule(index: usize) -> BoxedStrategy<Expr> {
    let columns = vec![
        ("name", Kind::Text(NAMES)),
        ("dept", Kind::Text(DEPTS)),
        ("branch", Kind::Text(BRANCHES)),
        ("score", Kind::Number),
        ("hired", Kind::Date),
        ("active", Kind::Boolean),
    ];
    let mut leaves: Vec<BoxedStrategy<Expr>> = vec![
        column_atom(columns).boxed(),
        column_atom(vec![("dept", Kind::Text(DEPTS))]).boxed(),
        any::<bool>().prop_map(|b| e(ExprKind::Bool(b))).boxed(),
        pick(&BRANCHES[..5])
            .prop_map(|b| e(ExprKind::InBranch(sp(b.to_lowercase()))))
            .boxed(),
        Just(e(ExprKind::MemberOf(sp("st".to_string())))).boxed(),
        prop::option::of(enrollment_condition())
            .prop_map(|c| e(ExprKind::Enrollment(c.map(Box::new))))
            .boxed(),
        (prop::option::of(enrollment_condition()), cmp_op(), 0u32..4)
            .prop_map(|(c, op, n)| {
                e(ExprKind::Count {
                    condition: c.map(Box::new),
                    op,
                    count: sp(f64::from(n)),
                })
            })
            .boxed(),
        pick(COURSES)
            .prop_map(|c| e(ExprKind::Completed(sp(c.to_string()))))
            .boxed(),
        pick(COURSES)
            .prop_map(|c| e(ExprKind::Enrolled(sp(c.to_string()))))
            .boxed(),
    ];
    if index > 0 {
        leaves.push(
            (0..index)
                .prop_map(|g| e(ExprKind::MemberOf(sp(format!("g{g}")))))
                .boxed(),
        );
    }
    bool_tree(prop::strategy::Union::new(leaves).boxed())
}

fn ids(pool: Vec<u32>) -> impl Strategy<Value = Vec<IdList>> {
    let id = prop_oneof![pick(&pool), 900u32..905];
    prop::collection::vec(
        prop::collection::vec(id.prop_map(|i| sp(u64::from(i))), 1..4).prop_map(|ids| IdList {
            ids,
            span: Span::default(),
        }),
        0..=1,
    )
}

/// A rules file of 1 to 4 groups `g0`, `g1`, ... over the generated schema.
pub fn typed_rules(user_ids: Vec<u32>) -> impl Strategy<Value = RulesFile> {
    (1usize..5).prop_flat_map(move |n| {
        let groups: Vec<_> = (0..n)
            .map(|i| {
                let pool = if user_ids.is_empty() { vec![0] } else { user_ids.clone() };
                (user_rule(i), ids(pool.clone()), ids(pool)).prop_map(move |(rule, includes, excludes)| GroupDef {
                    key: sp(format!("g{i}")),
                    name: None,
                    status: None,
                    rule,
                    includes,
                    excludes,
                    span: Span::default(),
                })
            })
            .collect();
        groups.prop_map(|groups| RulesFile { groups })
    })
}

/// Generated tables: users, enrollments, org tree, static memberships.
#[derive(Debug, Clone)]
pub struct Tables {
    pub user_ids: Vec<u32>,
    pub users: Vec<(String, Column)>,
    pub enrollments: Vec<(String, Column)>,
    pub org: Vec<(String, Column)>,
    pub memberships: Vec<(String, Column)>,
}

impl Tables {
    pub fn open(&self) -> dyngroups::dataset::OpenInputs {
        dyngroups::dataset::OpenInputs::from_tables(
            OpenTable::from_columns("users", self.users.clone()),
            Some(OpenTable::from_columns("enrollments", self.enrollments.clone())),
            Some(OpenTable::from_columns("org", self.org.clone())),
            Some(OpenTable::from_columns("memberships", self.memberships.clone())),
        )
        .unwrap()
    }
}

fn text(values: Vec<Option<&str>>) -> Column {
    Column::Text(values.into_iter().map(|v| v.map(String::from)).collect::<TextColumn>())
}

fn maybe<T: Clone + std::fmt::Debug + 'static>(pool: &[T]) -> impl Strategy<Value = Option<T>> + use<T> {
    prop::option::weighted(0.85, pick(pool))
}

pub fn tables() -> impl Strategy<Value = Tables> {
    let user = (
        maybe(NAMES),
        maybe(DEPTS),
        maybe(BRANCHES),
        pick(NUMBERS),
        maybe(&dates()),
        maybe(&[true, false]),
    );
    (
        prop::collection::btree_set(0u32..60, 0..25),
        prop::collection::vec(user, 25),
    )
        .prop_flat_map(|(ids, users)| {
            let ids: Vec<u32> = ids.into_iter().collect();
            let enrollment_user =
                prop_oneof![4 => pick(&if ids.is_empty() { vec![99] } else { ids.clone() }), 1 => 100u32..103];
            let enrollment = (
                enrollment_user,
                maybe(COURSES),
                maybe(STATUSES),
                pick(NUMBERS),
                maybe(&dates()),
            );
            let members = prop::collection::vec(
                prop_oneof![pick(&if ids.is_empty() { vec![99] } else { ids.clone() }), Just(777)],
                1..5,
            );
            (
                Just(ids).prop_shuffle(),
                Just(users),
                prop::collection::vec(enrollment, 0..40),
                members,
            )
        })
        .prop_map(|(ids, users, enrollments, members)| {
            let users = &users[..ids.len()];
            let num = |v: Vec<f64>| Column::Number(v);
            let days = |d: &Option<NaiveDate>| d.map(dyngroups::checked::days_since_epoch);
            Tables {
                user_ids: ids.clone(),
                users: vec![
                    ("user_id".into(), num(ids.iter().map(|&i| f64::from(i)).collect())),
                    ("name".into(), text(users.iter().map(|u| u.0).collect())),
                    ("dept".into(), text(users.iter().map(|u| u.1).collect())),
                    ("branch".into(), text(users.iter().map(|u| u.2).collect())),
                    ("score".into(), num(users.iter().map(|u| u.3).collect())),
                    ("hired".into(), Column::Date(users.iter().map(|u| days(&u.4)).collect())),
                    ("active".into(), Column::Boolean(users.iter().map(|u| u.5).collect())),
                ],
                enrollments: vec![
                    (
                        "user_id".into(),
                        num(enrollments.iter().map(|r| f64::from(r.0)).collect()),
                    ),
                    ("course".into(), text(enrollments.iter().map(|r| r.1).collect())),
                    ("status".into(), text(enrollments.iter().map(|r| r.2).collect())),
                    ("grade".into(), num(enrollments.iter().map(|r| r.3).collect())),
                    (
                        "done".into(),
                        Column::Date(enrollments.iter().map(|r| days(&r.4)).collect()),
                    ),
                ],
                org: vec![
                    (
                        "branch".into(),
                        text(vec![
                            Some("HQ"),
                            Some("EMEA"),
                            Some("EMEA-PT"),
                            Some("EMEA-UK"),
                            Some("AMER"),
                        ]),
                    ),
                    (
                        "parent".into(),
                        text(vec![None, Some("HQ"), Some("EMEA"), Some("emea"), Some("HQ")]),
                    ),
                ],
                memberships: vec![
                    ("group".into(), text(members.iter().map(|_| Some("st")).collect())),
                    ("user_id".into(), num(members.iter().map(|&i| f64::from(i)).collect())),
                ],
            }
        })
}
