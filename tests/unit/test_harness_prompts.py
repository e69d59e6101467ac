"""Prompt formats, few-shot construction and answer extraction against lm-evaluation-harness's
definitions (strings checked by hand against lm-eval's task YAMLs and utils)."""

from __future__ import annotations

import random

import pytest
from nv_eval.harness import extract_letter, hellaswag_doc, hellaswag_preprocess, load_task
from nv_eval.harness._prompts import (
    GSM8K_FLEXIBLE,
    GSM8K_STRICT,
    FewshotSampler,
    gsm8k_normalize,
    maybe_delimit,
    regex_filter,
)


def test_arc_prompt_and_continuations() -> None:
    data = load_task("arc_challenge", None, None, 0, 1234, None, 1)
    item = data.mc[0]
    q = (
        "Juan and LaKeisha roll a few objects down a ramp. They want to see which object rolls the farthest. "
        "What should they do so they can repeat their investigation?"
    )
    assert item.requests[0] == (f"Question: {q}\nAnswer:", " Put the objects in groups.")
    assert [c for _, c in item.requests] == [
        " Put the objects in groups.",
        " Change the height of the ramp.",
        " Choose different objects to roll.",
        " Record the details of the investigation.",
    ]
    assert item.choice_texts[3] == "Record the details of the investigation."  # acc_norm length: no delimiter
    assert item.gold == 3 and data.metrics == ("acc", "acc_norm")


def test_arc_fewshot_uses_lm_eval_sampler_sequence() -> None:
    data = load_task("arc_challenge", None, None, 2, 1234, None, 3)
    from nv_eval.harness._data import ARC_CHALLENGE, load

    docs = load(ARC_CHALLENGE, "validation", None)
    rnd = random.Random(1234)
    for i, item in enumerate(data.mc):
        drawn = [d for d in rnd.sample(docs, 3) if d != docs[i]][:2]  # lm-eval: n+1, drop the doc itself
        shots = "".join(
            f"Question: {d['question']}\nAnswer: {d['choices']['text'][d['choices']['label'].index(d['answerKey'])]}\n\n"
            for d in drawn
        )
        assert item.requests[0][0] == shots + f"Question: {docs[i]['question']}\nAnswer:"


def test_hellaswag_preprocessing() -> None:
    assert (
        hellaswag_preprocess(" How to cook [title] Boil water. [step] Add  salt. ")
        == "How to cook. Boil water. Add salt."
    )
    doc = hellaswag_doc(
        {"activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
         "endings": ["is using wrap.", "starts pulling up roofing on a roof."], "label": "1"}
    )  # fmt: skip
    assert doc["query"] == "Roof shingle removal: A man is sitting on a roof. He"
    assert doc["gold"] == 1
    data = load_task("hellaswag", None, None, 0, 1234, None, 1)
    assert data.mc[0].requests[3] == (
        "Roof shingle removal: A man is sitting on a roof. He",
        " starts pulling up roofing on a roof.",
    )


def test_winogrande_partial_scoring_requests() -> None:
    data = load_task("winogrande", None, None, 0, 1234, None, 1)
    item = data.mc[0]
    assert item.requests == [
        ("Sarah was a much better surgeon than Maria so Sarah", " always got the easier cases."),
        ("Sarah was a much better surgeon than Maria so Maria", " always got the easier cases."),
    ]
    assert item.gold == 1 and data.metrics == ("acc",)


def test_winogrande_fewshot_uses_correct_option_and_target() -> None:
    data = load_task("winogrande", None, None, 1, 1234, None, 1)
    ctx = data.mc[0].requests[0][0]
    shot, rest = ctx.split("\n\n")
    assert rest == "Sarah was a much better surgeon than Maria so Sarah"
    assert "_" not in shot and shot.endswith(".")


def test_mmlu_prompt_description_and_first_n_dev() -> None:
    data = load_task("mmlu", None, None, 1, 1234, None, 1)
    assert len(data.mc) == 57 and len(data.subtasks) == 57
    item = data.mc[0]
    assert item.subtask == "abstract_algebra"
    assert item.requests[0][0] == (
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
        "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\n"
        "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\n"
        "A. 0\nB. 4\nC. 2\nD. 6\nAnswer:"
    )
    assert [c for _, c in item.requests] == [" A", " B", " C", " D"] and item.gold == 1


def test_gsm8k_prompt() -> None:
    data = load_task("gsm8k", None, None, 0, 1234, None, 1)
    item = data.gen[0]
    assert item.prompt.startswith("Question: Janet’s ducks lay 16 eggs per day.") and item.prompt.endswith("\nAnswer:")
    assert gsm8k_normalize(item.reference) == "18"


def test_gsm8k_filters_like_lm_eval() -> None:
    assert regex_filter("so 5 + 13 = 18.\n#### 18", GSM8K_STRICT, 0) == "18"
    assert regex_filter("The answer is 18", GSM8K_STRICT, 0) == "[invalid]"
    assert regex_filter("She makes $18.", GSM8K_FLEXIBLE, -1) == "$18."
    assert gsm8k_normalize("$18.") == "18"
    assert gsm8k_normalize("1,234") == "1234"
    assert regex_filter("3 eggs, so 9 * 2 = 18", GSM8K_FLEXIBLE, -1) == "18"


def test_first_n_and_default_sampler() -> None:
    pool = list(range(10))
    assert FewshotSampler(pool, 1, first_n=True).sample(3) == [0, 1, 2]
    s = FewshotSampler(pool, 7, same_split=True)
    ref = random.Random(7)
    for i in range(5):
        want = [x for x in ref.sample(pool, 4) if x != i][:3]
        assert s.sample(3, eval_index=i) == want


def test_maybe_delimit() -> None:
    assert maybe_delimit("sys", "desc", "\n\n") == "sys\n\ndesc"
    assert maybe_delimit("sys\n", "desc", "\n\n") == "sys\ndesc"
    assert maybe_delimit(None, "desc") == "desc"


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("Answer: C", 2),
        ("The correct option is B.\nAnswer: (D)", 3),
        ("B", 1),
        ("(A) because plants need light", 0),
        ("**C**", 2),
        ("I think the answer is b", 1),
        ("A man walks; the best is Sulfur", 3),
        ("no idea", None),
        ("Answer: E", None),
    ],
)
def test_extract_letter(text: str, want: int | None) -> None:
    assert extract_letter(text, ["Quartz", "Mica", "Calcite", "Sulfur"]) == want
