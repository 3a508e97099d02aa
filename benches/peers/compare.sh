#!/usr/bin/env bash
# The peer comparison: dyngroups against DuckDB (one query per rule, and one
# wide query, both from `dyngroups sql`), ClickHouse as chDB and, when asked
# for, Spark in local mode (their wide queries) and Polars (one wide select,
# from `dyngroups polars`) on the same generated population.
#
#   benches/peers/compare.sh --users 1000000 --rules 100     # README figures
#   benches/peers/compare.sh --users 2000 --rules 20 --repeat 1 --dyngroups target/debug/dyngroups   # CI smoke run
#
# Installs the pinned peers into their own virtual environment
# (target/peers-venv) and builds dyngroups in release mode unless
# --dyngroups names a binary. Other options: see compare.py --help.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/peers-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check duckdb==1.5.6 pyarrow==26.0.1 polars==2.1.0 chdb==4.4.0
# Spark (asked for with --contenders ...,spark) needs Java as well.
if [[ " $* " == *spark* ]]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check pyspark==4.3.0
fi
if [[ " $* " != *" --dyngroups "* ]]; then
    cargo build --release --quiet
fi
exec "$venv/bin/python" benches/peers/compare.py "$@"
