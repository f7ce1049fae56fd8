"""The pseudo-query generator and the fusioner against independent computations (docs/method.md sections 3-4).

Generator: a hand-built forward pass in plain float64 torch from the generator's own weights
(mapper, [BOS; mapped; EOS] + positions, CLIP text layers written out, final LN, EOS, projection).
Fusioner: a direct numpy transcription of section 4 (LN eps 1e-5).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from conftest import TINY_DIM, TINY_P, TINY_T
from pigcli.model.fusioner import Fusioner

# --- generator: plain-torch reference ---------------------------------------------------------------


def _lin(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    out = x @ module.weight.detach().double().T
    return out + module.bias.detach().double() if module.bias is not None else out


def _ln(module: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + module.eps) * module.weight.detach().double() + module.bias.detach().double()


def _text_layer(layer, x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """One CLIP text encoder layer with a causal mask, written out (x: [B, S, H] float64)."""
    batch, seq, width = x.shape
    head_dim = width // num_heads
    attn = layer.self_attn
    h = _ln(layer.layer_norm1, x)
    q = _lin(attn.q_proj, h) * head_dim**-0.5
    k = _lin(attn.k_proj, h)
    v = _lin(attn.v_proj, h)
    causal = torch.ones(seq, seq, dtype=torch.bool).tril()
    heads = []
    for i in range(num_heads):
        part = slice(i * head_dim, (i + 1) * head_dim)
        logits = q[..., part] @ k[..., part].transpose(-1, -2)                # [B, S, S]
        logits = logits.masked_fill(~causal, float("-inf"))
        heads.append(torch.softmax(logits, dim=-1) @ v[..., part])
    x = x + _lin(attn.out_proj, torch.cat(heads, dim=-1))
    h = _lin(layer.mlp.fc1, _ln(layer.layer_norm2, x))
    h = h * torch.sigmoid(1.702 * h)                                           # quick_gelu
    return x + _lin(layer.mlp.fc2, h)


def reference_generate(generator, u: torch.Tensor, num_heads: int) -> torch.Tensor:
    u = u.double()
    batch, n, _ = u.shape
    mapped = _lin(generator.mapper, u)
    bos = generator.bos_embedding.double().expand(batch, 1, -1)
    eos = generator.eos_embedding.double().expand(batch, 1, -1)
    x = torch.cat([bos, mapped, eos], dim=1) + generator.position_embedding.weight.detach().double()[: n + 2]
    for layer in generator.layers:
        x = _text_layer(layer, x, num_heads)
    x = _ln(generator.final_layer_norm, x)[:, -1]                            # EOS: the last position
    return _lin(generator.projection, x)


@pytest.fixture
def pig_copy(tiny_model):
    """A private copy of the tiny PigModel (tests may change its weights)."""
    return copy.deepcopy(tiny_model.model).eval()


def _randomize(module: nn.Module, seed: int, scale: float = 0.3) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * scale)


def _tokens(batch: int, seed: int = 0, k: int = 16) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1 + TINY_P + TINY_T + k, TINY_DIM, generator=gen)


def test_generate_equals_hand_built_forward(pig_copy) -> None:
    pig = pig_copy
    # Random generator weights everywhere (LN gains included), so that the test would see e.g. the real
    # text encoder's weights used by mistake, a missing causal mask, or a wrong output position.
    _randomize(pig.generator, seed=3)
    with torch.no_grad():
        for module in pig.generator.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.add_(1.0)
    u = _tokens(3)
    heads = pig.clip.config.text_config.num_attention_heads
    with torch.inference_mode():
        got = pig.generate(u)
    want = reference_generate(pig.generator, u, heads)
    assert got.shape == (3, TINY_DIM)
    torch.testing.assert_close(got.double(), want, atol=2e-5, rtol=1e-4)
    # each video's pseudo-query depends on its own tokens only
    with torch.inference_mode():
        single = pig.generate(u[1:2])
    torch.testing.assert_close(single[0], got[1], atol=1e-5, rtol=1e-5)


def test_generate_with_checkpoint_weights_and_other_k(tiny_model) -> None:
    """The loaded (untouched) generator, with another number of input tokens."""
    pig = tiny_model.model
    u = _tokens(2, seed=5, k=4)
    heads = pig.clip.config.text_config.num_attention_heads
    with torch.inference_mode():
        got = pig.generate(u)
    torch.testing.assert_close(got.double(), reference_generate(pig.generator, u, heads), atol=2e-5, rtol=1e-4)


def test_generate_refuses_too_many_tokens(tiny_model) -> None:
    positions = tiny_model.model.generator.position_embedding.num_embeddings
    with pytest.raises(ValueError, match="positions"):
        tiny_model.model.generate(torch.zeros(1, positions - 1, TINY_DIM))


def test_generator_is_initialised_from_and_separate_from_the_text_encoder(pig_copy) -> None:
    pig = pig_copy
    text = pig.clip.text_model
    gen = pig.generator
    pairs = [(gen.layers, text.encoder.layers), (gen.final_layer_norm, text.final_layer_norm),
             (gen.position_embedding, text.embeddings.position_embedding), (gen.projection, pig.clip.text_projection)]
    # initialised as copies: same values, different storage
    for mine, theirs in pairs:
        for (name, a), (_, b) in zip(mine.named_parameters(), theirs.named_parameters(), strict=True):
            torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)
            assert a.data_ptr() != b.data_ptr(), name
    before = {name: p.detach().clone() for name, p in pig.clip.named_parameters()}
    _randomize(gen, seed=11)
    for name, p in pig.clip.named_parameters():
        torch.testing.assert_close(p, before[name], atol=0, rtol=0, msg=f"clip.{name} changed with the generator")
    # and the real text encoder still gives what it gave before
    ids = torch.tensor([[512, 70, 71, 72, 513]])
    fresh = copy.deepcopy(pig)
    fresh.clip.load_state_dict({k: v for k, v in before.items()})
    torch.testing.assert_close(pig.encode_text(ids), fresh.encode_text(ids), atol=0, rtol=0)


def test_bos_eos_are_token_embeddings_of_the_tokenizer_ids(tiny_model) -> None:
    pig, tokenizer = tiny_model.model, tiny_model.tokenizer
    table = pig.clip.text_model.embeddings.token_embedding.weight
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert bos != eos
    assert (pig.config.bos_token_id, pig.config.eos_token_id) == (bos, eos)
    ids = tokenizer("a")["input_ids"]
    assert ids[0] == bos and ids[-1] == eos
    torch.testing.assert_close(pig.generator.bos_embedding, table[bos], atol=0, rtol=0)
    torch.testing.assert_close(pig.generator.eos_embedding, table[eos], atol=0, rtol=0)
    assert not torch.equal(pig.generator.bos_embedding, pig.generator.eos_embedding)
    # constants, not trainable parameters
    names = {n for n, _ in pig.generator.named_parameters()}
    assert not any("bos" in n or "eos" in n for n in names)


# --- fusioner: numpy reference ----------------------------------------------------------------------


def _np_ln(x: np.ndarray, gain: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * gain + bias


def _np_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def numpy_fusioner(t: np.ndarray, keys: np.ndarray, w: dict, heads: int, dropout_zero: bool = False) -> np.ndarray:
    """docs/method.md section 4 for one query t [D] and keys [K, D]; w: name -> (weight, bias) / (gain, bias)."""
    dim = t.shape[0]
    dh = dim // heads
    t1 = _np_ln(t, *w["ln1"])
    v1 = _np_ln(keys, *w["ln1"])
    q = w["q"][0] @ t1 + w["q"][1]
    k = v1 @ w["k"][0].T + w["k"][1]
    v = v1 @ w["v"][0].T + w["v"][1]
    pooled = np.empty(dim)
    for h in range(heads):
        part = slice(h * dh, (h + 1) * dh)
        a = _np_softmax(k[:, part] @ q[part] / np.sqrt(dh))
        pooled[part] = a @ v[:, part]
    o = _np_ln(w["o"][0] @ pooled + w["o"][1], *w["ln2"])
    extra = 0.0 if dropout_zero else w["l"][0] @ o + w["l"][1]
    y = _np_ln(o + extra, *w["ln3"])
    return y / np.linalg.norm(y)


def _weights_of(f: Fusioner) -> dict:
    def get(module):
        return module.weight.detach().double().numpy(), module.bias.detach().double().numpy()

    return {"ln1": get(f.ln1), "ln2": get(f.ln2), "ln3": get(f.ln3), "q": get(f.q_proj), "k": get(f.k_proj),
            "v": get(f.v_proj), "o": get(f.out_proj), "l": get(f.linear)}


def _inputs(batch: int, keys: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dim, generator=gen), torch.randn(batch, keys, dim, generator=gen)


def test_fusioner_identity_init_matches_numpy() -> None:
    dim = 16
    f = Fusioner(dim).eval()
    eye, zero, one = np.eye(dim), np.zeros(dim), np.ones(dim)
    # written independently of the module: identity projections, zero biases, LN gain 1 bias 0
    w = {"ln1": (one, zero), "ln2": (one, zero), "ln3": (one, zero), **{n: (eye, zero) for n in "qkvol"}}
    for name in ("q_proj", "k_proj", "v_proj", "out_proj", "linear"):
        layer = getattr(f, name)
        assert torch.equal(layer.weight, torch.eye(dim)) and torch.equal(layer.bias, torch.zeros(dim)), name
    t, keys = _inputs(4, 1 + 3 + 12, dim, seed=0)
    with torch.no_grad():
        got = f(t, keys).double().numpy()
    want = np.stack([numpy_fusioner(t[i].double().numpy(), keys[i].double().numpy(), w, 1) for i in range(4)])
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("heads", [1, 2])
def test_fusioner_random_weights_match_numpy(heads: int) -> None:
    dim, batch, nkeys = 8, 3, 7
    f = Fusioner(dim, num_heads=heads).eval()
    _randomize(f, seed=heads, scale=0.7)
    with torch.no_grad():
        for ln in (f.ln1, f.ln2, f.ln3):
            ln.weight.add_(1.0)
    t, keys = _inputs(batch, nkeys, dim, seed=10 + heads)
    with torch.no_grad():
        got = f(t, keys).double().numpy()
        several = f(torch.stack([t, -t], dim=1), keys).double().numpy()     # [B, Q=2, D] queries
    w = _weights_of(f)
    want = np.stack([numpy_fusioner(t[i].double().numpy(), keys[i].double().numpy(), w, heads)
                     for i in range(batch)])
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(several[:, 0], want, atol=1e-5)
    want_neg = np.stack([numpy_fusioner(-t[i].double().numpy(), keys[i].double().numpy(), w, heads)
                         for i in range(batch)])
    np.testing.assert_allclose(several[:, 1], want_neg, atol=1e-5)


def test_fusioner_heads_differ_from_one_head() -> None:
    """With random projections, 2 heads is not the same function as 1 head (the split is real)."""
    dim = 8
    one, two = Fusioner(dim, 1).eval(), Fusioner(dim, 2).eval()
    _randomize(one, seed=4, scale=0.7)
    two.load_state_dict(one.state_dict())
    t, keys = _inputs(2, 5, dim, seed=4)
    with torch.no_grad():
        assert not torch.allclose(one(t, keys), two(t, keys), atol=1e-4)


def test_fusioner_dropout_only_in_training_and_only_on_wl() -> None:
    dim = 16
    f = Fusioner(dim, dropout=0.5)
    _randomize(f, seed=8, scale=0.5)
    t, keys = _inputs(2, 6, dim, seed=8)
    w = _weights_of(f)
    want = np.stack([numpy_fusioner(t[i].double().numpy(), keys[i].double().numpy(), w, 1) for i in range(2)])
    f.eval()
    with torch.no_grad():
        a, b = f(t, keys), f(t, keys)
    assert torch.equal(a, b)
    np.testing.assert_allclose(a.double().numpy(), want, atol=1e-5)
    f.train()
    torch.manual_seed(0)
    with torch.no_grad():
        trained = [f(t, keys) for _ in range(4)]
    assert any(not torch.allclose(x, a, atol=1e-4) for x in trained), "dropout inactive in training"

    class Zero(nn.Module):
        def forward(self, x):
            return torch.zeros_like(x)

    f.dropout = Zero()   # the dropout acts on Wl o alone: dropping all of it leaves y = LN3(o)
    with torch.no_grad():
        dropped = f(t, keys).double().numpy()
    want_zero = np.stack([numpy_fusioner(t[i].double().numpy(), keys[i].double().numpy(), w, 1, dropout_zero=True)
                          for i in range(2)])
    np.testing.assert_allclose(dropped, want_zero, atol=1e-5)


def test_model_fuse_uses_its_fusioner_on_video_proxies_frames(tiny_model) -> None:
    pig = tiny_model.model
    assert not pig.fusioner.training
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(2, TINY_DIM, generator=gen)
    video = torch.randn(2, TINY_DIM, generator=gen)
    proxies = torch.randn(2, TINY_P, TINY_DIM, generator=gen)
    frames = torch.randn(2, TINY_T, TINY_DIM, generator=gen)
    with torch.no_grad():
        got = pig.fuse(q, video, proxies, frames).double().numpy()
    w = _weights_of(pig.fusioner)
    for i in range(2):
        keys = np.concatenate([video[i : i + 1], proxies[i], frames[i]]).astype(np.float64)
        np.testing.assert_allclose(got[i], numpy_fusioner(q[i].double().numpy(), keys, w, pig.config.fusion_heads),
                                   atol=1e-5)
