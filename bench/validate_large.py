"""`vicflow validate` on a generated 1,000-step blueprint, timed after import (target < 0.5 s)."""

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("VICFLOW_PLUGINS", "tests.plugins.engine_steps")
os.environ["VICFLOW_DISABLE_PLUGIN_AUTOLOAD"] = "1"


def generate(steps: int) -> str:
    lines = ["name: large", "inputs:", "  port: {type: integer, default: 2375}", "steps:"]
    for i in range(steps):
        lines += [f"  - id: s{i}", "    uses: typed" if i % 2 else "    uses: echo"]
        if i % 2:
            lines += [
                "    with:",
                '      host: "${{ steps.s%d.outputs.message }}"' % (i - 1),
                '      port: "${{ inputs.port }}"',
            ]
        else:
            lines += ['    with: {message: "host-%d", value: %d}' % (i, i)]
        if i >= 10 and i % 10 == 0:
            lines += [f"    needs: [s{i - 10}, s{i - 5}]"]
    return "\n".join(lines) + "\n"


def main() -> None:
    from vicflow.flows.cli.main import main as cli_main
    from vicflow.flows.language import blueprint
    from vicflow.plugins.manager import default_registry

    path = Path(tempfile.mkdtemp()) / "large.yaml"
    path.write_text(generate(1000))
    default_registry()
    timings = []
    for _ in range(5):
        blueprint.expressions._compiled_expression.cache_clear()
        blueprint.expressions._parse.cache_clear()
        started = time.perf_counter()
        assert cli_main(["validate", str(path)]) == 0
        timings.append(time.perf_counter() - started)
    print(
        f"validate 1,000 steps ({path.stat().st_size // 1024} KiB): median {statistics.median(timings):.3f}s, "
        f"max {max(timings):.3f}s (target < 0.5 s after import)"
    )


if __name__ == "__main__":
    main()
