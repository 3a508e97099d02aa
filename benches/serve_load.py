#!/usr/bin/env python3
"""Load check of `dyngroups serve`: concurrent previews against one server.

    benches/serve_load.py --data DIR [--requests 50] [--dyngroups target/release/dyngroups]

DIR holds a population from `dyngroups gen` (users.parquet,
enrollments.parquet, org.parquet, rules.rules). The script starts the
server on a free loopback port, waits for it to load, sends --requests
previews at once (field rules, enrollment rules and `contains`, in turn),
and prints the latency of each kind and of all: p50 and p99 as the client
sees them, and the server's own time per evaluation; it exits non-zero if
any request failed.
"""

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

RULES = [
    ("field", 'department == "Engineering"'),
    ("field", "grade >= 4 and grade <= 6"),
    ("enrollment", 'completed("C-0001")'),
    ("enrollment", 'enrolled("C-0002") and not completed("C-0002")'),
    ("contains", 'email contains "okafor"'),
]


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--dyngroups", default="target/release/dyngroups")
    parser.add_argument("--as-of", default="2026-11-22")
    args = parser.parse_args()

    started = time.monotonic()
    server = subprocess.Popen(
        [
            args.dyngroups, "serve",
            "--users", f"{args.data}/users.parquet",
            "--enrollments", f"{args.data}/enrollments.parquet",
            "--org", f"{args.data}/org.parquet",
            "--as-of", args.as_of,
            "--listen", "127.0.0.1:0",
            "--timeout", "120",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for line in server.stdout:
            if line.startswith("serving the rule tester on "):
                url = line.split()[5].rstrip("/")
                break
        else:
            sys.exit("the server stopped before it listened")
        print(f"loaded in {time.monotonic() - started:.1f} s; {args.requests} previews at once")

        results = [None] * args.requests
        barrier = threading.Barrier(args.requests)

        def preview(i):
            kind, rule = RULES[i % len(RULES)]
            body = json.dumps({"rule": rule}).encode()
            request = urllib.request.Request(
                f"{url}/api/preview", data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            barrier.wait()
            sent = time.monotonic()
            try:
                with urllib.request.urlopen(request, timeout=300) as response:
                    answer = json.load(response)
                    results[i] = (kind, response.status, (time.monotonic() - sent) * 1e3, answer["elapsed_ms"])
            except urllib.error.HTTPError as error:
                results[i] = (kind, error.code, (time.monotonic() - sent) * 1e3, None)

        threads = [threading.Thread(target=preview, args=(i,)) for i in range(args.requests)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        server.terminate()
        server.wait()

    failed = [r for r in results if r is None or r[1] != 200]
    print("| requests | kind | p50 (client) | p99 (client) | median server time |")
    print("|---|---|---|---|---|")
    for kind in ["field", "enrollment", "contains", "all"]:
        mine = [r for r in results if r and r[1] == 200 and (kind == "all" or r[0] == kind)]
        if not mine:
            continue
        client = [r[2] for r in mine]
        server_ms = [r[3] for r in mine]
        print(
            f"| {len(mine)} | {kind} | {percentile(client, 0.5):.0f} ms | {percentile(client, 0.99):.0f} ms "
            f"| {statistics.median(server_ms):.1f} ms |"
        )
    print(f"failed: {len(failed)} of {args.requests}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
