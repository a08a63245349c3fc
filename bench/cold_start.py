"""Cold start of `vicflow --help`, `vicflow validate` and `vicflow plan vch` (against the vCenter simulator)
vs `python -c "import prefect"`, measured in the same run (target: each faster, ratio < 1.00)."""

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the test bed (tests.testbed) starts the simulator
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


def plan_vch_command(folder: Path, sim) -> list[str]:
    """`vicflow plan vch` with the simulator's inventory (tests/demo.py's values, the ones vch declares)."""
    import yaml

    from tests.demo import full_stack_inputs

    declared = yaml.safe_load((REPO / "blueprints" / "vch.yaml").read_text())["inputs"]
    inputs = {k: v for k, v in full_stack_inputs(sim, "vch-bench", folder).items() if k in declared}
    (folder / "inputs.yaml").write_text(yaml.safe_dump(inputs))
    for iso in ("appliance.iso", "bootstrap.iso"):
        (folder / iso).write_bytes(b"iso\n")
    return [sys.executable, "-m", "vicflow.flows.cli.main", "plan", "vch", "--inputs", str(folder / "inputs.yaml"),
            "--set", f"password={sim.password}"]  # fmt: skip


def main() -> None:
    import tempfile

    from tests.testbed import vcsim

    blueprint = REPO / "tests" / "data" / "engine-demo.yaml"
    sim = vcsim.start(hosts=3)
    try:
        with tempfile.TemporaryDirectory() as folder:
            plan = plan_vch_command(Path(folder), sim)
            subprocess.run(plan, env=ENV, check=True, capture_output=True, cwd=REPO)  # it plans, and says so
            baseline = timed([sys.executable, "-c", "import prefect"])
            helps = timed([sys.executable, "-m", "vicflow.flows.cli.main", "--help"])
            validate = timed([sys.executable, "-m", "vicflow.flows.cli.main", "validate", str(blueprint)])
            planned = timed(plan)
    finally:
        sim.stop()
    print(f"python -c 'import prefect': {baseline:.3f}s (baseline)")
    print(f"vicflow --help:             {helps:.3f}s  ratio {helps / baseline:.2f}")
    print(f"vicflow validate:           {validate:.3f}s  ratio {validate / baseline:.2f}")
    print(f"vicflow plan vch (vcsim):   {planned:.3f}s  ratio {planned / baseline:.2f} (target: each < 1.00)")


if __name__ == "__main__":
    main()
