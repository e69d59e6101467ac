"""Task definitions: turn benchmark rows into scorable items with lm-evaluation-harness's prompts,
choices, targets, few-shot construction and preprocessing (arc, hellaswag, winogrande, mmlu,
gsm8k, and user JSONL multiple-choice tasks)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import _data
from ._errors import BadInput
from ._mmlu_subjects import MMLU_SUBJECTS
from ._prompts import LETTERS, TARGET_DELIMITER, FewshotSampler, fewshot_prefix, mc_user_message

TASKS: dict[str, str] = {
    "arc_challenge": "AI2 ARC Challenge (validation, 299), multiple choice: acc, acc_norm",
    "arc_easy": "AI2 ARC Easy (validation, 570), multiple choice: acc, acc_norm",
    "hellaswag": "HellaSwag (validation, 10,042), sentence completion: acc, acc_norm",
    "winogrande": "WinoGrande XL (validation, 1,267), partial scoring: acc",
    "mmlu": "MMLU, 57 subjects (test, 14,042; dev few-shot): acc per subject, group and aggregate",
    "gsm8k": "GSM8K (test, 1,319), generative: exact_match_strict, exact_match_flexible",
}
USER_TASK = "user task from --task-file (JSONL: question, choices, answer): acc, acc_norm"


@dataclass
class McItem:
    """One multiple-choice question, ready for either scoring mode."""

    id: str
    requests: list[tuple[str, str]]  # loglikelihood (context, continuation), one per choice
    choice_texts: list[str]  # lm-eval doc_to_choice: lengths for acc_norm
    gold: int
    messages: list[dict[str, str]]  # generative chat prompt (lettered options)
    options: list[str]
    subtask: str | None = None


@dataclass
class GenItem:
    """One generative question (gsm8k)."""

    id: str
    prompt: str  # plain-text prompt (completions endpoint)
    messages: list[dict[str, str]]  # chat prompt
    reference: str


@dataclass
class McSpec:
    """A multiple-choice task in lm-eval's terms (doc_to_text / doc_to_choice / doc_to_target)."""

    name: str
    docs: list[dict[str, Any]]
    pool: list[dict[str, Any]]  # few-shot source
    same_split: bool  # few-shot source is the evaluated split (exclude the evaluated doc)
    text: Callable[[dict[str, Any]], str | int]  # int: multiple-input task (winogrande)
    choices: Callable[[dict[str, Any]], list[str]]
    target: Callable[[dict[str, Any]], int | str]
    gold: Callable[[dict[str, Any]], int]
    gen: Callable[[dict[str, Any]], tuple[str, list[str]]]  # generative (question, options)
    doc_id: Callable[[dict[str, Any], int], str]
    description: str = ""
    gen_preamble: str = ""
    first_n: bool = False
    subtask: str | None = None
    metrics: tuple[str, ...] = ("acc", "acc_norm")


@dataclass
class TaskData:
    name: str
    kind: str  # "mc" | "gen"
    metrics: tuple[str, ...]
    mc: list[McItem] = field(default_factory=list)
    gen: list[GenItem] = field(default_factory=list)
    subtasks: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- per-benchmark lm-eval definitions


def hellaswag_preprocess(text: str) -> str:
    """lm-eval hellaswag ``preprocess``."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def hellaswag_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """lm-eval hellaswag ``process_docs`` (query, choices, gold) keeping the raw fields."""
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    return {
        **doc,
        "query": hellaswag_preprocess(doc["activity_label"] + ": " + ctx),
        "choices": [hellaswag_preprocess(e) for e in doc["endings"]],
        "gold": int(doc["label"]),
    }


def _arc(name: str, dataset: str, data_dir: str | None) -> McSpec:
    docs = _data.load(dataset, "validation", data_dir)
    _data.check_fields(docs, ("question", "choices", "answerKey"), f"{name} data")

    def target(d: dict[str, Any]) -> int:
        return d["choices"]["label"].index(d["answerKey"])

    return McSpec(
        name=name, docs=docs, pool=docs, same_split=True,
        text=lambda d: f"Question: {d['question']}\nAnswer:",
        choices=lambda d: list(d["choices"]["text"]),
        target=target, gold=target,
        gen=lambda d: (d["question"], list(d["choices"]["text"])),
        doc_id=lambda d, i: str(d.get("id", i)),
    )  # fmt: skip


def _hellaswag(data_dir: str | None) -> McSpec:
    raw = _data.load(_data.HELLASWAG, "validation", data_dir)
    _data.check_fields(raw, ("activity_label", "ctx_a", "ctx_b", "endings", "label"), "hellaswag data")
    docs = [hellaswag_doc(d) for d in raw]
    return McSpec(
        name="hellaswag", docs=docs, pool=docs, same_split=True,
        text=lambda d: d["query"], choices=lambda d: d["choices"],
        target=lambda d: int(d["label"]), gold=lambda d: int(d["label"]),
        gen=lambda d: (d["query"] + " ...", d["choices"]),
        gen_preamble="Choose the most plausible continuation of the text.",
        doc_id=lambda d, i: str(d.get("ind", i)),
    )  # fmt: skip


def _winogrande(data_dir: str | None) -> McSpec:
    docs = _data.load(_data.WINOGRANDE, "validation", data_dir)
    _data.check_fields(docs, ("sentence", "option1", "option2", "answer"), "winogrande data")

    def text(d: dict[str, Any]) -> int:
        return {"1": 0, "2": 1}[d["answer"]]

    def target(d: dict[str, Any]) -> str:
        idx = d["sentence"].index("_") + 1
        return d["sentence"][idx:].strip()

    def choices(d: dict[str, Any]) -> list[str]:
        idx = d["sentence"].index("_")
        return [d["sentence"][:idx] + opt for opt in (d["option1"], d["option2"])]

    return McSpec(
        name="winogrande", docs=docs, pool=docs, same_split=True,
        text=text, choices=choices, target=target, gold=text,
        gen=lambda d: (d["sentence"], [d["option1"], d["option2"]]),
        gen_preamble="Which option correctly fills the blank (_) in the sentence?",
        doc_id=lambda d, i: str(i), metrics=("acc",),
    )  # fmt: skip


def _mmlu_subject(subject: str, data_dir: str | None) -> McSpec:
    docs = _data.load(f"{_data.MMLU}/{subject}", "test", data_dir)
    dev = _data.load(f"{_data.MMLU}/{subject}", "dev", data_dir)
    _data.check_fields(docs, ("question", "choices", "answer"), f"mmlu {subject} data")
    nice = subject.replace("_", " ")

    def text(d: dict[str, Any]) -> str:
        c = d["choices"]
        return f"{d['question'].strip()}\nA. {c[0]}\nB. {c[1]}\nC. {c[2]}\nD. {c[3]}\nAnswer:"

    return McSpec(
        name=f"mmlu_{subject}", docs=docs, pool=dev, same_split=False, first_n=True,
        text=text, choices=lambda d: ["A", "B", "C", "D"],
        target=lambda d: int(d["answer"]), gold=lambda d: int(d["answer"]),
        gen=lambda d: (d["question"].strip(), list(d["choices"])),
        gen_preamble=f"The following is a multiple choice question about {nice}.",
        description=f"The following are multiple choice questions (with answers) about {nice}.\n\n",
        doc_id=lambda d, i: f"{subject}/{i}", subtask=subject, metrics=("acc",),
    )  # fmt: skip


def _user(path: str) -> McSpec:
    docs = _data.load_task_file(path)
    return McSpec(
        name="user", docs=docs, pool=docs, same_split=True,
        text=lambda d: f"Question: {d['question']}\nAnswer:", choices=lambda d: d["choices"],
        target=lambda d: d["gold"], gold=lambda d: d["gold"],
        gen=lambda d: (d["question"], d["choices"]), doc_id=lambda d, i: d["id"],
    )  # fmt: skip


# ---------------------------------------------------------------- item construction


def _target_text(spec: McSpec, doc: dict[str, Any]) -> str:
    t = spec.target(doc)
    return spec.choices(doc)[t] if isinstance(t, int) else t


def _shot_text(spec: McSpec, doc: dict[str, Any]) -> str:
    q = spec.text(doc)
    return spec.choices(doc)[q] if isinstance(q, int) else q


def _encode_pair(context: str, continuation: str) -> tuple[str, str]:
    """lm-eval moves trailing whitespace of the context to the continuation."""
    n = len(context) - len(context.rstrip())
    if n:
        return context[:-n], context[-n:] + continuation
    return context, continuation


def build_mc(spec: McSpec, num_fewshot: int, seed: int, system_prompt: str | None, limit: int | None) -> list[McItem]:
    sampler = FewshotSampler(spec.pool, seed, first_n=spec.first_n, same_split=spec.same_split)
    docs = spec.docs[:limit] if limit else spec.docs
    if num_fewshot and len(spec.pool) < num_fewshot + (1 if spec.same_split else 0):
        raise BadInput(f"num_fewshot={num_fewshot}: {spec.name} has only {len(spec.pool)} few-shot examples")
    items: list[McItem] = []
    for i, doc in enumerate(docs):
        shots = sampler.sample(num_fewshot, eval_index=i)
        prefix = fewshot_prefix(
            system_prompt, spec.description, [(_shot_text(spec, s), _target_text(spec, s)) for s in shots]
        )
        q = spec.text(doc)
        choices = spec.choices(doc)
        if isinstance(q, int):  # multiple input: one context per choice, shared continuation
            cont = TARGET_DELIMITER + str(spec.target(doc))
            pairs = [_encode_pair(prefix + c, cont) for c in choices]
        else:
            pairs = [_encode_pair(prefix + q, TARGET_DELIMITER + c) for c in choices]
        question, options = spec.gen(doc)
        messages: list[dict[str, str]] = []
        if system_prompt:
            messages.append({"role": "system", "content": system_prompt})
        for s in shots:
            sq, so = spec.gen(s)
            messages.append({"role": "user", "content": mc_user_message(sq, so, spec.gen_preamble)})
            messages.append({"role": "assistant", "content": f"Answer: {LETTERS[spec.gold(s)]}"})
        messages.append({"role": "user", "content": mc_user_message(question, options, spec.gen_preamble)})
        items.append(
            McItem(
                id=spec.doc_id(doc, i), requests=pairs, choice_texts=list(choices), gold=spec.gold(doc),
                messages=messages, options=list(options), subtask=spec.subtask,
            )
        )  # fmt: skip
    return items


def build_gsm8k(
    data_dir: str | None, num_fewshot: int, seed: int, system_prompt: str | None, limit: int | None
) -> list[GenItem]:
    """lm-eval gsm8k: ``Question: {q}\\nAnswer:``, few-shot targets are the full worked answers.

    The train split (lm-eval's few-shot source) is not available offline; few-shot examples are
    drawn from the test split with the evaluated question removed (lm-eval's rule for that case)."""
    docs = _data.load_gsm8k(data_dir)
    if num_fewshot and len(docs) < num_fewshot + 1:
        raise BadInput(f"num_fewshot={num_fewshot}: gsm8k has only {len(docs)} examples")
    sampler = FewshotSampler(docs, seed, same_split=True)
    items: list[GenItem] = []
    for i, doc in enumerate(docs[:limit] if limit else docs):
        shots = sampler.sample(num_fewshot, eval_index=i)
        q = f"Question: {doc['question']}\nAnswer:"
        prefix = fewshot_prefix(
            system_prompt, "", [(f"Question: {s['question']}\nAnswer:", s["answer"]) for s in shots]
        )
        messages: list[dict[str, str]] = []
        if system_prompt:
            messages.append({"role": "system", "content": system_prompt})
        for s in shots:
            messages += [
                {"role": "user", "content": f"Question: {s['question']}\nAnswer:"},
                {"role": "assistant", "content": s["answer"]},
            ]
        messages.append({"role": "user", "content": q})
        items.append(GenItem(id=str(doc.get("id", i)), prompt=prefix + q, messages=messages, reference=doc["answer"]))
    return items


def default_fewshot(task: str) -> int:
    return 0  # lm-eval's gsm8k default is 5 from the train split, which is not available offline


def load_task(
    task: str, data_dir: str | None, task_file: str | None, num_fewshot: int, seed: int,
    system_prompt: str | None, limit: int | None,
) -> TaskData:  # fmt: skip
    """Build the items of a task; ``limit`` applies per subtask (as lm-eval's ``--limit``)."""
    if task_file:
        spec = _user(task_file)
        return TaskData(task, "mc", spec.metrics, mc=build_mc(spec, num_fewshot, seed, system_prompt, limit))
    if task == "gsm8k":
        items = build_gsm8k(data_dir, num_fewshot, seed, system_prompt, limit)
        return TaskData(task, "gen", ("exact_match_strict", "exact_match_flexible"), gen=items)
    if task == "mmlu":
        mc: list[McItem] = []
        for subject in MMLU_SUBJECTS:
            mc += build_mc(_mmlu_subject(subject, data_dir), num_fewshot, seed, system_prompt, limit)
        return TaskData(task, "mc", ("acc",), mc=mc, subtasks=list(MMLU_SUBJECTS))
    specs: dict[str, Callable[[], McSpec]] = {
        "arc_challenge": lambda: _arc("arc_challenge", _data.ARC_CHALLENGE, data_dir),
        "arc_easy": lambda: _arc("arc_easy", _data.ARC_EASY, data_dir),
        "hellaswag": lambda: _hellaswag(data_dir),
        "winogrande": lambda: _winogrande(data_dir),
    }
    if task not in specs:
        raise BadInput(f"unknown task {task!r}; known: {', '.join(TASKS)} (or --task-file)")
    spec = specs[task]()
    return TaskData(task, "mc", spec.metrics, mc=build_mc(spec, num_fewshot, seed, system_prompt, limit))
