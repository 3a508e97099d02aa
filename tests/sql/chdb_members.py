"""Runs each case directory's query.sql in ClickHouse (embedded, through
chDB) over the case's Parquet files and prints one JSON line per case:
{"case", "rows"} or {"case", "error"}, a row being [group, user_id] or, for
the changes query, [group, user_id, change]. Each group-KEY.sql beside it,
a query of one group's members, adds rows [KEY, user_id]. Used by
tests/integration/sql.rs and benches/peers."""
import glob
import json
import os
import sys

from chdb import session

TABLES = ["users", "enrollments", "org", "memberships", "committed"]

# The settings docs/warehouse.md gives for queries of thousands of rules.
SETTINGS = [
    "SET max_query_size = 1073741824",
    "SET max_ast_elements = 10000000",
    "SET max_expanded_ast_elements = 10000000",
    "SET session_timezone = 'UTC'",
]

con = session.Session()
for setting in SETTINGS:
    con.query(setting)


def rows_of(query):
    result = con.query(query, "JSONCompact")
    return json.loads(result.bytes() or b'{"data": []}')["data"]


for case in sys.argv[1:]:
    try:
        for table in TABLES:
            path = os.path.abspath(f"{case}/{table}.parquet").replace("'", "\\'")
            con.query(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM file('{path}', Parquet)")
        rows = []
        if os.path.exists(f"{case}/query.sql"):
            with open(f"{case}/query.sql", encoding="utf-8") as f:
                # (group, user_id), or (group, user_id, change) for the changes query.
                rows += [[row[0], int(row[1]), *row[2:]] for row in rows_of(f.read())]
        for path in sorted(glob.glob(f"{case}/group-*.sql")):
            key = os.path.basename(path)[len("group-") : -len(".sql")]
            with open(path, encoding="utf-8") as f:
                rows += [[key, int(row[0])] for row in rows_of(f.read())]
        print(json.dumps({"case": case, "rows": rows}), flush=True)
    except Exception as e:  # noqa: BLE001 - every engine error is the case's result
        print(json.dumps({"case": case, "error": str(e)}), flush=True)
