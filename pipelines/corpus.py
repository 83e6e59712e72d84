"""The corpus builder (issue 4): task data -> TinyBERT-augmented Arrow shards + manifest, with Beam.

    python pipelines/augment.py --runner DirectRunner --task sst2 --input glue/SST-2/train.tsv \\
        --output corpus/sst2 --teacher bert-base-uncased --glove glove.6B.300d.txt --n-aug 20

The pipeline is one chain, ReadTask -> Augment -> WriteCorpus (shards and dead letters) ->
WriteManifest, which every Beam runner executes alike (see :mod:`pipelines.transforms`). Flags
this module does not know go to Beam's ``PipelineOptions`` (runner, workers, ``--setup_file``,
``--dask_client_address``...). See docs/pipeline.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions, WorkerOptions

from pipelines import fs
from pipelines.export import export_tsv
from pipelines.manifest import (DEAD_LETTER, FORMAT, FORMAT_VERSION, MANIFEST, CorpusError, fingerprint,
                                glove_identity, package_version, read_manifest, teacher_identity)
from pipelines.readers import default_columns, tsv_header
from pipelines.records import InputSpec
from pipelines.rows import features
from pipelines.shards import SHARD_PATTERN
from pipelines.service import ServiceFlagError, ServiceLoader, service_info, service_params
from pipelines.tasks import TaskSpec, get_task
from pipelines.transforms import (INPUT_SPLITS, RECORDS_PER_BATCH, Augment, AugmenterLoader, ReadTask, WriteCorpus,
                                  WriteManifest)

log = logging.getLogger("pipelines.corpus")

FORMATS = ("auto", "tsv", "csv", "jsonl", "squad", "hf")
# AugmentConfig field -> the flag that sets it (for error messages naming the flag).
PARAM_FLAGS = {"p_t": "--p-t", "n_aug": "--n-aug", "k": "--k", "seed": "--seed", "mlm_input": "--mlm-input",
               "glove_max_words": "--glove-max-words", "stopwords": "--stopwords",
               "keep_special_tokens": "--keep-special-tokens", "batch_size": "--batch-size",
               "pad_multiple": "--pad-multiple", "device": "--device", "dtype": "--dtype"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="augment.py", description="Build a TinyBERT-augmented corpus of a task with Apache Beam.",
        epilog="Other flags go to Beam (--runner, --direct_num_workers, --setup_file, ...). "
               "Subcommand: augment.py export-tsv CORPUS DEST.tsv")
    io = p.add_argument_group("data")
    io.add_argument("--task", required=True, help="sst2, SST-2, qnli, mnli, rte, squad, ... (any case)")
    io.add_argument("--input", required=True, action="append",
                    help="input file(s), globs or URLs (repeat the flag or separate with commas); "
                         "for --input-format hf a dataset name or saved folder")
    io.add_argument("--input-format", default="auto", choices=FORMATS,
                    help="auto: by extension (.tsv, .csv, .jsonl, .json = SQuAD; a folder = hf)")
    io.add_argument("--text-fields", help="CSV/JSONL/HF/TSV column(s) holding the task's text field(s), "
                                          "comma-separated, in the task's order")
    io.add_argument("--label-field", help="column holding the label (default: label, or the GLUE one)")
    io.add_argument("--hf-config", help="dataset configuration, for --input-format hf (e.g. sst2)")
    io.add_argument("--split", default="train", help="dataset split, for --input-format hf")
    io.add_argument("--max-records", type=int, help="read only the first N records of each input")
    io.add_argument("--output", required=True, help="corpus folder (local, gs://, s3://)")
    io.add_argument("--overwrite", action="store_true", help="rebuild even when OUTPUT holds a corpus")
    io.add_argument("--num-shards", type=int, default=8, help="Arrow shards to write (default 8)")
    io.add_argument("--export-tsv", metavar="PATH", help="also write the authors' train_aug.tsv layout")
    eng = p.add_argument_group("augmentation (see augment.AugmentConfig)")
    eng.add_argument("--teacher", help="masked LM: hub name or folder (required unless --augment-service)")
    eng.add_argument("--glove", help="GloVe text file (required unless --augment-service)")
    eng.add_argument("--p-t", type=float, default=0.4, help="replacement probability (default 0.4)")
    eng.add_argument("--n-aug", type=int, default=20, help="N_a, sampling attempts per text (default 20)")
    eng.add_argument("--k", type=int, default=15, help="K, candidates per word (default 15)")
    eng.add_argument("--seed", type=int, default=42)
    eng.add_argument("--mlm-input", default="pair", help="pair (the paper's) or single")
    eng.add_argument("--glove-max-words", type=int, help="read only the first N GloVe words")
    eng.add_argument("--stopwords", help="stopword file (default: the authors' list)")
    eng.add_argument("--keep-special-tokens", action="store_true",
                     help="keep the teacher's special tokens ([SEP], [CLS], [UNK]...) among masked-LM candidates, "
                          "as the authors' script does (default: dropped, like ## pieces)")
    eng.add_argument("--augment-context", action="store_true",
                     help="SQuAD: also augment context words outside every answer")
    comp = p.add_argument_group("compute (not in the fingerprint; batch size and padding change only float rounding)")
    comp.add_argument("--batch-size", type=int, help="masked-LM rows per forward (default: 8 on a CPU, 64 on a GPU)")
    comp.add_argument("--pad-multiple", type=int, default=8)
    comp.add_argument("--device", default="cpu")
    comp.add_argument("--dtype", default="float32")
    comp.add_argument("--records-per-batch", type=int, default=RECORDS_PER_BATCH, help="records per engine call (max)")
    comp.add_argument("--input-splits", type=int, default=INPUT_SPLITS,
                      help=f"read tasks per input, each keeping every Nth batch (default {INPUT_SPLITS}); "
                           "on the Dask runner the most workers that share the work")
    comp.add_argument("--torch-threads", type=int, help="torch threads per worker process")
    comp.add_argument("--progress-seconds", type=float, default=30.0, help="progress log period")
    svc = p.add_argument_group("augmentation service (instead of a teacher in every worker; docs/service.md)")
    svc.add_argument("--augment-service", metavar="URL",
                     help="send the batches to `augment serve` at URL (its teacher, GloVe and engine settings; "
                          "this run's --n-aug, --p-t, --seed)")
    svc.add_argument("--augment-service-token-file", metavar="PATH", help="file holding the service's bearer token")
    svc.add_argument("--augment-service-retry-seconds", type=float, default=300.0,
                     help="how long a request is retried while the service is down or full (default 300); "
                          "past it the build fails, without a manifest")
    return p


def explicit_flags(argv: list[str] | None) -> set[str]:
    """The destinations of the flags that ``argv`` sets (whatever their value)."""
    parser = build_parser()
    for action in parser._actions:
        if action.option_strings:
            action.default, action.required = argparse.SUPPRESS, False
    given, _ = parser.parse_known_args(argv)
    return set(vars(given))


@dataclass
class RunConfig:
    """The resolved flags of a run."""

    spec: TaskSpec
    inputs: list[InputSpec]
    output: str
    teacher: str
    glove: str
    params: dict  # AugmentConfig fields
    augment_context: bool = False
    num_shards: int = 8
    max_records: int | None = None
    records_per_batch: int = RECORDS_PER_BATCH
    input_splits: int = INPUT_SPLITS
    torch_threads: int | None = None
    progress_seconds: float = 30.0
    overwrite: bool = False
    export_tsv: str | None = None
    service: str | None = None  # --augment-service URL
    service_token: str | None = None
    service_retry_seconds: float = 300.0
    explicit: frozenset = frozenset()  # the flags the command line set (a service's settings fill the others)


def parse_args(argv: list[str] | None) -> tuple[RunConfig, list[str]]:
    """Our flags, validated (``SystemExit`` naming the flag on an error), and Beam's flags."""
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    _check_misspelt(parser, beam_args)
    try:
        spec = get_task(args.task)
    except ValueError as e:
        parser.error(f"argument --task: {e}")
    params = _engine_params(parser, args)
    for flag, value in (("--num-shards", args.num_shards), ("--records-per-batch", args.records_per_batch),
                        ("--input-splits", args.input_splits), ("--max-records", args.max_records),
                        ("--torch-threads", args.torch_threads)):
        if value is not None and value < 1:
            parser.error(f"argument {flag}: must be >= 1, got {value}")
    if args.augment_context and spec.kind != "qa":
        parser.error(f"argument --augment-context: only for SQuAD, not {spec.name}")
    token = _check_model_flags(parser, args)
    inputs = _resolve_inputs(parser, args, spec)
    cfg = RunConfig(spec, inputs, args.output.rstrip("/") or "/", args.teacher, args.glove, params,
                    args.augment_context, args.num_shards, args.max_records, args.records_per_batch,
                    args.input_splits, args.torch_threads, args.progress_seconds, args.overwrite, args.export_tsv,
                    args.augment_service, token, args.augment_service_retry_seconds,
                    frozenset(explicit_flags(argv)))
    return cfg, beam_args


def _check_model_flags(parser, args) -> str | None:
    """--teacher and --glove, or --augment-service (and its token, returned); errors name the flag."""
    if not args.augment_service:
        for flag, value in (("--teacher", args.teacher), ("--glove", args.glove)):
            if not value:
                parser.error(f"argument {flag}: required (or --augment-service URL)")
        if not os.path.isfile(args.glove) and "://" not in args.glove:
            parser.error(f"argument --glove: no such file: {args.glove}")
        if args.augment_service_token_file:
            parser.error("argument --augment-service-token-file: only with --augment-service")
        return None
    for flag, value in (("--teacher", args.teacher), ("--glove", args.glove)):
        if value:
            parser.error(f"argument {flag}: not with --augment-service (the service's is used, and recorded "
                         "in the manifest from its /v1/info)")
    if not args.augment_service.startswith(("http://", "https://")):
        parser.error(f"argument --augment-service: a URL http://HOST:PORT, got {args.augment_service!r}")
    if args.augment_service_retry_seconds < 0:
        parser.error(f"argument --augment-service-retry-seconds: must be >= 0, got {args.augment_service_retry_seconds}")
    if not args.augment_service_token_file:
        return None
    try:
        from augment.serve import read_token

        return read_token(args.augment_service_token_file)
    except (OSError, ValueError) as e:
        parser.error(f"argument --augment-service-token-file: {e}")


def _check_misspelt(parser: argparse.ArgumentParser, beam_args: list[str]) -> None:
    """``--n_aug`` for ``--n-aug`` would silently go to Beam: refuse it, naming the right flag."""
    ours = {o.lstrip("-").replace("-", "_"): o for a in parser._actions for o in a.option_strings}
    for arg in beam_args:
        name = arg.split("=", 1)[0]
        key = name.lstrip("-").replace("-", "_")
        if name.startswith("--") and key in ours and name != ours[key]:
            parser.error(f"unknown flag {name}; did you mean {ours[key]}?")


def _engine_params(parser, args) -> dict:
    from augment import AugmentConfig
    from augment.words import load_stopwords

    params = {"p_t": args.p_t, "n_aug": args.n_aug, "k": args.k, "seed": args.seed, "mlm_input": args.mlm_input,
              "glove_max_words": args.glove_max_words, "keep_special_tokens": args.keep_special_tokens,
              "batch_size": args.batch_size, "pad_multiple": args.pad_multiple, "device": args.device,
              "dtype": args.dtype}
    if args.stopwords:
        try:
            params["stopwords"] = load_stopwords(args.stopwords)
        except OSError as e:
            parser.error(f"argument --stopwords: {e}")
    try:
        params["batch_size"] = AugmentConfig(**params).batch_size  # the device's default, stated in the manifest
    except ValueError as e:
        field_name = str(e).split()[0]
        parser.error(f"argument {PARAM_FLAGS.get(field_name, '--' + field_name)}: {e}")
    return params


def detect_format(path: str, spec: TaskSpec) -> str:
    """The input format from a path's extension (``.gz`` ignored); ``hf`` for anything else."""
    name = re.sub(r"\.(gz|bz2|zst|deflate)$", "", path.lower())
    for ext, fmt in ((".tsv", "tsv"), (".csv", "csv"), (".jsonl", "jsonl"), (".ndjson", "jsonl")):
        if name.endswith(ext):
            return fmt
    if name.endswith(".json"):
        return "squad" if spec.kind == "qa" else "jsonl"
    return "hf"


class FlagError(ValueError):
    """A flag's value cannot work; ``flag`` names it."""

    def __init__(self, flag: str, message: str):
        super().__init__(message)
        self.flag = flag


def _resolve_inputs(parser, args, spec: TaskSpec) -> list[InputSpec]:
    patterns = [p.strip() for flag in args.input for p in flag.split(",") if p.strip()]
    if not patterns:
        parser.error("argument --input: no input given")
    found: list[tuple[str, str]] = []  # (path, format)
    for pattern in patterns:
        fmt = args.input_format if args.input_format != "auto" else detect_format(pattern, spec)
        paths = [pattern] if fmt == "hf" else fs.match(pattern)
        if not paths:
            parser.error(f"argument --input: no file matches {pattern!r}")
        found += [(p, fmt) for p in paths]
    named = _column_flags(parser, args, spec)
    inputs, taken = [], set()
    for path, fmt in found:
        if fmt == "squad" and spec.kind != "qa":
            parser.error(f"argument --input-format: squad input {path} for task {spec.name}")
        if fmt == "tsv" and spec.tsv_layout is None:
            parser.error(f"argument --input-format: task {spec.name} has no GLUE TSV layout ({path})")
        stem = args.split if fmt == "hf" else re.sub(r"\..*$", "", fs.basename(path)) or "input"
        prefix = _unique(stem, taken)
        if spec.kind == "qa" and len(found) == 1:
            prefix = ""  # a single SQuAD input: the question ids are the source ids
        # TSV inputs know their GLUE columns: only the flags' names override them.
        columns = named if fmt == "tsv" else default_columns(spec) | named
        inp = InputSpec(path, fmt, prefix, columns, args.hf_config, args.split)
        try:
            _check_columns(inp, spec)
        except FlagError as e:
            parser.error(f"argument {e.flag}: {e}")
        inputs.append(inp)
    return inputs


def _unique(stem: str, taken: set[str]) -> str:
    """``stem``, or ``stem1``, ``stem2``... the first not in ``taken`` (which it joins)."""
    name, n = stem, 0
    while name in taken:
        n += 1
        name = f"{stem}{n}"
    taken.add(name)
    return name


def _column_flags(parser, args, spec: TaskSpec) -> dict[str, str]:
    """Task field -> input column, as ``--text-fields`` / ``--label-field`` name them (checked)."""
    if spec.kind == "qa":
        if args.text_fields or args.label_field:
            parser.error("argument --text-fields: SQuAD inputs use the squad_v2 field names")
        return {}
    columns = {}
    if args.text_fields:
        names = [n.strip() for n in args.text_fields.split(",")]
        if len(names) != len(spec.text_fields) or not all(names):
            parser.error(f"argument --text-fields: task {spec.name} has {len(spec.text_fields)} text field(s) "
                         f"{list(spec.text_fields)}, got {names}")
        columns.update(zip(spec.text_fields, names))
    if args.label_field:
        columns["label"] = args.label_field
    return columns


def _check_columns(inp: InputSpec, spec: TaskSpec) -> None:
    """Raise :class:`FlagError` when an input cannot be opened as a dataset, or its header / first
    record lacks a column the run needs."""
    if inp.format == "hf":
        from pipelines.readers import load_hf_dataset

        try:
            names = load_hf_dataset(inp).column_names
        except Exception as e:
            raise FlagError("--input", f"cannot load dataset {inp.path!r}: {e}") from e
    elif inp.format in ("tsv", "csv", "jsonl"):
        try:
            names = _first_record_keys(inp, spec)
        except ValueError as e:  # a TSV header of another task
            raise FlagError("--text-fields" if inp.columns else "--task", f"{inp.path}: {e}") from e
        if names is None:
            return
    else:
        return
    missing = {field: col for field, col in inp.columns.items() if col not in names}
    if missing:
        flag = "--label-field" if set(missing) == {"label"} else "--text-fields"
        raise FlagError(flag, f"{inp.path} has no column(s) {sorted(missing.values())} "
                              f"(for {sorted(missing)}); it has {sorted(names)}")


def _first_record_keys(inp: InputSpec, spec: TaskSpec) -> list[str] | None:
    """The header (TSV, CSV) or the first JSON object's keys (JSONL); ``None`` = nothing to check."""
    with fs.open_data(inp.path) as f:
        for raw in iter(f.readline, b""):
            line = raw.decode("utf-8-sig", "replace").strip("\r\n")
            if not line.strip():
                continue
            if inp.format == "tsv":
                header = tsv_header(line, spec, inp.columns)  # raises on a foreign header
                return header if header is not None and inp.columns else None
            if inp.format == "csv":
                import csv

                return next(csv.reader([line]))
            try:
                obj = json.loads(line)
            except ValueError:
                continue  # an invalid line is a reject, not a flag error; try the next
            return list(obj) if isinstance(obj, dict) else None
    return None


# -- identity, manifest, reuse -----------------------------------------------------------------
def _usage_error(flag: str, message) -> None:
    build_parser().error(f"argument {flag}: {message}")


def describe(cfg: RunConfig, teacher: dict, glove: dict | None = None) -> dict:
    """The manifest's run-independent part, fingerprint included (hashes every input: reads them).

    ``teacher``: :func:`pipelines.manifest.teacher_identity` of ``cfg.teacher``; ``glove``:
    :func:`pipelines.manifest.glove_identity` of ``cfg.glove`` (computed when not given). With a
    service both come from its ``/v1/info``, so the fingerprint is the in-process build's.
    """
    from augment import AugmentConfig

    config = AugmentConfig(**cfg.params)
    inputs = []
    for inp in cfg.inputs:
        entry = {"path": inp.path, "format": inp.format, "prefix": inp.prefix, "columns": inp.columns}
        if inp.format == "hf":
            from pipelines.readers import load_hf_dataset

            entry |= {"config": inp.hf_config, "split": inp.split,
                      "dataset_fingerprint": load_hf_dataset(inp)._fingerprint}
        else:
            entry["sha256"] = fs.sha256(inp.path)
        inputs.append(entry)
    params = config.algorithm_params() | {"augment_context": cfg.augment_context, "num_shards": cfg.num_shards,
                                          "max_records": cfg.max_records}
    glove = glove or glove_identity(cfg.glove)
    identity = {"format": FORMAT, "format_version": FORMAT_VERSION, "task": cfg.spec.name,
                "inputs": [{k: v for k, v in i.items() if k != "path"} for i in inputs], "params": params,
                "teacher": {k: teacher[k] for k in ("weights_sha256", "tokenizer_sha256")},
                "glove_sha256": glove["sha256"]}
    spec = cfg.spec
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "fingerprint": fingerprint(identity),
            "task": spec.name, "kind": spec.kind, "text_fields": list(spec.text_fields),
            "label_names": None if spec.label_names is None else list(spec.label_names),
            "features": features(spec).to_dict(), "inputs": inputs, "teacher": teacher, "glove": glove,
            "params": params, "seed": config.seed,
            "compute": {k: cfg.params[k] for k in ("batch_size", "pad_multiple", "device")}
            | {"records_per_batch": cfg.records_per_batch, "input_splits": cfg.input_splits,
               "torch_threads": cfg.torch_threads},
            "package": {"name": "bert-compress", "version": package_version()},
            "dead_letter": DEAD_LETTER}


def clear_output(output: str) -> None:
    """Remove what an earlier (finished or dead) build left: manifest first, then the rest."""
    fs.delete(fs.match(fs.join(output, MANIFEST)))
    stale = (fs.match(fs.join(output, SHARD_PATTERN)) + fs.match(fs.join(output, DEAD_LETTER))
             + fs.match(fs.join(output, MANIFEST + ".tmp-*")))
    fs.delete(stale)


# -- the pipeline ------------------------------------------------------------------------------
def build_pipeline(p: beam.Pipeline, cfg: RunConfig, static: dict, loader, workers: int = 1) -> None:
    """Add the corpus builder's transforms to ``p``: one chain, whose last step needs every other
    (a runner that runs only what the last transform needs, as Beam's Dask runner does, runs it all)."""
    _ = (p
         | "ReadTask" >> ReadTask(cfg.spec, cfg.inputs, cfg.max_records, cfg.records_per_batch, cfg.input_splits)
         | "Augment" >> Augment(loader, cfg.spec, cfg.augment_context, cfg.progress_seconds, workers)
         | "WriteCorpus" >> WriteCorpus(cfg.output, cfg.spec, cfg.num_shards)
         | "WriteManifest" >> WriteManifest(cfg.output, static))


def expected_workers(options: PipelineOptions) -> int:
    """How many workers share the work (for the progress ETA); 1 when the runner does not say."""
    runner = str(options.view_as(StandardOptions).runner or "DirectRunner")
    if "Direct" in runner or "FnApiRunner" in runner:
        return options.view_as(DirectOptions).direct_num_workers or os.cpu_count() or 1
    worker = options.view_as(WorkerOptions)
    return worker.num_workers or worker.max_num_workers or 1


def pipeline_runner(options: PipelineOptions):
    """The runner object for ``options``, or None to let Beam build the one named by ``--runner``.

    ``DirectRunner`` (the default) means Beam's in-process FnApiRunner, the runner the tests run.
    Beam's own DirectRunner first tries its Prism runner, a Go binary it downloads at run time, and
    falls back to the FnApiRunner when the download fails: with internet a user would run a runner
    no test here has run, without it the log shows a failed download. Prism stays available by
    name (``--runner PrismRunner``; not run here: it needs that download)."""
    runner = options.view_as(StandardOptions).runner
    if runner not in (None, "DirectRunner", "direct", "SwitchingDirectRunner"):
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    # what Beam's DirectRunner hands its FnApiRunner: the options, for the SDK workers
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    info = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return fn_runner.FnApiRunner(provision_info=info)


def runner_defaults(beam_args: list[str]) -> list[str]:
    """Beam flags this builder adds when the run does not set them.

    Beam's Dask runner puts up to 128 ``Create`` elements in one dask partition and runs a
    partition's whole chain as one task, so ReadTask's read splits would all be one task on one
    worker: ``--dask_partition_size=1`` makes each split its own task (``--dask_npartitions`` or
    ``--dask_partition_size`` given by the user are kept).
    """
    runner = str(PipelineOptions(beam_args).view_as(StandardOptions).runner or "")
    named = any(a.split("=", 1)[0] in ("--dask_npartitions", "--dask_partition_size") for a in beam_args)
    return ["--dask_partition_size=1"] if runner.endswith("DaskRunner") and not named else []


def run(argv: list[str] | None = None, loader=None) -> dict:
    """Build (or reuse) the corpus; returns its manifest.

    Args:
        argv: command-line flags (ours and Beam's); ``None`` = ``sys.argv[1:]``.
        loader: a picklable callable returning the augmenter; default :class:`AugmenterLoader`
            from the flags (tests pass a fake).
    Raises ``SystemExit`` (status 2, message naming the flag) on a flag error, before any work.
    """
    cfg, beam_args = parse_args(argv)
    if cfg.service:
        static, info = _describe_service(cfg)
    else:
        try:
            teacher = teacher_identity(cfg.teacher)
        except (OSError, ValueError) as e:
            _usage_error("--teacher", e)
        static = describe(cfg, teacher)
    try:
        existing = read_manifest(cfg.output)
    except (CorpusError, ValueError) as e:
        _usage_error("--output", e)
    if existing is not None and not cfg.overwrite:
        if existing["fingerprint"] != static["fingerprint"]:
            _usage_error("--output", f"{cfg.output} holds corpus {existing['fingerprint']}, built from other "
                                     f"inputs or parameters than this run ({static['fingerprint']}); pass "
                                     "--overwrite to replace it or choose another --output")
        log.info("reusing corpus %s at %s (same fingerprint; --overwrite rebuilds it)",
                 existing["fingerprint"], cfg.output)
        _finish(cfg, existing, None)
        return existing
    clear_output(cfg.output)
    options = PipelineOptions(beam_args + runner_defaults(beam_args))
    static["compute"]["runner"] = str(options.view_as(StandardOptions).runner or "DirectRunner")
    if loader is None and cfg.service:
        sampling = {k: cfg.params[k] for k in ("n_aug", "p_t", "seed")}
        loader = ServiceLoader(cfg.service, cfg.service_token, sampling, info["engine"], cfg.service_retry_seconds)
    loader = loader or AugmenterLoader(cfg.teacher, cfg.glove, cfg.params, cfg.torch_threads)
    log.info("building corpus %s of %s from %d input(s) into %s", static["fingerprint"], cfg.spec.name,
             len(cfg.inputs), cfg.output)
    start = time.monotonic()
    p = beam.Pipeline(runner=pipeline_runner(options), options=options)
    build_pipeline(p, cfg, static, loader, expected_workers(options))
    result = p.run()
    try:
        result.wait_until_finish()
    finally:
        _release(result)
    manifest = read_manifest(cfg.output)
    if manifest is None:
        raise CorpusError(f"the pipeline finished without writing {fs.join(cfg.output, MANIFEST)}")
    _finish(cfg, manifest, time.monotonic() - start)
    return manifest


def _describe_service(cfg: RunConfig) -> tuple[dict, dict]:
    """(the manifest's static part, the service's /v1/info) of a run on ``--augment-service``: the
    run's engine parameters become the service's (``cfg.params`` updated), and the manifest records
    the service's /v1/info under ``service``."""
    try:
        info = service_info(cfg.service, cfg.service_token, min(cfg.service_retry_seconds, 30.0))
    except ValueError as e:
        _usage_error("--augment-service", e)
    try:
        cfg.params = service_params(info, cfg.service, cfg.params, set(cfg.explicit), PARAM_FLAGS)
    except ServiceFlagError as e:
        _usage_error(e.flag, e)
    cfg.teacher, cfg.glove = info["teacher"]["name"], info["glove"]["path"]
    static = describe(cfg, info["teacher"], info["glove"])
    static["service"] = {"url": cfg.service, "info": info}
    return static, info


def _release(result) -> None:
    """Close the client a pipeline result holds (Beam's Dask runner leaves its connection open)."""
    client = getattr(result, "client", None)
    if client is not None and callable(getattr(client, "close", None)):
        client.close()


def _finish(cfg: RunConfig, manifest: dict, seconds: float | None) -> None:
    """Log the summary line (with the engine's work and speed when this run built the corpus)."""
    c = manifest["counts"]
    line = (f"corpus {manifest['fingerprint']} ({manifest['task']}) at {cfg.output}: read {c['read']}, "
            f"accepted {c['accepted']}, rejected {c['rejected']} (see {DEAD_LETTER}), originals "
            f"{c['originals']}, variants {c['variants']}, rows {c['rows']} in {len(manifest['shards'])} shards")
    if seconds is not None:
        m = manifest.get("engine", {})
        line += (f"; texts {m.get('texts', 0)}, MLM rows {m.get('mlm_rows', 0)}, GloVe cache hits "
                 f"{m.get('glove_cache_hits', 0)} / misses {m.get('glove_cache_misses', 0)}")
        if seconds:
            line += f"; {seconds:.1f}s, {m.get('texts', 0) / seconds:.1f} texts/s"
    log.info(line)
    if cfg.export_tsv:
        n = export_tsv(cfg.output, cfg.export_tsv)
        log.info("exported %d rows to %s", n, cfg.export_tsv)


def main(argv: list[str] | None = None) -> None:
    """Command line: ``augment.py [flags]`` builds a corpus; ``augment.py export-tsv CORPUS DEST``."""
    # force: importing Beam may already have configured the root logger at WARNING.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    # BatchElements logs every batch timing it has seen, in one multi-kilobyte INFO line per bundle
    logging.getLogger("apache_beam.transforms.util").setLevel(logging.WARNING)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export-tsv"]:
        from pipelines.export import main as export_main

        export_main(argv[1:])
        return
    run(argv)


if __name__ == "__main__":
    main()
