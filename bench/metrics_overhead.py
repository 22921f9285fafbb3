"""What recording metrics costs on the hot paths: a forward-auth decision (counter + histogram) and a request count.

Runs in this process and in a child with PROMETHEUS_MULTIPROC_DIR set (values
in mmap files, as under gunicorn); prints microseconds per call and asserts
nothing about time. Takes a few seconds.

    .venv/bin/python bench/metrics_overhead.py [--calls 200000]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import timeit

from ctfhost import metrics


def measure(calls):
    figures = {
        "forward-auth decision": timeit.timeit(lambda: metrics.record_forward_auth(200, 0.0012), number=calls),
        "HTTP request count": timeit.timeit(
            lambda: metrics.record_http_request("/api/v1/auth/forward", "GET", 200), number=calls),
    }
    mode = "multiprocess" if metrics.MULTIPROCESS else "in-process"
    for what, seconds in figures.items():
        print(f"{mode:>12}  {what:<22} {seconds / calls * 1e6:6.2f} us per call")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    measure(args.calls)
    if not args.child and not metrics.MULTIPROCESS:
        with tempfile.TemporaryDirectory() as directory:
            env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=directory)
            subprocess.run([sys.executable, __file__, "--calls", str(args.calls), "--child"], env=env, check=True)


if __name__ == "__main__":
    main()
