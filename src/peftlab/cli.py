"""The peftlab command line. Options come from the config dataclasses, so the CLI cannot drift."""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields

from .errors import UserError
from .logs import add_log_level


def _add_field(parser, cls, f, flag: str, dest: str) -> None:
    from .config import field_type, item_type

    typ = field_type(cls, f)
    default = f.default if f.default is not MISSING else None
    help_ = f.metadata.get("help", "")
    if default not in (None, "") and typ is not bool:
        help_ += f" (default: {default})"
    if typ is bool:
        parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_)
    elif typ is list:  # comma-separated on the command line; config.coerce splits it
        item = item_type(cls, f).__name__.upper()
        parser.add_argument(flag, dest=dest, type=str, default=None, metavar=f"{item}[,{item}...]", help=help_)
    else:
        parser.add_argument(flag, dest=dest, type=typ, default=None, metavar=typ.__name__.upper(), help=help_)


def _run_parser(sub) -> argparse.ArgumentParser:
    from .config import RunConfig, run_fields

    p = sub.add_parser(
        "run",
        help="fine-tune with several methods and compare them",
        description="Fine-tune one model on one dataset with each method; write one "
        "result.json per method, summary.md, report.md and report.html, and print "
        "the comparison table.",
    )
    p.add_argument("--config", metavar="FILE", help="YAML or JSON file of options; the command line overrides it")
    for f in run_fields():
        _add_field(p, RunConfig, f, "--" + f.name.replace("_", "-"), f.name)
    _add_method_options(p)
    return p


def _add_method_options(p: argparse.ArgumentParser) -> None:
    """--<method>-<option> for every registered method; dest '<method>.<option>'."""
    from .methods import REGISTRY

    for name, method in REGISTRY.items():
        g = p.add_argument_group(f"{name} options", method.description)
        for f in fields(method.config_cls):
            _add_field(g, method.config_cls, f, f"--{name}-{f.name.replace('_', '-')}", f"{name}.{f.name}")


def _method_sections(args) -> dict[str, dict]:
    """The --<method>-<option> values given on the command line, as {method: {option: value}}."""
    out: dict[str, dict] = {}
    for key, v in vars(args).items():
        if v is not None and "." in key:
            method, opt = key.split(".", 1)
            out.setdefault(method, {})[opt] = v
    return out


def _theory_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "theory",
        help="derive parameter counts per component from the architecture",
        description="Print each method's parameter breakdown, formula by formula, from the "
        "model's config alone (no weights are loaded).",
    )
    p.add_argument(
        "--model",
        default="vit-base-patch16-224",
        help="a preset (see --list-presets), hub id, model folder, config.json or the bundled "
        "model (default: vit-base-patch16-224)",
    )
    p.add_argument(
        "--method",
        default="head,last,lora,full",
        help="method(s), comma-separated, or 'all' (default: head,last,lora,full)",
    )
    p.add_argument(
        "--num-labels",
        type=int,
        default=None,
        metavar="C",
        help="classes of the new head (default: the config's own label count)",
    )
    p.add_argument("--list-presets", action="store_true", help="list the built-in architecture presets")
    _add_method_options(p)
    return p


def _pretrain_parser(sub) -> argparse.ArgumentParser:
    from .runs.pretrain import PretrainConfig

    p = sub.add_parser("pretrain", help="reproduce the bundled model (Fashion-MNIST classes 0,1,2,5,8)")
    for f in fields(PretrainConfig):
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=type(f.default),
            default=f.default,
            help=f"(default: {f.default})",
        )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def _trust_flag(p: argparse.ArgumentParser) -> None:
    from .config import RunConfig

    help_ = next(f for f in fields(RunConfig) if f.name == "trust_remote_code").metadata["help"]
    p.add_argument("--trust-remote-code", action="store_true", help=help_)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="peftlab",
        description="Fine-tune a pretrained image classifier with "
        "several methods and compare accuracy, parameters, time and memory.",
    )
    add_log_level(p, "info")
    sub = p.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    _pretrain_parser(sub)
    _theory_parser(sub)
    sw = sub.add_parser(
        "sweep",
        help="run a grid of methods x options x seeds from a YAML/JSON file; rerunning resumes it",
        description=_sweep_doc(),
    )
    sw.add_argument("file")
    sw.add_argument("--out", help="results folder (default: the file's 'out', else runs/<file name>)")
    sw.add_argument("--quiet", action="store_true", help="no progress output")
    sw.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run each run as a Ray task: on a local Ray instance, or on the cluster at ADDRESS "
        "(e.g. auto, ray://head:10001); needs pip install 'peftlab[ray]'",
    )
    sw.add_argument("--cpus-per-run", type=float, default=1, help="Ray CPUs per run (default: 1)")
    sw.add_argument(
        "--gpus-per-run",
        type=float,
        default=None,
        help="Ray GPUs per run, fractions allowed (default: 1 where CUDA is available, else 0)",
    )
    sw.add_argument(
        "--only-index",
        type=int,
        metavar="N",
        help="run only the N-th run of the grid (0-based), e.g. N=$SLURM_ARRAY_TASK_ID",
    )
    sw.add_argument("--count", action="store_true", help="print the number of runs in the grid and exit")
    _trust_flag(sw)
    m = sub.add_parser("merge", help="fold a run's adapter into the base; write a plain transformers model")
    m.add_argument("run", help="a run folder (holding result.json)")
    m.add_argument("--out", required=True, help="folder for the merged model (a new or empty one)")
    _trust_flag(m)
    pr = sub.add_parser("predict", help="top-k labels of image files with a run's fine-tuned model")
    pr.add_argument("run", help="a run folder (holding result.json)")
    pr.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    pr.add_argument("--top-k", type=int, default=5, help="labels per image (default: 5)")
    pr.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: 64)")
    pr.add_argument("--json", action="store_true", help="print JSON instead of text")
    _trust_flag(pr)
    ev = sub.add_parser(
        "eval",
        help="evaluate a run's fine-tuned model on a dataset's test split, never on images it trained or selected on",
    )
    ev.add_argument("run", help="a run folder (holding result.json)")
    ev.add_argument("--dataset", required=True, help="as for 'peftlab run --dataset'")
    ev.add_argument(
        "--test-split",
        help="split to evaluate (default: test, else validation, else a fifth held out with the run's seed)",
    )
    ev.add_argument("--test-size", type=int, default=0, help="stratified sample size; 0 = all (default)")
    ev.add_argument("--image-column")
    ev.add_argument("--label-column")
    ev.add_argument("--json", action="store_true", help="print JSON instead of text")
    _trust_flag(ev)
    r = sub.add_parser(
        "report",
        help="rebuild the comparison table, report.md and report.html from the result files in DIR",
        description="Read every result.json under DIR; print the comparison "
        "table; write summary.md, report.md (plots in DIR/report-plots) and a self-contained "
        "report.html (table, plots, per-class accuracy and findings). Several folders are compared "
        "together, each configuration named <folder>/<label>; their report is written with --out.",
    )
    r.add_argument("dir", nargs="+")
    r.add_argument("--out", help="folder for the report of several folders (default: printed only)")
    ex = sub.add_parser(
        "export",
        help="write the results under DIR(s) as one table (CSV, JSON Lines or Parquet) for pandas/polars",
        description="One row per run (one per run and epoch with --history), flat column names; see the README's "
        "'Tidy export' for the columns.",
    )
    ex.add_argument("dir", nargs="+", help="results folders")
    ex.add_argument("--format", choices=("csv", "jsonl", "parquet"), default="csv", help="(default: csv)")
    ex.add_argument("--history", action="store_true", help="one row per run and epoch (the learning curves)")
    ex.add_argument("--out", help="file to write (default: standard output; required for parquet)")
    sub.add_parser(
        "methods",
        help="the methods' capability matrix (trainable parameters on ViT-B/16, merging, inference cost, ...) "
        "and their options",
    )
    for command in sub.choices.values():  # also after the command: peftlab run --log-level warning
        add_log_level(command, argparse.SUPPRESS)
    return p


def _cmd_run(args) -> int:
    from . import config
    from .logs import info
    from .runs import exit_status, run

    values = config.read_file(args.config) if args.config else {}
    skip = ("command", "config", "log_level")
    values |= {k: v for k, v in vars(args).items() if v is not None and "." not in k and k not in skip}
    for method, opts in _method_sections(args).items():
        values[method] = dict(values.get(method) or {}) | opts
    return exit_status(run(config.build(values), log=info))


def _sweep_doc() -> str:
    from .runs import sweep

    return sweep.__doc__


def _cmd_sweep(args) -> int:
    from .logs import info
    from .runs import execute, exit_status, sweep

    cfg, specs, settings = sweep.load(args.file, args.out, args.trust_remote_code)
    if args.count:
        print(len(specs))
        return 0
    if args.only_index is not None:
        if not 0 <= args.only_index < len(specs):
            raise UserError(
                f"--only-index {args.only_index} is outside the grid's {len(specs)} runs (0-{len(specs) - 1})"
            )
        specs = specs[args.only_index : args.only_index + 1]
    if args.quiet:
        cfg.quiet = True
    if args.cpus_per_run <= 0 or (args.gpus_per_run is not None and args.gpus_per_run < 0):
        raise UserError("--cpus-per-run must be > 0 and --gpus-per-run >= 0")
    results = execute(
        cfg,
        specs,
        info,
        ray_address=args.ray,
        ray_resources={"cpus_per_run": args.cpus_per_run, "gpus_per_run": args.gpus_per_run},
        settings=settings,
    )
    return exit_status(results)


def _cmd_pretrain(args) -> int:
    from .runs.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(**{f.name: getattr(args, f.name) for f in fields(PretrainConfig)})
    pretrain(cfg, progress=not args.quiet)
    return 0


def _cmd_report(args) -> int:
    from .report.folders import report_folders

    for line in report_folders(args.dir, args.out):
        print(line)
    return 0


def _cmd_export(args) -> int:
    from .results.export import export

    data = export(args.dir, args.format, history=args.history, out=args.out)
    if data is not None:
        sys.stdout.write(data.decode())
    return 0


def _cmd_theory(args) -> int:
    from . import theory
    from .config import method_config
    from .methods import get, parse_methods

    if args.list_presets:
        for name, p in theory.PRESETS.items():
            print(f"{name:34} {p.about}")
        return 0
    if args.num_labels is not None and args.num_labels < 1:
        raise UserError(f"--num-labels must be >= 1 (got {args.num_labels})")
    cfg = theory.load_config(args.model)
    num_labels = args.num_labels or cfg.num_labels
    sections = _method_sections(args)
    blocks = []
    for name in parse_methods(args.method):
        mcfg = method_config(name, sections.get(name))
        if not theory.supported(cfg):
            raise UserError(
                f"no formulas for model type '{getattr(cfg, 'model_type', '?')}'; "
                "'peftlab run' counts such models structurally"
            )
        bd = theory.derive(cfg, get(name), mcfg, num_labels)
        blocks.append(bd.format() if bd else f"{name}: {theory.NOT_DERIVED} (the method registers no formula)")
    print("\n\n".join(blocks))
    return 0


def _cmd_merge(args) -> int:
    from .runs.artifacts import merge

    print(f"merged model written to {merge(args.run, args.out, trust_remote_code=args.trust_remote_code)}")
    return 0


def _cmd_predict(args) -> int:
    import json

    from .runs.artifacts import predict

    if args.top_k < 1 or args.batch_size < 1:
        raise UserError("--top-k and --batch-size must be >= 1")
    rows = predict(args.run, args.images, args.top_k, args.batch_size, trust_remote_code=args.trust_remote_code)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        shown = r.get("error") or "  ".join(f"{p['label']} {p['probability']:.3f}" for p in r["predictions"])
        print(f"{r['path']}: {shown}")
    return 0


def _cmd_eval(args) -> int:
    import json

    from .runs.artifacts import evaluate_run

    if args.test_size < 0:
        raise UserError("--test-size must be >= 0 (0 = all)")
    r = evaluate_run(
        args.run,
        args.dataset,
        test_size=args.test_size,
        test_split=args.test_split,
        image_column=args.image_column,
        label_column=args.label_column,
        trust_remote_code=args.trust_remote_code,
    )
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        top5 = f", top-5 {r['top5_accuracy']:.4f}" if r["top5_accuracy"] is not None else ""
        left_out = f"; {r['excluded']} image(s) the run trained or selected on left out" if r["excluded"] else ""
        print(
            f"{r['run']} on {r['dataset']} ({r['split']}, seed {r['seed']}, {r['examples']} images, "
            f"{r['classes_present']} classes): accuracy {r['accuracy']:.4f}{top5}, macro-F1 {r['macro_f1']:.4f}"
            + left_out
            + ("" if r["exclusion"] == "by content hash" else f" ({r['exclusion']})")
        )
    return 0


def _cmd_methods(args) -> int:
    from .methods import REGISTRY
    from .theory import capability_matrix

    rows = capability_matrix()
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    right = {1}  # the counts
    for k, r in enumerate(rows):
        print("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
    print(f"\n{len(REGISTRY)} methods; trainable counts include the new head; options (defaults) and papers:\n")
    for name, m in REGISTRY.items():
        opts = ", ".join(f"{f.name}={f.default}" for f in fields(m.config_cls))
        print(
            f"{name:13} {m.description}\n{'':13} options: {opts}" + (f"\n{'':13} paper: {m.paper}" if m.paper else "")
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    import warnings

    from .errors import Terminated, sigterm_as_interrupt

    # library deprecation notices say nothing about the user's run
    warnings.filterwarnings("ignore", category=FutureWarning)
    args = parser().parse_args(argv)
    from .logs import configure

    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 is printed as its own bytes
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
    configure(args.log_level)
    try:
        with sigterm_as_interrupt():  # a scheduler's kill: like Ctrl-C
            return {
                "run": _cmd_run,
                "pretrain": _cmd_pretrain,
                "report": _cmd_report,
                "methods": _cmd_methods,
                "theory": _cmd_theory,
                "sweep": _cmd_sweep,
                "merge": _cmd_merge,
                "predict": _cmd_predict,
                "eval": _cmd_eval,
                "export": _cmd_export,
            }[args.command](args)
    except UserError as e:
        one_line = " ".join(line.strip() for line in str(e).splitlines())  # whatever the message
        print(f"peftlab: error: {one_line}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early
        sys.stderr.close()
        return 0
    except KeyboardInterrupt as e:
        what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(
            f"peftlab: {what}; every result.json written is complete — rerun the same command to finish the rest",
            file=sys.stderr,
        )
        return 143 if isinstance(e, Terminated) else 130


if __name__ == "__main__":  # python -m peftlab.cli works like the peftlab command
    sys.exit(main())
