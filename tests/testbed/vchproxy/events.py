"""``/events`` as VIC 1.1.1 streams them, translated from the engine behind.

The personality logs container events itself when it does an operation (container.go: create, start, stop,
kill with its signal, restart, attach, detach, resize, "Rename", "exec_create: <cmd>", "exec_start: <cmd>") and
one from the port layer: ``die``, with the exit code, when a container VM stops (eventmonitor.go
PublishEvent); image.go logs pull, tag, untag and delete. Nothing else: no destroy, no health_status, no
exec_die, no network or volume events. system.go SubscribeToEvents filters them with Docker's event filter.

Every container event's actor is CreateContainerEventActorWithAttributes: the labels of the container's
VicContainer.Config, its "image" and "name". For a container this personality created, that Config is a copy
of the image's config with the create's overrides copied in (copyConfigOverrides), which copies neither the
labels nor the image name: its events carry the image's labels and the image config's "Image". A container the
personality found at its start (syncContainerCache) has the labels and image it was created with.
"""

from __future__ import annotations

import json
from typing import Any

from tests.testbed.vchproxy.containers import Cache

CONTAINER_ACTIONS = {"create", "start", "stop", "die", "kill", "restart", "attach", "detach", "resize"}
EXTRA_ATTRIBUTES = {"die": ("exitCode",), "kill": ("signal",), "resize": ("height", "width"), "rename": ("newName",)}
IMAGE_ACTIONS = {"pull", "tag", "untag", "delete"}


def translate(event: dict[str, Any], cache: Cache) -> dict[str, Any] | None:
    """The event VIC would send for an event of the engine behind, or None when VIC sends none."""
    kind, action = event.get("Type"), event.get("Action") or ""
    actor = event.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    if kind == "image":
        if action not in IMAGE_ACTIONS:
            return None
        name = attributes.get("name", "")
        return _message("image", action, actor.get("ID", ""), {"name": name} if name else {}, event)
    if kind != "container":
        return None
    base = action.split(":", 1)[0]
    if base == "rename":
        action = "Rename"
    elif base in ("exec_create", "exec_start"):
        pass
    elif action not in CONTAINER_ACTIONS:
        return None
    container_id = actor.get("ID") or event.get("id", "")
    created = cache.get(container_id, attributes.get("name", "") if action == "create" else "")
    if created is not None:  # made by this personality: the image's config
        labels = dict(created.image_labels)
        image = created.image_field
    else:  # found at start: what it was created with (the engine's attributes, less the event's own)
        own = {k for keys in EXTRA_ATTRIBUTES.values() for k in keys} | {"image", "name", "execID"}
        labels = {k: v for k, v in attributes.items() if k not in own}
        image = attributes.get("image", "")
    extras = {k: attributes[k] for k in EXTRA_ATTRIBUTES.get(base, ()) if k in attributes}
    attrs = {**labels, **extras, "name": attributes.get("name", "")}
    if image:
        attrs["image"] = image
    return _message("container", action, container_id, attrs, event)


def _message(kind: str, action: str, actor_id: str, attributes: dict[str, str], event: dict) -> dict[str, Any]:
    """daemon/events/events.go Log: the deprecated status/id/from beside Type, Action, Actor and the times."""
    message: dict[str, Any] = {}
    if kind in ("container", "image"):
        message.update(status=action, id=actor_id)
    if kind == "container" and attributes.get("image"):
        message["from"] = attributes["image"]
    message.update(
        Type=kind,
        Action=action,
        Actor={"ID": actor_id, "Attributes": attributes},
        time=event.get("time"),
        timeNano=event.get("timeNano"),
    )
    return message


class Filter:
    """daemon/events/filter.go (Docker 1.13, vendored by VIC): type, event, container, image, label."""

    def __init__(self, raw: str | None):
        parsed = json.loads(raw) if raw else {}
        self.filters = {k: _values(v) for k, v in parsed.items()}

    def include(self, message: dict[str, Any]) -> bool:
        actor = message.get("Actor") or {}
        attributes = actor.get("Attributes") or {}
        return (
            self._exact("type", message["Type"])
            and self._event(message["Action"])
            and self._container(message, actor, attributes)
            and self._image(message, actor, attributes)
            and self._labels(attributes)
        )

    def _exact(self, key: str, value: str) -> bool:
        wanted = self.filters.get(key)
        return not wanted or value in wanted

    def _event(self, action: str) -> bool:
        wanted = self.filters.get("event")
        if not wanted:
            return True
        if {"health_status", "exec_create", "exec_start"} & set(wanted):  # #25798: a fuzzy match for these
            return any(action.startswith(w) for w in wanted)
        return action in wanted

    def _container(self, message: dict, actor: dict, attributes: dict) -> bool:
        wanted = self.filters.get("container")
        if not wanted:
            return True
        if message["Type"] != "container":
            return False
        ident = actor.get("ID", "")
        return any(w in (ident, attributes.get("name")) or ident.startswith(w) for w in wanted)

    def _image(self, message: dict, actor: dict, attributes: dict) -> bool:
        wanted = self.filters.get("image")
        if not wanted:
            return True
        names = {attributes.get("image", ""), attributes.get("name", "") if message["Type"] == "image" else ""}
        return bool(names & set(wanted)) or (message["Type"] == "image" and actor.get("ID") in wanted)

    def _labels(self, attributes: dict) -> bool:
        wanted = self.filters.get("label")
        if not wanted:
            return True
        for item in wanted:
            key, sep, value = item.partition("=")
            if key not in attributes or (sep and attributes[key] != value):
                return False
        return True


def _values(value) -> list[str]:
    if isinstance(value, dict):
        return [k for k, on in value.items() if on]
    return list(value or [])
