"""How training and evaluation tokenise data text: special-token strings in it are read as text.

Text in a corpus or a user's file is data. Left to itself a tokenizer turns a literal ``[SEP]`` (or
``<s>``, ``</s>``, ``[UNK]``, ``[MASK]``) inside it into that control token: an extra segment
boundary or a meaningless symbol, a structure the model never sees at inference. Corpora built
before masked-LM candidates excluded special tokens hold such rows (``as stale [SEP]``), and any
user data may. Every tokenizer call on data text goes through :func:`encode_text`; the special
tokens the tokenizer adds itself ([CLS] ... [SEP], <s> ... </s>) are unaffected, and offset
mappings still point into the original text.
"""
from __future__ import annotations


def encode_text(tokenizer, *texts, **kwargs):
    """``tokenizer(*texts, **kwargs)`` with special-token strings in ``texts`` read as plain text.

    ``[SEP]`` in a BERT text becomes ``[``, ``sep``, ``]``; ``</s>`` in a RoBERTa text ``<``, ``/``,
    ``s``, ``>``. Needs a fast (``tokenizers``) tokenizer, what ``AutoTokenizer`` returns: the Python
    ones do not all honour ``split_special_tokens`` (transformers 5's Python BERT keeps ``[SEP]``).

    Raises ``ValueError`` for a tokenizer that is not fast.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{type(tokenizer).__name__} is not a fast tokenizer: it cannot be made to read "
                         "special-token strings in the data ([SEP], </s>) as text; load it with AutoTokenizer")
    return tokenizer(*texts, split_special_tokens=True, **kwargs)
