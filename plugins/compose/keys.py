"""Which Compose keys vicflow supports, which it refuses (with a hint), and which VIC 1.1 cannot run."""

from __future__ import annotations

SERVICE_KEYS = {
    "image",
    "container_name",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "expose",
    "volumes",
    "networks",
    "depends_on",
    "restart",
    "healthcheck",
    "labels",
    "user",
    "working_dir",
    "hostname",
    "extra_hosts",
    "links",
    "network_mode",
    "stop_signal",
    "stop_grace_period",
    "logging",
    "dns",
    "dns_search",
    "mem_limit",
    "cpus",
    "cpu_shares",
    "cap_add",
    "cap_drop",
    "privileged",
    "tmpfs",
    "read_only",
    "stdin_open",
    "tty",
    "platform",
    "init",
    "shm_size",
    "ulimits",
    "sysctls",
    "security_opt",
    "deploy",  # resources and restart_policy, as docker compose honours them outside swarm (deploy_spec.py)
    "secrets",  # from files, mounted read-only (file_objects.py)
    "configs",
}
# Valid Compose keys this implementation does not support: an error says so instead of ignoring them.
UNSUPPORTED_SERVICE_KEYS = {
    "build",
    "cgroup_parent",
    "devices",
    "domainname",
    "external_links",
    "extends",
    "ipc",
    "isolation",
    "mac_address",
    "memswap_limit",
    "pid",
    "profiles",
    "pull_policy",
    "scale",
    "userns_mode",
    "volumes_from",
    "runtime",
    "oom_score_adj",
    "group_add",
    "labels_file",
    "develop",
    "attach",
    "annotations",
}
UNSUPPORTED_HINTS = {
    "build": "vicflow never runs a build (a VCH cannot build either): build and push the image, then set image:",
}
# Service keys a VCH refuses, from VIC's "Supported Docker Compose File Options" ("No. Depends on docker run
# --X", which VIC does not implement).  Checked only when the engine is a VCH (docker info says so).
VIC_UNSUPPORTED = {
    "build": "docker build",
    "cap_add": "docker run --cap-add",
    "cap_drop": "docker run --cap-drop",
    "cgroup_parent": "docker run --cgroup-parent",
    "devices": "docker create --device",
    "dns_search": "docker run --dns-search",
    "tmpfs": "docker run --tmpfs",
    "entrypoint": "docker run --entrypoint",
    "expose": "docker run --expose",
    "extra_hosts": "docker run --add-host",
    "group_add": "docker run --group-add",
    "privileged": "docker run --privileged (a container is a VM)",
    "volumes_from": "sharing volumes between containers (docker run --volumes-from)",
}
TOP_KEYS = {"version", "name", "services", "networks", "volumes", "secrets", "configs"}
UNSUPPORTED_TOP_KEYS = {"include"}
NETWORK_KEYS = {"driver", "external", "name", "labels", "driver_opts", "ipam"}
IPAM_KEYS = {"driver", "config", "options"}
IPAM_POOL_KEYS = {"subnet", "ip_range", "gateway", "aux_addresses"}
# Top-level secrets: and configs: - from files only; the rest is swarm's (external), or copied into the
# container by docker compose v2 (environment, content), which vicflow does not do.
FILE_OBJECT_KEYS = {"file", "name"}
UNSUPPORTED_FILE_OBJECT_KEYS = {
    "external",
    "environment",
    "content",
    "labels",
    "driver",
    "driver_opts",
    "template_driver",
}
FILE_OBJECT_HINT = "give the secret or config a file: (a path relative to the compose file)"
FILE_REFERENCE_KEYS = {"source", "target", "uid", "gid", "mode"}  # a service's long syntax
# deploy: what docker compose v2 honours outside swarm, and what it ignores there (warned about, not refused)
DEPLOY_KEYS = {"resources", "restart_policy", "replicas", "mode"}
DEPLOY_SWARM_ONLY = {"labels", "placement", "update_config", "rollback_config", "endpoint_mode"}
RESOURCES_KEYS = {"limits", "reservations"}
LIMITS_KEYS = {"cpus", "memory", "pids"}
RESERVATIONS_KEYS = {"cpus", "memory"}
RESTART_POLICY_KEYS = {"condition", "max_attempts", "delay", "window"}
RESTART_CONDITIONS = {"none": "no", "on-failure": "on-failure", "any": "always"}  # compose -> Engine API
VOLUME_KEYS = {"driver", "driver_opts", "external", "name", "labels"}
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "disable"}
LOGGING_KEYS = {"driver", "options"}
LIST_KEYS = {
    "ports",
    "expose",
    "volumes",
    "cap_add",
    "cap_drop",
    "security_opt",
    "links",
    "env_file",
    "dns",
    "dns_search",
    "tmpfs",
    "extra_hosts",
}
LIST_OR_STRING = {"env_file", "dns", "dns_search", "tmpfs"}  # the Compose spec allows one string for these
MAPPING_OR_LIST_KEYS = {"depends_on", "networks", "environment", "labels", "sysctls"}
MAPPING_KEYS = {"healthcheck", "logging", "ulimits"}
RESTART = {"no", "always", "on-failure", "unless-stopped"}
