"""Storage: the ``Store`` port (opaque bytes in column families) and its implementations.

``RocksStore`` (embedded RocksDB) is the production store; ``MemoryStore`` is for tests. The
contract both keep is written in ``tq.storage.base``.
"""

from tq.storage.base import Store
from tq.storage.memory import MemoryBacking, MemoryStore
from tq.storage.rocksdb import RocksStore, RocksTuning, open_store

__all__ = ["MemoryBacking", "MemoryStore", "RocksStore", "RocksTuning", "Store", "open_store"]
