"""Engine overhead: a 200-step no-op blueprint vs 200 bare Prefect tasks, same process and settings.

Prints the median wall time of each over several rounds and the ratio blueprint/bare (target <= 1.25).
"""

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("VICFLOW_PLUGINS", "tests.plugins.engine_steps")
os.environ["VICFLOW_DISABLE_PLUGIN_AUTOLOAD"] = "1"
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("VICFLOW_STATE_DIR", tempfile.mkdtemp())

STEPS, ROUNDS = 200, 5


def main() -> None:
    from prefect import flow, task
    from prefect.cache_policies import NONE
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect.testing.utilities import prefect_test_harness
    from vicflow.flows.flow import run_blueprint

    path = Path(tempfile.mkdtemp()) / "noop.yaml"
    path.write_text("name: noop\nsteps:\n" + "".join(f"  - id: s{i}\n    uses: noop\n" for i in range(STEPS)))

    @task(cache_policy=NONE, persist_result=False)
    def noop(i: int) -> dict:
        return {}

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=16), persist_result=False)
    def bare() -> None:
        futures = [noop.with_options(name=f"s{i}").submit(i) for i in range(STEPS)]
        for future in futures:
            future.wait()

    with prefect_test_harness(server_startup_timeout=90):
        bare()
        run_blueprint(blueprint=str(path))  # warm up both
        timings = {"bare": [], "blueprint": []}
        for _ in range(ROUNDS):
            for name, fn in (("bare", bare), ("blueprint", lambda: run_blueprint(blueprint=str(path)))):
                started = time.perf_counter()
                fn()
                timings[name].append(time.perf_counter() - started)
    bare_s, bp_s = statistics.median(timings["bare"]), statistics.median(timings["blueprint"])
    print(
        f"{STEPS} bare Prefect tasks: median {bare_s:.2f}s  (rounds: {', '.join(f'{t:.2f}' for t in timings['bare'])})"
    )
    print(
        f"{STEPS}-step blueprint:    median {bp_s:.2f}s  "
        f"(rounds: {', '.join(f'{t:.2f}' for t in timings['blueprint'])})"
    )
    print(f"ratio blueprint/bare: {bp_s / bare_s:.2f} (target <= 1.25)")


if __name__ == "__main__":
    main()
