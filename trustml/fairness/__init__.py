"""Fairness: group (extrinsic) metrics, embedding association tests (WEAT/SEAT/CEAT), and more.

Fairness I: ``group`` (per-group metrics on Fairlearn's MetricFrame, bootstrap CIs), ``embedding_tests``
(WEAT, SEAT, CEAT on arrays), ``wordsets`` (Caliskan et al. 2017 word sets, templates), ``encoders``
(encoder views, on-disk embedding cache, SEAT/CEAT on an encoder), ``toxicity`` (templated identity
toxicity suite, synthetic training set, toxicity classifier).
"""

from trustml.fairness.toxicity import (
    ALIGNED_FRAMES, GENERIC_FRAMES, IDENTITY_PAIRS, IDENTITY_TERMS, TARGETED_TERMS, aligned_association_test,
    counterfactual_pairs, identity_gaps, identity_test_suite, toxicity_training_set, train_toxicity_classifier,
)
from trustml.fairness.embedding_tests import (
    CEATResult, DegenerateSampleWarning, RandomEffectsResult, WEATResult, association, ceat_from_vectors,
    context_corpus, permutation_p_value, random_effects, seat_sentences, weat, weat_effect_size, weat_p_value,
    weat_statistic,
)
from trustml.fairness.encoders import (
    EmbeddingCache, EncoderView, ceat, contextual_word_vectors, projection_debias, random_init_encoder, seat,
    static_weat, token_states,
)
from trustml.fairness.group import GroupReport, UndefinedMetricWarning, group_accuracy, group_metrics
from trustml.fairness.wordsets import CONTEXT_FRAMES, SEAT_TEMPLATES, WEAT_TESTS, AssociationTest, WordSet

# --- Fairness II exports (sensitivity, counterfactual, distill) below ---
# Fairness II: ``sensitivity`` (accumulated prediction sensitivity, Krishna et al. 2022, and its ground-truth
# task), ``counterfactual`` (gender swapping, CDA, counterfactual gap), ``gender_pairs`` (word/name pair lists),
# ``occupations`` (a corpus with planted occupation–gender associations; its LM is trustml.models.lm),
# ``distill`` (role-reversal distillation, Gupta et al. 2022, gender disparity of generations, downstream gaps),
# ``dp_disparate_impact`` (DP-SGD's cost per group, Bagdasaryan et al. 2019: norms by group, oversampling),
# ``correlation`` (Spearman's ρ between bias metrics with paired bootstrap intervals).
from trustml.fairness.counterfactual import (
    CounterfactualGap, GenderSwapper, counterfactual_augment, counterfactual_gap, swap_gender,
)
from trustml.fairness.distill import (
    VARIANTS, DisparityResult, TeacherCache, distill_student, downstream_gaps, evaluate_lm, finetune_classifier,
    gender_disparity, occupation_bios, perturb_teacher, token_permutation,
)
from trustml.fairness.correlation import CorrelationIntervals, DegenerateResampleWarning, spearman_intervals
from trustml.fairness.dp_disparate_impact import (
    GapReport, GroupedPrivateTraining, GroupPoissonBatches, accuracy_gaps, clipping_by_group, group_sample_rates,
    train_private_by_group,
)
from trustml.fairness.occupations import OCCUPATION_FEMALE_SHARE, PROMPT_TEMPLATES, occupation_corpus
from trustml.fairness.sensitivity import (
    SensitivityResult, audit_text_classifier, planted_attribute_task, prediction_sensitivity, protected_token_mask,
    sensitivity_vs_degree,
)
