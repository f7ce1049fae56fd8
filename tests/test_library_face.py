"""pigcli's library face: the README's example, and a lazy import."""

from __future__ import annotations

import subprocess
import sys
import types

import h5py
import numpy as np
import pytest

import pigcli


@pytest.mark.parametrize("module", ["pigcli", "pigcli.choices"])
def test_import_is_light(module):
    """The face is lazy, and the choices that `pig --help` reads need nothing heavy."""
    code = (f"import sys, {module}; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'torch', 'h5py', 'typer')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_name_of_the_face_is_a_function_or_class():
    for name in pigcli.__all__:
        value = getattr(pigcli, name)
        assert not isinstance(value, types.ModuleType), name
    with pytest.raises(AttributeError):
        pigcli.no_such_name  # noqa: B018


@pytest.mark.slow
def test_readme_example_ranks_as_the_dot_product_does(tmp_path, tiny_model_dir, video_folder):
    """build_index + rank, as the README shows them, against e_t . e_v computed here."""
    index = tmp_path / "index.h5"
    pigcli.build_index([video_folder], index, model=str(tiny_model_dir), device="cpu", workers=0)
    query = "a red square moves"
    ranking = pigcli.rank(index, queries=[pigcli.Query("q1", query)], k=3)

    e_t, _ = pigcli.load_text_encoder(tiny_model_dir, "cpu").encode([query])
    with h5py.File(index) as handle:
        e_v = handle["embedding"][:].astype(np.float64)
        ids = [i.decode() if isinstance(i, bytes) else i for i in handle["ids"][:]]
    scores = e_v @ e_t[0].astype(np.float64)
    want = [ids[r] for r in np.argsort(-scores, kind="stable")[:3]]
    assert [ranking.video_ids[r] for r in ranking.rows[0]] == want
    np.testing.assert_allclose(ranking.scores[0], np.sort(scores)[::-1][:3], rtol=1e-4, atol=1e-5)
