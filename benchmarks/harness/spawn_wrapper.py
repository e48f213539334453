"""Run a command and write its wall time, exit code and peak RSS as JSON to a file.

Usage: python -S spawn_wrapper.py RESULT.json COMMAND [ARGS...]

Run as a fresh, small process on purpose: a child's ``ru_maxrss`` includes the memory of
the process that spawned it (up to its exec), so spawning from the benchmark runner itself
would count the runner's own memory. Standard library only (works with ``python -S``).
"""

import json
import os
import sys
import time


def main() -> int:
    result_path, cmd = sys.argv[1], sys.argv[2:]
    start = time.perf_counter()
    pid = os.posix_spawnp(cmd[0], cmd, os.environ)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    result = {"seconds": seconds, "returncode": code, "maxrss_kib": usage.ru_maxrss}
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
