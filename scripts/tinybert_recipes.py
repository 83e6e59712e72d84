"""Write the shipped TinyBERT recipes (distill/recipes/tinybert/TASK-{4l,6l}.yaml) from one table.

    python scripts/tinybert_recipes.py          # rewrites them; tests/distill/test_recipes.py checks
                                                # the shipped files equal this script's output

Every number is the paper's (Jiao et al., 2020, "TinyBERT: Distilling BERT for Natural Language
Understanding", Findings of EMNLP 2020) or the authors' (huawei-noah/Pretrained-Language-Model,
TinyBERT/README.md and data_augmentation.py), cited beside it in the YAML; where the two differ,
the comment says which was taken and why.
"""
from __future__ import annotations

from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "distill" / "recipes" / "tinybert"

# task: (GLUE folder, dev file, pair?, N_a of the authors' data_augmentation.py, intermediate epochs)
TASKS = {
    "cola": ("CoLA", "dev.tsv", False, 30, 20),
    "sst2": ("SST-2", "dev.tsv", False, 20, 10),
    "mrpc": ("MRPC", "dev.tsv", True, 30, 20),
    "stsb": ("STS-B", "dev.tsv", True, 30, 20),
    "qqp": ("QQP", "dev.tsv", True, 10, 10),
    "mnli": ("MNLI", "dev_matched.tsv", True, 10, 10),
    "qnli": ("QNLI", "dev.tsv", True, 20, 10),
    "rte": ("RTE", "dev.tsv", True, 30, 20),
}
STUDENTS = {"4l": ("huawei-noah/TinyBERT_General_4L_312D", "TinyBERT-4 (4 layers, hidden 312, FFN 1200, 12 heads)"),
            "6l": ("huawei-noah/TinyBERT_General_6L_768D", "TinyBERT-6 (6 layers, hidden 768, FFN 3072, 12 heads)")}

TEMPLATE = """\
# TinyBERT on GLUE {glue}, {student_text}, with the paper's settings (GPU scale).
# Written by scripts/tinybert_recipes.py; copy it to edit: distill cp tinybert/{task}-{size} my.yaml
#   distill run tinybert/{task}-{size} --output out/{task}-{size}
# Data: the GLUE folder as download_glue_data.py writes it (data.train=..., data.dev=... to move it).
# Sources: [P] the paper (Jiao et al., 2020, Findings of EMNLP), section 4.2 "Setup";
# [R] the authors' TinyBERT/README.md; [A] the authors' data_augmentation.py; [B] BERT (Devlin et
# al., 2019), section 4.1 (GLUE fine-tuning).
name: tinybert/{task}-{size}
description: TinyBERT-{layers} on GLUE {glue} with the paper's settings (BERT-base teacher, GPU)
task: {task}
data:
  train: glue_data/{glue}/train.tsv
  dev: glue_data/{glue}/{dev}       # checkpoint selection and the reported score, as in [P]
stages:
  corpus:                           # TinyBERT data augmentation, Algorithm 1 of [P]
    teacher: bert-base-uncased      # the masked LM of [A] (--pretrained_bert_model: BERT-base)
    glove: glove.6B.300d.txt        # [A] takes any GloVe file (--glove_embs); 6B is uncased like the MLM
    n_aug: {n_aug}                      # N_a for {glue}: [A] default_params
    p_t: 0.4                        # [P] section 4.2 / [A]
    k: 15                           # [P] section 4.2 / [A] (M = 15 candidates)
  teacher:
    model: bert-base-uncased        # BERT-base fine-tuned on the task, the teacher of [P]
    data: {{max_seq_length: 128}}     # [B]
    optim: {{lr: 2.0e-5, warmup_ratio: 0.1}}   # [B]: lr from {{5e-5, 4e-5, 3e-5, 2e-5}}; 2e-5 taken
    train: {{batch_size: 32, epochs: 3, eval_every: 1000, save_every: 1000}}   # [B]: batch 32, 3 epochs
  general:
    given: {general}   # the authors' general TinyBERT [R]
  intermediate:                     # [P] 4.2: embeddings, hidden states, attention; augmented data
    data: {{max_seq_length: {seq}}}      # [P] 4.2: 64 for single-sentence tasks, 128 for pairs
    optim: {{lr: 5.0e-5}}              # [P] 4.2: learning rate 5e-5
    # [P] 4.2: 20 epochs, batch 32; [R]'s example runs 10 (--num_train_epochs 10).{epochs_note}
    train: {{batch_size: 32, epochs: {epochs}, save_every: 2000}}
    distill: {{layer_map: uniform}}    # [P] 4.1: g(m) = m x N/M
  prediction:                       # [P] 4.2: soft cross-entropy against the teacher's logits
    cache_teacher: true             # the teacher's logits computed once over the corpus
    data: {{max_seq_length: {seq}}}
    # [P] 4.2: 3 epochs, batch 32, lr chosen from {{1e-5, 2e-5, 3e-5}} on dev; [R]: 3e-5, eval every 100 steps
    optim: {{lr: 3.0e-5}}
    train: {{batch_size: 32, epochs: 3, eval_every: 100, save_every: 1000}}
    distill: {{temperature: 1.0}}      # [R] task_distill.py's default
  eval: {{latency_sentences: 200}}
  report: {{}}
"""


def render(task: str, size: str) -> str:
    glue, dev, pair, n_aug, epochs = TASKS[task]
    general, student_text = STUDENTS[size]
    note = (" 20 taken." if epochs == 20 else
            " 10 taken: its augmented set is large (N_a x the task's\n    # training set), and 10 epochs of it is already days of one GPU.")
    return TEMPLATE.format(glue=glue, dev=dev, task=task, size=size, layers=size[0], student_text=student_text,
                           n_aug=n_aug, seq=128 if pair else 64, general=general, epochs=epochs, epochs_note=note)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for task in TASKS:
        for size in STUDENTS:
            (OUT / f"{task}-{size}.yaml").write_text(render(task, size), encoding="utf-8")


if __name__ == "__main__":
    main()
