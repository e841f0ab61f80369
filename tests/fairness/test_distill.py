"""Role-reversal distillation: the perturbed teacher distribution sums to 1 and is swap-symmetric; the cache;
the distillation loop; the disparity metric; the downstream check; clear errors."""

import numpy as np
import pytest
import torch
from sklearn.exceptions import UndefinedMetricWarning

from trustml.fairness.counterfactual import GenderSwapper
from trustml.fairness.distill import (
    COMBINE, SCOPES, VARIANTS, LMClassifier, TeacherCache, distill_student, downstream_gaps, finetune_classifier,
    gender_disparity, occupation_bios, perturb_teacher, token_permutation,
)
from trustml.fairness.occupations import occupation_corpus
from trustml.models.lm import CausalLM, LMTokenizer, train_lm


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/fairness/conftest.py


@pytest.fixture(scope="module")
def setup():
    texts = occupation_corpus(500, seed=0)["text"].tolist()
    tokenizer = LMTokenizer.fit(texts)
    torch.manual_seed(0)
    teacher = CausalLM(tokenizer.vocab_size, d_model=16, n_heads=2, n_layers=1, d_ff=32)
    train_lm(teacher, tokenizer, texts, epochs=8, lr=1e-2, seed=0)
    return texts, tokenizer, teacher, TeacherCache.build(teacher, tokenizer, texts)


def random_distributions(seed, shape=(3, 5), vocab=12):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, vocab, generator=generator) * 4).softmax(-1), \
        (torch.rand(*shape, vocab, generator=generator) * 4).softmax(-1)


PERMUTATION = torch.tensor([1, 0, 3, 2, 4, 5, 6, 7, 9, 8, 10, 11])  # tokens 0↔1, 2↔3, 8↔9 are gender pairs
GENDERED = PERMUTATION != torch.arange(12)


@pytest.mark.parametrize("combine", sorted(COMBINE))
@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_perturbed_distribution_sums_to_one(combine, scope, strength, seed):
    p, q = random_distributions(seed)
    out = perturb_teacher(p, q, PERMUTATION, combine=combine, scope=scope, strength=strength)
    torch.testing.assert_close(out.sum(-1), torch.ones(3, 5))
    assert (out >= 0).all()
    if strength == 0.0:
        torch.testing.assert_close(out, p)


@pytest.mark.parametrize("combine", sorted(COMBINE))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_perturbation_is_symmetric_under_swapping(combine, seed):
    p, q = random_distributions(seed)
    # scope="all": reversing the roles of the two contexts gives the swapped distribution, exactly.
    forward = perturb_teacher(p, q, PERMUTATION, combine=combine, scope="all")
    backward = perturb_teacher(q, p, PERMUTATION, combine=combine, scope="all")
    torch.testing.assert_close(forward, backward[..., PERMUTATION])
    # scope="gendered": the distribution over the gendered tokens is swap-symmetric ...
    forward = perturb_teacher(p, q, PERMUTATION, combine=combine, scope="gendered")
    backward = perturb_teacher(q, p, PERMUTATION, combine=combine, scope="gendered")[..., PERMUTATION]
    conditional = lambda d: d[..., GENDERED] / d[..., GENDERED].sum(-1, keepdim=True)  # noqa: E731
    torch.testing.assert_close(conditional(forward), conditional(backward))
    # ... and with a gender-free context (x' = x) every pair gets equal probability.
    same = perturb_teacher(p, p, PERMUTATION, combine=combine, scope="gendered")
    torch.testing.assert_close(same, same[..., PERMUTATION])


def test_mean_and_max_by_hand():
    p = torch.tensor([0.6, 0.2, 0.1, 0.1])  # tokens 0 (he) and 1 (she) are a pair
    permutation = torch.tensor([1, 0, 2, 3])
    mean = perturb_teacher(p, p, permutation, combine="mean")
    torch.testing.assert_close(mean, torch.tensor([0.4, 0.4, 0.1, 0.1]))
    maximum = perturb_teacher(p, p, permutation, combine="max")
    torch.testing.assert_close(maximum, torch.tensor([0.6, 0.6, 0.1, 0.1]) / 1.4)
    half = perturb_teacher(p, p, permutation, combine="mean", strength=0.5)
    torch.testing.assert_close(half, torch.tensor([0.5, 0.3, 0.1, 0.1]))
    # After a gendered word the role-reversed teacher agrees with the original: coreference survives.
    after_she = torch.tensor([0.05, 0.85, 0.05, 0.05])
    after_he = torch.tensor([0.85, 0.05, 0.05, 0.05])
    torch.testing.assert_close(perturb_teacher(after_she, after_he, permutation), after_she)


def test_perturb_teacher_errors():
    p, q = random_distributions(0)
    with pytest.raises(ValueError, match="combine must be one of"):
        perturb_teacher(p, q, PERMUTATION, combine="median")
    with pytest.raises(ValueError, match="scope must be one of"):
        perturb_teacher(p, q, PERMUTATION, scope="nouns")
    with pytest.raises(ValueError, match="strength must be in"):
        perturb_teacher(p, q, PERMUTATION, strength=1.5)
    with pytest.raises(ValueError, match="same shape"):
        perturb_teacher(p, q[..., :5], PERMUTATION)


def test_token_permutation_is_an_involution(setup):
    _, tokenizer, _, _ = setup
    permutation = token_permutation(tokenizer)
    assert (permutation[permutation] == torch.arange(tokenizer.vocab_size)).all()
    assert permutation[tokenizer.token_to_id("he")] == tokenizer.token_to_id("she")
    assert permutation[tokenizer.token_to_id("his")] == tokenizer.token_to_id("her")
    assert permutation[tokenizer.token_to_id("nurse")] == tokenizer.token_to_id("nurse")
    with pytest.raises(ValueError, match="no gender word pair"):
        token_permutation(LMTokenizer.fit(["the cat sat on the mat"]))


def test_teacher_cache_holds_the_teachers_outputs(setup):
    texts, tokenizer, teacher, cache = setup
    assert cache.swapped_texts[:3] == GenderSwapper().swap_all(texts[:3])
    assert cache.aligned.all()  # word-level: a swap never changes the token count
    assert cache.gendered.float().mean() > 0.5
    ids, mask = tokenizer.encode(texts[:4])
    with torch.no_grad():
        expected = teacher(ids, mask).log_softmax(-1)
    T = ids.shape[1]
    torch.testing.assert_close(cache.log_probs[:4, :T][mask.bool()], expected[mask.bool()])


def _kl_to_teacher(student, cache, rows=64):
    ids, mask = cache.input_ids[:rows], cache.attention_mask[:rows]
    with torch.no_grad():
        student_log = student(ids, mask).log_softmax(-1)
    teacher_log = cache.log_probs[:rows]
    kl = (teacher_log.exp() * (teacher_log - student_log)).sum(-1)
    return float(kl[mask[:, 1:].bool().nonzero(as_tuple=True)[0], mask[:, 1:].bool().nonzero(as_tuple=True)[1]].mean())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_distillation_moves_the_student_towards_the_teacher(setup, variant):
    _, tokenizer, _, cache = setup
    torch.manual_seed(1)
    student = CausalLM(tokenizer.vocab_size, d_model=8, n_heads=2, n_layers=1, d_ff=16)
    before = _kl_to_teacher(student, cache)
    epochs_seen = []
    history = distill_student(cache, student, student_tokenizer=tokenizer, variant=variant, epochs=3, lr=1e-2,
                      on_epoch_end=lambda epoch, model: epochs_seen.append(epoch))
    assert epochs_seen == [1, 2, 3] and len(history) == 3 and history[2] < history[0]
    assert _kl_to_teacher(student, cache) < 0.6 * before


def test_distillation_errors(setup):
    _, tokenizer, _, cache = setup
    student = CausalLM(tokenizer.vocab_size, d_model=8, n_heads=2, n_layers=1, d_ff=16)
    other = LMTokenizer.fit(occupation_corpus(300, seed=5)["text"])
    with pytest.raises(ValueError, match="teacher and student tokenizers differ"):
        distill_student(cache, student, student_tokenizer=other)
    with pytest.raises(TypeError, match="tokenizer must be"):
        distill_student(cache, student, student_tokenizer="gpt2")
    with pytest.raises(ValueError, match="variant must be one of"):
        distill_student(cache, student, student_tokenizer=tokenizer, variant="fancy")
    with pytest.raises(ValueError, match="perturb must be None or one of"):
        distill_student(cache, student, student_tokenizer=tokenizer, variant=None, perturb="median")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        distill_student(cache, student, student_tokenizer=tokenizer, temperature=0)
    with pytest.raises(ValueError, match="strength must be in"):
        distill_student(cache, student, student_tokenizer=tokenizer, variant="perturb (mean)", strength=2)
    small = CausalLM(tokenizer.vocab_size - 3, d_model=8, n_heads=2, n_layers=1, d_ff=16)
    with pytest.raises(ValueError, match="the student predicts"):
        distill_student(cache, small, student_tokenizer=tokenizer, epochs=1)
    with pytest.raises(ValueError, match="texts"):
        TeacherCache.build(setup[2], tokenizer, [])


class FixedNextToken(torch.nn.Module):
    """An 'LM' whose next-token distribution is the same everywhere (for exact metric checks)."""

    def __init__(self, probabilities):
        super().__init__()
        self.log_probs = torch.log(probabilities)

    def forward(self, input_ids, attention_mask=None):
        return self.log_probs.expand(*input_ids.shape, -1)


def test_gender_disparity_exact_and_sampled(setup):
    _, tokenizer, _, _ = setup
    probabilities = torch.full((tokenizer.vocab_size,), 1e-9)
    probabilities[tokenizer.token_to_id("she")] = 0.6
    probabilities[tokenizer.token_to_id("he")] = 0.2
    probabilities[tokenizer.token_to_id("the")] = 0.2
    model = FixedNextToken(probabilities / probabilities.sum())
    result = gender_disparity(model, tokenizer, occupations=["nurse", "pilot"])
    assert result.per_occupation["fairness"].tolist() == pytest.approx([1 / 3, 1 / 3], rel=1e-5)
    assert result.average == pytest.approx(1 / 3, rel=1e-5) and result.worst == pytest.approx(1 / 3, rel=1e-5)
    sampled = gender_disparity(model, tokenizer, occupations=["nurse", "pilot"], method="sample", n_samples=200,
                               max_new_tokens=2, seed=0)
    assert sampled.average == pytest.approx(1 / 3, abs=0.08)
    with pytest.raises(ValueError, match="occupations"):
        gender_disparity(model, tokenizer, occupations=[])
    with pytest.raises(ValueError, match="templates"):
        gender_disparity(model, tokenizer, occupations=["nurse"], templates=[""])
    with pytest.raises(ValueError, match="must contain"):
        gender_disparity(model, tokenizer, occupations=["nurse"], templates=["the person said"])
    with pytest.raises(ValueError, match="method must be one of"):
        gender_disparity(model, tokenizer, occupations=["nurse"], method="vibes")


def test_perturbation_makes_the_student_gender_symmetric_at_gender_free_prompts(setup):
    # Pure KD (no hard labels) from the perturbed teacher: after a gender-free context the targets are
    # exactly symmetric, so a student trained on them is much closer to parity than one trained plainly.
    _, tokenizer, _, cache = setup
    scores = {}
    for variant in ("plain", "perturb (mean)"):
        torch.manual_seed(0)
        student = CausalLM(tokenizer.vocab_size, d_model=16, n_heads=2, n_layers=1, d_ff=32)
        distill_student(cache, student, student_tokenizer=tokenizer, variant=variant, epochs=8, lr=1e-2,
                        hard_label_weight=0)
        scores[variant] = gender_disparity(student, tokenizer, occupations=["nurse", "secretary", "mechanic",
                                                                             "carpenter"]).average
    assert scores["perturb (mean)"] > 0.9 and scores["perturb (mean)"] > scores["plain"] + 0.2


def test_downstream_bios_and_gaps(setup):
    _, tokenizer, teacher, _ = setup
    bios = occupation_bios(2000, seed=0)
    share = bios.groupby("occupation")["gender"].apply(lambda g: (g == "female").mean())
    assert share["nurse"] > 0.8 and share["engineer"] < 0.2
    balanced = occupation_bios(1000, balanced=True, seed=1)
    assert abs((balanced["gender"] == "female").mean() - 0.5) < 0.05
    all_tokenizer = LMTokenizer.fit(list(occupation_corpus(500, seed=0)["text"]) + list(bios["text"])
                                    + list(balanced["text"]))
    lm = CausalLM(all_tokenizer.vocab_size, d_model=16, n_heads=2, n_layers=1, d_ff=32)
    names = sorted(bios["occupation"].unique())
    labels = bios["occupation"].map({n: i for i, n in enumerate(names)})
    classifier = finetune_classifier(lm, all_tokenizer, bios["text"].tolist(), labels, num_classes=len(names),
                                     epochs=3, lr=1e-2, seed=0)
    gaps = downstream_gaps(classifier, all_tokenizer, balanced, label_names=names)
    assert gaps["accuracy"] > 0.4
    # The gap equals a direct computation of TPR(female) − TPR(male) per occupation.
    ids, mask = all_tokenizer.encode(balanced["text"].tolist())
    with torch.no_grad():
        predicted = np.array(names)[classifier(ids, mask).argmax(-1).numpy()]
    frame = balanced.assign(hit=predicted == balanced["occupation"])
    tpr = frame.groupby(["occupation", "gender"])["hit"].mean().unstack()
    direct = (tpr["female"] - tpr["male"])
    for name in names:
        assert gaps[f"TPR gap {name}"] == pytest.approx(direct[name])
    assert gaps["TPR gap (mean |F−M|)"] == pytest.approx(direct.abs().mean())
    # An occupation with test rows of one gender only: its gap, and the summaries, are undefined (not skipped).
    one_sided = balanced[~((balanced["occupation"] == names[0]) & (balanced["gender"] == "male"))]
    with pytest.warns(UndefinedMetricWarning, match=rf"\['{names[0]}'\] lack test rows of one gender"):
        partial = downstream_gaps(classifier, all_tokenizer, one_sided, label_names=names)
    assert np.isnan(partial[f"TPR gap {names[0]}"]) and np.isnan(partial["TPR gap (mean |F−M|)"])
    assert partial[f"TPR gap {names[1]}"] == pytest.approx(direct[names[1]])


def test_lm_classifier_needs_a_width():
    class NoConfig(torch.nn.Module):
        config = object()

    with pytest.raises(TypeError, match="hidden width"):
        LMClassifier(NoConfig(), 2)
