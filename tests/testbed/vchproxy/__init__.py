"""A VCH's Docker API as vmware/vic v1.1.1's own code answers it, in front of the test bed's dockerd.

No VCH can run here; this endpoint is what vicflow meets instead. Every behaviour is read from VIC's
personality (lib/apiservers/engine/backends/ at tag v1.1.1, mirrored in /work/.mirror/vmware+vic/repo) and
names its source file beside it; tests/README.md tables them with the tests that check them.

- ``vic``: product, versions, error texts and status codes (errors.go, the vendored API server)
- ``system``: ``/info`` and ``/version`` (system.go)
- ``containers``: create, inspect, list, exec (container.go, container_proxy.go, portmap/)
- ``volumes``: the ``vsphere`` driver and the VCH's volume stores (volume.go)
- ``events``: ``/events`` (eventmonitor.go, system.go)
- ``refusals``: what the personality does not implement
- ``config``: the VCH's configuration, as the appliance reads it from guestinfo
- ``server``: the HTTP server, the routes, the relay of everything else, TLS (cmd/docker/main.go)
"""
