"""Runs each case directory's query.sql in Apache Spark (local mode, through
pyspark) over the case's Parquet files and prints one JSON line per case:
{"case", "rows"} or {"case", "error"}, a row being [group, user_id] or, for
the changes query, [group, user_id, change]. Each group-KEY.sql beside it,
a query of one group's members, adds rows [KEY, user_id]. Used by
tests/integration/sql.rs."""
import glob
import json
import os
import sys

from pyspark.sql import SparkSession

TABLES = ["users", "enrollments", "org", "memberships", "committed"]

spark = (
    SparkSession.builder.master("local[2]")
    .appName("dyngroups-sql-test")
    .config("spark.ui.enabled", "false")
    .config("spark.sql.shuffle.partitions", "2")
    .config("spark.sql.session.timeZone", "UTC")
    .getOrCreate()
)
spark.sparkContext.setLogLevel("ERROR")


def rows_of(path):
    with open(path, encoding="utf-8") as f:
        return spark.sql(f.read()).collect()


for case in sys.argv[1:]:
    try:
        for table in TABLES:
            spark.read.parquet(f"{case}/{table}.parquet").createOrReplaceTempView(table)
        rows = []
        if os.path.exists(f"{case}/query.sql"):
            # (group, user_id), or (group, user_id, change) for the changes query.
            rows += [[row[0], int(row[1]), *row[2:]] for row in rows_of(f"{case}/query.sql")]
        for path in sorted(glob.glob(f"{case}/group-*.sql")):
            key = os.path.basename(path)[len("group-") : -len(".sql")]
            rows += [[key, int(row[0])] for row in rows_of(path)]
        print(json.dumps({"case": case, "rows": rows}), flush=True)
    except Exception as e:  # noqa: BLE001 - every engine error is the case's result
        print(json.dumps({"case": case, "error": str(e)}), flush=True)
spark.stop()
