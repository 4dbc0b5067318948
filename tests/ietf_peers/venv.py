"""The aiomoqt 0.5.3 peer's own virtual environment (it needs qh3 1.9.x; the relay uses qh3 2.x).

Created once, under `.venv-aiomoqt/` at the top of the checkout (gitignored), by the recipe
`python3 -m venv .venv-aiomoqt && .venv-aiomoqt/bin/pip install aiomoqt==0.5.3 qh3==1.9.4`, and
reused while it still imports aiomoqt. `.ci/run` prepares it before the test command; the tests
create it themselves when it is missing, and skip (saying why) when pip cannot install it.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-aiomoqt"
PYTHON = VENV / "bin" / "python"
REQUIREMENTS = ["aiomoqt==0.5.3", "qh3==1.9.4"]
PEERS = Path(__file__).resolve().parent
PROBE = "import importlib.metadata as m, aiomoqt.client; print(m.version('aiomoqt'), m.version('qh3'))"


def _works() -> bool:
    if not PYTHON.exists():
        return False
    probe = subprocess.run([str(PYTHON), "-c", PROBE], capture_output=True, text=True, timeout=60)
    return probe.returncode == 0 and probe.stdout.split() == [r.split("==")[1] for r in REQUIREMENTS]


def ensure() -> tuple[Path | None, str]:
    """(the venv's python, "") when aiomoqt 0.5.3 is there or could be installed, else
    (None, why not)."""
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(ROOT / ".venv-aiomoqt.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one creator at a time (parallel test runs)
        if _works():
            return PYTHON, ""
        steps = [[sys.executable, "-m", "venv", "--clear", str(VENV)],
                 [str(VENV / "bin" / "pip"), "install", "-q", *REQUIREMENTS]]
        for step in steps:
            try:
                done = subprocess.run(step, capture_output=True, text=True, timeout=600)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return None, f"{' '.join(step[:3])}: {exc}"
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                return None, f"{' '.join(step[:3])} failed: {' | '.join(tail)}"
        if not _works():
            return None, f"{VENV} does not import aiomoqt {REQUIREMENTS[0]} with {REQUIREMENTS[1]}"
        return PYTHON, ""


if __name__ == "__main__":  # .ci/run: prepare it ahead of the tests
    python, why = ensure()
    print(python if python else f"aiomoqt venv not available: {why}", file=sys.stderr if why else sys.stdout)
    sys.exit(0)
