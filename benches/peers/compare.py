"""Side-by-side comparison of dyngroups with DuckDB, ClickHouse and Polars on the same
generated population and rules, end to end: load the Parquet files,
evaluate every group, hand back the members (dyngroups also diffs and
commits its state).

Every contender runs in its own process, so its wall time and peak RSS are
its own; each is run --repeat times and the median wall time is reported,
with the ratio to dyngroups' median from the same run. DuckDB runs the SQL
that `dyngroups sql` writes: one query per group, and one wide query for all.
ClickHouse (embedded, as chDB) runs the wide query of `dyngroups sql
--dialect clickhouse`, and Apache Spark (local mode, pyspark; asked for with
--contenders, as it needs Java) that of `--dialect spark`.
Polars runs the module that `dyngroups polars` writes: one wide select over
lazily scanned Parquet, the enrollment conditions tallied in one group_by.
Every contender's member count per group must equal dyngroups', or the
table says so.

Run through compare.sh, which installs the pinned peers into their own
virtual environment.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

AS_OF = "2026-11-22"
TABLES = ["users", "enrollments", "org"]


def data_args(data):
    return [
        "--users", f"{data}/users.parquet",
        "--enrollments", f"{data}/enrollments.parquet",
        "--org", f"{data}/org.parquet",
        "--as-of", AS_OF,
    ]


def split_queries(sql):
    """The per-group queries of `dyngroups sql` output, by group key."""
    queries = {}
    for block in sql.split("\n\n"):
        match = re.match(r"-- group (\S+)\n(.*);\s*$", block, re.S)
        if match:
            queries[match.group(1)] = match.group(2)
    return queries


def worker(args):
    """One contender, in this process: prints {group: member count} as JSON."""
    if args.contender == "dyngroups":
        state = tempfile.mkdtemp(prefix="dyngroups-state-")
        members_out = ["--members-out", f"{state}/members.parquet"] if args.members_parquet else []
        subprocess.run(
            [args.dyngroups, "run", "--rules", f"{args.data}/rules.rules", *data_args(args.data), "--state", state,
             *members_out],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            [args.dyngroups, "groups", "--state", state, "--out", f"{state}/groups.jsonl"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        counts = {}
        with open(f"{state}/groups.jsonl", encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                counts[row["group"]] = int(row["members"])
        shutil.rmtree(state)
        print(json.dumps(counts))
        return
    if args.contender == "polars-wide":
        import importlib.util

        import polars as pl

        spec = importlib.util.spec_from_file_location("members", f"{args.data}/rules.polars.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        result = module.members(
            pl.scan_parquet(f"{args.data}/users.parquet"),
            pl.scan_parquet(f"{args.data}/enrollments.parquet"),
            pl.read_parquet(f"{args.data}/org.parquet"),
        )
        counts = {key: int(n) for key, n in result.drop("user_id").sum().row(0, named=True).items()}
        if args.members_parquet:
            # The same (group, user_id) rows as dyngroups' --members-out.
            keys = [key for key in result.columns if key != "user_id"]
            wide = result.lazy()
            rows = pl.concat(
                [wide.filter(pl.col(key)).select(pl.lit(key).alias("group"), pl.col("user_id")) for key in keys]
            )
            path = tempfile.mktemp(prefix="polars-members-", suffix=".parquet")
            rows.sink_parquet(path)
            os.remove(path)
        print(json.dumps(counts))
        return
    if args.contender == "chdb":
        print(json.dumps(chdb_counts(args)))
        return
    if args.contender == "spark":
        print(json.dumps(spark_counts(args)))
        return
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {os.cpu_count()}")
    for table in TABLES:
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM read_parquet('{args.data}/{table}.parquet')")
    con.execute('CREATE TABLE committed ("group" VARCHAR, user_id UINTEGER)')
    with open(args.sql, encoding="utf-8") as f:
        sql = f.read()
    counts = {}
    if args.contender == "duckdb-per-rule":
        for key, query in split_queries(sql).items():
            counts[key] = con.execute(query).fetch_arrow_table().num_rows
    else:
        combined = sql.split("-- every group a run commits, as (group, user_id)\n", 1)[1].rstrip().rstrip(";")
        # The rows are counted where they are made, as a warehouse would
        # write them to a table: sending 200M rows to Python is not the
        # query's cost.
        counts = group_counts(args, con.execute(f'SELECT "group", count(*) FROM ({combined}) AS members GROUP BY 1').fetchall())
    print(json.dumps(counts))


def group_counts(args, rows):
    """{group: member count} of (group, count) rows, counted in the engine;
    a group without members has no row there, and counts 0."""
    with open(args.sql, encoding="utf-8") as f:
        counts = {key: 0 for key in split_queries(f.read())}
    for key, n in rows:
        counts[key] = int(n)
    return counts


def combined_query(args, dialect):
    """The combined query written for `dialect`, without its `;`."""
    with open(f"{args.data}/rules.{dialect}.sql", encoding="utf-8") as f:
        return f.read().rstrip().rstrip(";")


def chdb_counts(args):
    """{group: member count} of the ClickHouse combined query, run in chDB
    over tables loaded into memory first, as DuckDB's are."""
    from chdb import session

    con = session.Session()
    # Queries of thousands of rules outgrow the default parser limits.
    for setting in ["max_query_size = 1073741824", "max_ast_elements = 10000000",
                    "max_expanded_ast_elements = 10000000", f"max_threads = {os.cpu_count()}"]:
        con.query(f"SET {setting}")
    for table in TABLES:
        con.query(f"CREATE TABLE {table} ENGINE = Memory AS SELECT * FROM file('{args.data}/{table}.parquet', Parquet)")
    con.query("CREATE TABLE committed (`group` String, user_id UInt32) ENGINE = Memory")
    combined = combined_query(args, "clickhouse")
    result = con.query(f"SELECT `group`, count() FROM ({combined}) AS members GROUP BY 1", "JSONCompact")
    return group_counts(args, json.loads(result.bytes())["data"])


def spark_counts(args):
    """{group: member count} of the Spark combined query, in local mode on
    every core, over tables cached in memory first, as DuckDB's are."""
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master(f"local[{os.cpu_count()}]")
        .config("spark.driver.memory", "12g")
        # The code Spark generates for a thousand groups is past the JVM's
        # 8,000-byte limit for compiling a method, and runs interpreted
        # without this: 355 s instead of 183 s (1M users, 1,000 rules).
        .config("spark.driver.extraJavaOptions", "-XX:-DontCompileHugeMethods")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    for table in TABLES:
        frame = spark.read.parquet(f"{args.data}/{table}.parquet").cache()
        frame.count()
        frame.createOrReplaceTempView(table)
    spark.sql("CREATE TEMPORARY VIEW committed AS SELECT CAST(NULL AS STRING) AS `group`, 0 AS user_id WHERE 1 = 0")
    combined = combined_query(args, "spark")
    counts = group_counts(args, spark.sql(f"SELECT `group`, count(*) FROM ({combined}) AS members GROUP BY 1").collect())
    spark.stop()
    return counts


def human_bytes(n):
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--data", help="population directory (default: generated under /tmp)")
    parser.add_argument("--dyngroups", default="target/release/dyngroups")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=900, help="seconds per contender run")
    parser.add_argument(
        "--contenders", default="dyngroups,duckdb-per-rule,duckdb-wide,chdb,polars-wide", help="comma-separated"
    )
    parser.add_argument(
        "--members-parquet",
        action="store_true",
        help="dyngroups and Polars also write every (group, user_id) membership to a Parquet file",
    )
    parser.add_argument("--worker", dest="contender", help=argparse.SUPPRESS)
    parser.add_argument("--sql", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.contender:
        worker(args)
        return

    data = args.data or f"/tmp/dyngroups-peers-{args.users}-{args.rules}"
    if not os.path.exists(f"{data}/rules.rules"):
        subprocess.run(
            [args.dyngroups, "gen", "--users", str(args.users), "--rules", str(args.rules),
             "--as-of", AS_OF, "--out", data],
            check=True,
        )
    sql_path = f"{data}/rules.duckdb.sql"
    with open(sql_path, "w", encoding="utf-8") as f:
        subprocess.run(
            [args.dyngroups, "sql", "--rules", f"{data}/rules.rules", *data_args(data), "--dialect", "duckdb"],
            check=True,
            stdout=f,
        )
    for dialect in ["clickhouse", "spark"]:
        with open(f"{data}/rules.{dialect}.sql", "w", encoding="utf-8") as f:
            subprocess.run(
                [args.dyngroups, "sql", "--rules", f"{data}/rules.rules", *data_args(data), "--dialect", dialect,
                 "--combined"],
                check=True,
                stdout=f,
            )
    with open(f"{data}/rules.polars.py", "w", encoding="utf-8") as f:
        subprocess.run(
            [args.dyngroups, "polars", "--rules", f"{data}/rules.rules", *data_args(data)],
            check=True,
            stdout=f,
        )

    results = {}
    expected = None
    for contender in args.contenders.split(","):
        runs, counts = [], None
        for _ in range(args.repeat):
            # A fresh process per run, so RUSAGE_CHILDREN holds this run only.
            command = [sys.executable, __file__, "--worker", contender, "--data", data,
                       "--dyngroups", args.dyngroups, "--sql", sql_path]
            if args.members_parquet:
                command.append("--members-parquet")
            outcome = measured(command, args.timeout)
            if not isinstance(outcome, tuple):
                runs = outcome
                break
            wall, peak, stdout = outcome
            runs.append((wall, peak))
            counts = json.loads(stdout)
        if contender == "dyngroups":
            expected = counts
        agrees = "—" if counts is None or expected is None else ("yes" if counts == expected else "NO")
        results[contender] = (runs, agrees)
        print(f"{contender}: {runs}", file=sys.stderr)

    dyngroups_runs = results.get("dyngroups", (None, None))[0]
    base = statistics.median(w for w, _ in dyngroups_runs) if isinstance(dyngroups_runs, list) else None
    outputs = ", members written to Parquet" if args.members_parquet else ""
    print(f"\n{args.users:,} users, {args.rules:,} rules, medians of {args.repeat} runs{outputs}\n")
    print("| contender | wall (median) | runs | peak RSS | × dyngroups | same members |")
    print("|---|---|---|---|---|---|")
    for contender, (runs, agrees) in results.items():
        if runs is None:
            print(f"| {contender} | did not finish in {args.timeout:.0f} s | | | | |")
            continue
        if isinstance(runs, str):
            print(f"| {contender} | failed: {runs} | | | | |")
            continue
        median = statistics.median(w for w, _ in runs)
        spread = ", ".join(f"{w:.2f}" for w, _ in runs)
        ratio = f"{median / base:.1f}×" if base else "—"
        print(f"| {contender} | {median:.2f} s | {spread} | {human_bytes(max(p for _, p in runs))} | {ratio} | {agrees} |")
    if any(agrees == "NO" for _, agrees in results.values()):
        sys.exit("a contender's members differ from dyngroups'")


def measured(command, timeout):
    """(wall seconds, peak RSS bytes, stdout) of command, None when it runs
    past timeout, or the last line of its error output when it fails. It runs under a fresh Python parent, so the peak RSS of the
    children is this command's alone."""
    probe = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.monotonic()\n"
        "p = subprocess.run(sys.argv[2:], capture_output=True, timeout=float(sys.argv[1]))\n"
        "w = time.monotonic() - t\n"
        "sys.stderr.write(p.stderr.decode())\n"
        "if p.returncode: sys.exit(p.returncode)\n"
        "print(json.dumps([w, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, p.stdout.decode()]))\n"
    )
    try:
        done = subprocess.run([sys.executable, "-c", probe, str(timeout), *command], capture_output=True)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        if b"TimeoutExpired" in done.stderr:
            return None
        sys.stderr.write(done.stderr.decode())
        return done.stderr.decode().strip().splitlines()[-1]
    wall, peak, stdout = json.loads(done.stdout)
    return wall, peak, stdout


if __name__ == "__main__":
    main()
