//! The commands that write code or data for other tools: `sql`,
//! `polars`, `gen`.

use super::{RulesAndData, parse_as_of, rules_checked_against_data, stdout_error};
use clap::Args;
use dyngroups::Error;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub(super) struct SqlArgs {
    #[command(flatten)]
    inputs: RulesAndData,
    /// The SQL engine.
    #[arg(long, value_enum, default_value = "duckdb")]
    dialect: SqlDialect,
    /// Only this group's query (repeatable).
    #[arg(long = "group", value_name = "KEY", conflicts_with = "combined")]
    groups: Vec<String>,
    /// Print only the one query returning `(group, user_id)` for every group
    /// a run commits.
    #[arg(long)]
    combined: bool,
    /// Print only the one query returning `(group, user_id, change)` rows,
    /// `add` or `remove`, against the `committed` table: the changes
    /// `run --diff-out` writes.
    #[arg(long, conflicts_with_all = ["combined", "groups"])]
    changes: bool,
    /// Write the groups the dialect can hold and name each one left out
    /// on stderr, instead of refusing the whole file. A changes query
    /// leaves the committed members of those groups as they are.
    #[arg(long)]
    skip_untranslatable: bool,
    /// The users table.
    #[arg(long, value_name = "TABLE", default_value = "users")]
    users_table: String,
    /// The enrollments table.
    #[arg(long, value_name = "TABLE", default_value = "enrollments")]
    enrollments_table: String,
    /// The org tree table.
    #[arg(long, value_name = "TABLE", default_value = "org")]
    org_table: String,
    /// The static memberships table.
    #[arg(long, value_name = "TABLE", default_value = "memberships")]
    memberships_table: String,
    /// What the last run committed (`group`, `user_id`), read by `paused`,
    /// `add_only` and `remove_only` groups.
    #[arg(long, value_name = "TABLE", default_value = "committed")]
    committed_table: String,
    /// The most columns one select may have (each test and each group is
    /// a column); groups beyond it go to further scans of users. Default:
    /// 1500 for PostgreSQL, 4000 for the others.
    #[arg(long, value_name = "N")]
    max_columns: Option<usize>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(super) enum SqlDialect {
    Duckdb,
    Postgres,
    Spark,
    Clickhouse,
}

#[derive(Args)]
pub(super) struct GenArgs {
    /// Number of users (about 10 enrollments each).
    #[arg(long)]
    users: u32,
    /// Seed: the same seed gives the same files.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write `rules.rules` with this many groups.
    #[arg(long, default_value_t = 0)]
    rules: usize,
    /// The date relative dates are drawn around (default: today, UTC).
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_as_of)]
    as_of: Option<chrono::NaiveDate>,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// The files' shape: `export` (user ids with gaps in random row order,
    /// enrollments by course, distinct text literals in rules) or
    /// `sequential` (user ids equal to rows, enrollments user by user).
    #[arg(long, value_enum, default_value_t = GenShape::Export)]
    shape: GenShape,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(super) enum GenShape {
    /// As systems export them.
    Export,
    /// Ids equal to rows, enrollments user by user.
    Sequential,
}

pub(super) fn run_sql(args: SqlArgs) -> Result<(), Error> {
    use dyngroups::sql::{Dialect, SqlOptions, changes_query, combined_query, group_queries, untranslatable_groups};
    let (rules, inputs) = rules_checked_against_data(&args.inputs)?;
    let mut options = SqlOptions::new(match args.dialect {
        SqlDialect::Duckdb => Dialect::DuckDb,
        SqlDialect::Postgres => Dialect::Postgres,
        SqlDialect::Spark => Dialect::Spark,
        SqlDialect::Clickhouse => Dialect::ClickHouse,
    });
    options.users_table = args.users_table;
    options.enrollments_table = args.enrollments_table;
    options.org_table = args.org_table;
    options.memberships_table = args.memberships_table;
    options.committed_table = args.committed_table;
    options.match_by = args.inputs.data.match_by.clone();
    options.as_of = args.inputs.data.as_of;
    if let Some(columns) = args.max_columns {
        options.max_columns = columns;
    }
    let schema = inputs.schema();
    let unwritable = |e: dyngroups::sql::SqlError| match e {
        dyngroups::sql::SqlError::UnknownGroup(_) => Error::Usage(e.to_string()),
        _ => Error::Untranslatable(e.to_string()),
    };
    if args.skip_untranslatable {
        for (key, why) in untranslatable_groups(&rules, &schema, &options).map_err(unwritable)? {
            match why.group() {
                Some(group) if group == key => eprintln!("skipped {why}"),
                _ => eprintln!("skipped group `{key}`, which uses {why}"),
            }
            options.skip.insert(key);
        }
    }
    let mut out = String::new();
    if args.changes {
        out = changes_query(&rules, &schema, &options).map_err(unwritable)?;
        out.push_str(";\n");
    } else if args.combined {
        out = combined_query(&rules, &schema, &options).map_err(unwritable)?;
        out.push_str(";\n");
    } else {
        for query in group_queries(&rules, &schema, &options, &args.groups).map_err(unwritable)? {
            out.push_str(&format!("-- group {}\n{};\n\n", query.key, query.sql));
        }
        if args.groups.is_empty() {
            let all = combined_query(&rules, &schema, &options).map_err(unwritable)?;
            out.push_str(&format!("-- every group a run commits, as (group, user_id)\n{all};\n"));
        }
    }
    std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes()).map_err(stdout_error)
}

pub(super) fn run_polars(args: RulesAndData) -> Result<(), Error> {
    let (rules, inputs) = rules_checked_against_data(&args)?;
    let module = dyngroups::polars::polars_module(&rules, &inputs.schema(), args.data.match_by.as_deref())
        .map_err(|e| Error::Untranslatable(e.to_string()))?;
    std::io::Write::write_all(&mut std::io::stdout().lock(), module.as_bytes()).map_err(stdout_error)
}

pub(super) fn run_gen(args: GenArgs) -> Result<(), Error> {
    let started = Instant::now();
    let spec = dyngroups::synth::SynthSpec {
        users: args.users,
        seed: args.seed,
        rules: args.rules,
        as_of: args.as_of.unwrap_or_else(|| chrono::Utc::now().date_naive()),
        shape: match args.shape {
            GenShape::Export => dyngroups::synth::Shape::Export,
            GenShape::Sequential => dyngroups::synth::Shape::Sequential,
        },
    };
    dyngroups::synth::generate(&spec, &args.out)?;
    println!(
        "wrote {} users, their enrollments, the org tree{} to {} in {:.1} s",
        args.users,
        if args.rules > 0 {
            format!(" and {} rules", args.rules)
        } else {
            String::new()
        },
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
