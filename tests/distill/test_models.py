import pytest
import torch

from distill.modules.models import (PRESETS, ModelError, Projector, build_student, check_layout, features,
                            student_config)
from tests.distill.conftest import VOCAB, tiny_config, tiny_tokenizer


def _batch():
    enc = tiny_tokenizer()(["a good film", "the plot was dull and the acting was weak"], padding=True,
                           return_tensors="pt")
    return dict(enc)


def _family_model(family: str):
    """A tiny random encoder of one BERT-family layout (eager attention, so probabilities come back)."""
    from transformers import BertModel, ElectraConfig, ElectraModel, RobertaConfig, RobertaModel

    shape = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 vocab_size=len(VOCAB), attn_implementation="eager")
    if family == "bert":
        return BertModel(tiny_config(layers=2, attn_implementation="eager"))
    if family == "roberta":  # positions start after padding_idx, hence 2 more
        return RobertaModel(RobertaConfig(max_position_embeddings=66, **shape))
    # ELECTRA: embeddings narrower than the encoder, projected before layer 1
    return ElectraModel(ElectraConfig(embedding_size=16, max_position_embeddings=64, **shape))


@pytest.mark.parametrize("family", ["bert", "roberta", "electra"])
def test_recomputed_scores_match_eager_attention(family):
    torch.manual_seed(0)
    model = _family_model(family).eval()
    check_layout(model)
    batch = _batch()
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True, output_attentions=True)
        feats = features(model, batch, score_layers=[1, 2])
    mask = batch["attention_mask"].bool()[:, None, None, :]  # (B, 1, 1, T)
    for layer in (1, 2):
        scores = feats.scores[layer]  # (B, nh, T, T)
        assert scores.shape == (2, 4, mask.shape[-1], mask.shape[-1])
        probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        torch.testing.assert_close(probs, out.attentions[layer - 1], atol=1e-5, rtol=1e-5)
    assert len(feats.hidden) == 3
    torch.testing.assert_close(feats.hidden[2], out.last_hidden_state)


def test_other_layouts_are_refused():
    from transformers import DistilBertConfig, DistilBertModel

    model = DistilBertModel(DistilBertConfig(vocab_size=len(VOCAB), dim=32, n_layers=1, n_heads=4, hidden_dim=64))
    with pytest.raises(ModelError, match="DistilBertModel has no base_model.encoder.layer"):
        check_layout(model)


def test_scores_of_a_classifier_and_gradients_flow():
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification(tiny_config(layers=2, num_labels=3))
    feats = features(model, _batch(), score_layers=[2])
    assert feats.logits.shape == (2, 3)
    feats.scores[2].sum().backward()
    assert model.bert.encoder.layer[1].attention.self.query.weight.grad is not None


def test_presets_follow_the_paper_and_the_teacher():
    teacher = tiny_config(layers=4)
    c = student_config("tinybert-4", teacher)
    assert (c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.num_attention_heads) == (4, 312, 1200, 12)
    assert c.vocab_size == teacher.vocab_size and c.max_position_embeddings == 64
    c6 = student_config("tinybert-6", teacher, num_labels=3)
    assert (c6.num_hidden_layers, c6.hidden_size, c6.num_labels) == (6, 768, 3)
    assert set(PRESETS) == {"tinybert-4", "tinybert-6"}


def test_build_student_from_config_file_and_directory(student_config_file, encoder_dir):
    s = build_student(str(student_config_file), tiny_config(), "classification", num_labels=2)
    assert s.config.num_hidden_layers == 2 and s.config.num_labels == 2
    loaded = build_student(str(encoder_dir), tiny_config(), "base")  # a directory with weights is loaded
    assert loaded.config.num_hidden_layers == 4
    with pytest.raises(ModelError, match="unknown student 'tinybert-9'"):
        student_config("tinybert-9", tiny_config())


def test_non_absolute_positions_are_refused():
    from transformers import BertModel

    model = BertModel(tiny_config(layers=1))
    model.config.position_embedding_type = "relative_key"
    with pytest.raises(ModelError, match="relative_key"):
        check_layout(model)


def test_projector_maps_widths():
    assert Projector(16, 32)(torch.zeros(2, 5, 16)).shape == (2, 5, 32)
    with pytest.raises(ValueError, match="widths"):
        Projector(0, 32)
