"""Query text: tokens and the text embedding e_t (docs/method.md s.5).

Text longer than the model's max_text_tokens (50 by default) is truncated with its end token kept;
callers get a flag per text so that they can say which were cut. Training tokenises with the same
function, so a caption is cut the same way in training, validation, `pig embed-text` and `pig rank`.
Paragraphs (a video's captions joined: DiDeMo, ActivityNet) keep at least 64 tokens, the PIG
supplement's length for paragraph sets (`text_token_limit`).
"""

from __future__ import annotations

import numpy as np
import torch

from .device import autocast


PARAGRAPH_TEXT_TOKENS = 64  # docs/method.md s.5: paragraph sets (DiDeMo, ActivityNet)


def text_token_limit(max_text_tokens: int, paragraph: bool) -> int:
    """Tokens kept per text: the model's max_text_tokens; for paragraphs at least PARAGRAPH_TEXT_TOKENS."""
    return max(max_text_tokens, PARAGRAPH_TEXT_TOKENS) if paragraph else max_text_tokens


def tokenize(tokenizer, texts: list[str], max_tokens: int) -> dict[str, torch.Tensor]:
    """Token ids and attention mask [B, <= max_tokens], padded to the longest text of the batch.

    Padding never changes a text's embedding: CLIP's text encoder is causal and pools at the first
    end token."""
    batch = tokenizer(texts, padding="longest", truncation=True, max_length=max_tokens, return_tensors="pt")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def truncated(tokenizer, texts: list[str], max_tokens: int) -> np.ndarray:
    """[Q] bool: which texts have more than max_tokens tokens (start and end tokens included)."""
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]]
    return np.array(lengths, dtype=np.int64) > max_tokens


def embed_texts(loaded, texts: list[str], *, max_tokens: int | None = None, batch_size: int = 256,
                device=None, precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """Texts -> (e_t [Q, D] float32, truncated [Q] bool) with a loaded model (.model, .tokenizer)."""
    pig = loaded.model
    return encode_texts(pig.encode_text, loaded.tokenizer, texts, max_tokens or pig.config.max_text_tokens,
                        pig.embed_dim, device or next(pig.parameters()).device, batch_size=batch_size,
                        precision=precision)


def encode_texts(encode, tokenizer, texts: list[str], max_tokens: int, dim: int, device, *, batch_size: int = 256,
                 precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """Texts -> (e_t [Q, D] float32, truncated [Q] bool) with any text encoder `encode(input_ids,
    attention_mask) -> e_t [B, D]` on `device`: the whole model's (embed_texts) or the text side alone
    (pigcli.model.text_encoder), batch by batch."""
    out = np.empty((len(texts), dim), np.float32)
    for start in range(0, len(texts), batch_size):
        batch = tokenize(tokenizer, texts[start : start + batch_size], max_tokens)
        with torch.inference_mode(), autocast(device, precision):
            emb = encode(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        out[start : start + len(emb)] = emb.float().cpu().numpy()
    return out, truncated(tokenizer, texts, max_tokens)
