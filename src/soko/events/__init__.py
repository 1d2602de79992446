"""Registry events delivered to webhooks (docs/architecture.md, "Events").

The domain writes each change's events to the outbox in the change's own transaction (``soko.kernel.events``,
``UnitOfWork.emit``); this room delivers them: targets and their patterns (``targets``, ``patterns``), the signed,
SSRF-checked POST (``webhook``), the leased delivery job (``delivery``), metrics (``metrics``) and ``soko events``
(``cli``).
"""

from soko.events.delivery import Delivery
from soko.events.targets import TargetNotFound, Targets

__all__ = ["Delivery", "TargetNotFound", "Targets"]
