"""The server's cycle-collector policy: freeze survivors of full collections, rescan now and then."""

from __future__ import annotations

import gc
import weakref

import pytest

from rtcore.config import GcConfig, config_from_mapping
from rtcore.errors import ConfigError
from rtcore.server.gc_policy import FreezeSurvivors, install_gc_policy


@pytest.fixture(autouse=True)
def _restore_gc() -> None:
    yield
    gc.unfreeze()


def test_full_collections_freeze_their_survivors_and_every_nth_rescans() -> None:
    policy = install_gc_policy(GcConfig(rescan_every=3, freeze_young=False))
    assert isinstance(policy, FreezeSurvivors)
    try:
        gc.collect(1)  # not a full collection: nothing frozen
        assert gc.get_freeze_count() == 0
        gc.collect()
        assert gc.get_freeze_count() > 0
        kept = [object() for _ in range(10)]  # untracked; a list is tracked
        gc.collect()
        assert gc.get_freeze_count() > 0
        gc.collect()  # the third: unfrozen, so the next one walks everything
        assert gc.get_freeze_count() == 0
        assert policy.full_collections == 3
        assert kept
    finally:
        policy.uninstall()
    assert policy not in gc.callbacks
    assert gc.get_freeze_count() == 0


def test_a_frozen_cycle_is_freed_after_the_rescan() -> None:
    class Node:
        other: Node

    policy = install_gc_policy(GcConfig(rescan_every=3, freeze_young=False))
    assert policy is not None
    try:
        gc.collect()  # 1: frozen after it
        a, b = Node(), Node()
        a.other, b.other = b, a
        alive = weakref.ref(a)
        gc.collect()  # 2: the cycle is still referenced, survives and is frozen
        del a, b
        gc.collect()  # 3: walks only unfrozen objects, then unfreezes
        assert alive() is not None
        gc.collect()  # 4: walks everything
        assert alive() is None
    finally:
        policy.uninstall()


def test_off_and_checked() -> None:
    assert install_gc_policy(GcConfig(freeze=False)) is None
    assert config_from_mapping({}).gc.freeze is True
    assert config_from_mapping({}).gc.freeze_young is True
    assert config_from_mapping({"gc": {"freeze_young": False}}).gc.freeze_young is False
    with pytest.raises(ConfigError, match="gc.rescan_every"):
        config_from_mapping({"gc": {"rescan_every": -1}})


def test_young_survivors_are_frozen_too() -> None:
    policy = install_gc_policy(GcConfig(rescan_every=3))
    assert isinstance(policy, FreezeSurvivors) and policy.young
    try:
        gc.collect(0)  # the youngest generation: nothing frozen
        assert gc.get_freeze_count() == 0
        kept = [[] for _ in range(100)]
        gc.collect(1)  # the middle one: its survivors frozen, no full collection
        assert gc.get_freeze_count() > 0
        assert policy.full_collections == 0
        assert kept
    finally:
        policy.uninstall()
    assert gc.get_freeze_count() == 0


def test_young_mode_rescans_after_its_periods() -> None:
    """Freezing resets the count that brings full collections, so with young
    survivors frozen none would come: every threshold[2] middle collections
    stand for one, and every rescan_every of those the heap is unfrozen; the
    next full collection walks everything, and nothing is frozen before it."""

    class Node:
        other: Node

    period = gc.get_threshold()[2]
    policy = install_gc_policy(GcConfig(rescan_every=2))
    assert policy is not None
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a
        alive = weakref.ref(a)
        gc.collect(1)  # the cycle survives, young: frozen
        del a, b
        for _ in range(2 * period - 2):
            gc.collect(1)
        assert not policy.rescan_pending and gc.get_freeze_count() > 0
        assert alive() is not None  # frozen: no collection walks it
        gc.collect(1)  # the second period ends: unfrozen for the rescan
        assert policy.rescan_pending and gc.get_freeze_count() == 0
        assert policy.periods == 2
        gc.collect(1)  # nothing frozen while the rescan is pending
        assert gc.get_freeze_count() == 0
        gc.collect()  # the rescan walks everything, then freezes again
        assert alive() is None
        assert not policy.rescan_pending and gc.get_freeze_count() > 0
    finally:
        policy.uninstall()


def test_young_mode_lets_a_full_collection_come_for_the_rescan() -> None:
    """While a rescan is pending the collector's own counts run again: a full
    collection comes without anyone asking for it."""
    policy = install_gc_policy(GcConfig(rescan_every=1))
    assert policy is not None
    try:
        for _ in range(gc.get_threshold()[2]):
            gc.collect(1)
        assert policy.rescan_pending
        fulls = policy.full_collections
        kept: list[list[int]] = []
        for _ in range(1_000_000):  # objects that live drive the collections
            kept.append([])
            if policy.full_collections > fulls:
                break
        assert policy.full_collections > fulls
        assert not policy.rescan_pending
    finally:
        policy.uninstall()
