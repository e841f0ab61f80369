"""The book's models: two small text classifiers, training loops and the pretrained encoder loader."""

from trustml.models.classifiers import EmbeddingClassifier, TransformerClassifier, masked_mean
from trustml.models.encoder import MINILM_SHA256_PREFIX, Encoder, load_minilm
from trustml.models.training import accuracy, make_optimizer, predict, train_classifier

__all__ = [
    "MINILM_SHA256_PREFIX", "EmbeddingClassifier", "Encoder", "TransformerClassifier", "accuracy", "load_minilm",
    "make_optimizer", "masked_mean", "predict", "train_classifier",
]
