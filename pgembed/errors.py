"""The PgembedError tree.

Every failure a user can cause or fix raises a subclass of :class:`PgembedError` with a
message that names the problem, the offending value and what to do. Subclasses also derive
from the matching builtin (``ValueError``, ``LookupError``...) so generic handlers still work.
"""

from __future__ import annotations


class PgembedError(Exception):
    """Base class of every error pgembed raises on purpose."""


# --- configuration and environment -------------------------------------------------------


class ConfigError(PgembedError, ValueError):
    """A setting (argument or PGEMBED_* variable) is invalid."""


class DatabaseError(PgembedError):
    """The database cannot be reached or is not usable."""


class DatabaseUnavailableError(DatabaseError, ConnectionError):
    """The database URL is malformed, or the server is down or went away."""


class ExtensionError(DatabaseError):
    """pgvector is missing or too old on the server."""


class ServerError(DatabaseError):
    """The embedded PostgreSQL server cannot be set up or started."""


class MigrationError(DatabaseError):
    """pgembed's schema is missing, outdated, or a migration refused to run."""


# --- models ------------------------------------------------------------------------------


class ModelError(PgembedError):
    """A model cannot be found, exported, verified or run."""


class UnknownModelError(ModelError, LookupError):
    """No model by that name is registered or exported."""


class FingerprintMismatchError(ModelError):
    """A model file or an encoder does not match its recorded sha256 fingerprint."""


class ExportError(ModelError):
    """Exporting to ONNX failed, or the exported graph disagrees with the source model."""


class DeviceUnavailableError(ModelError):
    """An execution device (CUDA) was demanded but is not available."""


# --- input -------------------------------------------------------------------------------


class InputError(PgembedError, ValueError):
    """Input data is malformed."""


class EmptyInputError(InputError):
    """A text, a batch or a token set is empty."""


class DimensionError(InputError):
    """A vector has the wrong number of dimensions."""


class NonFiniteError(InputError):
    """A vector holds NaN or infinity."""


class FDEConfigError(ConfigError):
    """An FDE configuration field is out of range."""


# --- collections -------------------------------------------------------------------------


class CollectionError(PgembedError):
    """A collection is unknown, misdeclared, or used with a kind it lacks."""


class UnknownCollectionError(CollectionError, LookupError):
    """No collection by that name is recorded in pgembed.collections."""


class UnknownKindError(CollectionError, LookupError):
    """The collection does not store the requested vector kind."""


class IngestError(PgembedError):
    """Writing rows failed; the batch was rolled back and can be re-run."""


class ShardError(DatabaseUnavailableError):
    """A shard of a sharded collection failed, was unreachable or ran past its timeout."""


# --- warnings: the work went on, but something deserves a look ------------------------------


class PgembedWarning(UserWarning):
    """Base class of the warnings pgembed issues."""


class BlankTextWarning(PgembedWarning):
    """sync() found rows whose text is empty or only whitespace, and left them unembedded."""


class TableLeftAloneWarning(PgembedWarning):
    """drop() removed a catalog entry but not the table, which the collection did not create."""


# --- trust: what pgembed's functions would run ------------------------------------------------


class TrustError(MigrationError):
    """pgembed would use a schema it did not create, or an object in its schemas that a role
    other than the current user or a superuser owns (pgembed.trust). ``objects`` lists each
    one as ``kind name (owner role): why``."""

    def __init__(self, message: str, objects: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.objects = objects


class PermissionDeniedError(DatabaseError, PermissionError):
    """The database role in use lacks a privilege the call needs (SQLSTATE 42501)."""

    def __init__(self, reason: str, collection: str | None = None, role: str | None = None):
        self.reason, self.collection, self.role = reason, collection, role
        who = f"role {role!r}" if role else "the role of this connection (SELECT current_user)"
        what = repr(collection) if collection else "COLLECTION"
        if reason.startswith("must be owner"):
            fix = (
                "run it as the collection's owner or a superuser (`pgembed grant` gives "
                "roles read and write, not ownership)"
            )
        else:
            fix = (
                f"the collection's owner or a superuser can run `pgembed grant "
                f"{role or 'ROLE'} {what} --read` (or --write), or pgembed.grant(engine, "
                f"{role or 'ROLE'!r}, {what if collection else 'collection'}, 'read')"
            )
        super().__init__(f"{reason}: {who} may not do this; {fix}")

    def __str__(self) -> str:
        return str(self.args[0])
