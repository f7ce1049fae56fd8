"""`pig init --from-official` (issue #12 item 7): state dicts with the official code's key names and shapes,
built here from a random pig model by the inverse renaming (written out below from the official modules,
src/modeling/PIG.py, modeling_pig.py and CLIP-ViP's VidCLIP.py, not from pigcli.model.official's table), saved
with torch.save, converted, and compared with the model they came from.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pigcli.cli import app
from pigcli.model.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

# pig prefix -> official prefix (PIG's modules: PIG.encoder = VidCLIP, .clipmodel = CLIPModel; FeatureReconstructor
# .clip_reconstructor = CLIPFeatureReconstructor; XPoolCrossAttentionPooler)
OFFICIAL_NAMES = {
    "generator.position_embedding.": "generator.clip_reconstructor.embeddings.position_embedding.",
    "generator.layers.": "generator.clip_reconstructor.encoder.layers.",
    "generator.final_layer_norm.": "generator.clip_reconstructor.final_layer_norm.",
    "generator.mapper.": "generator.clip_reconstructor.video_mapper.",
    "fusioner.q_proj.": "fusioner.cross_attn.q_proj.",
    "fusioner.k_proj.": "fusioner.cross_attn.k_proj.",
    "fusioner.v_proj.": "fusioner.cross_attn.v_proj.",
    "fusioner.out_proj.": "fusioner.cross_attn.out_proj.",
    "fusioner.linear.": "fusioner.linear_proj.",
    "fusioner.ln1.": "fusioner.layer_norm1.",
    "fusioner.ln2.": "fusioner.layer_norm2.",
    "fusioner.ln3.": "fusioner.layer_norm3.",
}


@pytest.fixture(scope="module")
def source_model(tiny_model_dir):
    """A pig model whose every PIG-specific weight is random (so a wrong mapping shows) and whose generator
    projection is the identity (the official generator has none)."""
    pig = copy.deepcopy(load_checkpoint(tiny_model_dir).model)
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in pig.named_parameters():
            if name.startswith(("backbone.", "fusioner.", "generator.mapper.")):
                param.add_(torch.randn_like(param) * 0.5)
        pig.generator.projection.weight.copy_(torch.eye(pig.generator.projection.weight.shape[0]))
    return pig.eval()


def official_pig_state(pig) -> dict:
    """What BestModelSaver would save for this model: PIG.state_dict() key names and shapes."""
    clip = {f"encoder.clipmodel.{k}": v for k, v in pig.clip.state_dict().items()}
    clip["encoder.clipmodel.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    clip["encoder.clipmodel.vision_model.embeddings.position_ids"] = torch.arange(17)[None]
    embeddings = "encoder.clipmodel.vision_model.embeddings."
    clip[embeddings + "added_cls"] = pig.backbone.proxy_tokens.detach()
    clip[embeddings + "cls_in_frames"] = pig.backbone.frame_cls.detach()
    clip[embeddings + "temporal_embedding"] = pig.backbone.temporal_embedding.detach()[None]  # [1, T, W]
    tokens = pig.clip.text_model.embeddings.token_embedding.weight.detach().clone()
    tokens[pig.config.bos_token_id] = pig.generator.bos_embedding
    tokens[pig.config.eos_token_id] = pig.generator.eos_embedding
    heads = {"generator.clip_reconstructor.embeddings.token_embedding.weight": tokens}
    for key, value in pig.state_dict().items():
        for ours, theirs in OFFICIAL_NAMES.items():
            if key.startswith(ours):
                heads[theirs + key[len(ours):]] = value
    return {**clip, **heads}


def embeddings(pig) -> dict:
    """The outputs a user relies on: every video token, the pseudo-query, e_v, e_t (fixed inputs)."""
    from pigcli.core.methods import pseudo_query, video_embedding
    from pigcli.core.selection import select_patch_tokens

    torch.manual_seed(0)
    pixels = torch.randn(2, pig.config.num_frames, 3, pig.image_size, pig.image_size)
    ids = torch.randint(0, 500, (3, 7))
    with torch.no_grad():
        tokens = pig.encode_video(pixels)
        selected = select_patch_tokens(tokens.patches, tokens.its_score, pig.config.select_k, "its")
        q_hat = pseudo_query(pig, tokens.video, tokens.proxies, tokens.frames, selected)
        e_v = video_embedding(pig, "pig", tokens.video, tokens.proxies, tokens.frames, selected, q_hat)
        return {"video": tokens.video, "proxies": tokens.proxies, "frames": tokens.frames, "patches": tokens.patches,
                "its": tokens.its_score, "q_hat": q_hat, "e_v": e_v, "e_t": pig.encode_text(ids)}


def init_official(checkpoint: Path, output: Path, *extra: str):
    args = ["init", "--from-official", str(checkpoint), "-o", str(output), *extra]
    return CliRunner().invoke(app, args)


def test_official_pig_checkpoint_converts_to_the_same_model(source_model, tiny_model_dir, tmp_path):
    checkpoint = tmp_path / "model_best.pt"
    torch.save(official_pig_state(source_model), checkpoint)
    outcome = init_official(checkpoint, tmp_path / "converted", "--from", str(tiny_model_dir))
    assert outcome.exit_code == 0, outcome.output
    converted = load_checkpoint(tmp_path / "converted")
    assert converted.model.config.source == "official-pig:model_best.pt"
    expected, got = embeddings(source_model), embeddings(converted.model)
    for name in expected:
        assert torch.allclose(expected[name], got[name], atol=1e-6), name
    assert converted.model.config.num_frames == 12 and converted.model.config.num_proxies == 3


def test_bos_and_eos_come_from_the_base_clip_not_the_checkpoint(source_model, tiny_model_dir, tmp_path):
    """The official model embeds BOS and EOS with the pretrained CLIP it is built from: the converted
    generator takes those rows of --from's token table, whatever the checkpoint's tables hold there."""
    state = official_pig_state(source_model)
    bos, eos = source_model.config.bos_token_id, source_model.config.eos_token_id
    for key in ("generator.clip_reconstructor.embeddings.token_embedding.weight",
                "encoder.clipmodel.text_model.embeddings.token_embedding.weight"):
        state[key] = state[key].clone()
        state[key][[bos, eos]] += 1.0  # trained rows: other than the base's
    torch.save(state, tmp_path / "model_best.pt")
    outcome = init_official(tmp_path / "model_best.pt", tmp_path / "converted", "--from", str(tiny_model_dir))
    assert outcome.exit_code == 0, outcome.output
    generator = load_checkpoint(tmp_path / "converted").model.generator
    base_table = load_checkpoint(tiny_model_dir).model.clip.text_model.embeddings.token_embedding.weight
    assert torch.equal(generator.bos_embedding, base_table[bos]) and torch.equal(generator.eos_embedding, base_table[eos])
    assert not torch.equal(generator.bos_embedding, state["encoder.clipmodel.text_model.embeddings.token_embedding.weight"][bos])


def test_wrapped_and_module_prefixed_checkpoints_convert(source_model, tiny_model_dir, tmp_path):
    """DDP's 'module.' prefix and a {'model': state_dict} wrapper are taken off."""
    state = {"model": {f"module.{k}": v for k, v in official_pig_state(source_model).items()}, "step": 7}
    torch.save(state, tmp_path / "wrapped.pt")
    outcome = init_official(tmp_path / "wrapped.pt", tmp_path / "converted", "--from", str(tiny_model_dir))
    assert outcome.exit_code == 0, outcome.output
    got = embeddings(load_checkpoint(tmp_path / "converted").model)
    assert torch.allclose(got["e_v"], embeddings(source_model)["e_v"], atol=1e-6)


def test_unmatched_and_missing_keys_are_listed(source_model, tiny_model_dir, tmp_path):
    state = official_pig_state(source_model)
    del state["fusioner.linear_proj.weight"]
    state["fusioner.AFA.0.weight"] = torch.zeros(3)          # a module of another configuration
    state["alpha"] = torch.tensor(0.5)
    torch.save(state, tmp_path / "odd.pt")
    outcome = init_official(tmp_path / "odd.pt", tmp_path / "converted", "--from", str(tiny_model_dir))
    assert outcome.exit_code == 1
    message = outcome.stderr
    assert "2 checkpoint keys have no place" in message and "fusioner.AFA.0.weight" in message and "alpha" in message
    assert "missing fusioner.linear.weight" in message
    assert not (tmp_path / "converted").exists()


def test_many_problems_are_cut_to_the_first_ten_with_a_count(source_model, tiny_model_dir, tmp_path):
    state = official_pig_state(source_model)
    state.update({f"extra.{i}": torch.zeros(1) for i in range(15)})
    torch.save(state, tmp_path / "odd.pt")
    outcome = init_official(tmp_path / "odd.pt", tmp_path / "converted", "--from", str(tiny_model_dir))
    assert outcome.exit_code == 1 and "15 checkpoint keys" in outcome.stderr and "(5 more)" in outcome.stderr


def test_not_an_official_checkpoint_is_one_clear_error(tmp_path, tiny_model_dir):
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pt")
    outcome = init_official(tmp_path / "other.pt", tmp_path / "converted", "--from", str(tiny_model_dir))
    assert outcome.exit_code == 1 and "neither an official PIG checkpoint" in outcome.stderr


@pytest.mark.parametrize("prefix", ["clipmodel.", ""])
def test_clip_vip_weights_start_pig_heads_as_init_does(source_model, tiny_model_dir, tmp_path, prefix):
    """CLIP-ViP's VidCLIP state dict (keys under 'clipmodel.', no frame CLS, generator or fusioner), or its
    CLIPModel's alone."""
    official = official_pig_state(source_model)
    clip_vip = {k.replace("encoder.clipmodel.", prefix, 1): v for k, v in official.items()
                if k.startswith("encoder.clipmodel.") and not k.endswith("cls_in_frames")}
    torch.save(clip_vip, tmp_path / "pretrain_clipvip.pt")
    outcome = init_official(tmp_path / "pretrain_clipvip.pt", tmp_path / "converted", "--from", str(tiny_model_dir))
    assert outcome.exit_code == 0, outcome.output
    pig = load_checkpoint(tmp_path / "converted").model
    ours = dict(pig.clip.state_dict())
    for key, value in source_model.clip.state_dict().items():
        assert torch.equal(ours[key], value), key
    assert torch.equal(pig.backbone.proxy_tokens, source_model.backbone.proxy_tokens)
    assert torch.equal(pig.backbone.temporal_embedding, source_model.backbone.temporal_embedding)
    assert torch.equal(pig.backbone.frame_cls, pig.clip.vision_model.embeddings.class_embedding)
    text_layer = pig.clip.text_model.encoder.layers[0].self_attn.q_proj.weight
    assert torch.equal(pig.generator.layers[0].self_attn.q_proj.weight, text_layer)  # copied, as pig init does
    assert torch.equal(pig.fusioner.q_proj.weight, torch.eye(text_layer.shape[0]))
    text = embeddings(pig)["e_t"]
    assert torch.allclose(text, embeddings(source_model)["e_t"], atol=1e-6)


def test_from_official_and_preset_are_one_usage_error(tmp_path):
    outcome = CliRunner().invoke(app, ["init", "--from-official", str(tmp_path / "x.pt"), "--preset", "tiny",
                                       "-o", str(tmp_path / "m")])
    assert outcome.exit_code == 2 and "--from-official" in outcome.stderr

