"""i2v-stream: online Interact2Vec user and item embeddings from event streams.

The training core (model, kernel, data, evaluation) imports neither Kafka nor
Prometheus; the daemon, the store and the query service build on it.
"""

from i2v_stream.baselines import MostPopular, OnlinePopular
from i2v_stream.data import DataError, Interactions, read_interactions
from i2v_stream.evaluation import evaluate_split, prequential, temporal_split
from i2v_stream.model import BatchStats, Interact2Vec, ModelState, UnknownIdError
from i2v_stream.synthetic import make_interactions

__all__ = [
    "BatchStats", "DataError", "Interact2Vec", "Interactions", "ModelState", "MostPopular",
    "OnlinePopular", "UnknownIdError", "evaluate_split", "make_interactions", "prequential",
    "read_interactions", "temporal_split",
]
__version__ = "0.1.0"
