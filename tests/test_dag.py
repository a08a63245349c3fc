"""The one dependency-order implementation (vicflow.plugins.dag, on graphlib): pure logic."""

from __future__ import annotations

import graphlib

import pytest
from vicflow.plugins import dag


def test_levels_keep_the_authors_order_within_a_group():
    graph = {"z": [], "a": [], "m": ["z"], "b": ["a", "z"], "last": ["m", "b"]}
    assert dag.levels(graph) == [["z", "a"], ["m", "b"], ["last"]]
    assert dag.topological_order(graph) == ["z", "a", "m", "b", "last"]


def test_a_cycle_reads_as_who_needs_whom():
    assert dag.find_cycle({"a": ["c"], "b": ["a"], "c": ["b"], "d": []}) == ["a", "c", "b"]
    assert dag.find_cycle({"a": [], "b": ["a"]}) is None
    with pytest.raises(graphlib.CycleError):
        dag.levels({"a": ["b"], "b": ["a"]})
