"""Loads each case directory's Parquet files into a scratch PostgreSQL
database (through psql, reading Parquet with DuckDB), runs the case's
query.sql there and prints one JSON line per case: {"case", "rows"} or
{"case", "error"}. Each group-KEY.sql beside it, a query of one group's
members, adds rows [KEY, user_id]. The database is UTF-8 with C ordering and a C.UTF-8
character type, so lower() knows non-ASCII letters."""
import csv
import glob
import io
import json
import os
import subprocess
import sys

import duckdb

TABLES = ["users", "enrollments", "org", "memberships", "committed"]
PG_TYPES = {
    "VARCHAR": "TEXT",
    "DOUBLE": "DOUBLE PRECISION",
    "UINTEGER": "BIGINT",
    "BIGINT": "BIGINT",
    "DATE": "DATE",
    "BOOLEAN": "BOOLEAN",
}
DATABASE = f"dyngroups_sql_test_{os.getpid()}"


def psql(database, script):
    return subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database, "-f", "-"],
        input=script.encode(),
        capture_output=True,
    )


def load(con, case, table):
    relation = con.sql(f"SELECT * FROM read_parquet('{case}/{table}.parquet')")
    columns = ", ".join(f'"{name}" {PG_TYPES[str(kind)]}' for name, kind in zip(relation.columns, relation.types))
    path = f"{case}/{table}.csv"
    con.execute(f"COPY (SELECT * FROM read_parquet('{case}/{table}.parquet')) TO '{path}' (HEADER false)")
    return f'CREATE TABLE {table} ({columns});\n\\copy {table} FROM \'{path}\' WITH (FORMAT csv)\n'


created = psql(
    "postgres",
    f"CREATE DATABASE {DATABASE} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C.UTF-8';",
)
if created.returncode != 0:
    sys.exit(created.stderr.decode())
try:
    for case in sys.argv[1:]:
        con = duckdb.connect()
        script = "DROP SCHEMA IF EXISTS c CASCADE; CREATE SCHEMA c; SET search_path = c;\n"
        script += "".join(load(con, case, table) for table in TABLES)
        con.close()
        if os.path.exists(f"{case}/query.sql"):
            with open(f"{case}/query.sql", encoding="utf-8") as f:
                script += f"COPY ({f.read()}) TO STDOUT WITH (FORMAT csv);\n"
        for path in sorted(glob.glob(f"{case}/group-*.sql")):
            # Group keys are plain names: letters, digits, `_` and `-`.
            key = os.path.basename(path)[len("group-") : -len(".sql")]
            with open(path, encoding="utf-8") as f:
                script += f"COPY (SELECT '{key}', user_id FROM ({f.read()}) AS q) TO STDOUT WITH (FORMAT csv);\n"
        result = psql(DATABASE, script)
        if result.returncode != 0:
            print(json.dumps({"case": case, "error": result.stderr.decode()}))
            continue
        # (group, user_id), or (group, user_id, change) for the changes query.
        rows = [[row[0], int(row[1]), *row[2:]] for row in csv.reader(io.StringIO(result.stdout.decode()))]
        print(json.dumps({"case": case, "rows": rows}))
finally:
    psql("postgres", f"DROP DATABASE IF EXISTS {DATABASE};")
