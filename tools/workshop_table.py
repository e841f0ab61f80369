"""The workshop plan on the front page (book/intro.md): three 90-minute sessions, core and optional notebooks,
each with its install and run times as measured in the Colab-pins environment.

    python -m tools.workshop_table [--colab test-artifacts/envs/colab.json ...]

``python -m tools.envs colab`` measures, per part, how long the notebook's Colab cell takes to install trustml
(Colab's preinstalled packages present) and how long each notebook takes at QUICK size; this tool writes
them into the plan. Which notebooks are core and how long pairs work on each are the teachers' call
(``PLAN`` below); a new chapter is optional until it is placed there. A test checks the plan lists every
notebook and leaves every session its slack.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import re

from tools.book_meta import replace_block

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = ROOT / "book" / "intro.md"
SESSION_MIN, LECTURE_MIN, MIN_SLACK_MIN = 90, 15, 10
SESSIONS = {"privacy": "1. Privacy", "federated": "2. Federated learning", "fairness": "3. Fairness"}
#: notebook -> (core?, minutes a pair works on it at QUICK size, not counting install and run time)
PLAN: dict[str, tuple[bool, int]] = {
    "privacy/00_overview": (True, 10), "privacy/01_dp_basics": (True, 15),
    "privacy/02_fast_dpsgd": (False, 15), "privacy/03_privacy_utility_tradeoff": (True, 15),
    "privacy/04_membership_inference": (True, 15), "privacy/05_canary_extraction": (False, 15),
    "federated/00_overview": (True, 10), "federated/01_fedavg_on_flower": (True, 15),
    "federated/02_non_iid_partitions": (True, 15), "federated/03_device_selection": (True, 15),
    "federated/04_continual_fl": (False, 10), "federated/05_dp_fedavg": (False, 15),
    "fairness/00_overview": (True, 10), "fairness/01_group_fairness": (True, 15),
    "fairness/02_intrinsic_bias": (True, 15), "fairness/03_intrinsic_vs_extrinsic": (False, 10),
    "fairness/04_prediction_sensitivity": (True, 15), "fairness/05_counterfactual_distillation": (False, 15),
}
NEW_CHAPTER = (False, 15)


def notebooks(part: str) -> list[str]:
    return [str(p.relative_to(ROOT / "book").with_suffix("")) for p in sorted((ROOT / "book" / part).glob("*.ipynb"))]


def measured(colab_result: dict) -> dict[str, dict[str, float]]:
    """notebook -> {"install_s", "run_s"} from a ``tools.envs colab`` result; a notebook that failed there has
    no time to give (its seconds end at the error), so it keeps the time the page had."""
    times = {}
    for part in colab_result["parts"].values():
        for record in part["notebooks"]:
            if not record["ok"]:
                continue
            name = record["notebook"].removeprefix("book/").removesuffix(".ipynb")
            times[name] = {"install_s": round(part["install_s"]), "run_s": round(record["quick_s"])}
    return times


def minutes(name: str, times: dict[str, dict[str, float]]) -> float | None:
    """A notebook's minutes in the room: the pair's work, plus installing trustml and running it at QUICK."""
    t = times.get(name)
    work = PLAN.get(name, NEW_CHAPTER)[1]
    return None if t is None else work + (t["install_s"] + t["run_s"]) / 60


def table(times: dict[str, dict[str, float]]) -> str:
    rows = ["| Session | Notebook | Core | Install (s) | QUICK run (s) | Pair work (min) |",
            "|---|---|---|---|---|---|"]
    for part, session in SESSIONS.items():
        for name in notebooks(part):
            core, work = PLAN.get(name, NEW_CHAPTER)
            t = times.get(name, {})
            install, run = (f"{t[k]:.0f}" if k in t else "—" for k in ("install_s", "run_s"))
            rows.append(f"| {session} | {{doc}}`{name}` | {'core' if core else 'optional'} | {install} | {run} | "
                        f"{work} |")
    rows += ["", "| Session | Lecture | Core notebooks (work + install + run) | Slack |", "|---|---|---|---|"]
    for part, session in SESSIONS.items():
        spent = [minutes(n, times) for n in notebooks(part) if PLAN.get(n, NEW_CHAPTER)[0]]
        if any(m is None for m in spent):
            rows.append(f"| {session} | {LECTURE_MIN} min | not measured yet | — |")
            continue
        core_min = math.ceil(sum(m for m in spent if m is not None))
        rows.append(f"| {session} | {LECTURE_MIN} min | {core_min} min | {SESSION_MIN - LECTURE_MIN - core_min} min |")
    return "\n".join(rows)


def current_times(page_text: str) -> dict[str, dict[str, float]]:
    """Times already in the page, so a run without a measurement keeps them."""
    times = {}
    pattern = r"^\| [^|]+ \| \{doc\}`([^`]+)` \| \w+ \| ([0-9.]+) \| ([0-9.]+) \|"
    for match in re.finditer(pattern, page_text, re.MULTILINE):
        times[match.group(1)] = {"install_s": float(match.group(2)), "run_s": float(match.group(3))}
    return times


def slack(page_text: str) -> dict[str, int]:
    row = r"^\| (\d\. [^|]+) \| \d+ min \| \d+ min \| (-?\d+) min \|"
    return {m.group(1): int(m.group(2)) for m in re.finditer(row, page_text, re.MULTILINE)}


def render(page_text: str, times: dict[str, dict[str, float]]) -> str:
    return replace_block(page_text, "workshop-table", table(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--colab", type=pathlib.Path, action="append", default=[],
                        help="test-artifacts/envs/colab.json from tools.envs (repeatable: runs of some parts each)")
    args = parser.parse_args()
    text = PAGE.read_text()
    times = current_times(text)
    for result in args.colab:
        times.update(measured(json.loads(result.read_text())))
    PAGE.write_text(render(text, times))


if __name__ == "__main__":
    main()
