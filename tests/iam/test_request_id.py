"""Request ids are built from random bits by hand (cheaper than uuid4()): they must still be RFC 4122 version 4
UUIDs, exactly what the uuid module makes of the same bits."""

from __future__ import annotations

import random
import uuid

from soko.access import new_request_id


def test_request_ids_are_the_uuid4_the_uuid_module_makes_of_the_same_bits() -> None:
    for seed in range(200):
        random.seed(seed)
        made = new_request_id()
        random.seed(seed)
        expected = str(uuid.UUID(int=random.getrandbits(128), version=4))
        assert made == expected
        parsed = uuid.UUID(made)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    random.seed()
