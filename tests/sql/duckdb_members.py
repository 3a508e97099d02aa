"""Runs each case directory's query.sql in DuckDB over the case's Parquet
files and prints one JSON line per case: {"case", "rows"} or {"case", "error"},
a row being [group, user_id] or, for the changes query, [group, user_id, change].
Each group-KEY.sql beside it, a query of one group's members, adds rows
[KEY, user_id]. Used by tests/integration/sql.rs and benches/peers."""
import glob
import json
import os
import sys

import duckdb

TABLES = ["users", "enrollments", "org", "memberships", "committed"]

for case in sys.argv[1:]:
    con = duckdb.connect()
    try:
        for table in TABLES:
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{case}/{table}.parquet')")
        rows = []
        if os.path.exists(f"{case}/query.sql"):
            with open(f"{case}/query.sql", encoding="utf-8") as f:
                query = f.read()
            # (group, user_id), or (group, user_id, change) for the changes query.
            rows += [[row[0], int(row[1]), *row[2:]] for row in con.execute(query).fetchall()]
        for path in sorted(glob.glob(f"{case}/group-*.sql")):
            key = os.path.basename(path)[len("group-") : -len(".sql")]
            with open(path, encoding="utf-8") as f:
                rows += [[key, int(row[0])] for row in con.execute(f.read()).fetchall()]
        print(json.dumps({"case": case, "rows": rows}))
    except duckdb.Error as e:
        print(json.dumps({"case": case, "error": str(e)}))
    finally:
        con.close()
