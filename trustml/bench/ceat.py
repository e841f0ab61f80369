"""Timing of CEAT with and without the embedding cache (speed goals live here, not in unit tests).

    python -m trustml.bench ceat --test weat1 --layer 6 --n-samples 1000 --contexts-per-word 20

After an untimed warm-up pass, runs CEAT three times in one process on the same inputs: with no cache
(every context encoded), with an empty cache (encode + store: "the first run"), and again with the
now-warm cache ("after the first"); it prints the seconds of each, the speed-up, and checks that the
three results are identical.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np


def time_ceat(*, test: str = "weat1", layer: int = 6, n_samples: int = 1000, contexts_per_word: int = 20,
              seed: int = 0) -> dict[str, float]:
    from trustml.fairness.encoders import EmbeddingCache, EncoderView, ceat
    from trustml.fairness.wordsets import WEAT_TESTS
    from trustml.models import load_minilm

    start = time.perf_counter()
    encoder = load_minilm()
    timings = {"load encoder": time.perf_counter() - start}
    association_test = WEAT_TESTS[test]
    # Untimed warm-up on the same workload: PyTorch's first passes over new batch shapes are slower
    # (kernel selection, allocator), which would otherwise be charged to whichever run comes first.
    ceat(EncoderView(encoder, layer=layer), association_test, n_samples=2, contexts_per_word=contexts_per_word,
         seed=seed)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        cache = EmbeddingCache(f"{folder}/embeddings.sqlite")
        for label, use_cache in (("no cache", None), ("cold cache (first run)", cache),
                                 ("warm cache (after the first)", cache)):
            start = time.perf_counter()
            results[label] = ceat(EncoderView(encoder, layer=layer, cache=use_cache), association_test,
                                  n_samples=n_samples, contexts_per_word=contexts_per_word, seed=seed)
            timings[label] = time.perf_counter() - start
        timings["cached texts"] = float(len(cache))
        cache.close()
    first = next(iter(results.values()))
    for result in results.values():
        np.testing.assert_array_equal(result.effect_sizes, first.effect_sizes)
    timings["combined effect size"] = first.combined_effect_size
    return timings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--test", default="weat1", help="WEAT test key (weat1 ... weat10)")
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--n-samples", type=int, default=1000)
    parser.add_argument("--contexts-per-word", type=int, default=20)


def main(args: argparse.Namespace) -> int:
    timings = time_ceat(test=args.test, layer=args.layer, n_samples=args.n_samples,
                        contexts_per_word=args.contexts_per_word)
    print(f"CEAT {args.test}, layer {args.layer}, N = {args.n_samples}, {args.contexts_per_word} contexts per word "
          f"({int(timings.pop('cached texts'))} (text, layer) entries cached), "
          f"CES = {timings.pop('combined effect size'):+.3f}")
    for label, seconds in timings.items():
        print(f"  {label:<30} {seconds:7.2f} s")
    warm = timings["warm cache (after the first)"]
    print(f"  speed-up warm vs no cache: {timings['no cache'] / warm:.0f}x (results identical)")
    return 0

