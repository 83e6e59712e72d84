"""Parameters of the TinyBERT augmentation, validated in one place."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from augment.mlm import DTYPES, MLM_INPUTS

#: N_a per GLUE task in the authors' ``data_augmentation.py`` (an explicit choice, never implicit).
AUTHORS_N_AUG = {"cola": 30, "mnli": 10, "mrpc": 30, "sst2": 20, "qqp": 10, "qnli": 20, "rte": 30, "stsb": 30}


def normalise_task_name(name: str) -> str:
    """'SST-2', 'sst_2', 'Sst2' -> 'sst2'."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


def authors_n_aug(task: str) -> int:
    """The authors' N_a for ``task`` (any spelling of a GLUE task name)."""
    key = normalise_task_name(task)
    if key not in AUTHORS_N_AUG:
        raise ValueError(f"no authors' N_a for task {task!r}; known: {sorted(AUTHORS_N_AUG)}")
    return AUTHORS_N_AUG[key]


def default_batch_size(device: str) -> int:
    """Masked-LM rows per forward when none is given; a forward holds one text's rows only
    (``augment.candidates``), so most SST-2 texts fit one or two forwards of 8. On 200 SST-2 dev
    sentences with the MiniLM teacher (2 threads, AVX-512) per-text forwards of 8 rows took 1.15x
    the time of the earlier forwards of 8 rows of any texts (16: 1.09x, 64: 1.07x); 8 keeps a long
    text's attention maps small. A GPU runs 64 rows in about the time of 8, but a text rarely has
    that many, so per-text forwards leave much of a GPU idle (not measured: no GPU here). Not tied
    to the thread count: the rows' rounding would then differ between worker setups."""
    return 8 if device == "cpu" else 64


@dataclass(frozen=True)
class AugmentConfig:
    """Everything that decides the augmentation's output, plus how to compute it.

    Algorithm (these change the output):
        p_t: probability that an eligible word is replaced in an attempt.
        n_aug: N_a, the number of sampling attempts per text (duplicates dropped).
        k: K, candidates taken per word (masked-LM top-K before dropping ``##`` pieces and special
            tokens; GloVe K).
        seed: mixed with each example's id for its random stream.
        mlm_input: ``pair`` (the paper's) or ``single`` (masked sentence alone, ~2x cheaper, not
            identical to the paper).
        glove_max_words: read only the first N GloVe lines (None = all).
        stopwords: None = the authors' list.
        keep_special_tokens: keep the teacher's special tokens ([SEP], [CLS], [UNK], ...) among
            masked-LM candidates, as the authors' script does; by default they are dropped like
            ``##`` pieces (a ``[SEP]`` written into a variant becomes a separator for the student).

    Compute (how the output is computed):
        batch_size: masked-LM rows per forward, all of one text (None: 8 on a CPU, 64 on a GPU).
            pad_multiple: rows are padded to a multiple of it. A text's forwards hold its rows only,
            so its output does not depend on how texts are batched or on worker counts, to the last
            bit; other values of these two change only the float rounding, which can reorder
            candidates whose logits tie to ~1e-6.
        device: ``cpu``, ``cuda``, ``cuda:1``... dtype: ``float32`` (exact), ``bfloat16``, ``float16``.
    """

    p_t: float = 0.4
    n_aug: int = 20
    k: int = 15
    seed: int = 42
    mlm_input: str = "pair"
    glove_max_words: int | None = None
    stopwords: frozenset[str] | None = None
    keep_special_tokens: bool = False
    batch_size: int | None = None
    pad_multiple: int = 8
    device: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.batch_size is None:  # resolved here, so manifests and logs state the value used
            object.__setattr__(self, "batch_size", default_batch_size(self.device))
        if not 0.0 <= self.p_t <= 1.0:
            raise ValueError(f"p_t must be in [0, 1], got {self.p_t}")
        if self.n_aug < 0:
            raise ValueError(f"n_aug must be >= 0, got {self.n_aug}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.mlm_input not in MLM_INPUTS:
            raise ValueError(f"mlm_input must be one of {MLM_INPUTS}, got {self.mlm_input!r}")
        if not isinstance(self.keep_special_tokens, bool):
            raise ValueError(f"keep_special_tokens must be True or False, got {self.keep_special_tokens!r}")
        if self.glove_max_words is not None and self.glove_max_words < 1:
            raise ValueError(f"glove_max_words must be >= 1 or None, got {self.glove_max_words}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.pad_multiple < 1:
            raise ValueError(f"pad_multiple must be >= 1, got {self.pad_multiple}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if not (self.device == "cpu" or self.device.startswith(("cuda", "mps"))):
            raise ValueError(f"device must be cpu, cuda or cuda:N, got {self.device!r}")

    def algorithm_params(self) -> dict:
        """The parameters that decide the output (for manifests and fingerprints)."""
        d = asdict(self)
        for key in ("batch_size", "pad_multiple", "device"):
            d.pop(key)
        d["stopwords"] = sorted(self.stopwords) if self.stopwords is not None else "authors"
        return d
