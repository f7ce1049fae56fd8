"""Small adapters over `transformers` CLIP so pig runs CLIP's own layers across library versions.

transformers 4.x encoder layers take `(hidden, attention_mask, causal_attention_mask)` and return a
tuple; 5.x layers take `(hidden, attention_mask)` and return a tensor. We never fork the layer code
(docs/method.md section 1): we only call it.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import json
from functools import lru_cache
from pathlib import Path

import torch
import torch.utils.checkpoint
from torch import nn

# Gradient checkpointing of the layers run_layers runs (the video tower and the generator): set by
# `checkpointed_layers()` around a training forward (pig train --grad-checkpointing).
_CHECKPOINT_LAYERS = contextvars.ContextVar("pig_checkpoint_layers", default=False)


@contextlib.contextmanager
def checkpointed_layers(enabled: bool = True):
    """Within this context, run_layers recomputes each layer's activations in the backward pass instead of
    keeping them (less memory, about one more forward of compute); outside, or without gradients, a no-op."""
    token = _CHECKPOINT_LAYERS.set(enabled)
    try:
        yield
    finally:
        _CHECKPOINT_LAYERS.reset(token)


@lru_cache(maxsize=None)
def _layer_takes_causal_mask(layer_type: type) -> bool:
    return "causal_attention_mask" in inspect.signature(layer_type.forward).parameters


def run_layers(layers: nn.ModuleList, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Run CLIP encoder layers with an additive attention mask [B or 1, 1, S, S]."""
    checkpoint = _CHECKPOINT_LAYERS.get() and torch.is_grad_enabled()
    for layer in layers:
        if checkpoint:  # non-reentrant: gradients reach the weights even when `hidden` needs none
            hidden = torch.utils.checkpoint.checkpoint(run_layer, layer, hidden, mask, use_reentrant=False)
        else:
            hidden = run_layer(layer, hidden, mask)
    return hidden


def run_layer(layer: nn.Module, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if _layer_takes_causal_mask(type(layer)):
        out = layer(hidden, mask, None)
    else:
        out = layer(hidden, attention_mask=mask)
    return out[0] if isinstance(out, tuple) else out


def skip_weight_init():
    """A context in which transformers (and torch.nn.init) skip random initialisation, for models whose
    weights are loaded right after (building a model is then several times faster). transformers moved the
    helper between versions; without it, models are built normally (slower, same result)."""
    import contextlib

    for module in ("transformers.initialization", "transformers.modeling_utils"):
        try:
            return getattr(__import__(module, fromlist=["no_init_weights"]), "no_init_weights")()
        except (ImportError, AttributeError):
            continue
    return contextlib.nullcontext()


def compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The dtype the attention runs in: the autocast dtype when autocast is on (masks must match it)."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return hidden.dtype


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Boolean [S, S] (row attends to column) -> additive float mask [1, 1, S, S]."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


# --- a byte-level CLIP tokenizer that needs no download -------------------------------------------

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"


def _byte_alphabet() -> list[str]:
    """GPT-2/CLIP's reversible byte -> printable unicode map, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = {}, 0
    for b in range(256):
        if b in printable:
            codes[b] = b
        else:
            codes[b] = 256 + extra
            extra += 1
    return [chr(codes[b]) for b in range(256)]


def word_merges(texts: list[str], max_merges: int = 20000) -> list[tuple[str, str]]:
    """BPE merges learned from `texts` (tokenizers' BPE trainer with CLIP's normalisation and word
    splitting) until every word is one token or `max_merges` is reached: a word-level vocabulary for
    small corpora, while any other text still tokenizes byte by byte."""
    from tokenizers import Tokenizer, models, trainers

    tokenizer = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tokenizer.normalizer = clip_normalizer()
    tokenizer.pre_tokenizer = clip_pre_tokenizer(use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=max_merges + 512, initial_alphabet=_byte_alphabet(),
                                  end_of_word_suffix="</w>", show_progress=False, min_frequency=1)
    tokenizer.train_from_iterator(texts, trainer)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]


CLIP_WORD_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def clip_normalizer():
    """CLIP's text normalisation as a `tokenizers` normalizer: NFC, whitespace runs to one space, lower case."""
    from tokenizers import Regex, normalizers

    return normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])


def clip_pre_tokenizer(use_regex: bool = True):
    """CLIP's word splitting (CLIP_WORD_PATTERN), then bytes as printable characters. transformers'
    CLIPTokenizer also applies the byte-level regex (use_regex); learning merges does without it."""
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_WORD_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=use_regex),
    ])


def write_byte_tokenizer(folder: Path, model_max_length: int = 77, texts: list[str] = ()) -> int:
    """Write a CLIP BPE tokenizer that needs no download; returns its vocab size.

    Vocabulary: 256 byte symbols, the same with CLIP's end-of-word suffix, BOS and EOS (ids 512, 513),
    then one token per merge learned from `texts` (a word-level vocabulary for small corpora: toy
    captions fit in a few tokens instead of one token per character).
    """
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = _byte_alphabet()
    merges = word_merges(list(texts)) if texts else []
    tokens = alphabet + [c + "</w>" for c in alphabet] + [BOS_TOKEN, EOS_TOKEN] + [a + b for a, b in merges]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": model_max_length,
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return len(vocab)
