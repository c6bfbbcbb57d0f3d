"""What /api/chain/ tells a verifier is what the apps do: its leaf encodings are the ones each tree is built with,
and its subject formats are the subjects the services anchor (the ledger cannot import the apps above it to read
them, so this test, at the top of the layers, holds the two together)."""

from __future__ import annotations

import pytest

from datanets import services as datanet_services
from datanets.tests.factories import DatanetFactory, accepted, texts
from inference.models import RunBatch
from ledger import merkle, rewards_services
from ledger.hashing import subject_id
from ledger.selectors import LEAF_ENCODINGS, SUBJECT_FORMATS

pytestmark = pytest.mark.django_db


def test_the_leaf_encodings_are_the_ones_the_trees_are_built_with() -> None:
    assert LEAF_ENCODINGS["record"] == list(merkle.DEFAULT_LEAF_TYPES)
    assert LEAF_ENCODINGS["run"] == list(RunBatch.LEAF_TYPES)
    assert LEAF_ENCODINGS["claim"] == list(rewards_services.LEAF_TYPES)


def test_a_snapshots_anchor_subject_has_the_published_format() -> None:
    datanet = DatanetFactory()
    accepted(datanet, content=texts("a record of several words here"))
    snapshot = datanet_services.snapshot_freeze(datanet=datanet, user=datanet.owner)

    expected = SUBJECT_FORMATS["snapshot"].replace("<datanet id>", str(datanet.pk)).replace("<snapshot number>", "1")
    assert snapshot.anchor.subject == expected
    assert snapshot.anchor.subject_id == subject_id(expected)
