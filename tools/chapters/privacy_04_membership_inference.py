"""Source of book/privacy/04_membership_inference.ipynb (run: python -m tools.chapters.privacy_04_membership_inference)."""

from tools.notebook import code, md, write_notebook

write_notebook("book/privacy/04_membership_inference.ipynb", [
    md("""
# Membership inference: theoretical vs practical privacy

The accountant of the previous chapters gives a *theoretical* guarantee: an upper bound ε on how much any
attacker can learn about one training example. This chapter measures what attackers *actually* learn.
A **membership-inference attack** (MIA) gets a trained model and an example and guesses whether the
example was in the training set. We train intent classifiers at ε ∈ {∞, 8, 2, 1} with the DP-SGD of
`trustml.privacy`, attack them with three attacks of growing strength, and turn the attacks' success into
an **empirical lower bound** on ε — to set beside the accountant's upper bound.

**Learning objectives**

- Play the membership game with target and shadow models, and run the LOSS, shadow-model and LiRA attacks.
- Read attack success the way the literature does: AUC, attacker advantage, and TPR at a *low* FPR on a
  log-log ROC.
- Turn an attack's (TPR, FPR) into a lower bound on ε with a confidence interval, and compare it with
  the accountant's ε.
- Explain why a model that is private in theory can look far more private in practice — and why the
  practical number is not a guarantee.

*Expected runtime: about 25 s with `QUICK = True`, about 2 min at full size (2 CPU cores).*
"""),
    code("""
QUICK = False  # tests set QUICK = True: smaller population, fewer shadow models
SEED = 0
N_DEVICES = 150  # corpus size (the population is drawn from its training split)
POPULATION = 2000  # examples in the membership game; each model trains on half of them
N_SHADOWS = 8  # shadow models per ε (an even number: complementary halves)
N_TARGETS = 4  # attacked models per ε (scores are pooled over them)
EPOCHS = 30  # many epochs on little data: the non-private model overfits, as deployed models can
EPSILONS = [float("inf"), 8.0, 2.0, 1.0]
DELTA = 1e-5
""", tags=["parameters"]),
    code("""
if QUICK:
    N_DEVICES, POPULATION, N_SHADOWS, N_TARGETS = 40, 400, 4, 2
"""),
    md("""
## The membership game

A population of $n$ labelled utterances. Each **target** model trains on a random half; the attacker
must tell, for every example, whether it was in that half. The attacker may train **shadow models** the
same way on data from the same distribution; here they are trained on complementary random halves of
the same population, so every example is *in* half of the shadows and *out* of the other half. A model
is never its own shadow.

Three attacks, each a score per example (higher = "member"), all in `trustml.privacy.attacks`:

- **LOSS** (Yeom et al. 2018): the score is $-\\ell(x, y)$; training examples have lower loss.
- **Shadow** (Shokri et al. 2017): an attack classifier learns "member or not" from the shadow models'
  outputs on their own members and non-members, and is applied to the target's outputs.
- **LiRA** (Carlini et al. 2022): per example, the logit-scaled confidence
  $\\phi = \\log\\frac{p_y}{1-p_y}$ of the shadows trained *with* the example and *without* it are fitted by
  Gaussians; the *online* attack scores the likelihood ratio
  $\\log \\mathcal N(\\phi; \\mu_{in}, \\sigma_{in}^2) - \\log \\mathcal N(\\phi; \\mu_{out}, \\sigma_{out}^2)$,
  the *offline* one needs only the "out" shadows and scores how far $\\phi$ lies above $\\mu_{out}$.
  Calibrating per example is what makes LiRA strong: an easy example has a low loss whether or not it
  was trained on.

Every model, private or not, is trained by `trustml.privacy.train_private` on the same Poisson-sampled
batches; for ε < ∞ its noise is calibrated by the accountant, and the record keeps the accountant's ε.
"""),
    code("""
import math

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from trustml.data import load_intent_task, subset
from trustml.models import accuracy
from trustml.privacy.attacks import (
    AttackResult, MembershipGame, epsilon_lower_bound, make_trainer, plot_roc, results_table, roc_points,
)
from trustml.viz import live_explorer, setup_plotly, slider_figure, static_figure

setup_plotly()
task = load_intent_task(n_devices=N_DEVICES, seed=SEED)
rng = np.random.default_rng(SEED)
population = subset(task.train, rng.choice(len(task.train), size=POPULATION, replace=False))
print(f"population: {len(population)} utterances, {task.num_classes} intents; "
      f"each model trains on {POPULATION // 2}")


def recipe(epsilon, epochs=EPOCHS):
    return make_trainer(vocab_size=task.tokenizer.vocab_size, num_classes=task.num_classes, epsilon=epsilon,
                        delta=DELTA, epochs=epochs, batch_size=50, lr=2e-2)


games, results = {}, {}
for epsilon in tqdm(EPSILONS, desc="ε"):
    games[epsilon] = MembershipGame.train(recipe(epsilon), population, n_shadows=N_SHADOWS, n_targets=N_TARGETS,
                                          seed=SEED, keep_models=True, progress=False)
    results[epsilon] = games[epsilon].attack()
"""),
    md("""
## How well do the attacks do?

One row per (ε, attack). *Advantage* is $\\max_t |\\mathrm{TPR}(t) - \\mathrm{FPR}(t)|$ (0 = guessing).
The target models' test accuracy is the price paid for privacy.
"""),
    code("""
table = pd.concat([
    results_table(results[epsilon], **{"ε": epsilon, "accountant ε": games[epsilon].epsilon,
                                        "test accuracy": np.mean([accuracy(m, task.test)
                                                                  for m in games[epsilon].target_models])})
    for epsilon in EPSILONS
]).reset_index()
table.round(3)
"""),
    code("""
print(results[math.inf]["LiRA online"].summary())
auc = table.pivot(index="ε", columns="attack", values="AUC")
auc
"""),
    md("""
A log-log ROC shows the regime that matters: how many members an attack identifies while almost never
accusing a non-member. On a linear plot every curve hugs the axes there.
"""),
    code("""
fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
plot_roc(results[math.inf], ax=axes[0], title="ε = ∞ (no DP): every attack")
by_epsilon = [AttackResult(f"ε = {e:g}", results[e]["LiRA online"].scores, results[e]["LiRA online"].is_member)
              for e in EPSILONS]
plot_roc(by_epsilon, ax=axes[1], title="LiRA online, by ε");
"""),
    md("""
The key result: the non-private model leaks membership, the ε ≤ 2 models barely do. We assert it with a
margin for the attack that is strongest on the non-private model, and in the same direction for every
attack.
"""),
    code("""
private = [e for e in EPSILONS if e <= 2]
gaps = auc.loc[math.inf] - auc.loc[private].max()
for attack, gap in gaps.items():
    print(f"{attack:>12}: AUC {auc.loc[math.inf, attack]:.3f} without DP vs ≤ {auc.loc[private, attack].max():.3f} "
          f"at ε ≤ 2 (gap {gap:.3f})")
strongest = auc.loc[math.inf].idxmax()
assert gaps[strongest] > 0.15, f"the non-private model should leak clearly more than the ε ≤ 2 models ({strongest})"
assert (gaps > 0.03).all(), "every attack should find more leakage without DP"
from trustml.viz import glue  # for the book's front page

glue("mia_auc_eps_inf", float(auc.loc[math.inf, strongest]))
glue("mia_auc_eps_1", float(auc.loc[1.0, strongest]))
"""),
    md("""
## From attack success to a lower bound on ε

If training is (ε, δ)-DP, *every* test satisfies $\\mathrm{TPR} \\le e^{\\varepsilon}\\,\\mathrm{FPR} + \\delta$ and
$1 - \\mathrm{FPR} \\le e^{\\varepsilon}(1 - \\mathrm{TPR}) + \\delta$. Turning this around, an attack's measured
(TPR, FPR) *proves* a lower bound

$$\\varepsilon \\ \\ge\\ \\max\\left(\\log\\frac{\\mathrm{TPR} - \\delta}{\\mathrm{FPR}},\\ \\log\\frac{1 - \\mathrm{FPR} - \\delta}{1 - \\mathrm{TPR}}\\right).$$

TPR and FPR are estimates from finitely many examples, so `epsilon_lower_bound` uses Clopper–Pearson
intervals (the pessimistic end of each) and reports the best threshold: a 95 % lower bound. Caveats: the
maximum over thresholds (and here over attacks) is mildly optimistic, and examples of one training run are
treated as independent trials (the one-run audit of Steinke et al. 2023).
"""),
    code("""
audits = pd.concat([
    epsilon_lower_bound(result, delta=DELTA, epsilon_claimed=games[epsilon].epsilon).to_frame().assign(ε=epsilon)
    for epsilon in EPSILONS for result in results[epsilon].values()
]).reset_index()
audit_table = audits.loc[audits.groupby("ε")["ε lower bound"].idxmax(),
                         ["ε", "attack", "ε lower bound", "accountant ε", "TPR", "FPR"]].sort_values("ε", ascending=False)
audit_table.round(3)
"""),
    code("""
for row in audit_table.to_dict("records"):
    print(f"ε = {row['ε']:>4g}: the best attack ({row['attack']}) proves ε ≥ {row['ε lower bound']:.2f}; "
          f"the accountant says ε ≤ {row['accountant ε']:.2f}")
    assert row["ε lower bound"] <= row["accountant ε"], "a lower bound above the accountant's ε would reveal a bug"
assert audit_table.set_index("ε").loc[math.inf, "ε lower bound"] > 1.0, "the non-private model should show leakage"
"""),
    md("""
The gap between the two columns is the point of this chapter. The accountant's ε is a *worst case* over
all datasets and all examples — including a maliciously crafted one — while our attack targets ordinary
utterances of a model trained once. Auditing papers close much of the gap with worst-case canaries
(mislabelled or adversarially crafted examples) and thousands of training runs (Jagielski et al. 2020;
Nasr et al. 2021). A small empirical ε is therefore *not* a privacy guarantee; it only says that this
attack, on this data, did not find more.

## Three views of the trade-off

Attack success against ε, one line per attack: a static figure (∞ drawn at the right edge), then a
plotly figure whose slider picks the false-positive rate at which the TPR is read (precomputed; it moves
on the static site), then a live explorer that retrains a membership game for the ε and epochs you choose
(needs a kernel: Jupyter or Colab).
"""),
    code("""
EPS_AXIS = {e: (e if math.isfinite(e) else 4 * max(x for x in EPSILONS if math.isfinite(x))) for e in EPSILONS}
table["ε (∞ at right)"] = table["ε"].map(EPS_AXIS)
fig = static_figure(table, x="ε (∞ at right)", y="AUC", hue="attack", logx=True, title="MIA AUC against ε")
axis = fig.axes[0]
axis.set_xticks(list(EPS_AXIS.values()), [f"{e:g}" if math.isfinite(e) else "∞" for e in EPS_AXIS])
axis.axhline(0.5, color="gray", lw=0.8, ls=":");
"""),
    code("""
tpr_at = pd.concat([
    roc_points(results[e], fprs=[0.001, 0.01, 0.1], **{"ε (∞ at right)": EPS_AXIS[e]}) for e in EPSILONS
]).rename(columns={"FPR": "at FPR", "TPR": "TPR at FPR"})
slider_figure(tpr_at, slider="at FPR", x="ε (∞ at right)", y="TPR at FPR", hue="attack", logx=True,
              title="TPR at a fixed FPR against ε (∞ at the right)")
"""),
    code("""
_cache = {(e, EPOCHS): results[e] for e in EPSILONS}  # the precomputed settings need no retraining


def attack_roc(epsilon=EPSILONS[0], epochs=EPOCHS):
    if (epsilon, epochs) not in _cache:
        game = MembershipGame.train(recipe(epsilon, epochs), population, n_shadows=N_SHADOWS,
                                    n_targets=N_TARGETS, seed=SEED, progress=False)
        _cache[(epsilon, epochs)] = game.attack()
    return roc_points(_cache[(epsilon, epochs)])


live_explorer(attack_roc, x="FPR", y="TPR", hue="attack", title="ROC of each attack",
              epsilon=[float("inf"), 16.0, 8.0, 4.0, 2.0, 1.0, 0.5],  # the first value is the initial one
              epochs=widgets.IntSlider(value=EPOCHS, min=10, max=60, step=10))
"""),
    md("""
## Exercises

```{exercise}
:label: privacy-mia-ex1

Under (ε, 0)-DP the attacker's advantage is at most $(e^{\\varepsilon}-1)/(e^{\\varepsilon}+1)$ (take the
best threshold and the two inequalities above). Compute this bound for ε = 1, 2 and 8, and compare it with
the measured `advantage` column. What does the comparison say about the accountant's ε for these models?
```

```{solution} privacy-mia-ex1
:class: dropdown

TPR ≤ e^ε·FPR and 1 − FPR ≤ e^ε(1 − TPR) give TPR − FPR ≤ (e^ε − 1)/(e^ε + 1): about 0.46 for ε = 1,
0.76 for ε = 2 and 0.9993 for ε = 8. The measured advantages of the DP models are far below these bounds:
the accountant's ε is a worst case over all datasets and examples, and ordinary
utterances attacked with shadow models are far from that worst case. The bound is not loose because of a
mistake — it must also hold for an example crafted to be as distinguishable as possible.
```

```{exercise}
:label: privacy-mia-ex2

Re-run the game with `EPOCHS = 5` (set it in the parameters cell). What happens to the non-private
model's AUC and to its test accuracy? Which defence against membership inference does this suggest, and
what guarantee does it give?
```

```{solution} privacy-mia-ex2
:class: dropdown

With fewer epochs the non-private model overfits less: training and held-out losses are closer, so the
AUC drops (and test accuracy often changes little). Regularisation and early stopping are real practical
defences against membership inference, but they give no guarantee: a stronger attack, or an outlier
example, can still be exposed. Only DP bounds the leakage for *every* example.
```

## Summary

- Without DP, a small intent model trained to convergence leaks membership: LiRA identifies members at
  low false-positive rates, and its success proves ε ≥ 1 or more.
- At ε ≤ 2 every attack is close to guessing; the empirical lower bound stays far below the accountant's ε.
- The gap between the two is the gap between a worst-case guarantee and one attack on typical data — the
  next chapter attacks the worst case directly, with planted canaries.
"""),
])
