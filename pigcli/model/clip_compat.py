"""Small adapters over `transformers` CLIP so pig runs CLIP's own layers across library versions.

transformers 4.x encoder layers take `(hidden, attention_mask, causal_attention_mask)` and return a
tuple; 5.x layers take `(hidden, attention_mask)` and return a tensor. We never fork the layer code
(METHOD.md section 1): we only call it.
"""

from __future__ import annotations

import inspect
import json
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn


@lru_cache(maxsize=None)
def _layer_takes_causal_mask(layer_type: type) -> bool:
    return "causal_attention_mask" in inspect.signature(layer_type.forward).parameters


def run_layers(layers: nn.ModuleList, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Run CLIP encoder layers with an additive attention mask [B or 1, 1, S, S]."""
    for layer in layers:
        hidden = run_layer(layer, hidden, mask)
    return hidden


def run_layer(layer: nn.Module, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if _layer_takes_causal_mask(type(layer)):
        out = layer(hidden, mask, None)
    else:
        out = layer(hidden, attention_mask=mask)
    return out[0] if isinstance(out, tuple) else out


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


def write_byte_tokenizer(folder: Path, model_max_length: int = 77) -> int:
    """Write a CLIP BPE tokenizer with no merges (every byte is a token); returns its vocab size.

    Vocabulary: 256 byte symbols, the same with CLIP's end-of-word suffix, then BOS and EOS (ids 512, 513).
    """
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = _byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + [BOS_TOKEN, EOS_TOKEN]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
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
