"""The book's models and the one training loop: small text classifiers and their registry, the tiny causal LM
and its tokenizers (``trustml.models.lm``), the pretrained encoder loader, and :func:`fit`."""

from trustml.models.classifiers import (
    ARCHITECTURES, EmbeddingClassifier, TransformerClassifier, build_model, masked_mean,
)
from trustml.models.encoder import MINILM_SHA256_PREFIX, Encoder, load_minilm
from trustml.models.training import (
    accuracy, classification_loss, fit, gradient_step, make_optimizer, predict, train_classifier,
)

__all__ = [
    "ARCHITECTURES", "MINILM_SHA256_PREFIX", "EmbeddingClassifier", "Encoder", "TransformerClassifier", "accuracy",
    "build_model", "classification_loss", "fit", "gradient_step", "load_minilm", "make_optimizer", "masked_mean",
    "predict", "train_classifier",
]
