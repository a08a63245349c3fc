"""The blast radius of a plan: how many of each thing it would touch, counted from its rows.

Each row names what it touches in ``kind`` (``vicflow.plugins.step.Kind``); the counts are of distinct targets,
so two steps that open the same host's firewall count it once. A row whose changes are known only after an
earlier step applies (action ``unknown``) cannot be counted: its step is listed in ``not_yet_known``, and the
counts are then a lower bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vicflow.plugins.step import Kind

REPLACE = ("recreate", "replace", "update")

# (kind, action) -> the count it adds to; the order of COUNTS is the order of the table
COUNTED: dict[tuple[str, str], str] = {
    (Kind.HOST_FIREWALL, "update"): "esxi_hosts_firewall",
    (Kind.VCH, "create"): "vchs_created",
    **{(Kind.VCH, action): "vchs_replaced" for action in REPLACE},
    (Kind.VCH, "delete"): "vchs_deleted",
    (Kind.CONTAINER, "create"): "containers_created",
    **{(Kind.CONTAINER, action): "containers_replaced" for action in REPLACE},
    (Kind.CONTAINER, "delete"): "containers_removed",
    (Kind.VOLUME, "create"): "volumes_created",
    (Kind.VOLUME, "delete"): "volumes_removed",
    (Kind.VOLUME_STORE, "delete"): "volume_stores_deleted",
    (Kind.REGISTRY_IMAGE, "update"): "registry_images_swapped",
}

COUNTS = {
    "esxi_hosts_firewall": "ESXi hosts whose firewall changes",
    "vchs_created": "VCHs created",
    "vchs_replaced": "VCHs replaced",
    "vchs_deleted": "VCHs deleted",
    "containers_created": "containers created",
    "containers_replaced": "containers replaced",
    "containers_removed": "containers removed",
    "volumes_created": "volumes created",
    "volumes_removed": "volumes removed",
    "volume_stores_deleted": "volume stores deleted",
    "registry_images_swapped": "registry images swapped",
}


@dataclass
class BlastRadius:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    not_yet_known: list[str] = field(default_factory=list)  # steps planned as "known after ... apply"
    not_planned: list[str] = field(default_factory=list)  # steps whose plan failed

    def to_dict(self) -> dict[str, Any]:
        return {**self.counts, "not_yet_known": self.not_yet_known, "not_planned": self.not_planned}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BlastRadius:
        """Back from ``to_dict`` (a summary's ``blast_radius``)."""
        counts = {key: int(data.get(key, 0)) for key in COUNTS}
        return cls(counts, list(data.get("not_yet_known", [])), list(data.get("not_planned", [])))

    def lines(self) -> list[tuple[str, str]]:
        """(what, how many) for a table: every count, then the steps that could not be counted."""
        rows = [(label, str(self.counts[key])) for key, label in COUNTS.items()]
        if self.not_yet_known:
            rows.append(("known only after apply (a lower bound)", ", ".join(self.not_yet_known)))
        if self.not_planned:
            rows.append(("could not be planned", ", ".join(self.not_planned)))
        return rows

    def markdown(self) -> str:
        table = ["## Blast radius", "", "| what | how many |", "|---|---|"]
        return "\n".join(table + [f"| {what} | {count} |" for what, count in self.lines()])


def of(rows: list[dict[str, Any]]) -> BlastRadius:
    """The blast radius of plan ``rows`` (``{step, action, target, detail, kind}``)."""
    targets: dict[str, set[str]] = {key: set() for key in COUNTS}
    radius = BlastRadius()
    for row in rows:
        counter = COUNTED.get((row.get("kind") or "", row["action"]))
        if counter is not None:
            targets[counter].add(str(row["target"]))
        elif row["action"] == "unknown" and row["step"] not in radius.not_yet_known:
            radius.not_yet_known.append(row["step"])
        elif row["action"] == "error" and row["step"] not in radius.not_planned:
            radius.not_planned.append(row["step"])
    radius.counts = {key: len(found) for key, found in targets.items()}
    return radius
