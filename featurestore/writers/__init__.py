"""Online-store writers: Feast's storage formats, written vectorised and newest-wins.

``writer_for(target)`` returns the writer for the repo's online store:
:class:`~skyfeast.featurestore.writers.sqlite.SqliteWriter`,
:class:`~skyfeast.featurestore.writers.redis.RedisWriter`,
:class:`~skyfeast.featurestore.writers.postgres.PostgresWriter`, or
:class:`~skyfeast.featurestore.writers.fallback.FallbackWriter` (Feast's own
``online_write_batch``) for everything else.  See :mod:`.base` for the contract
and the exception tree.
"""

from skyfeast.featurestore.writers.base import (
    EncodingError,
    OnlineWriter,
    StoreNotReadyError,
    WriterError,
    writer_class,
    writer_for,
)

__all__ = ["EncodingError", "OnlineWriter", "StoreNotReadyError", "WriterError", "writer_class", "writer_for"]
