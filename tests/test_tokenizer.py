"""The offline tokenizers of `pig init --preset`: byte-level, and word tokens learned from captions."""

from pathlib import Path

import torch

from pigcli.model.checkpoint import load_checkpoint
from pigcli.model.factory import init_random
from pigcli.model.clip_compat import write_byte_tokenizer

CAPTIONS = [
    "on a striped grey background, a big orange cross appears, then a big blue circle disappears",
    "a small red square moves left past a green triangle",
    "a yellow diamond turns purple",
]


def _tokens(folder: Path, text: str) -> list[str]:
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(folder))
    return tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])


def test_byte_tokenizer_spells_words_byte_by_byte(tmp_path) -> None:
    assert write_byte_tokenizer(tmp_path) == 514
    assert _tokens(tmp_path, "red box") == ["<|startoftext|>", "r", "e", "d</w>", "b", "o", "x</w>", "<|endoftext|>"]


def test_learned_vocabulary_makes_every_caption_word_one_token(tmp_path) -> None:
    size = write_byte_tokenizer(tmp_path, texts=CAPTIONS)
    assert size > 514
    for caption in CAPTIONS:
        words = caption.replace(",", " ,").split()
        assert _tokens(tmp_path, caption)[1:-1] == [w + "</w>" for w in words]
    # text outside the vocabulary still tokenizes, byte by byte, with the same special tokens
    tokens = _tokens(tmp_path, "zebra 42")
    assert tokens[0] == "<|startoftext|>" and tokens[-1] == "<|endoftext|>" and "z" in tokens


def test_model_with_learned_vocabulary_embeds_text(tmp_path) -> None:
    loaded = load_checkpoint(init_random(tmp_path / "m", "tiny", vocab_texts=CAPTIONS))
    tokenizer = loaded.tokenizer
    assert loaded.model.clip.config.text_config.vocab_size == len(tokenizer)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (512, 513)
    batch = tokenizer(CAPTIONS, padding="max_length", max_length=50, truncation=True, return_tensors="pt")
    with torch.no_grad():
        emb = loaded.model.encode_text(batch["input_ids"], batch["attention_mask"])
    assert emb.shape == (3, 32) and torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert not (tmp_path / "m.tokenizer.partial").exists()
