"""Accumulated prediction sensitivity: equals a finite-difference estimate, a closed form on a linear model,
vanishes when the TC ignores what the PSM reads; the ground-truth task; clear errors."""

import numpy as np
import pytest
import torch
from torch import nn

from trustml.fairness.sensitivity import (
    CLASS_WEIGHTS, feature_jacobian, planted_attribute_task, prediction_sensitivity, protected_token_mask,
)
from trustml.models import EmbeddingClassifier, TransformerClassifier

H = 1e-5


def tiny_models(kind, seed):
    torch.manual_seed(seed)
    if kind == "embedding_classifier":
        make = lambda c: EmbeddingClassifier(12, c, embed_dim=5, hidden_dim=7)  # noqa: E731
    else:
        make = lambda c: TransformerClassifier(  # noqa: E731
            12, c, d_model=8, n_heads=2, n_layers=1, d_ff=16, max_length=6)
    return make(3).double().eval(), make(2).double().eval()


def ids_batch(seed):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 12, (4, 6), generator=generator)
    ids[1, 4:] = 0  # padding
    ids[3, 2:] = 0
    return ids


def finite_difference_jacobian(model, ids, features):
    """|∂f_j/∂x_i| by central differences: every ±h perturbation of one example's feature (token scale, or
    one embedding coordinate) is a row of one batch; for "embedding" the per-coordinate derivatives are
    then reduced by their L2 norm, as the library documents."""
    mask = (ids != 0).long()
    embeds = model.get_input_embeddings()(ids).detach()
    B, T, d = embeds.shape
    out = []
    with torch.no_grad():
        for b in range(B):
            if features == "token":
                scale = torch.eye(T, dtype=embeds.dtype)[:, :, None] * H  # one row per token
                rows = torch.cat([embeds[b] * (1 + scale), embeds[b] * (1 - scale)])
            else:
                step = torch.eye(T * d, dtype=embeds.dtype).view(T * d, T, d) * H  # one row per coordinate
                rows = torch.cat([embeds[b] + step, embeds[b] - step])
            probs = model(inputs_embeds=rows, attention_mask=mask[b].expand(len(rows), T)).softmax(-1)
            up, down = probs.chunk(2)
            derivative = ((up - down) / (2 * H)).T  # (C, T) or (C, T·d)
            if features == "embedding":
                derivative = derivative.reshape(-1, T, d).norm(dim=-1)
            out.append(derivative.abs().numpy())
    return np.stack(out)


@pytest.mark.parametrize("kind", ["embedding_classifier", "transformer"])
@pytest.mark.parametrize("features", ["token", "embedding"])
def test_aps_equals_a_finite_difference_estimate(kind, features):
    task, psm = tiny_models(kind, seed=1)
    ids = ids_batch(seed=2)
    task_fd = finite_difference_jacobian(task, ids, features)
    psm_fd = finite_difference_jacobian(psm, ids, features)
    w = psm_fd.sum(1) * (ids != 0).numpy()
    w = w / w.sum(-1, keepdims=True)
    probs = task(ids).softmax(-1).detach()
    for class_weights in CLASS_WEIGHTS:
        result = prediction_sensitivity(task, ids, protected_model=psm, features=features,
                                        class_weights=class_weights, batch_size=3)
        v = CLASS_WEIGHTS[class_weights](probs).numpy()
        expected = np.einsum("bj,bji,bi->b", v, task_fd, w)
        np.testing.assert_allclose(result.per_example.numpy(), expected, rtol=1e-6, atol=1e-10)
        np.testing.assert_allclose(result.contributions.sum(-1).numpy(), result.per_example.numpy())
        np.testing.assert_allclose(result.w.sum(-1).numpy(), 1.0)
        assert result.score == pytest.approx(expected.mean())


def test_dense_features_match_the_closed_form_of_logistic_regression():
    # f = softmax over (0, βᵀx): ∂p_1/∂x_i = p(1−p)β_i and ∂p_0/∂x_i = −p(1−p)β_i.
    torch.manual_seed(0)
    beta = torch.tensor([2.0, -1.0, 0.0, 0.5], dtype=torch.float64)
    gamma = torch.tensor([0.0, 0.0, 3.0, 1.0], dtype=torch.float64)  # the PSM reads features 2 and 3

    class Logistic(nn.Module):
        def __init__(self, coef):
            super().__init__()
            self.coef = coef

        def forward(self, x):
            return torch.stack([torch.zeros(len(x), dtype=x.dtype), x @ self.coef], 1)

    x = torch.rand(5, 4, dtype=torch.float64)
    result = prediction_sensitivity(Logistic(beta), x, protected_model=Logistic(gamma), features="dense")
    p = torch.sigmoid(x @ beta)
    q = torch.sigmoid(x @ gamma)
    w = (2 * q * (1 - q)).unsqueeze(1) * gamma.abs()  # Σ_a |∂g_a/∂x_i| for the two PSM outputs
    w = w / w.sum(1, keepdim=True)
    expected = ((p * (1 - p)).unsqueeze(1) * beta.abs() * w).sum(1)  # v uniform: ½(|∂p_0| + |∂p_1|)
    torch.testing.assert_close(result.per_example, expected)
    logits = prediction_sensitivity(Logistic(beta), x, protected_model=Logistic(gamma), features="dense",
                                    output="logit")
    torch.testing.assert_close(logits.per_example, 0.5 * (beta.abs() * w).sum(1))


def test_aps_vanishes_when_the_task_ignores_what_the_psm_reads():
    # TC uses only feature 0; PSM only feature 1: APS = 0 with psm_gradient, > 0 with uniform w.
    task = nn.Linear(3, 2, bias=False).double()
    psm = nn.Linear(3, 2, bias=False).double()
    with torch.no_grad():
        task.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]))
        psm.weight.copy_(torch.tensor([[0.0, 2.0, 0.0], [0.0, -2.0, 0.0]]))
    x = torch.rand(6, 3, dtype=torch.float64)
    assert prediction_sensitivity(task, x, protected_model=psm, features="dense").per_example.abs().max() < 1e-12
    assert (prediction_sensitivity(task, x, features="dense", feature_weights="uniform").per_example > 0).all()
    with torch.no_grad():
        task.weight[:, 1] = torch.tensor([0.5, -0.5])
    assert (prediction_sensitivity(task, x, protected_model=psm, features="dense").per_example > 0).all()


def test_protected_terms_weights():
    task, _ = tiny_models("embedding_classifier", seed=0)

    class Vocabulary:
        def token_to_id(self, word):
            table = {"he": 3, "she": 4}
            if word not in table:
                raise KeyError(word)
            return table[word]

    ids = torch.tensor([[3, 5, 6, 0], [7, 8, 9, 10], [4, 3, 5, 0]])
    mask = protected_token_mask(ids, Vocabulary(), ["he", "she", "unknown"])
    assert mask.tolist() == [[True, False, False, False], [False] * 4, [True, True, False, False]]
    result = prediction_sensitivity(task, ids, feature_weights="protected_terms", protected_mask=mask)
    np.testing.assert_allclose(result.w.numpy(), [[1, 0, 0, 0], [0, 0, 0, 0], [0.5, 0.5, 0, 0]])
    assert result.per_example[1] == 0 and result.per_example[0] > 0
    uniform = prediction_sensitivity(task, ids, feature_weights="uniform")
    np.testing.assert_allclose(uniform.w.numpy()[0], [1 / 3, 1 / 3, 1 / 3, 0])
    with pytest.raises(ValueError, match="none of the protected words"):
        protected_token_mask(ids, Vocabulary(), ["they"])


def test_bad_input_is_a_clear_error():
    task, psm = tiny_models("embedding_classifier", seed=0)
    ids = ids_batch(0)
    with pytest.raises(ValueError, match="feature_weights must be one of"):
        prediction_sensitivity(task, ids, feature_weights="magic")
    with pytest.raises(ValueError, match="class_weights must be one of"):
        prediction_sensitivity(task, ids, protected_model=psm, class_weights="loud")
    with pytest.raises(ValueError, match="output must be one of"):
        prediction_sensitivity(task, ids, protected_model=psm, output="odds")
    with pytest.raises(ValueError, match="needs protected_model"):
        prediction_sensitivity(task, ids)
    with pytest.raises(ValueError, match="needs protected_mask"):
        prediction_sensitivity(task, ids, feature_weights="protected_terms")
    with pytest.raises(ValueError, match="protected_mask must have"):
        prediction_sensitivity(task, ids, feature_weights="protected_terms", protected_mask=torch.ones(2, 2))
    with pytest.raises(ValueError, match="needs token ids"):
        feature_jacobian(task, ids.double())
    with pytest.raises(ValueError, match="needs float inputs"):
        feature_jacobian(task, ids, features="dense")
    with pytest.raises(ValueError, match="features must be one of"):
        feature_jacobian(task, ids, features="pixels")
    with pytest.raises(ValueError, match="inputs must not be empty"):
        prediction_sensitivity(task, ids[:0], protected_model=psm)
    with pytest.raises(TypeError, match="needs a model with get_input_embeddings"):
        feature_jacobian(nn.Sequential(nn.Embedding(12, 4), nn.Flatten(), nn.Linear(24, 2)), ids)


def test_planted_attribute_task():
    low, high = (planted_attribute_task(6000, degree=d, seed=3) for d in (0.0, 1.0))
    assert (low["text"] == high["text"]).all() and (low["gender"] == high["gender"]).all()
    # Degree 0: the hire probability ignores gender; degree 1: it adds b = 2 to the log-odds for men.
    by_cell = low.groupby(["skill", "gender"])["hire_probability"].first()
    assert by_cell[(1, "male")] == by_cell[(1, "female")] == pytest.approx(1 / (1 + np.exp(-1.5)))
    high_cell = high.groupby(["skill", "gender"])["hire_probability"].first()
    assert high_cell[(0, "male")] == pytest.approx(1 / (1 + np.exp(1.5 - 2.0)))
    observed = low.groupby(["skill", "gender"])["label"].mean()
    np.testing.assert_allclose(observed.to_numpy(), by_cell.to_numpy(), atol=0.04)
    explicit = low[low["explicit"]]
    assert explicit["text"].str.contains(r"\b(?:he|she)\b").all()
    assert not low[~low["explicit"]]["text"].str.contains(r"\b(?:he|she)\b").any()
    assert 0.65 < low["explicit"].mean() < 0.75
    # Common random numbers: raising the degree only moves men to "hire" and women to "reject".
    mid, more = (planted_attribute_task(3000, degree=d, seed=4) for d in (0.3, 0.6))
    men = mid["gender"] == "male"
    assert (more["label"][men] >= mid["label"][men]).all() and (more["label"][~men] <= mid["label"][~men]).all()
    assert (more["label"] != mid["label"]).any()
    for bad in [{"degree": 1.5}, {"explicit_rate": -0.1}, {"proxy_strength": 2}, {"attribute_log_odds": -1},
                {"n": 0}]:
        with pytest.raises(ValueError, match=next(iter(bad))):
            planted_attribute_task(**bad)


def test_audit_of_a_trained_classifier_sees_the_planted_dependence():
    from trustml.data import WordTokenizer
    from trustml.fairness.sensitivity import audit_text_classifier, fit_text_classifier

    frames = {d: planted_attribute_task(1200, degree=d, seed=0) for d in (0.0, 1.0)}
    tokenizer = WordTokenizer.fit(frames[0.0]["text"], max_length=16)
    texts = frames[0.0]["text"].tolist()
    psm = fit_text_classifier(texts[200:], (frames[0.0]["gender"] == "male")[200:], tokenizer=tokenizer, seed=0)
    audits = {d: audit_text_classifier(fit_text_classifier(texts[200:], f["label"][200:], tokenizer=tokenizer, seed=0),
                                       psm, tokenizer, texts[:200]) for d, f in frames.items()}
    for metric in ("aps", "aps_logit", "aps_terms", "counterfactual_gap"):
        assert audits[1.0].summary[metric] > 1.5 * audits[0.0].summary[metric], metric
    examples = audits[1.0].examples
    # Texts with no swap-list word have no counterfactual gap, however much the model relies on proxies.
    assert (examples.loc[~examples["has_swap_term"], "counterfactual_gap"] == 0).all()
    assert (examples.loc[~examples["has_swap_term"], "aps"] > 0).all()
    # The audit keeps what it audited: re-scoring its models on its texts gives its numbers back.
    audit = audits[1.0]
    assert audit.protected_model is psm and audit.tokenizer is tokenizer
    again = prediction_sensitivity(audit.task_model, tokenizer.encode(texts[:200])[0], protected_model=psm)
    np.testing.assert_allclose(again.per_example.numpy(), examples["aps"], rtol=1e-5)
    with pytest.raises(ValueError, match="same length"):
        fit_text_classifier(texts[:3], [0, 1], tokenizer=tokenizer)
