"""Fairness: group (extrinsic) metrics, embedding association tests (WEAT/SEAT/CEAT), and more.

Fairness I: ``group`` (per-group metrics on Fairlearn's MetricFrame, bootstrap CIs), ``embedding_tests``
(WEAT, SEAT, CEAT on arrays), ``wordsets`` (Caliskan et al. 2017 word sets, templates), ``encoders``
(encoder views, on-disk embedding cache, SEAT/CEAT on an encoder), ``benchmark`` (templated identity
toxicity suite, synthetic training set, toxicity classifier).
"""

from trustml.fairness.benchmark import (
    ALIGNED_FRAMES, GENERIC_FRAMES, IDENTITY_PAIRS, IDENTITY_TERMS, TARGETED_TERMS, aligned_association_test,
    counterfactual_pairs, identity_gaps, identity_test_suite, toxicity_training_set, train_toxicity_classifier,
)
from trustml.fairness.embedding_tests import (
    CEATResult, RandomEffectsResult, WEATResult, association, ceat_from_vectors, context_corpus,
    permutation_p_value, random_effects, seat_sentences, weat, weat_effect_size, weat_p_value, weat_statistic,
)
from trustml.fairness.encoders import (
    EmbeddingCache, EncoderView, ceat, contextual_word_vectors, projection_debias, random_init_encoder, seat,
    static_weat, token_states,
)
from trustml.fairness.group import GroupReport, group_accuracy, group_metrics
from trustml.fairness.wordsets import CONTEXT_FRAMES, SEAT_TEMPLATES, WEAT_TESTS, AssociationTest, WordSet

# --- Fairness II exports (sensitivity, counterfactual, distill) below ---
