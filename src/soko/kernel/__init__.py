"""The kernel every domain package imports downward: ``DomainContext`` (settings, the metadata database, blob
storage, the clock, the cache generation) and the unit of work every domain write goes through, with its
after-write effects (GC link reviews, audit rows, outbox events). ``registry``, ``gc``, ``metering``, ``iam`` and
``audit`` build on it; it imports none of them."""

from soko.kernel.context import DomainContext
from soko.kernel.unit_of_work import UnitOfWork

__all__ = ["DomainContext", "UnitOfWork"]
