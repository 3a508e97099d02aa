"""Runs each case directory's members.py (from `dyngroups polars`) over the
case's Parquet files and prints one JSON line per case: {"case", "rows"} or
{"case", "error"}. Used by tests/integration/sql.rs."""
import importlib.util
import json
import sys

import polars as pl

TABLES = ["users", "enrollments", "org", "memberships", "committed"]

for case in sys.argv[1:]:
    try:
        spec = importlib.util.spec_from_file_location("members", f"{case}/members.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        frames = {table: pl.read_parquet(f"{case}/{table}.parquet") for table in TABLES}
        result = module.members(**frames)
        rows = [
            [group, int(user)]
            for group in result.columns[1:]
            for user in result.filter(pl.col(group))["user_id"]
        ]
        print(json.dumps({"case": case, "rows": rows}))
    except Exception as e:
        print(json.dumps({"case": case, "error": f"{type(e).__name__}: {e}"}))
