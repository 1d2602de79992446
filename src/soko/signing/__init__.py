"""ECR managed signing (issue 18): images pushed to repositories that the account's signing rules match are signed
by Soko, after the push, as Notary Project (notation) signatures stored as OCI referrers of the image.

``config.py``: the signing configuration (ECR's rules, validated; keys made for each profile). ``keys.py``: the
keys Soko manages (a root certificate authority per account, a rotatable leaf key per signing profile; private keys
sealed with the master key). ``notation.py``: the signature envelope (JWS) and the signature manifest (pure).
``signer.py``: the one-shot leased job ``signing`` that signs one image for one profile. ``cli.py``: ``soko signing``.
"""

from soko.kernel.signing_queue import KIND

__all__ = ["KIND"]
