"""How long ``make demo`` takes to come up: from the command to its banner, step by step.

Starts ``make demo`` (with the environment it is given: ``LA_DEMO_DIR``, ports, ...), stamps
each line it prints with the seconds since the start, stops it (SIGTERM to its process group)
once the banner "label-assistant demo is up" is out, and prints the total. Run it twice: the
second run is the warm start a returning user sees (project, tasks and pre-labels reused).

    python scripts/time_demo_start.py [-- MAKE ARGUMENTS]

The README's warm-start figures come from this script.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from label_assistant.devtools.labelstudio_server import stop_process_group

ROOT = Path(__file__).resolve().parents[1]
BANNER = "label-assistant demo is up"


def main() -> int:
    extra = [a for a in sys.argv[1:] if a != "--"]
    started = time.monotonic()
    process = subprocess.Popen(["make", "--no-print-directory", "demo", *extra], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    up = None
    try:
        for line in process.stdout:
            print(f"{time.monotonic() - started:6.1f} s  {line.rstrip()}", flush=True)
            if BANNER in line:
                up = time.monotonic() - started
                break
    finally:
        stop_process_group(process, 60)
    if up is None:
        print(f"time_demo_start: make demo ended (exit {process.returncode}) without its "
              "banner", file=sys.stderr)
        return 1
    print(f"make demo was up after {up:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
