"""i2v-stream: online Interact2Vec user and item embeddings from event streams."""

from i2v_stream.model import BatchStats, Interact2Vec, ModelState, UnknownIdError

__all__ = ["BatchStats", "Interact2Vec", "ModelState", "UnknownIdError"]
__version__ = "0.1.0"
