"""Source of book/fairness/05_counterfactual_distillation.ipynb
(run: python -m tools.chapters.fairness_05_counterfactual_distillation)."""

from tools.notebook import code, md, write_notebook

write_notebook("book/fairness/05_counterfactual_distillation.ipynb", [
    md("""
# Counterfactual role reversal: distilling a fairer language model

Small language models are often made by **distillation**: a small student is trained to reproduce a
large teacher's next-token distributions. The student inherits the teacher's biases along with its
skill — if the teacher continues *"the nurse said that"* with *she* nine times out of ten, so will the
student. Gupta et al. (2022, "Mitigating Gender Bias in Distilled Language Models via Counterfactual
Role Reversal") change the distillation in two places: they **augment** the training text with
gender-swapped copies, and they **perturb the teacher's predictions** by combining them with the
teacher's predictions on the swapped text. This chapter builds both, measures what they buy in fairness
and what they cost in perplexity, and checks whether a fairer generator also gives a fairer classifier.

**Learning objectives**

- Swap gender in text both ways (*he ↔ she*, *his ↔ her*, *king ↔ queen*, *John ↔ Mary*) with
  `trustml.fairness.counterfactual.GenderSwapper`, keeping case and plurals.
- Distil a teacher LM into a smaller student with a KL loss on cached teacher outputs
  (`trustml.fairness.distill`), plain and with counterfactual augmentation and/or teacher perturbation.
- Measure gender disparity of continuations of occupation prompts, $\\min(F/M, M/F)$ per occupation,
  averaged and worst case, and utility as held-out perplexity.
- See that fairer generation need not carry over to a downstream classifier.

*Expected runtime: about 25 s with `QUICK = True`, about 1.5 min at full size (2 CPU cores).*
"""),
    code("""
# Tests set QUICK = True: a smaller corpus, fewer epochs and a coarser strength grid.
QUICK = False
SEED = 0
# Generated corpus (training and held-out sentences) and bios for the downstream check.
N_TRAIN = 3000
N_HELDOUT = 600
N_BIOS = 1500
# Training: teacher epochs, distillation epochs, fine-tuning epochs.
TEACHER_EPOCHS = 8
STUDENT_EPOCHS = 6
FINETUNE_EPOCHS = 4
# Strengths of the teacher perturbation for the trade-off figures.
STRENGTHS = [0.0, 0.25, 0.5, 0.75, 1.0]
# Online only: a Hugging Face causal LM name (e.g. "distilgpt2") replaces the tiny teacher. None = offline.
HF_MODEL_NAME = None
""", tags=["parameters"]),
    code("""
if QUICK:
    N_TRAIN, N_HELDOUT, N_BIOS = 2000, 400, 1000
    TEACHER_EPOCHS, STUDENT_EPOCHS, FINETUNE_EPOCHS = 6, 5, 4
    STRENGTHS = [0.0, 0.5, 1.0]
"""),
    md("""
## A corpus with planted associations

`occupation_corpus` generates sentences such as *"the nurse said that she would help ."* and
*"my brother is a carpenter and he likes the job ."*. The person's gender follows a **planted skew** per
occupation (`OCCUPATION_FEMALE_SHARE`: 92 % of nurses are women, 5 % of carpenters), and 30 % of the
sentences mention no gender at all. The tokenizer is fitted once on every text this chapter uses, so the
teacher, all students and the downstream classifiers share one vocabulary.
"""),
    code("""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from trustml.fairness.counterfactual import GenderSwapper
from trustml.fairness.distill import (
    VARIANTS, TeacherCache, distill, downstream_gaps, evaluate_lm, finetune_classifier, gender_disparity,
    occupation_bios,
)
from trustml.fairness.lm import (
    OCCUPATION_FEMALE_SHARE, CausalLM, LMTokenizer, hf_student, load_hf_causal_lm, next_token_probs,
    occupation_corpus, train_lm,
)
from trustml.viz import live_explorer, setup_plotly, slider_figure, static_figure

torch.set_num_threads(1)  # tiny models: on a shared CPU, one thread is faster than two
setup_plotly()
train = occupation_corpus(N_TRAIN, seed=SEED)
heldout = occupation_corpus(N_HELDOUT, seed=SEED + 1)
bios_train = occupation_bios(N_BIOS, seed=SEED + 2)
bios_test = occupation_bios(N_BIOS // 2, balanced=True, seed=SEED + 3)
occupations = list(OCCUPATION_FEMALE_SHARE)
train.sample(6, random_state=SEED)
"""),
    md("""
## Role reversal: swapping gender in text

The swap replaces each gendered word and first name with its counterpart, in both directions, keeping
case, plurals and possessives. *her* is ambiguous (*his* or *him*): it is read from the next word.
On the word lists the swap is an **involution** — applying it twice gives the text back
(`tests/fairness/test_counterfactual.py` checks this on every listed word and on random sentences).
An unknown language is an error: `GenderSwapper(language="fr")` names the languages that exist.
"""),
    code("""
swapper = GenderSwapper()
for text in ["The nurse said that she would call her mother.", "Mr Brown's sons became kings.",
             "Mary told John that the book was hers."]:
    print(f"{text!r:55} -> {swapper.swap(text)!r}")
assert all(swapper.swap(swapper.swap(t)) == t for t in train["text"])
"""),
    md("""
## The teacher

Offline, the teacher is a 2-layer Transformer decoder (`CausalLM`, written from Embedding, Linear and
LayerNorm) trained on the corpus. With `HF_MODEL_NAME = "distilgpt2"` (or any causal LM name) and hub
access, a pretrained model replaces it and the students become shallower copies of it (`hf_student`,
same tokenizer, every other layer) — that path is not run here.

The teacher learns the planted skew: its probability of *she* among the gendered next words after
*"the {occupation} said that"* follows the corpus.
"""),
    code("""
if HF_MODEL_NAME:  # online only: a pretrained teacher, students of the same family and tokenizer
    teacher, tokenizer = load_hf_causal_lm(HF_MODEL_NAME)
    new_student = lambda: hf_student(teacher, n_layers=2, seed=SEED)  # noqa: E731
    STUDENT_LR = 5e-5
else:
    tokenizer = LMTokenizer.fit(pd.concat([train, heldout, bios_train, bios_test])["text"])
    torch.manual_seed(SEED)
    teacher = CausalLM(tokenizer.vocab_size, d_model=64, n_heads=4, n_layers=2, d_ff=128)
    train_lm(teacher, tokenizer, train["text"].tolist(), epochs=TEACHER_EPOCHS, seed=SEED, progress=True)

    def new_student():
        torch.manual_seed(SEED)
        return CausalLM(tokenizer.vocab_size, d_model=32, n_heads=2, n_layers=1, d_ff=64)

    STUDENT_LR = 1e-2
student_size = sum(p.numel() for p in new_student().parameters())
teacher_size = sum(p.numel() for p in teacher.parameters())
print(f"teacher: {teacher_size:,} parameters; student: {student_size:,} ({student_size / teacher_size:.0%})")
"""),
    code("""
def she_share(model):
    probs = next_token_probs(model, tokenizer, [f"the {o} said that" for o in occupations])
    she, he = probs[:, tokenizer.token_to_id("she")], probs[:, tokenizer.token_to_id("he")]
    return (she / (she + he)).numpy()

shares = pd.DataFrame({"occupation": occupations, "planted P(female)": list(OCCUPATION_FEMALE_SHARE.values()),
                       "teacher P(she | she or he)": she_share(teacher)})
shares.sort_values("planted P(female)").round(2).set_index("occupation").T
"""),
    md("""
## Distillation, plain and counterfactual

The student minimises, at every position $t$ of every training sentence,

$$\\mathcal L = \\tau^2\\, \\mathrm{KL}\\big(p_T(\\cdot \\mid x_{<t}) \\,\\|\\, p_S(\\cdot \\mid x_{<t})\\big)
 + \\lambda_{\\text{LM}}\\, \\mathrm{CE}\\big(x_t, p_S(\\cdot \\mid x_{<t})\\big)$$

(temperature $\\tau = 1$, $\\lambda_{\\text{LM}} = 0.5$: the usual DistilGPT2-style mix). The variants:

- **plain** — as above;
- **cda** — the training set plus the gender-swapped copy of every gendered sentence;
- **perturb (mean / max)** — the teacher's target is combined with its *role-reversed* prediction on the
  swapped context $x'$: for a gendered token $w$ with counterpart $s(w)$,
  $\\tilde p(w \\mid x) \\propto c\\big(p_T(w \\mid x),\\, p_T(s(w) \\mid x')\\big)$ with $c$ the mean or the
  max, other tokens unchanged, then renormalised. After *"the nurse said that"* ($x' = x$) this sets
  $\\tilde p(\\text{he}) = \\tilde p(\\text{she})$; after *"… she said that"* the role-reversed teacher also
  favours *she*, so coreference survives. (`tests/fairness/test_distill.py`: $\\tilde p$ sums to 1 and is
  symmetric under swapping.)
- **cda + perturb (mean)** — both.

The teacher's outputs on the training text and on its swapped copy are computed **once** and cached;
every variant reads them from the cache.
"""),
    code("""
cache = TeacherCache.build(teacher, tokenizer, train["text"].tolist())
print(f"cached teacher log-probabilities: {tuple(cache.log_probs.shape)} (texts x positions x vocabulary), "
      f"twice (original and swapped); {cache.gendered.float().mean():.0%} of the texts change under the swap")
students, rows = {}, {"teacher": evaluate_lm(teacher, tokenizer, occupations=occupations, heldout=heldout)}
for variant in tqdm(VARIANTS, desc="students"):
    student = new_student()
    distill(cache, student, student_tokenizer=tokenizer, variant=variant, epochs=STUDENT_EPOCHS, lr=STUDENT_LR,
            seed=SEED)
    students[variant] = student
    rows[variant] = evaluate_lm(student, tokenizer, occupations=occupations, heldout=heldout)
table = pd.DataFrame(rows).T
table.round(3)
"""),
    md("""
**Reading the table.** *fairness* is $\\min(F/M, M/F)$ per occupation, where $F$ and $M$ are the
probabilities of the female and the male words of the swap list as the **next token** after the three
occupation prompts (*"the nurse said that"*, *"yesterday the nurse told me that"*, *"the nurse
finished"*), summed over the prompts; 1 means parity. We use exact next-token probabilities rather than
sampled generations: same quantity, no sampling noise (a sampled check follows). *avg* is the mean over
the 20 occupations, *worst* the minimum. Perplexity is on held-out sentences from the same skewed
distribution.
"""),
    code("""
plain = table.loc["plain"]
debiased = ["cda", "perturb (mean)", "perturb (max)", "cda + perturb (mean)"]
for variant in debiased:
    cost = table.loc[variant, "perplexity"] / plain["perplexity"] - 1
    print(f"{variant:22} fairness avg {plain['fairness (avg)']:.3f} -> {table.loc[variant, 'fairness (avg)']:.3f}, "
          f"worst {plain['fairness (worst)']:.3f} -> {table.loc[variant, 'fairness (worst)']:.3f}; "
          f"perplexity {cost:+.1%}")
# Key result: every debiased student is fairer than the plain student; the perturbation by a wide margin.
assert (table.loc[debiased, "fairness (avg)"] > plain["fairness (avg)"]).all()
assert (table.loc[["perturb (mean)", "perturb (max)", "cda + perturb (mean)"], "fairness (avg)"]
        > plain["fairness (avg)"] + 0.2).all()
assert table.loc["cda + perturb (mean)", "fairness (worst)"] > plain["fairness (worst)"]
from trustml.viz import glue  # for the book's front page

glue("distill_fairness_plain", float(plain["fairness (avg)"]))
glue("distill_fairness_debiased", float(table.loc["cda + perturb (mean)", "fairness (avg)"]))
glue("distill_perplexity_cost", float(table.loc["cda + perturb (mean)", "perplexity"] / plain["perplexity"] - 1))
"""),
    md("""
**The cost.** Perplexity rises a little for the debiased students — on *gendered* held-out text the
skewed data really does say *she* after *nurse* more often, and a student taught parity is "wrong" there;
on gender-free text the students are close. Augmentation also changes what the student sees (more
gendered sentences), which costs a little on gender-free text. The plain student, meanwhile, is about as
biased as its teacher: distillation passes the association on.

Per occupation, the plain student follows the planted skew; the debiased one is flat:
"""),
    code("""
per_occupation = pd.concat([
    pd.DataFrame({"planted P(female)": list(OCCUPATION_FEMALE_SHARE.values()), "model": name,
                  "P(she | she or he)": she_share(model)})
    for name, model in {"teacher": teacher, "plain": students["plain"],
                        "cda + perturb (mean)": students["cda + perturb (mean)"]}.items()])
static_figure(per_occupation, x="planted P(female)", y="P(she | she or he)", hue="model",
              title="Next word after 'the <occupation> said that'");
"""),
    code("""
# The same comparison with sampled continuations (Gupta et al. count gendered words in generations).
sampled = {name: gender_disparity(model, tokenizer, occupations=occupations, method="sample", n_samples=20,
                                  max_new_tokens=4, seed=SEED).summary()
           for name, model in {"teacher": teacher, "plain": students["plain"],
                               "cda + perturb (mean)": students["cda + perturb (mean)"]}.items()}
sampled = pd.DataFrame(sampled).T
print(sampled.round(3))
assert sampled.loc["cda + perturb (mean)", "fairness (avg)"] > sampled.loc["plain", "fairness (avg)"]
"""),
    md("""
## The trade-off: how hard to perturb

`strength` mixes the perturbed target with the original one, $(1-s)\\,p_T + s\\,\\tilde p$. The grid below
distils one student per strength and records fairness and perplexity after every epoch
(`on_epoch_end`). Static: the final values against the strength. Slider: the training curves at each
strength (precomputed, so it moves on the static site). Live: choose any strength and epoch count
(needs a kernel).
"""),
    code("""
def strength_curve(strength, epochs):
    records = []

    def record(epoch, model):
        scores = evaluate_lm(model, tokenizer, occupations=occupations, heldout=heldout)
        records.extend([
            {"strength": strength, "epoch": epoch, "metric": "fairness (avg)", "value": scores["fairness (avg)"]},
            {"strength": strength, "epoch": epoch, "metric": "fairness (worst)", "value": scores["fairness (worst)"]},
            {"strength": strength, "epoch": epoch, "metric": "perplexity / teacher's",
             "value": scores["perplexity"] / rows["teacher"]["perplexity"]},
        ])

    distill(cache, new_student(), student_tokenizer=tokenizer, variant="perturb (mean)", strength=strength,
            epochs=epochs, lr=STUDENT_LR, seed=SEED, on_epoch_end=record)
    return pd.DataFrame(records)

grid = pd.concat([strength_curve(s, STUDENT_EPOCHS) for s in tqdm(STRENGTHS, desc="strengths")], ignore_index=True)
final = grid[grid["epoch"] == STUDENT_EPOCHS]
static_figure(final, x="strength", y="value", hue="metric", title="Perturbation strength: fairness vs perplexity");
"""),
    code("""
slider_figure(grid, slider="strength", x="epoch", y="value", hue="metric",
              title="Training curves; slider: perturbation strength")
"""),
    code("""
live_explorer(lambda strength=1.0, epochs=3: strength_curve(strength, epochs), x="epoch", y="value", hue="metric",
              strength=(0.0, 1.0, 0.25), epochs=(1, 6, 1))
"""),
    md("""
## Downstream: does a fairer generator give a fairer classifier?

Gupta et al. found that it does not. We fine-tune every model — the teacher, each student, and an
untrained student as a control — as an occupation classifier on generated bios (*"mary works with
patients and ward every day . she is calm ."*; six occupations in confusable pairs, cue words shared
between partners, genders skewed as in the corpus). On a gender-balanced test set we measure the
true-positive-rate gap between women and men per occupation (De-Arteaga et al. 2019, "Bias in Bios"),
via Fairlearn's `MetricFrame`.
"""),
    code("""
label_names = sorted(bios_train["occupation"].unique())
labels = bios_train["occupation"].map({name: i for i, name in enumerate(label_names)})
candidates = {"teacher": teacher, **students, "untrained student": new_student()}
downstream = {}
for name, model in tqdm(candidates.items(), desc="fine-tuning"):
    classifier = finetune_classifier(model, tokenizer, bios_train["text"].tolist(), labels,
                                     num_classes=len(label_names), epochs=FINETUNE_EPOCHS, seed=SEED)
    gaps = downstream_gaps(classifier, tokenizer, bios_test, label_names=label_names)
    downstream[name] = {"generation fairness (avg)": rows.get(name, {}).get("fairness (avg)", np.nan),
                        **{k: gaps[k] for k in ["accuracy", "TPR gap (mean |F−M|)", "TPR gap (max |F−M|)"]}}
downstream = pd.DataFrame(downstream).T
downstream.round(3)
"""),
    code("""
# The fine-tuning data's skew creates a downstream gap whatever the language model was taught.
assert (downstream["TPR gap (mean |F−M|)"] > 0.1).all()
spread = downstream["TPR gap (mean |F−M|)"].max() - downstream["TPR gap (mean |F−M|)"].min()
print(f"TPR gaps range over {spread:.3f} across models whose generation fairness ranges over "
      f"{downstream['generation fairness (avg)'].max() - downstream['generation fairness (avg)'].min():.3f}")
"""),
    md("""
Every classifier, including the one built on an untrained student, shows a TPR gap of similar size: the
gap comes from the skew of the fine-tuning data (nurse bios are mostly about women, so *she* becomes
evidence for *nurse*), which fine-tuning learns regardless of what the language model was taught about
pronouns. Debiasing the generator and debiasing a downstream task are different jobs.

## Summary

- A distilled student inherits its teacher's occupation–gender associations.
- Counterfactual augmentation and, more strongly, teacher prediction perturbation during distillation
  give a student whose next-word gender after occupation prompts is near parity, at a perplexity cost
  of a few percent — concentrated on text that really is skewed.
- The fairer generator does not produce a fairer downstream classifier: fine-tuning data brings its own bias.

## Exercise

```{exercise}
:label: fairness-distill-ex1

Distil a student with `variant="perturb (mean)"` and `hard_label_weight=0` (pure KL, no data loss),
and another with `variant="cda"` and `hard_label_weight=0`. Compare their fairness with the table above.
Why does augmentation alone stop helping without the hard-label term?
```

```{solution} fairness-distill-ex1
:class: dropdown

With pure KL the student only ever sees the teacher's distributions. After a gender-free context such
as *"the nurse said that"* the swapped copy of the sentence has the *same* context, so its target is
the same biased teacher distribution — augmentation changes nothing at the prompts we measure (it only
changes targets *after* a gendered word). The perturbation, in contrast, rewrites exactly those targets
to parity, so pure-KL perturbation gets even closer to parity than with the hard-label term, which
pulls the student back towards the skewed data. With the hard-label term, augmentation helps because
the swapped sentences are balanced data.
```

```{exercise}
:label: fairness-distill-ex2

Make the downstream data gender-balanced (`occupation_bios(N_BIOS, balanced=True, seed=...)` for the
fine-tuning set) and rerun the downstream cell. What happens to the TPR gaps, and what does that tell
you about where the downstream bias came from?
```

```{solution} fairness-distill-ex2
:class: dropdown

The gaps shrink to noise level for every model: with balanced fine-tuning data, *she* carries no
information about the occupation and the classifier stops using it. The downstream gap was caused by
the fine-tuning data, not by the language model's pronoun preferences — which is why debiasing the
generator did not remove it.
```
"""),
])
