"""The ``Registry`` facade: one object composing the domain services that every front end calls."""

from __future__ import annotations

from soko import private
from soko.config import Settings
from soko.crypto.driver import SealedDriver
from soko.crypto.keys import KeyRing
from soko.gc.collector import GarbageCollector
from soko.iam.secrets import MasterKey
from soko.kernel.context import DomainContext
from soko.meta import Database
from soko.metering import Metering
from soko.registry.blobs import Blobs
from soko.registry.images import Images
from soko.registry.lifecycle_store import LifecycleStore
from soko.registry.manifests import Manifests
from soko.registry.policies import Policies
from soko.registry.repositories import Repositories
from soko.registry.settings_store import AccountSettings, Replication, Scanning
from soko.registry.storage_class import StorageClasses
from soko.registry.templates import Templates
from soko.registry.uploads import Uploads
from soko.storage import StorageDriver
from soko.storage.factory import open_storage


class Registry:
    def __init__(
        self, settings: Settings, db: Database, storage: StorageDriver, archive: StorageDriver | None = None
    ) -> None:
        self.settings = settings
        self.ctx = DomainContext(settings=settings, db=db, storage=storage, archive=archive)
        self.repositories = Repositories(self.ctx)
        self.encryption = self.repositories.encryption  # attach a KeyService to serve KMS repositories
        self.blobs = Blobs(self.ctx, self.repositories)
        self.uploads = Uploads(self.ctx, self.repositories)
        self.manifests = Manifests(self.ctx, self.repositories)
        self.gc = GarbageCollector(self.ctx, self.uploads)
        self.metering = Metering(self.ctx)
        self.storage_classes = StorageClasses(self.ctx, self.repositories, self.manifests)
        self.images = Images(self)  # ECR's image queries and batch operations
        self.lifecycle = LifecycleStore(self)  # lifecycle policies and previews
        # the control plane: repository and registry policies, creation templates, account settings, replication
        # and scanning configuration
        self.policies = Policies(self.ctx, self.repositories)
        self.templates = Templates(self.ctx, self.repositories.encryption)
        self.account_settings = AccountSettings(self.ctx)
        self.replication = Replication(self.ctx)
        self.scanning = Scanning(self.ctx)

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True) -> Registry:
        """Open (and on first use initialise) the configured database and storage."""
        private.data_dir(settings.data_dir)
        db = Database(settings.effective_database_url)
        if migrate:
            db.migrate()
        if settings.storage_redirect:
            # Accepted, it would hand clients ciphertext (or do nothing): blobs are encrypted at rest and only Soko
            # can decrypt them, so they stream through it.
            raise ValueError(
                "storage_redirect cannot be used: blobs are encrypted at rest (README, Encryption at rest) and must "
                "stream through Soko, which decrypts them; a presigned URL would hand out ciphertext. Set "
                "storage_redirect = false"
            )
        master = MasterKey.load(settings.master_key, settings.data_dir)
        ring = KeyRing.service(master.storage_key)
        storage = SealedDriver(open_storage(settings.storage_url, settings.blob_root), ring)
        # The archive tier is encrypted as standard storage is (same key ring: no plaintext anywhere).
        archive = (
            SealedDriver(open_storage(settings.archive_storage_url, ""), ring) if settings.archive_storage_url else None
        )
        return cls(settings, db, storage, archive)

    def close(self) -> None:
        self.manifests.flush_pulls()
        self.metering.flush()
        self.ctx.db.dispose()
        self.ctx.generation.close()  # its descriptor: a process may open and close registries many times
