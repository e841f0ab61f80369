"""User-level DP-SGD: the privacy unit is a user (a device and all its utterances), not one utterance.

Example-level DP (the earlier chapters) bounds what training reveals about one utterance. A user who
spoke k utterances is then protected only by *group privacy*: an (ε, δ) guarantee for one example gives
(kε, k·e^{(k−1)ε}·δ) for k examples (Dwork & Roth 2014, Thm. 2.2; Vadhan 2017, Lemma 2.2) — nothing
useful for a heavy user with hundreds of utterances. User-level DP-SGD changes the unit. One step:

1. sample users, each independently with probability q (Poisson sampling over *users*);
2. each sampled user contributes at most ``max_examples_per_user`` (k) of their examples, a uniformly
   random subset drawn anew each step (the cap bounds a step's cost and the weight of a heavy user's data);
3. the user's gradient — the *mean* over those examples — is clipped to norm C: the fast engine's
   micro-batch mode with one group per user (``ClippingEngine.clipped_sum(losses, groups=user)``);
4. the clipped sum gets Gaussian noise N(0, σ²C²) per coordinate and is divided by the expected number
   of users qU;
5. the accountant composes the Sampled Gaussian Mechanism at the *user* sampling rate q.

Adding or removing one user changes the clipped sum by at most C whatever their data, so the accountant's
(ε, δ) holds for a user's whole contribution (add/remove-one-user adjacency). This is the device-level
step of DP-FedAvg with one local gradient step (McMahan, Ramage, Talwar & Zhang 2018, "Learning
differentially private recurrent language models"), and the user-level recipe of TF Privacy and Opacus
(sample users, clip each user's update, account with the user sampling rate).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from trustml.privacy.accounting import steps_per_epoch
from trustml.privacy.dpsgd import DPSGD, PrivateTraining, fit_sampled, resolve_sample_rate
from trustml.privacy.engine import ClipStats
from trustml.privacy.validation import check_delta, check_epochs, check_positive, check_sample_rate, check_steps


def _check_cap(max_examples_per_user) -> int:
    if isinstance(max_examples_per_user, bool) or not isinstance(max_examples_per_user, (int, np.integer)) \
            or max_examples_per_user < 1:
        raise ValueError(f"max_examples_per_user must be an integer >= 1, got {max_examples_per_user!r}")
    return int(max_examples_per_user)


def user_rows(labels) -> list[np.ndarray]:
    """Rows of each user from a per-row user label (e.g. ``train_frame["device_id"]``), users in sorted order.

    Labels must be integers (or strings); NaN or a float label is an error, not a silent user of its own."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"labels must be a non-empty 1-D sequence (one user label per row), got shape "
                         f"{labels.shape}")
    if labels.dtype.kind not in "iuUO":
        raise ValueError(f"user labels must be integers or strings, got dtype {labels.dtype} (NaN has no user)")
    if labels.dtype.kind == "O" and any(not isinstance(x, (str, int, np.integer)) for x in labels):
        raise ValueError("user labels must be integers or strings (NaN or None has no user)")
    _, inverse = np.unique(labels, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    return np.split(order, np.cumsum(np.bincount(inverse))[:-1])


def check_users(users: Sequence, n_rows: int) -> list[np.ndarray]:
    """``users``: one array of row indices per user. Each user needs at least one example, every row
    belongs to exactly one user (the analysis assigns each example to one unit), indices lie in [0, n_rows)."""
    if len(users) == 0:
        raise ValueError("users must not be empty")
    checked, owner = [], np.full(n_rows, -1)
    for u, rows in enumerate(users):
        rows = np.asarray(rows)
        if rows.size == 0:
            raise ValueError(f"user {u} has no examples: every user needs at least one row")
        if rows.ndim != 1 or rows.dtype.kind not in "iu":
            raise ValueError(f"user {u}'s rows must be a 1-D array of integer row indices, got {rows.dtype} "
                             f"with shape {rows.shape}")
        if rows.min() < 0 or rows.max() >= n_rows:
            raise ValueError(f"user {u} has row indices outside [0, {n_rows})")
        if _repeated(rows).any():
            raise ValueError(f"user {u} lists row {int(rows[_repeated(rows)][0])} twice: each example must belong "
                             "to exactly one user, once")
        if (owner[rows] >= 0).any():
            row = int(rows[owner[rows] >= 0][0])
            raise ValueError(f"row {row} belongs to user {int(owner[row])} and to user {u}: each example must belong "
                             "to exactly one user")
        owner[rows] = u
        checked.append(rows.astype(np.int64))
    if (owner < 0).any():
        missing = np.flatnonzero(owner < 0)
        raise ValueError(f"{len(missing)} rows belong to no user (first: {missing[:5].tolist()}); pass every row")
    return checked


def _repeated(rows: np.ndarray) -> np.ndarray:
    _, first = np.unique(rows, return_index=True)
    mask = np.ones(len(rows), dtype=bool)
    mask[first] = False
    return mask


class UserBatches:
    """``steps`` batches: users Poisson-sampled at ``sample_rate``, at most ``max_examples_per_user`` rows each.

    Yields ``(inputs, labels)``; the user of each row (0..u−1 within the batch) goes to ``on_batch(groups)``
    before the batch is handed out (the optimizer uses it to clip per user). Iterating again draws afresh."""

    def __init__(self, dataset: TensorDataset, users: Sequence, *, sample_rate: float, steps: int,
                 max_examples_per_user: int, seed: int | None = None, on_batch=None):
        self.dataset = dataset
        self.users = check_users(users, len(dataset))
        self.sample_rate, self.steps = check_sample_rate(sample_rate), check_steps(steps)
        self.max_examples_per_user = _check_cap(max_examples_per_user)
        self.rng = np.random.default_rng(seed)
        self.on_batch = on_batch

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def expected_users(self) -> float:
        return self.sample_rate * self.n_users

    def __len__(self) -> int:
        return self.steps

    def draw(self) -> tuple[np.ndarray, np.ndarray]:
        """One step's rows and the (batch-local) user of each row."""
        sampled = np.flatnonzero(self.rng.random(self.n_users) < self.sample_rate)
        cap = self.max_examples_per_user
        chosen = [rows if len(rows) <= cap else self.rng.choice(rows, size=cap, replace=False)
                  for rows in (self.users[u] for u in sampled)]
        if not chosen:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        groups = np.repeat(np.arange(len(chosen)), [len(rows) for rows in chosen])
        return np.concatenate(chosen), groups

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for _ in range(self.steps):
            rows, groups = self.draw()
            index = torch.as_tensor(rows, dtype=torch.long)
            if self.on_batch is not None:
                self.on_batch(torch.as_tensor(groups, dtype=torch.long))
            yield tuple(t[index] for t in self.dataset.tensors)


class UserLevelDPSGD(DPSGD):
    """User-level DP-SGD around ``optimizer`` (see the module docstring): :class:`DPSGD` with users as the
    sampling and clipping unit — its accounting, budget warnings and noise are the same code.

    Give exactly one of ``noise_multiplier`` (σ) and ``target_epsilon`` (then also ``delta`` and ``epochs``;
    σ is found when :meth:`user_loader` fixes the user sampling rate). An epoch is ⌊1/q⌋ steps: each user
    is sampled once in expectation.

        dp = UserLevelDPSGD(model, torch.optim.Adam(model.parameters(), lr=1e-2), max_grad_norm=1.0,
                            max_examples_per_user=16, target_epsilon=4.0, delta=1e-4, epochs=3)
        for inputs, labels in dp.user_loader(train, users, users_per_step=64):
            dp.step(F.cross_entropy(model(inputs), labels, reduction="none"))
        dp.epsilon()  # for adding or removing one user's entire data
    """

    sampled_loader = "user_loader"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, max_grad_norm: float,
                 max_examples_per_user: int, noise_multiplier: float | None = None,
                 target_epsilon: float | None = None, delta: float | None = None, epochs: float | None = None,
                 accountant: str = "rdp", seed: int | None = None):
        self.max_examples_per_user = _check_cap(max_examples_per_user)
        check_positive("max_grad_norm", max_grad_norm)
        # One group per user: the engine clips each user's *mean* gradient (its micro-batch mode).
        super().__init__(model, optimizer, max_grad_norm=max_grad_norm, noise_multiplier=noise_multiplier,
                         target_epsilon=target_epsilon, delta=delta, epochs=epochs, mode="micro_batch",
                         micro_batch_size=self.max_examples_per_user, accountant=accountant, seed=seed)
        # Adding or removing one user (every row of one group) moves the clipped sum by at most C: not the 2C of
        # a random micro-batch, whose other members stay.
        self.sensitivity = self.max_grad_norm
        self._users: torch.Tensor | None = None

    @property
    def n_users(self) -> int | None:
        """The number of users U (the sampling units): fixed by :meth:`user_loader`."""
        return self.dataset_size

    # ------------------------------------------------------------------ data
    def user_loader(self, dataset: TensorDataset, users: Sequence, *, users_per_step: float | None = None,
                    sample_rate: float | None = None, epochs: float | None = None, steps: int | None = None,
                    seed: int | None = None) -> UserBatches:
        """Batches of Poisson-sampled users: rate q = ``users_per_step``/U (or ``sample_rate``), ``steps``
        steps or ``epochs`` × ⌊1/q⌋ (default: the constructor's epochs). Fixes q and, with a target ε, σ."""
        n_users = len(users)
        if n_users == 0:
            raise ValueError("users must not be empty")
        q = resolve_sample_rate(expected=("users_per_step", users_per_step), sample_rate=sample_rate,
                                population=("the number of users", n_users))
        # δ is checked against U: δ ≥ 1/U would allow publishing one user's data outright.
        steps = self._fix_sampling(q, n_users, epochs=epochs, steps=steps)
        return UserBatches(dataset, users, sample_rate=q, steps=steps,
                           max_examples_per_user=self.max_examples_per_user,
                           seed=self._seed if seed is None else seed, on_batch=self._mark_users)

    def _mark_users(self, groups: torch.Tensor) -> None:
        self._users = groups
        self._mark_poisson()

    # ------------------------------------------------------------------ the step
    def expected_units(self, batch_size: int) -> float:
        """The divisor of the noisy sum: the expected number of users per step qU (else the batch's users)."""
        if self.sample_rate is not None and self.dataset_size:
            return self.sample_rate * self.dataset_size
        return float(max(1, len(torch.unique(self._users)))) if self._users is not None else 1.0

    def _clipping_groups(self, batch: int, device: torch.device) -> torch.Tensor | None:
        if self._users is None:
            raise ValueError("pass groups (the user of each row), or draw the batch from user_loader()")
        return self._users.to(device)

    def privatize(self, losses: torch.Tensor, groups: torch.Tensor | None = None) -> ClipStats:
        """Replace every ``p.grad`` by the noisy mean of the users' clipped mean gradients.

        ``groups``: the batch-local user of each row; default: what the last :meth:`user_loader` batch set.
        Only steps on batches from :meth:`user_loader` are accounted (else :meth:`epsilon` refuses)."""
        if groups is not None:
            groups = torch.as_tensor(groups)
            if groups.dtype.is_floating_point or groups.dtype == torch.bool:
                raise ValueError(f"groups must hold integer user indices, got dtype {groups.dtype}")
            self._users, self._poisson_pending = groups, False  # explicit users: not a sampled step
        if self._users is not None and (losses.dim() != 1 or self._users.shape != losses.shape):
            raise ValueError(f"losses must be (batch,) per-example losses and groups one user index per row; got "
                             f"shapes {tuple(losses.shape)} and {tuple(self._users.shape)}")
        try:
            return super().privatize(losses)
        finally:
            self._users = None

    def step(self, losses: torch.Tensor, groups: torch.Tensor | None = None) -> ClipStats:
        """One user-level DP-SGD step from the (B,) per-example ``losses`` of the last forward pass."""
        stats = self.privatize(losses, groups)
        self.optimizer.step()
        return stats


def train_user_level(model: nn.Module, dataset: TensorDataset, users: Sequence, *, epsilon: float | None = None,
                     noise_multiplier: float | None = None, delta: float = 1e-5, epochs: float = 3,
                     users_per_step: float = 64, max_examples_per_user: int = 16, lr: float = 1e-2,
                     optimizer: str = "adam", max_grad_norm: float = 1.0, accountant: str = "rdp", seed: int = 0,
                     progress: bool = False, on_epoch_end=None) -> PrivateTraining:
    """Train a classifier on ``(input_ids, labels)`` with user-level DP-SGD at user-level budget ``epsilon``.

    ``users``: the row indices of each user (:func:`user_rows` builds them from a per-row label).
    ``epsilon=math.inf`` trains without clipping or noise on the same user batches (the reference).
    The record's ``epsilon`` is the accountant's user-level ε; ``sample_rate`` the user sampling rate.
    ``on_epoch_end(epoch, mean_loss)`` goes to :func:`trustml.models.fit` (e.g. to record test accuracy)."""
    from trustml.models.training import gradient_step, make_optimizer

    if (epsilon is None) == (noise_multiplier is None):
        raise ValueError("pass exactly one of epsilon and noise_multiplier")
    users = check_users(users, len(dataset))
    check_delta(delta, len(users))
    torch.manual_seed(seed)
    opt = make_optimizer(optimizer, model.parameters(), lr=lr)
    private = not (epsilon is not None and math.isinf(epsilon) and epsilon > 0)
    loader: UserBatches
    if private:
        dp = UserLevelDPSGD(model, opt, max_grad_norm=max_grad_norm, max_examples_per_user=max_examples_per_user,
                            noise_multiplier=noise_multiplier, target_epsilon=epsilon, delta=delta, epochs=epochs,
                            accountant=accountant, seed=seed)
        loader = dp.user_loader(dataset, users, users_per_step=users_per_step, seed=seed)
    else:
        check_epochs(epochs)
        check_positive("users_per_step", users_per_step)
        q = check_sample_rate(users_per_step / len(users))
        loader = UserBatches(dataset, users, sample_rate=q, steps=max(1, round(epochs * steps_per_epoch(q))),
                             max_examples_per_user=max_examples_per_user, seed=seed)
    try:
        losses = fit_sampled(model, loader, update=dp.step if private else gradient_step(opt), progress=progress,
                             on_epoch_end=on_epoch_end)
    finally:
        if private:
            dp.detach()
    if private:
        assert dp.noise_multiplier is not None and dp.sample_rate is not None
        return PrivateTraining(model, dp.epsilon(delta), delta, dp.noise_multiplier, dp.sample_rate, dp.steps_taken,
                               accountant, dp.history, losses, "user_level", 1.0)
    return PrivateTraining(model, math.inf, delta, 0.0, loader.sample_rate, len(loader), accountant, [], losses,
                           "non_private", 1.0)


def group_privacy(epsilon: float, delta: float, k: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What an (ε, δ) guarantee for one example says about k examples: (kε, k·e^{(k−1)ε}·δ).

    Dwork & Roth (2014), Thm. 2.2 (pure DP); Vadhan (2017), Lemma 2.2 (with δ). An upper bound: the true
    loss of a particular mechanism for k examples may be smaller, but this is all the example-level
    guarantee by itself promises. δ_k is capped at 1 (a δ of 1 promises nothing)."""
    check_positive("epsilon", epsilon)
    if not isinstance(delta, (int, float)) or isinstance(delta, bool) or not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1), got {delta!r}")
    k = np.asarray(k)
    if k.dtype.kind not in "iu" or (k < 1).any():
        raise ValueError(f"k must be integers >= 1, got {k!r}")
    with np.errstate(over="ignore"):
        delta_k = np.minimum(1.0, k * np.exp((k - 1) * epsilon) * delta)
    return k * epsilon, delta_k


def naive_user_clipped_sum(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], groups: torch.Tensor, *,
                           max_grad_norm: float) -> dict[str, torch.Tensor]:
    """Σ_u clip_C(mean gradient of user u's rows) by brute force: one backward per user (the plain
    reference the engine's per-user clipped sum is checked against)."""
    from trustml.privacy.engine import STABILITY

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    inputs, labels = batch
    for user in torch.unique(groups):
        rows = torch.nonzero(groups == user).flatten()
        loss = nn.functional.cross_entropy(model(inputs[rows]), labels[rows])  # the user's mean loss
        raw = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params.values(), raw)]
        norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))
        factor = (max_grad_norm / (norm + STABILITY)).clamp(max=1.0)
        for name, g in zip(params, grads):
            total[name] += factor * g
    return total


__all__ = ["UserBatches", "UserLevelDPSGD", "check_users", "group_privacy", "naive_user_clipped_sum",
           "train_user_level", "user_rows"]
