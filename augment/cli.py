"""``augment`` command line: candidates and variants for texts.

    augment candidates --teacher bert-base-uncased --glove glove.6B.300d.txt --text "a fine film"
    augment text --teacher PATH --glove FILE --input texts.txt --n-aug sst2 > variants.jsonl
"""
from __future__ import annotations

import json
import logging
import sys
from typing import Iterator

import click

from augment.config import AugmentConfig, authors_n_aug
from augment.words import load_stopwords


class NAugType(click.ParamType):
    """An integer, or a GLUE task name meaning the authors' N_a for that task."""

    name = "INTEGER|TASK"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return int(value)
        except ValueError:
            try:
                return authors_n_aug(value)
            except ValueError as e:
                self.fail(str(e), param, ctx)


def engine_options(f):
    """The algorithm and compute options of the engine, shared by every command."""
    options = [
        click.option("--teacher", required=True, help="Masked-LM teacher: hub name (bert-base-uncased) or local path."),
        click.option("--glove", required=True, type=click.Path(exists=True), help="GloVe text file (word v1 ... vd)."),
        click.option("--p-t", "p_t", type=float, default=0.4, show_default=True, help="Replacement probability p_t."),
        click.option("--n-aug", "n_aug", type=NAugType(), default="20", show_default=True,
                     help="Attempts N_a per text, or a GLUE task name for the authors' value (cola=30, sst2=20, ...)."),
        click.option("--k", "k", type=int, default=15, show_default=True, help="Candidates per word K."),
        click.option("--seed", type=int, default=42, show_default=True, help="Seed, mixed with each text's id."),
        click.option("--mlm-input", type=click.Choice(["pair", "single"]), default="pair", show_default=True,
                     help="pair = the paper's [CLS] masked [SEP] original [SEP]; single = masked sentence only "
                          "(about 2x faster, not identical to the paper)."),
        click.option("--glove-max-words", type=int, default=None, help="Read only the first N GloVe lines (default: all)."),
        click.option("--stopwords", "stopwords_file", type=click.Path(exists=True), default=None,
                     help="File of stopwords, one per line (default: the authors' list)."),
        click.option("--keep-special-tokens", is_flag=True,
                     help="Keep the teacher's special tokens ([SEP], [CLS], [UNK], ...) among masked-LM "
                          "candidates, as the authors' script does (default: dropped, like ## pieces)."),
        click.option("--batch-size", type=int, default=None,
                     help="Masked-LM rows per forward (default: 8 on a CPU, 64 on a GPU)."),
        click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N."),
        click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32",
                     show_default=True, help="Teacher precision; float32 is exact."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def algorithm_options(f):
    """The engine options and the input options of the commands that read texts."""
    options = [
        click.option("--text", "texts", multiple=True, help="A text to process (repeatable)."),
        click.option("--input", "input_file", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="UTF-8 file with one text per line ('-' not supported; use --text for a few)."),
        click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when a terminal)."),
    ]
    for option in reversed(options):
        f = option(f)
    return engine_options(f)


def _config(params: dict) -> AugmentConfig:
    stop = load_stopwords(params["stopwords_file"]) if params["stopwords_file"] else None
    try:
        return AugmentConfig(p_t=params["p_t"], n_aug=params["n_aug"], k=params["k"], seed=params["seed"],
                             mlm_input=params["mlm_input"], glove_max_words=params["glove_max_words"],
                             stopwords=stop, keep_special_tokens=params["keep_special_tokens"],
                             batch_size=params["batch_size"], device=params["device"],
                             dtype=params["dtype"])
    except ValueError as e:  # messages start with the field name: "p_t must be in [0, 1] ..."
        field = str(e).split()[0]
        raise click.BadParameter(str(e), param_hint=f"'--{field.replace('_', '-')}'") from None


def read_lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line of a UTF-8 file; a bad byte is an error naming the line."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                yield lineno, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise click.ClickException(f"{path}: line {lineno} is not valid UTF-8 ({e.reason} at byte {e.start})")


def _inputs(params: dict) -> list[tuple[str, str]]:
    """(id, text) pairs: ``text-N`` for --text, ``FILE:LINE`` ids for --input."""
    items = [(f"text-{i}", t) for i, t in enumerate(params["texts"])]
    if params["input_file"]:
        items += [(f"line-{n}", t) for n, t in read_lines(params["input_file"])]
    if not items:
        raise click.UsageError("give --text TEXT or --input FILE")
    return items


def _load(params: dict):
    from augment.augmenter import Augmenter
    from augment.glove import GloveFormatError
    from augment.mlm import TeacherError

    config = _config(params)
    try:
        return Augmenter.from_pretrained(params["teacher"], params["glove"], config)
    except (TeacherError, GloveFormatError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None


def _chunks(items, size):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _progress(params, total):
    from tqdm import tqdm

    disable = not sys.stderr.isatty() if params["progress"] is None else not params["progress"]
    return tqdm(total=total, unit="text", disable=disable, file=sys.stderr)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def main(verbose: bool) -> None:
    """TinyBERT data augmentation (Jiao et al. 2020): candidates and variants for texts."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@algorithm_options
def candidates(**params) -> None:
    """Print one JSON object per text: text, words, candidates {position: [words]}."""
    items = _inputs(params)
    aug = _load(params)
    with _progress(params, len(items)) as bar:
        for chunk in _chunks(items, 256):
            for (_, text), c in zip(chunk, aug.candidates([t for _, t in chunk])):
                click.echo(json.dumps(c.record(text), ensure_ascii=False))
            bar.update(len(chunk))


@main.command()
@algorithm_options
@click.option("--format", "fmt", type=click.Choice(["jsonl", "lines"]), default="jsonl", show_default=True,
              help="jsonl: {id, text, variants}; lines: the original then each variant, one per line.")
def text(fmt: str, **params) -> None:
    """Print each text's variants (the original first)."""
    items = _inputs(params)
    aug = _load(params)
    with _progress(params, len(items)) as bar:
        for chunk in _chunks(items, 256):
            for result in aug.augment_batch([t for _, t in chunk], [i for i, _ in chunk]):
                if fmt == "jsonl":
                    click.echo(json.dumps(result.record(), ensure_ascii=False))
                else:
                    for t in result.texts:
                        click.echo(t)
            bar.update(len(chunk))


@main.command()
@engine_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback needs --token-file.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port to listen on.")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="File holding a bearer token; /v1/* then require 'Authorization: Bearer TOKEN'.")
@click.option("--max-batch-texts", type=int, default=128, show_default=True,
              help="Texts per engine batch (texts of concurrent requests merged).")
@click.option("--max-wait-ms", type=float, default=5.0, show_default=True,
              help="How long a batch's first request waits for others to join it.")
@click.option("--max-queue", type=int, default=32, show_default=True,
              help="Requests held at once (waiting or being augmented); past it, 503 with Retry-After.")
@click.option("--max-texts", type=int, default=256, show_default=True, help="Texts per request.")
@click.option("--max-text-chars", type=int, default=20000, show_default=True, help="Characters per text (and id).")
@click.option("--max-n-aug", type=int, default=1000, show_default=True, help="The largest n_aug a request may ask.")
def serve(host, port, token_file, max_batch_texts, max_wait_ms, max_queue, max_texts, max_text_chars, max_n_aug,
          **params) -> None:
    """Serve augmentation over HTTP: POST /v1/augment, /v1/candidates; GET /healthz, /v1/info.

    The teacher and GloVe load once; --p-t, --n-aug and --seed are the requests' defaults. See
    docs/service.md.
    """
    try:
        from augment import serve as service
    except ImportError as e:  # starlette/uvicorn come with the extra
        raise click.ClickException(f"augment serve needs the serve extra: pip install 'bert-compress[serve]' ({e})")
    limit_flags = {"max_texts": max_texts, "max_text_chars": max_text_chars, "max_n_aug": max_n_aug,
                   "max_queue": max_queue, "max_batch_texts": max_batch_texts, "max_wait_ms": max_wait_ms}
    try:
        limits = service.Limits(**limit_flags)
    except ValueError as e:
        field = str(e).split()[0]
        raise click.BadParameter(str(e), param_hint=f"'--{field.replace('_', '-')}'") from None
    token = None
    if token_file:
        try:
            token = service.read_token(token_file)
        except (OSError, ValueError) as e:
            raise click.BadParameter(str(e), param_hint="'--token-file'") from None
    try:
        service.check_binding(host, token)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if params["n_aug"] > limits.max_n_aug:
        raise click.BadParameter(f"the default n_aug {params['n_aug']} is over --max-n-aug {limits.max_n_aug}",
                                 param_hint="'--n-aug'")
    if not 0 <= params["seed"] <= service.SEED_MAX:
        raise click.BadParameter(f"must be in [0, {service.SEED_MAX}] for the service, got {params['seed']}",
                                 param_hint="'--seed'")
    aug = _load(params)
    info = service.service_info(params["teacher"], params["glove"], aug.config, limits)
    app = service.create_app(aug, info, limits, token)
    click.echo(f"augment serve: engine {info['engine']} (teacher {params['teacher']}, GloVe {params['glove']}) "
               f"on http://{host}:{port}", err=True)
    service.serve(app, host, port, log_level="info" if logging.getLogger().level <= logging.INFO else "warning")


if __name__ == "__main__":
    main()
