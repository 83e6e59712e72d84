"""distill.evaluation.measure.size_info: parameters as the model holds them, a pruned model's compact count."""
import torch
from transformers import BertForQuestionAnswering

from distill.evaluation.measure import size_info
from distill.modules.pruning import PruneMask, load_pruned, save_pruned
from tests.distill.conftest import QA_VOCAB, qa_tokenizer, tiny_config


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_size_info_counts_a_pruned_model_compact(tmp_path):
    torch.manual_seed(0)
    model = BertForQuestionAnswering(tiny_config(layers=2, vocab_size=len(QA_VOCAB))).eval()
    full = _count(model)
    model.save_pretrained(tmp_path / "full")
    assert size_info(str(tmp_path / "full"))["parameters"] == full
    assert "stored_parameters" not in size_info(str(tmp_path / "full"))

    heads = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0]], dtype=torch.bool)  # 5 of 8 heads cut
    ffn = torch.rand(2, model.config.intermediate_size) > 0.5
    save_pruned(model, PruneMask(heads, ffn), str(tmp_path / "pruned"), qa_tokenizer())
    info = size_info(str(tmp_path / "pruned"))
    # the reference: the compact model load_pruned builds, counted parameter by parameter
    assert info["parameters"] == _count(load_pruned(str(tmp_path / "pruned"), "qa")) < full
    assert info["stored_parameters"] == full  # the file keeps the cut weights as zeros
