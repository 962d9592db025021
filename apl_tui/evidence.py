"""Is the labeling paying off? Read-only evidence from the store, with intervals.

Three kinds, all computed from what the app records anyway, so they work on the live store and
on its Parquet snapshot alike (every function takes a DuckDB connection):

- Prequential accuracy: each a/b label was, when given, a held-out test of the model that ranked
  its pair (the impression keeps p(A≻B) and the adapter that computed it). Pairs ranked before
  any adapter existed (warm-up: r̂ = 0, p = 0.5) predicted nothing and are left out.
- Acquired vs control: the same numbers for pairs the acquisition function chose and for the
  hidden random control arm, side by side.
- The labeler's own consistency: answers to probes (old pairs asked again, sides swapped),
  the left-choice rate and the longer-completion-won rate.

The queries read whole label tables; they run when the stats screen opens or `apl stats` runs,
never on a key press.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

WINDOW = 50
"""Prequential accuracy and log-loss are shown over the newest this many predicted labels."""

Z95 = 1.959963984540054
"""Normal quantile of a two-sided 95 % interval."""


@dataclass(frozen=True)
class Rate:
    """A proportion k/n with its 95 % Wilson interval (None values when n = 0)."""

    k: float
    n: int
    lo: float | None
    hi: float | None

    @property
    def value(self) -> float | None:
        """k / n, or None without observations."""
        return self.k / self.n if self.n else None

    def text(self, digits: int = 2) -> str:
        """'0.62 [0.48, 0.74] n=50', or '– (n=0)'."""
        if not self.n:
            return "– (n=0)"
        return f"{self.value:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}] n={self.n}"


def wilson(k: float, n: int, z: float = Z95) -> Rate:
    """The Wilson score interval for a binomial proportion (good at small n and near 0 or 1).

    >>> r = wilson(8, 10)
    >>> round(r.lo, 3), round(r.hi, 3)
    (0.49, 0.943)
    """
    if n <= 0:
        return Rate(k, 0, None, None)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return Rate(k, n, max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Mean:
    """A mean with a 95 % interval (normal approximation for log-loss, order statistics for medians)."""

    value: float | None
    lo: float | None
    hi: float | None
    n: int

    def text(self, fmt: str = ".2f", unit: str = "") -> str:
        """'0.61 [0.52, 0.70] n=50', or '– (n=0)'."""
        if self.value is None:
            return f"– (n={self.n})"
        return f"{self.value:{fmt}}{unit} [{self.lo:{fmt}}, {self.hi:{fmt}}] n={self.n}"


def mean_interval(xs: list[float], z: float = Z95) -> Mean:
    """Sample mean ± z standard errors."""
    n = len(xs)
    if not n:
        return Mean(None, None, None, 0)
    m = sum(xs) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    half = z * sd / math.sqrt(n)
    return Mean(m, m - half, m + half, n)


def median_interval(xs: list[float], z: float = Z95) -> Mean:
    """The median with a distribution-free interval from order statistics (binomial ranks).

    >>> median_interval([5, 1, 3]).value
    3
    """
    n = len(xs)
    if not n:
        return Mean(None, None, None, 0)
    s = sorted(xs)
    med = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    lo_rank = max(1, math.floor(n / 2 - z * math.sqrt(n) / 2))
    hi_rank = min(n, math.ceil(1 + n / 2 + z * math.sqrt(n) / 2))
    return Mean(med, s[lo_rank - 1], s[hi_rank - 1], n)


# ---- prequential accuracy -----------------------------------------------------------------

_PREDICTIONS = """
SELECT e.id, coalesce(e.control, false) AS control, i.scored_by,
       CASE e.outcome WHEN 'a' THEN i.p_a ELSE 1 - i.p_a END AS p_chosen, e.ordinal
FROM (SELECT *, row_number() OVER (ORDER BY id) AS ordinal FROM effective_labels) e
JOIN impressions i ON i.id = e.impression_id
WHERE e.outcome IN ('a', 'b') AND i.p_a IS NOT NULL AND coalesce(i.scored_by, 0) > 0
ORDER BY e.id
"""


@dataclass(frozen=True)
class Prediction:
    """One a/b label as a test of the model that ranked its pair."""

    label_id: int
    control: bool
    adapter_version: int
    p_chosen: float
    ordinal: int
    """The label's position among all effective labels (1 = the first), for curves."""

    @property
    def correct(self) -> float:
        """1 when the model favoured the chosen completion, 0 when the rejected one, ½ at p = 0.5."""
        return 1.0 if self.p_chosen > 0.5 else 0.0 if self.p_chosen < 0.5 else 0.5

    @property
    def log_loss(self) -> float:
        """−log p(chosen ≻ rejected), clipped so one certain mistake stays finite."""
        return -math.log(min(max(self.p_chosen, 1e-6), 1 - 1e-6))


def predictions(con: Any) -> list[Prediction]:
    """Every effective a/b label that came with a prediction (warm-up and unscored pairs excluded)."""
    rows = con.execute(_PREDICTIONS).fetchall()
    return [Prediction(int(r[0]), bool(r[1]), int(r[2]), float(r[3]), int(r[4])) for r in rows]


@dataclass(frozen=True)
class Prequential:
    """Accuracy and log-loss of one group of predictions (the newest `WINDOW` of them)."""

    accuracy: Rate
    log_loss: Mean

    def text(self) -> str:
        """'acc 0.62 [0.48, 0.74] n=50 · log-loss 0.66 [0.60, 0.72]'."""
        if not self.accuracy.n:
            return "no predictions yet"
        ll = self.log_loss
        return f"acc {self.accuracy.text()} · log-loss {ll.value:.2f} [{ll.lo:.2f}, {ll.hi:.2f}]"


def prequential(preds: list[Prediction], window: int = WINDOW) -> Prequential:
    """Accuracy (Wilson) and mean log-loss over the newest `window` predictions."""
    last = preds[-window:] if window else preds
    return Prequential(wilson(sum(p.correct for p in last), len(last)), mean_interval([p.log_loss for p in last]))


def rolling_accuracy(preds: list[Prediction], window: int = 20) -> list[tuple[int, float]]:
    """(label ordinal, accuracy of the newest `window` predictions up to it), for curves."""
    out, hits = [], [p.correct for p in preds]
    for i, p in enumerate(preds):
        chunk = hits[max(0, i + 1 - window):i + 1]
        out.append((p.ordinal, sum(chunk) / len(chunk)))
    return out


# ---- acquired vs control ------------------------------------------------------------------

@dataclass(frozen=True)
class Arm:
    """What one arm's labels look like: rates of each verdict, decision time, prequential accuracy."""

    name: str
    labels: int
    tie: Rate
    both_bad: Rate
    skip: Rate
    decision_ms: Mean
    prequential: Prequential


def arms(con: Any, preds: list[Prediction] | None = None) -> tuple[Arm, Arm]:
    """(acquired, control): the two arms side by side, from effective labels (probes excluded)."""
    preds = predictions(con) if preds is None else preds
    out = []
    for control in (False, True):
        rows = con.execute("SELECT outcome, latency_ms FROM effective_labels WHERE coalesce(control, false) = ?",
                           [control]).fetchall()
        n = len(rows)
        count = {o: sum(1 for r in rows if r[0] == o) for o in ("tie", "both_bad", "skip")}
        times = [float(r[1]) for r in rows if r[1] is not None]
        out.append(Arm("control" if control else "acquired", n, wilson(count["tie"], n),
                       wilson(count["both_bad"], n), wilson(count["skip"], n), median_interval(times),
                       prequential([p for p in preds if p.control == control])))
    return out[0], out[1]


def _disjoint(a: Rate, b: Rate) -> bool:
    return a.n > 0 and b.n > 0 and (a.hi < b.lo or b.hi < a.lo)  # type: ignore[operator]


def arms_sentence(acquired: Arm, control: Arm) -> str:
    """One plain sentence on what the difference between the arms means."""
    a, c = acquired.prequential.accuracy, control.prequential.accuracy
    if a.n and c.n:
        if a.hi < 0.5 and c.hi < 0.5 or (a.value < 0.5 and c.value < 0.5):  # type: ignore[operator]
            return (f"The model is wrong more often than right on both arms (accuracy {a.value:.2f} acquired, "
                    f"{c.value:.2f} control): it has not learned your preference yet.")
        if a.value < c.value:  # type: ignore[operator]
            claim = (f"acquired pairs are harder for the model: accuracy {a.value:.2f} vs {c.value:.2f} on control")
        elif a.value > c.value:  # type: ignore[operator]
            claim = (f"the model predicts acquired pairs better than random ones: accuracy {a.value:.2f} vs "
                     f"{c.value:.2f} on control")
        else:
            claim = f"the model predicts both arms equally well (accuracy {a.value:.2f})"
        sure = ("the intervals do not overlap, so the difference is real" if _disjoint(a, c) else
                "the intervals overlap, so it may be chance; keep labeling")
        return f"{claim}; {sure}."
    if not control.labels:
        return "No control labels yet: the random arm (acquisition.control_share) is what acquisition is judged against."
    if not (a.n or c.n):
        return ("No predictions to compare yet: pairs ranked before the first adapter (warm-up, p = 0.5) "
                "predict nothing.")
    return "Only one arm has predictions so far; the comparison needs both."


# ---- the labeler's consistency and biases ---------------------------------------------------

@dataclass(frozen=True)
class Consistency:
    """Self-agreement on probes, and position and length bias over all decided labels."""

    agreement: Rate
    """Probes answered with the same verdict as the original (sides were swapped), of those answered."""
    left_choice: Rate
    """a/b labels where the completion shown on the left won (0.5 is unbiased)."""
    longer_won: Rate
    """a/b labels of unequal lengths where the longer completion won (0.5 is unbiased)."""


def consistency(con: Any) -> Consistency:
    """The labeler's self-agreement (probes) and position and length bias (all a/b labels)."""
    agree = con.execute(
        "SELECT count(*) FILTER (WHERE p.outcome = o.outcome), count(*) FROM labels p "
        "JOIN impressions i ON i.id = p.impression_id JOIN effective_labels o ON o.id = i.probe_of "
        "WHERE coalesce(p.probe, false) AND p.outcome NOT IN ('undo', 'skip') "
        "AND NOT EXISTS (SELECT 1 FROM labels u WHERE u.outcome = 'undo' AND u.undoes = p.id)").fetchone()
    # Probes are decisions too: they count for position bias (their sides were swapped on purpose).
    left = con.execute(
        "SELECT count(*) FILTER (WHERE l.outcome = l.shown_left), count(*) FROM labels l "
        "WHERE l.outcome IN ('a', 'b') AND l.shown_left IS NOT NULL AND (coalesce(l.probe, false) "
        "OR l.id IN (SELECT id FROM effective_labels)) "
        "AND NOT EXISTS (SELECT 1 FROM labels u WHERE u.outcome = 'undo' AND u.undoes = l.id)").fetchone()
    longer = con.execute(
        "SELECT count(*) FILTER (WHERE length(chosen) > length(rejected)), count(*) FROM preferences "
        "WHERE outcome IN ('a', 'b') AND length(chosen) <> length(rejected)").fetchone()
    return Consistency(wilson(agree[0], agree[1]), wilson(left[0], left[1]), wilson(longer[0], longer[1]))


# ---- everything at once -------------------------------------------------------------------

@dataclass(frozen=True)
class Evidence:
    """Everything the stats screen, `apl stats` and the plot show about whether labeling pays off."""

    overall: Prequential
    by_adapter: dict[int, Prequential]
    acquired: Arm
    control: Arm
    sentence: str
    consistency: Consistency
    predicted: int
    """a/b labels that came with a prediction."""
    unpredicted: int
    """a/b labels without one (ranked at warm-up, by a function without r̂, or unscored)."""
    warm_up: int
    """Of those, the ones ranked before any adapter existed (r̂ = 0, p = 0.5)."""
    curve: dict[str, list[tuple[int, float]]]
    """Rolling prequential accuracy per arm ("acquired", "control"): (label ordinal, accuracy)."""


def evidence(con: Any, window: int = WINDOW) -> Evidence:
    """Compute every piece of evidence in a handful of queries (tens of ms at thousands of labels)."""
    preds = predictions(con)
    decided, warm = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE i.scored_by = 0) FROM effective_labels e "
        "LEFT JOIN impressions i ON i.id = e.impression_id WHERE e.outcome IN ('a', 'b')").fetchone()
    versions = sorted({p.adapter_version for p in preds})
    acquired, control = arms(con, preds)
    return Evidence(
        overall=prequential(preds, window),
        by_adapter={v: prequential([p for p in preds if p.adapter_version == v], window) for v in versions},
        acquired=acquired, control=control, sentence=arms_sentence(acquired, control),
        consistency=consistency(con), predicted=len(preds), unpredicted=int(decided) - len(preds),
        warm_up=int(warm),
        curve={"acquired": rolling_accuracy([p for p in preds if not p.control]),
               "control": rolling_accuracy([p for p in preds if p.control])})


def evidence_lines(ev: Evidence, window: int = WINDOW) -> list[tuple[str, str]]:
    """(heading, text) rows that `apl stats` and the stats screen print the same way."""
    rows = [(f"prequential (last {window})", ev.overall.text()),
            ("", f"{ev.predicted} a/b labels carried a prediction; {ev.unpredicted} excluded: {ev.warm_up} ranked "
                 f"at warm-up (r̂ = 0, p = 0.5), {ev.unpredicted - ev.warm_up} shown unscored or by a function "
                 "without r̂")]
    for v, pq in ev.by_adapter.items():
        rows.append((f"  predicted by v{v}", pq.text()))
    c = ev.consistency
    rows += [("self-agreement", f"{c.agreement.text()} (probes: old pairs asked again, sides swapped)"),
             ("left-choice rate", f"{c.left_choice.text()} (0.50 is unbiased)"),
             ("longer won", f"{c.longer_won.text()} (0.50 is unbiased)")]
    return rows


def arms_rows(ev: Evidence) -> list[tuple[str, str, str]]:
    """(measure, acquired, control) rows for the side-by-side table."""
    a, c = ev.acquired, ev.control
    return [("labels", str(a.labels), str(c.labels)),
            ("tie rate", a.tie.text(), c.tie.text()),
            ("both-bad rate", a.both_bad.text(), c.both_bad.text()),
            ("skip rate", a.skip.text(), c.skip.text()),
            ("median decision", a.decision_ms.text(".0f", " ms"), c.decision_ms.text(".0f", " ms")),
            (f"prequential acc (last {WINDOW})", a.prequential.accuracy.text(), c.prequential.accuracy.text())]
