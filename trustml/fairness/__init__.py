"""Fairness: group (extrinsic) metrics, embedding association tests (WEAT/SEAT/CEAT), and more.

Fairness I (this block): ``group`` (per-group metrics on Fairlearn's MetricFrame, bootstrap CIs),
``embedding_tests`` (WEAT, SEAT, CEAT), ``wordsets`` (Caliskan et al. 2017 word sets),
``cache`` (on-disk embedding cache), ``benchmark`` (templated identity toxicity suite).
"""

# --- Fairness II exports (sensitivity, counterfactual, distill) below ---
