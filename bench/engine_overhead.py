"""Engine overhead, two measures, both sides interleaved round by round in one process:

1. Without Prefect: a 200-step no-op blueprint on the engine's thread executor (scheduler, rendering, journal,
   summary) vs the same 200 no-op calls on a bare ThreadPoolExecutor.  Prints the overhead per step (target
   <= 1 ms).
2. With Prefect: the same blueprint as the run-blueprint flow vs 200 bare Prefect tasks in a flow, same task
   runner.  Prints min and median of each and the median ratio blueprint/bare (target <= 1.10).
"""

import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("VICFLOW_PLUGINS", "tests.plugins.engine_steps")
os.environ["VICFLOW_DISABLE_PLUGIN_AUTOLOAD"] = "1"
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("VICFLOW_STATE_DIR", tempfile.mkdtemp())

STEPS, ROUNDS = 200, 9


def rounds(sides: dict) -> dict[str, list[float]]:
    """Each side once per round, in turn, so that a noisy moment hits both."""
    timings: dict[str, list[float]] = {name: [] for name in sides}
    for fn in sides.values():
        fn()  # warm up
    for _ in range(ROUNDS):
        for name, fn in sides.items():
            started = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - started)
    return timings


def show(timings: dict[str, list[float]]) -> None:
    for name, samples in timings.items():
        print(f"  {name:<28} min {min(samples):.3f}s  median {statistics.median(samples):.3f}s")


def without_prefect(path: Path) -> None:
    from vicflow.flows.engine import execution
    from vicflow.flows.engine.thread_executor import ThreadSteps
    from vicflow.flows.language import blueprint as bp
    from vicflow.plugins.manager import default_registry

    registry = default_registry()
    document = bp.load(str(path), registry)

    def core() -> None:
        execution.execute(document, {}, registry, os.urandom(8).hex(), executor=ThreadSteps)

    def bare() -> None:
        with ThreadPoolExecutor(execution.MAX_PARALLEL_STEPS) as pool:
            for future in [pool.submit(lambda: {}) for _ in range(STEPS)]:
                future.result()

    timings = rounds({"bare ThreadPoolExecutor": bare, "blueprint, thread executor": core})
    print(f"without Prefect ({STEPS} no-op steps, {ROUNDS} rounds):")
    show(timings)
    per_step = (statistics.median(timings["blueprint, thread executor"]) - statistics.median(timings["bare ThreadPoolExecutor"])) / STEPS  # fmt: skip
    print(f"  overhead per step: {per_step * 1000:.2f} ms (target <= 1 ms)")


def with_prefect(path: Path) -> None:
    from prefect import flow, task
    from prefect.cache_policies import NONE
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect.testing.utilities import prefect_test_harness
    from vicflow.flows.engine.execution import MAX_PARALLEL_STEPS
    from vicflow.flows.on_prefect.flow import run_blueprint

    @task(cache_policy=NONE, persist_result=False)
    def noop(i: int) -> dict:
        return {}

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=MAX_PARALLEL_STEPS), persist_result=False)
    def bare() -> None:
        futures = [noop.with_options(name=f"s{i}").submit(i) for i in range(STEPS)]
        for future in futures:
            future.wait()

    with prefect_test_harness(server_startup_timeout=90):
        timings = rounds(
            {"bare Prefect tasks": bare, "blueprint, Prefect flow": lambda: run_blueprint(blueprint=str(path))}
        )
    print(f"with Prefect ({STEPS} no-op steps, {ROUNDS} rounds):")
    show(timings)
    ratio = statistics.median(timings["blueprint, Prefect flow"]) / statistics.median(timings["bare Prefect tasks"])
    print(f"  median ratio blueprint/bare: {ratio:.2f} (target <= 1.10)")


def main() -> None:
    path = Path(tempfile.mkdtemp()) / "noop.yaml"
    path.write_text("name: noop\nsteps:\n" + "".join(f"  - id: s{i}\n    uses: noop\n" for i in range(STEPS)))
    without_prefect(path)
    if "--no-prefect" not in sys.argv:
        with_prefect(path)


if __name__ == "__main__":
    main()
