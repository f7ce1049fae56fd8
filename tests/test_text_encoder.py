"""The text side alone (pigcli.model.text_encoder) against the whole model and transformers.

Expected values come from the whole PigModel (core.text.embed_texts), transformers' CLIPTextModel
and transformers' CLIPTokenizer loaded from the same folder; never from the code under test.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import pig_env
from pigcli.cli import app
from pigcli.core.text import embed_texts
from pigcli.errors import PigError
from pigcli.model.checkpoint import load_checkpoint
from pigcli.model.text_encoder import ClipTextTower, ClipTokenizer, load_text_encoder

CAPTIONS = ["a red square moves left past a green triangle", "a small blue circle disappears"]
TEXTS = [
    "a red square moves left past a green triangle",
    "A  RED\tsquare\n\nmoves   LEFT!!",                   # case and whitespace runs
    "café, naïve émigré — 42 dogs; it's ok, they'll go",  # accents, digits, contractions, punctuation
    "日本語のテキスト and emoji 🐕🚗",                        # non-Latin scripts, 4-byte characters
    "<|endoftext|> inside <|startoftext|> a text",       # the special tokens written out
    "x",
    "",
    "a very long query about many things " * 6,          # longer than 50 tokens: truncated
]


@pytest.fixture(scope="module")
def vocab_model_dir(tmp_path_factory, tiny_model_dir):
    """`pig init --from` a pig folder whose tokenizer learned word tokens from captions."""
    from pigcli.model.factory import init_from_pig, init_random

    root = tmp_path_factory.mktemp("vocab_models")
    base = init_random(root / "base", "tiny", seed=3, vocab_texts=CAPTIONS)
    return init_from_pig(base, root / "from")


# --- embeddings ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["tiny", "vocab_from_pig"])
def test_text_encoder_equals_the_whole_model(which, tiny_model_dir, vocab_model_dir) -> None:
    folder = tiny_model_dir if which == "tiny" else vocab_model_dir
    whole = load_checkpoint(folder)
    want, want_cut = embed_texts(whole, TEXTS)
    encoder = load_text_encoder(folder, "cpu")
    for batch_size in (256, 3):   # 3: padded batches of other lengths
        got, cut = encoder.encode(TEXTS, batch_size=batch_size)
        assert got.dtype == np.float32 and got.shape == (len(TEXTS), whole.model.embed_dim)
        np.testing.assert_allclose(got, want, atol=1e-6)
        assert cut.dtype == bool and cut.tolist() == want_cut.tolist()
    assert cut.tolist() == [False] * 7 + [True]
    # a cut elsewhere: the same flags and embeddings as the whole model cut there
    got8, cut8 = encoder.encode(TEXTS, max_tokens=8)
    want8, want_cut8 = embed_texts(whole, TEXTS, max_tokens=8)
    np.testing.assert_allclose(got8, want8, atol=1e-6)
    assert cut8.tolist() == want_cut8.tolist() and cut8.sum() > cut.sum()
    assert encoder.identity == whole.identity and encoder.path == whole.path
    assert (encoder.max_tokens, encoder.embed_dim) == (whole.model.config.max_text_tokens, whole.model.embed_dim)


def _random_text_model(hidden_act: str, eos_token_id: int, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(vocab_size=300, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=20, hidden_act=hidden_act,
                            bos_token_id=298, eos_token_id=eos_token_id, pad_token_id=299)
    torch.manual_seed(seed)
    model = CLIPTextModel(config).eval()
    for p in model.parameters():   # move LayerNorms off their identity start too
        p.data.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("hidden_act,eos_token_id", [("quick_gelu", 299), ("gelu", 299), ("gelu_new", 299),
                                                     ("quick_gelu", 2)])
def test_tower_equals_transformers_clip_text_model(hidden_act, eos_token_id) -> None:
    """Activations CLIPs use, and the legacy config (eos id 2) that pools at the highest id."""
    reference = _random_text_model(hidden_act, eos_token_id)
    projection = torch.nn.Linear(48, 24, bias=False)
    tower = ClipTextTower(reference.config.to_dict(), 24)
    state = {f"text_model.{k}": v for k, v in reference.state_dict().items() if "position_ids" not in k}
    tower.load_state_dict({**state, "text_projection.weight": projection.weight.detach()})
    # texts of 7, 4 and 10 tokens padded to 10 (pad id = end id 299, as in CLIP), one with an id above 299's
    # place in the legacy case never appears: CLIP's end token has the highest id
    ids = torch.full((3, 10), 299)
    mask = torch.zeros(3, 10, dtype=torch.long)
    for row, length in enumerate((7, 4, 10)):
        ids[row, 0] = 298
        ids[row, 1 : length - 1] = torch.randint(0, 298, (length - 2,), generator=torch.Generator().manual_seed(row))
        ids[row, length - 1] = 299
        mask[row, :length] = 1
    with torch.no_grad():
        want = projection(reference(input_ids=ids, attention_mask=mask).pooler_output)
        got = tower.text_features(ids, mask)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_unsupported_activation_is_one_clear_error() -> None:
    config = _random_text_model("quick_gelu", 299).config.to_dict()
    with pytest.raises(PigError, match="activation 'relu' is not supported"):
        ClipTextTower({**config, "hidden_act": "relu"}, 24)


# --- what is read ---------------------------------------------------------------------------------------

def test_only_the_text_tower_is_read(tiny_model_dir, monkeypatch) -> None:
    import safetensors

    read: list[str] = []
    real_open = safetensors.safe_open

    class Recording:
        def __init__(self, *args, **kwargs):
            self.handle = real_open(*args, **kwargs)

        def __enter__(self):
            self.inner = self.handle.__enter__()
            return self

        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)

        def keys(self):
            return self.inner.keys()

        def metadata(self):
            return self.inner.metadata()

        def get_tensor(self, key):
            read.append(key)
            return self.inner.get_tensor(key)

    monkeypatch.setattr(safetensors, "safe_open", Recording)
    encoder = load_text_encoder(tiny_model_dir)
    with real_open(str(tiny_model_dir / "model.safetensors"), framework="pt") as handle:
        stored = list(handle.keys())
    text_keys = {k for k in stored if k.startswith("clip.text_model.")} | {"clip.text_projection.weight"}
    assert set(read) == text_keys and len(read) == len(text_keys)
    assert any(k.startswith(("clip.vision_model.", "generator.", "fusioner.", "backbone.")) for k in stored)
    whole = load_checkpoint(tiny_model_dir).model
    names = dict(encoder.tower.named_parameters())
    assert not any("vision" in n or "generator" in n for n in names)
    want = {f"text_model.{k}": v for k, v in whole.clip.text_model.named_parameters()}
    want["text_projection.weight"] = whole.clip.text_projection.weight
    assert names.keys() == want.keys()
    assert all(torch.equal(names[n], want[n]) for n in names)


def test_folder_without_weights_is_one_clear_error(tiny_model_dir, tmp_path) -> None:
    folder = tmp_path / "no_weights"
    shutil.copytree(tiny_model_dir, folder, ignore=shutil.ignore_patterns("model.safetensors"))
    with pytest.raises(PigError, match=r"has no weights \(model.safetensors is missing\)"):
        load_text_encoder(folder)
    (tmp_path / "q.txt").write_text("a dog\n")
    result = CliRunner().invoke(app, ["embed-text", str(tmp_path / "q.txt"), "-m", str(folder), "-o",
                                      str(tmp_path / "q.h5")], env={"PIG_DEBUG": None})
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: model folder {folder} has no weights (model.safetensors is missing): copy the whole folder, "
        "or make the model again with pig init or pig train"]


# --- the tokenizer ----------------------------------------------------------------------------------------

def _same_tokens(folder: Path, texts: list[str]) -> None:
    from transformers import CLIPTokenizer

    want_tok = CLIPTokenizer.from_pretrained(str(folder))
    got_tok = ClipTokenizer.from_folder(folder)
    for max_length in (5, 16, 50, 77):
        want = want_tok(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
        got = got_tok(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
        assert torch.equal(got["input_ids"], want["input_ids"]), max_length
        assert torch.equal(got["attention_mask"], want["attention_mask"]), max_length
    want = want_tok(texts, add_special_tokens=True, verbose=False)["input_ids"]
    assert got_tok(texts, add_special_tokens=True)["input_ids"] == want
    assert all(ids[0] == want_tok.bos_token_id and ids[-1] == want_tok.eos_token_id for ids in want)


def test_tokenizer_ids_equal_transformers_byte_level(tiny_model_dir, vocab_model_dir) -> None:
    _same_tokens(tiny_model_dir / "tokenizer", TEXTS)
    _same_tokens(vocab_model_dir / "tokenizer", TEXTS + CAPTIONS)


def _clip_bpe_file() -> Path | None:
    """CLIP's real BPE merges: $CLIP_BPE_VOCAB, else the copy in an installed open_clip package."""
    if os.environ.get("CLIP_BPE_VOCAB"):
        return Path(os.environ["CLIP_BPE_VOCAB"])
    spec = importlib.util.find_spec("open_clip")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    return path if path.is_file() else None


def _write_real_clip_tokenizer(bpe: Path, folder: Path) -> None:
    """The 49408-token CLIP vocabulary as OpenAI builds it from the merges file (byte symbols in CLIP's
    byte order, the same with '</w>', one token per merge, then the start and end tokens), saved by
    transformers' CLIPTokenizer."""
    from transformers import CLIPTokenizer

    lines = gzip.open(bpe, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    order = printable + [b for b in range(256) if b not in printable]
    extra = {b: 256 + i for i, b in enumerate(b for b in range(256) if b not in printable)}
    alphabet = [chr(b if b in printable else extra[b]) for b in order]
    tokens = alphabet + [a + "</w>" for a in alphabet] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == 49408
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)
    tokenizer.save_pretrained(str(folder))


def test_tokenizer_ids_equal_transformers_real_clip_vocab(tmp_path) -> None:
    bpe = _clip_bpe_file()
    if bpe is None:
        pytest.skip("CLIP's bpe_simple_vocab_16e6.txt.gz not found: set CLIP_BPE_VOCAB or install open_clip")
    _write_real_clip_tokenizer(bpe, tmp_path / "clip")
    more = ["a photo of a cat", "Hello, World! It's 2025.", "ｆｕｌｌｗｉｄｔｈ ＡＢＣ"]
    _same_tokens(tmp_path / "clip", TEXTS + more)
    ids = ClipTokenizer.from_folder(tmp_path / "clip")(["a photo of a cat"])["input_ids"][0]
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407]   # the ids OpenAI's CLIP gives this text


# --- the command line -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory, tiny_model_dir, tiny_extract) -> Path:
    """A PIG index of the session's videos, made with the tiny model."""
    from pigcli.stages.fuse import fuse
    from pigcli.stages.generate import generate
    from pigcli.stages.select import select

    root = tmp_path_factory.mktemp("text_encoder_index")
    select(tiny_extract, root / "sel.h5")
    generate(root / "sel.h5", root / "gen.h5", str(tiny_model_dir), device="cpu")
    fuse(root / "gen.h5", root / "index.h5", str(tiny_model_dir), device="cpu")
    return root / "index.h5"


def test_rank_query_output_is_that_of_the_whole_model(tiny_index, tiny_model_dir) -> None:
    """`pig rank --query` (text side alone) prints exactly what ranking with the whole model's e_t prints."""
    import io

    from pigcli.query.rank import Ranking, write_ranking
    from pigcli.query.scoring import rank_index, read_ids_at

    texts = [TEXTS[0], TEXTS[2], TEXTS[-1]]
    e_t, _ = embed_texts(load_checkpoint(tiny_model_dir), texts)
    scores, rows = rank_index(tiny_index, e_t, 4)
    want = io.StringIO()
    write_ranking(Ranking(["q1", "q2", "q3"], read_ids_at(tiny_index), rows, scores), "tsv", want)
    args = ["rank", str(tiny_index), "--top", "4"] + [arg for text in texts for arg in ("--query", text)]
    result = CliRunner().invoke(app, args, env={"PIG_DEBUG": None, "PIG_MODEL": None})
    assert result.exit_code == 0, result.stderr
    assert result.stdout == want.getvalue()
    assert "1 queries longer than 50 tokens were truncated: q3" in result.stderr


def test_cpu_threads_limits_and_restores_torch_threads() -> None:
    from pigcli.core.device import cpu_threads

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with cpu_threads(torch.device("cpu"), 1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError):   # restored on errors too
            with cpu_threads(torch.device("cpu"), 1):
                raise RuntimeError
        assert torch.get_num_threads() == 2
        with cpu_threads(torch.device("cuda"), 1):   # other devices: untouched
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


IMPORT_PROBE = """
import json, sys
from pigcli.cli import app
try:
    app(sys.argv[1:])
except SystemExit as stop:
    assert not stop.code, stop.code
heavy = ("torch", "transformers", "pigcli.model.pig", "pigcli.model.backbone", "pigcli.model.generator",
         "pigcli.model.fusioner")
print(json.dumps([name for name in heavy if name in sys.modules]))
"""


@pytest.mark.slow
def test_query_commands_import_no_video_side_and_no_transformers(tiny_index, tiny_model_dir, tmp_path) -> None:
    """What `pig --help`, `pig rank --query` and `pig embed-text` import, each in a fresh interpreter."""
    def imported(*args) -> list[str]:
        done = subprocess.run([sys.executable, "-c", IMPORT_PROBE, *map(str, args)], capture_output=True, text=True,
                              env=pig_env(), timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    (tmp_path / "q.txt").write_text("a dog\n")
    assert imported("--help") == []
    assert imported("rank", tiny_index, "--query", "a dog") == ["torch"]
    assert imported("embed-text", tmp_path / "q.txt", "-m", tiny_model_dir, "-o", tmp_path / "q.h5") == ["torch"]
