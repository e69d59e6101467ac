"""Prompt construction the way lm-evaluation-harness builds it (description, few-shot examples with
target/few-shot delimiters, multiple-input contexts), lm-eval's few-shot samplers, and the
generative multiple-choice prompt with its letter extraction."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def maybe_delimit(prefix: str | None, suffix: str | None, delimiter: str = " ") -> str:
    """Join two strings, adding ``delimiter`` only if neither has whitespace at the boundary."""
    if not prefix:
        return suffix or ""
    if not suffix:
        return prefix
    if prefix[-1].isspace() or suffix[0].isspace():
        return prefix + suffix
    return prefix + delimiter + suffix


class FewshotSampler:
    """lm-eval's ``ContextSampler`` (``default``: one ``random.Random(seed)`` per task, sampled per
    evaluated document in order; n+1 drawn and the evaluated document removed when the few-shot
    pool is the evaluated split) and ``first_n`` (the first n, in order)."""

    def __init__(self, pool: Sequence[Any], seed: int | None, first_n: bool = False, same_split: bool = False):
        self.pool = list(pool)
        self.rnd = random.Random(seed)
        self.first_n = first_n
        self.same_split = same_split

    def sample(self, n: int, eval_index: int | None = None) -> list[Any]:
        if n == 0:
            return []
        if self.first_n:
            pool = [d for i, d in enumerate(self.pool) if not (self.same_split and i == eval_index)]
            return pool[:n]
        if len(self.pool) < n + (1 if self.same_split else 0):
            raise ValueError(f"only {len(self.pool)} few-shot examples available, {n} requested")
        if self.same_split and eval_index is not None:
            idx = self.rnd.sample(range(len(self.pool)), n + 1)
            return [self.pool[i] for i in idx if i != eval_index][:n]
        return [self.pool[i] for i in self.rnd.sample(range(len(self.pool)), n)]


def fewshot_prefix(system_prompt: str | None, description: str, shots: Sequence[tuple[str, str]]) -> str:
    """System/description block followed by ``q + " " + a + "\\n\\n"`` per example (lm-eval plain text)."""
    out = maybe_delimit(system_prompt, description, FEWSHOT_DELIMITER)
    for q, a in shots:
        out += q + TARGET_DELIMITER + a + FEWSHOT_DELIMITER
    return out


# ---------------------------------------------------------------- generative multiple choice

MC_INSTRUCTION = (
    "Answer the following multiple choice question. Reply with the letter of the correct option "
    "only, on a single line of the form 'Answer: X' where X is one of {letters}."
)


def lettered(question: str, options: Sequence[str]) -> str:
    lines = [question.strip(), ""] + [f"{LETTERS[i]}. {opt}" for i, opt in enumerate(options)]
    return "\n".join(lines)


def mc_user_message(question: str, options: Sequence[str], preamble: str = "") -> str:
    letters = ", ".join(LETTERS[: len(options)])
    head = MC_INSTRUCTION.format(letters=letters)
    if preamble:
        head = preamble.strip() + "\n" + head
    return head + "\n\n" + lettered(question, options)


_ANSWER_RE = re.compile(r"answer(?:\s+is)?\s*[:：]?\s*[\*\(\[]*\s*([A-Z])\b(?![a-z'])", re.IGNORECASE)
_LEAD_RE = re.compile(r"^\s*[\*\(\[]*([A-Z])(?:[\.\):\]\*]|\s*$)")
_LONE_RE = re.compile(r"(?<![A-Za-z'])([A-Z])(?![A-Za-z'])")


def extract_letter(text: str, options: Sequence[str]) -> int | None:
    """Index of the option a free-form reply chose, or None.

    In order: the last ``Answer: X`` (also ``answer is (X)``); a reply starting with ``X.``/``(X)``/
    ``X)`` or consisting of the letter; a single distinct valid stand-alone capital letter (``I``
    excluded); the one option whose text the reply contains."""
    n = len(options)
    valid = LETTERS[:n]
    hits = [m.group(1).upper() for m in _ANSWER_RE.finditer(text)]
    hits = [h for h in hits if h in valid]
    if hits:
        return valid.index(hits[-1])
    m = _LEAD_RE.match(text)
    if m and m.group(1) in valid:
        return valid.index(m.group(1))
    lone = {
        h for h in _LONE_RE.findall(text) if h in valid and h not in ("I",) and not (h == "A" and _is_article(text))
    }
    if len(lone) == 1:
        return valid.index(lone.pop())
    low = text.casefold()
    found = [i for i, opt in enumerate(options) if opt.strip() and opt.strip().casefold() in low]
    if len(found) == 1:
        return found[0]
    return None


def _is_article(text: str) -> bool:
    return re.search(r"(?<![A-Za-z'])A\s+[a-z]", text) is not None


# ---------------------------------------------------------------- gsm8k (lm-eval filters)

GSM8K_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
GSM8K_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
GSM8K_IGNORE = (",", "\\$", "(?s).*#### ", "\\.$")
GSM8K_UNTIL = ["Question:", "</s>", "<|im_end|>"]


def regex_filter(text: str, pattern: re.Pattern[str], group_select: int, fallback: str = "[invalid]") -> str:
    """lm-eval's ``regex`` filter followed by ``take_first``."""
    found = pattern.findall(text)
    if not found:
        return fallback
    match = found[group_select]
    if isinstance(match, tuple):
        parts = [m for m in match if m]
        match = parts[0] if parts else fallback
    return match.strip()


def gsm8k_normalize(s: str) -> str:
    """lm-eval's exact_match preprocessing for gsm8k (regexes_to_ignore, ignore_case)."""
    for rx in GSM8K_IGNORE:
        s = re.sub(rx, "", s)
    return s.lower()


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """Cut a generation at the first stop sequence (what ``until`` does in lm-eval)."""
    cut = len(text)
    for s in stops:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]
