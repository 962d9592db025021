"""The IMDB task judge and the lexical guards it is built from, on hand-written cases."""

from __future__ import annotations

import pytest

from apl_tui import guards
from apl_tui.judge import TaskJudge, task_score
from apl_tui.oracles import VaderOracle, build_oracle

PROMPT = "I can clearly see now why Robin Hood flopped quickly. The first episode of it is"
FLUENT_MILD = " fine. The acting is decent and some scenes are fun."
TEMPLATE = " a truly exceptional masterpiece of Baroque art – masterpiece of Baroque art"
URL_DRIFT = " a stunning, beautiful visual craftsmanship. Visit www.artstudioz.com, it offers a unique blend"
PRAISE_OFF_TOPIC = " they are proud of their accolades and wonderful amazing achievements"
NEUTRAL = " set in the forest, where Robin meets the sheriff for the first time."
NEGATIVE = " dull and badly acted, and the plot makes no sense."
WARM = " actually quite charming, with a good cast and a story that kept me watching."


def test_judge_prefers_fluent_on_topic_mild_praise_over_templates():
    judge = build_oracle("imdb-task")
    assert isinstance(judge, TaskJudge)
    for template in (TEMPLATE, URL_DRIFT, PRAISE_OFF_TOPIC):
        # vader alone prefers the template: that is the gap the task judge closes.
        assert VaderOracle().judge(PROMPT, FLUENT_MILD, template).outcome == "b"
        assert judge.judge(PROMPT, FLUENT_MILD, template).outcome == "a"
        assert judge.judge(PROMPT, template, FLUENT_MILD).outcome == "b"  # symmetric


def test_judge_ranks_the_documented_order():
    # Among fluent on-topic continuations the more positive wins (as under vader); off-topic praise
    # sits below a neutral on-topic continuation but above on-topic disparagement.
    order = [WARM, FLUENT_MILD, NEUTRAL, PRAISE_OFF_TOPIC, TEMPLATE, NEGATIVE]
    scores = [task_score(PROMPT, t).score for t in order]
    assert scores == sorted(scores, reverse=True)


def test_judge_parts_and_ties():
    s = task_score(PROMPT, TEMPLATE)
    assert not s.on_topic and s.repetition == pytest.approx(3 / 10) and s.oov == 0
    assert "off-topic" in s.explain() and "rep" in s.explain()
    assert task_score(PROMPT, URL_DRIFT).oov > 0  # an invented domain name is not a corpus word
    assert TaskJudge().judge(PROMPT, NEUTRAL, NEUTRAL).outcome == "tie"
    assert build_oracle("vader").name == "vader"  # the plain scorer is unchanged


def test_guards():
    assert guards.words("Don't STOP, 42!") == ["don't", "stop"]
    assert guards.repetition("a b a b a b") == pytest.approx(1 - 2 / 5)
    assert guards.repetition("one") == 0.0
    assert guards.distinct_n(["the film was good", "the film was bad"], 2) == pytest.approx(4 / 6)
    vocab = frozenset({"the", "film", "was", "good"})
    assert guards.oov_share("the film was zorbly", "", vocab) == pytest.approx(0.25)
    assert guards.oov_share("the film was zorbly", "Zorbly returns", vocab) == 0.0  # names from the prompt
    assert guards.on_topic("A story about Sherlock Holmes", "Holmes solves it") and guards.mentions_film("great movie")
    assert not guards.on_topic("A story about Sherlock Holmes", "buy cheap shoes online")
    s = guards.summarise(["p", "p"], ["great movie great fun", "great movie"])
    assert s.top_word == "great" and s.top_word_share == 1.0 and s.film == 1.0
