"""python -m tests.testbed [all|vcsim|dockerd|images|harbor|prefect-pg|prefect-ha|stop]: build and start the test bed by hand."""

import sys

from tests.testbed import TestbedError, dockerd, harbor, images, say, vcsim


def main(argv: list[str]) -> int:
    what = argv[0] if argv else "all"
    try:
        if what in ("all", "vcsim"):
            say(f"simulator binary: {vcsim.binary()}")
        if what in ("all", "dockerd", "images", "harbor"):
            engine = dockerd.start()
            say(f"Docker engine: {engine.socket_url}, {engine.plain_url}, {engine.tls_url} (TLS)")
        if what in ("all", "images", "harbor"):
            tags = images.build_all(engine.client())
            say(f"images ready: {', '.join(tags)}")
        if what == "harbor":
            harbor.start(engine)
        if what == "prefect-pg":  # PostgreSQL and a Prefect server on it, until Ctrl-C
            from tests.testbed import prefect_pg

            prefect_pg.serve()
        if what == "prefect-ha":  # PostgreSQL, Redis, two API replicas, the services and haproxy, until Ctrl-C
            from tests.testbed import prefect_ha

            prefect_ha.serve()
        if what == "stop":
            try:  # Harbor's services restart by themselves (restart: always) when dockerd comes back
                if dockerd._ping(dockerd.engine().plain_url):
                    harbor.stop(dockerd.engine())
            except Exception as exc:  # dockerd is stopped whatever happens to Harbor
                print(f"[testbed] could not stop Harbor: {exc}", file=sys.stderr)
            dockerd.stop()
            vcsim.stop_persistent("demo")
            say("dockerd and the demo's vCenter simulator stopped")
    except TestbedError as exc:
        print(f"[testbed] FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
