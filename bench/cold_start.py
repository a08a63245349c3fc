"""Cold start of `vicflow --help` and `vicflow validate` vs `python -c "import prefect"` (target: faster)."""

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = dict(
    os.environ, PYTHONPATH=str(REPO), VICFLOW_PLUGINS="tests.plugins.engine_steps", VICFLOW_DISABLE_PLUGIN_AUTOLOAD="1"
)
ROUNDS = 7


def timed(args: list[str]) -> float:
    samples = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        subprocess.run(args, env=ENV, check=True, capture_output=True, cwd=REPO)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    blueprint = REPO / "tests" / "data" / "engine-demo.yaml"
    baseline = timed([sys.executable, "-c", "import prefect"])
    helps = timed([sys.executable, "-m", "vicflow.flows.cli", "--help"])
    validate = timed([sys.executable, "-m", "vicflow.flows.cli", "validate", str(blueprint)])
    print(f"python -c 'import prefect': {baseline:.3f}s (baseline)")
    print(f"vicflow --help:             {helps:.3f}s  ratio {helps / baseline:.2f}")
    print(f"vicflow validate:           {validate:.3f}s  ratio {validate / baseline:.2f} (target: both < 1.00)")


if __name__ == "__main__":
    main()
