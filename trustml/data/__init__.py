"""Corpora, loaders and the tokenizer the chapters share."""

from trustml.data.clinc150 import CLINC150_SHA256, Clinc150Unavailable, find_clinc150, load_clinc150
from trustml.data.corpus import INTENTS, Canary, Corpus, insert_canaries, make_corpus
from trustml.data.intents import SPEAKER_ATTRIBUTES
from trustml.data.text import (
    IntentTask, Tokenizer, WordTokenizer, load_intent_task, make_loader, make_task, subset, to_tensor_dataset,
)

__all__ = [
    "CLINC150_SHA256", "INTENTS", "SPEAKER_ATTRIBUTES", "Canary", "Clinc150Unavailable", "Corpus", "IntentTask",
    "Tokenizer", "WordTokenizer", "find_clinc150", "insert_canaries", "load_clinc150", "load_intent_task",
    "make_corpus", "make_loader", "make_task", "subset", "to_tensor_dataset",
]
