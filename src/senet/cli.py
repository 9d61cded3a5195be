"""The ``senet`` command line: a thin shell over functions a user can also call from Python.

Each subcommand is one ``_add_<name>(subparsers)`` function that declares its arguments and sets
``func`` to its handler; ``COMMANDS`` lists them. Errors a user can fix (bad names, paths, values)
end the command with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import traceback
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]


def _int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer ``>= low`` (argparse names the flag in its one-line error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def _finite(positive: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite float (``positive``: > 0)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or (positive and value <= 0):
            raise argparse.ArgumentTypeError(
                f"must be a finite number{' > 0' if positive else ''}, got {text}"
            )
        return value

    return parse


POSITIVE = _int_at_least(1)  # sizes, batch sizes, counts that cannot be zero
COUNT = _int_at_least(0)  # worker processes, warm-up passes


def _kwargs(args: argparse.Namespace, names: str) -> dict[str, Any]:
    """The arguments ``names`` (space-separated) of a command, passed on as keywords."""
    return {name: getattr(args, name) for name in names.split()}


def _add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered model names")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'se_*'")
    p.set_defaults(func=_cmd_list)


def _cmd_list(args: argparse.Namespace) -> int:
    from .models import list_models

    print("\n".join(list_models(args.pattern)))
    return 0


def _add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="parameters, multiply-adds, latency and memory, SE beside plain, beside the paper",
        description="Each network is shown beside its plain / SE twin with the SE overhead. Latency, "
        "throughput and peak memory are measured with --time (implied by --batch-size / --device).",
    )
    p.add_argument("names", nargs="*", help="model names (default: every registered model)")
    p.add_argument("--input-size", type=POSITIVE, help="image side (default: the model's own)")
    p.add_argument("--time", action="store_true", help="run the networks: latency, images/s, peak memory")
    p.add_argument("--batch-size", type=POSITIVE, help="images per timed forward pass (default 1)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.add_argument("--warmup", type=COUNT, default=3, help="untimed passes before timing (default 3)")
    p.add_argument("--repeats", type=POSITIVE, default=10, help="timed passes, median shown (default 10)")
    p.add_argument("--threads", type=POSITIVE, help="CPU threads (torch.set_num_threads)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON instead of a table")
    fmt.add_argument("--markdown", action="store_true", help="print a Markdown table (for a README)")
    p.set_defaults(func=_cmd_profile)


def _cmd_profile(args: argparse.Namespace) -> int:
    import torch

    from .analysis.profile import compare, format_table
    from .models import list_models

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rows = compare(
        args.names or list_models(),
        args.input_size,
        timed=args.time or args.batch_size is not None or args.device is not None,
        batch_size=args.batch_size or 1,
        **_kwargs(args, "device warmup repeats"),
    )
    print(json.dumps(rows, indent=2) if args.json else format_table(rows, markdown=args.markdown))
    return 0


def _add_config_fields(p: argparse.ArgumentParser, defaults: dict | None = None, config: Any = None) -> None:
    """``--recipe``, ``--config`` and one flag per field of ``config`` (:class:`~senet.train.config.Config`
    by default; ``senet detect train`` passes its own), each with its meaning (from the field's
    definition) and default (the recipe's when ``defaults`` holds it)."""
    from .train.config import Config

    config = config or Config
    p.add_argument("--recipe", help="recipe name (`senet recipes`) or a YAML path")
    p.add_argument("--config", help="a config file, e.g. a run's config.yaml to repeat the run")
    source = (defaults or {}).pop("recipe", "") or "config"
    fields = p.add_argument_group(
        "config fields (override the recipe)"
        + (f"; defaults shown are {source}'s" if defaults else "; give --recipe NAME to see its defaults")
    )
    values = defaults or config().to_dict()
    meanings = config.meanings()
    for name, tp in config.fields().items():
        if name == "recipe":
            continue
        flags = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
        kw: dict = {"dest": f"field_{name}", "default": argparse.SUPPRESS, "metavar": name.upper()}
        if tp is bool:
            kw.update(nargs="?", const="true", metavar="BOOL")
        elif typing.get_origin(tp) is list:
            kw.update(nargs="+")  # --mean 0.5 0.5 0.5 (or one "0.5,0.5,0.5")
        shown = "''" if values.get(name) == "" else values.get(name)
        fields.add_argument(*flags, help=f"{meanings[name]} [default: {shown}]".replace("%", "%%"), **kw)


def _recipe_defaults(argv: Sequence[str]) -> dict | None:
    """The resolved fields of the ``--recipe`` / ``--config`` named in ``argv`` (for ``--help``), if any
    (a detection recipe's under ``senet detect``)."""
    from .fusion.config import load_detect_config
    from .train import load_config

    load = load_detect_config if argv[:1] == ["detect"] else load_config
    given: dict[str, str] = {}
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag in ("--recipe", "--config") and (eq or i + 1 < len(argv)):
            given[flag[2:]] = value if eq else argv[i + 1]
    if not given:
        return None
    try:
        return load(given.get("recipe"), given.get("config")).to_dict()
    except (ValueError, OSError):
        return None  # the command itself reports the bad recipe


def _config_overrides(args: argparse.Namespace, config: Any = None) -> dict:
    """The config fields given on the command line, parsed as YAML values (strings kept as given)."""
    import yaml

    from .train.config import Config

    types = (config or Config).fields()
    overrides = {}
    for key, raw in vars(args).items():
        if key.startswith("field_"):
            name = key[len("field_") :]
            if isinstance(raw, list):
                raw = " ".join(raw)
            overrides[name] = raw if types[name] in (str, list[str]) else yaml.safe_load(raw)
    if not args.recipe and not args.config:
        raise ValueError("give --recipe NAME (see `senet recipes`) or --config FILE")
    return overrides


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model with a recipe (also under torchrun)",
        allow_abbrev=False,
        description="Train with a recipe; override any field, e.g. --epochs 5 --lr 0.1 --model resnet20.",
    )
    _add_config_fields(p, sub.recipe_defaults)
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainingDiverged, load_config, train

    cfg = load_config(args.recipe, args.config, _config_overrides(args))
    try:
        result = train(cfg)
    except TrainingDiverged as e:
        print(f"senet train: error: {e}", file=sys.stderr)
        return 1
    f = result.final
    print(
        f"done: {cfg.model} test top-1 {f['val_top1']:.2f}% top-5 {f['val_top5']:.2f}% "
        f"(best {result.best_top1:.2f}%) in {result.seconds / 60:.1f} min; run folder {result.out}"
    )
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="paired SE-vs-plain experiment: an SE network and its plain twin over several seeds",
        allow_abbrev=False,
        description="Train MODEL and its twin for seeds 0..K-1 into OUT/<model>/seed<k>/ (same data order "
        "and same initial weights of the shared layers per seed), then print and write OUT/compare.md, "
        "compare.json and compare.png: per-seed top-1, mean +- std and the paired difference with its 95%% "
        "t-interval. Re-running skips finished runs and resumes interrupted ones. Any recipe field can be "
        "overridden as in `senet train`.",
    )
    p.add_argument("--seeds", type=POSITIVE, default=3, help="number of paired seeds, 0..K-1 (default 3)")
    p.add_argument(
        "--jobs",
        type=POSITIVE,
        default=1,
        help="runs trained at once, each in its own process with cores/JOBS threads (default 1: in this "
        "process, one after the other)",
    )
    p.add_argument(
        "--summary",
        action="store_true",
        help="train nothing: summarise what OUT holds (finished seeds only)",
    )
    _add_config_fields(p, sub.recipe_defaults)
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    from .train import load_config
    from .train.compare import compare, plan_runs, summary_markdown, write_summary

    overrides = _config_overrides(args)
    out = overrides.get("out")
    if not out:
        raise ValueError("give --out DIR: the experiment's folder (OUT/<model>/seed<k>/ per run)")
    model = overrides.get("model") or load_config(args.recipe, args.config).model
    runs = plan_runs(args.recipe, model, args.seeds, out, overrides, config=args.config)
    summary = write_summary(out, runs) if args.summary else compare(runs, out, jobs=args.jobs)
    print(summary_markdown(summary), end="")
    png = ", compare.png" if (Path(out) / "compare.png").exists() else ""
    print(f"written: {out}/compare.md, compare.json{png}")
    return 0


def _add_weights_source(p: argparse.ArgumentParser) -> None:
    """``--checkpoint PATH`` | ``--model NAME [--weights PATH]``: the network of a command."""
    p.add_argument(
        "--checkpoint",
        "--weights",
        dest="weights",
        metavar="PATH|URL",
        help="weights: a `senet train` checkpoint, a file of save_weights / `senet convert`, or "
        "Cadene / timm / torchvision weights (these need --model)",
    )
    p.add_argument("--model", help="network name (`senet list`), for weights that do not record theirs")


def _add_preprocessing_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--crop", type=POSITIVE, help="centre crop side in pixels (default: the weights' own)")
    p.add_argument(
        "--resize",
        type=POSITIVE,
        default=0,
        help="short side in pixels before the crop (default: the weights' crop fraction, 256 for 224)",
    )
    p.add_argument("--mean", type=_finite(), nargs=3, help="R G B mean (default: the weights' own)")
    p.add_argument(
        "--std", type=_finite(positive=True), nargs=3, help="R G B std (default: the weights' own)"
    )


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="top-1 / top-5 accuracy of any weights on a labelled image folder",
        description="Evaluate a `senet train` checkpoint on the pipeline of its run, or any weights "
        "load_weights reads (ours, Cadene, timm, torchvision, converted Caffe: --model NAME --weights PATH) "
        "with the preprocessing they carry, each part replaceable by --crop/--resize/--mean/--std.",
    )
    _add_weights_source(p)
    p.add_argument("--data-dir", required=True, help="ImageFolder tree (val/ or test/) or torchvision CIFAR")
    _add_preprocessing_flags(p)
    p.add_argument("--batch-size", type=POSITIVE, default=250, help="images per forward pass (default 250)")
    p.add_argument("--workers", type=COUNT, default=2, help="image-decoding worker processes (default 2)")
    p.add_argument(
        "--flip",
        action="store_true",
        help="average the predictions of each image and its mirror image",
    )
    p.add_argument(
        "--ema",
        action="store_true",
        help="evaluate the weight average (runs trained with --ema-decay)",
    )
    p.add_argument("--json", help="where to write the result (default: beside the checkpoint)")
    p.set_defaults(func=_cmd_eval)


def _cmd_eval(args: argparse.Namespace) -> int:
    from .train import evaluate

    if not args.weights:
        raise ValueError("give the weights: --checkpoint PATH (or --model NAME --weights PATH)")
    names = "model crop resize mean std batch_size workers flip ema"
    r = evaluate(args.weights, args.data_dir, json_path=args.json, **_kwargs(args, names))
    if "preprocessing" in r:
        pr = r["preprocessing"]
        size = pr["input_size"][-1]
        print(
            f"preprocessing: resize {round(size / pr['crop_fraction'])}, crop {size}, {pr['order']} "
            f"x{pr['value_range']:g}, mean {pr['mean']}, std {pr['std']}"
            + (f"; layout {r['layout']}" if r.get("layout") else "")
        )
    print(
        f"{r['model']}{' (EMA weights)' if r.get('ema') else ''} on {r['images']} images "
        f"(crop {r['crop']}{', flip averaged' if r['flip'] else ''}): "
        f"top-1 {r['top1']:.2f}% (error {r['top1_err']:.2f}%)"
        f"  top-5 {r['top5']:.2f}% (error {r['top5_err']:.2f}%)  -> {r['json']}"
    )
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="top-k classes of images with a trained network",
        description="Classify image files (or every image in a folder, or a glob's matches) with the "
        "preprocessing and class names carried by the weights. An unreadable file is reported on its own "
        "line and skipped; the exit status is 1 when any file failed.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE|DIR|GLOB", help="image files, folders or patterns")
    _add_weights_source(p)
    _add_preprocessing_flags(p)
    p.add_argument("--topk", type=POSITIVE, default=5, help="classes shown per image (default 5)")
    p.add_argument("--batch-size", type=POSITIVE, default=32, help="images per forward pass (default 32)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.add_argument("--json", action="store_true", help="print one JSON list instead of text lines")
    p.set_defaults(func=_cmd_predict)


def _cmd_predict(args: argparse.Namespace) -> int:
    from .factory import create_model, load_model
    from .predict import expand_images, predict
    from .train.distributed import pick_device

    if args.weights:
        model = load_model(args.weights, args.model)
    elif args.model:
        model = create_model(args.model)
        print(f"senet predict: no --weights: {args.model} is randomly initialised", file=sys.stderr)
    else:
        raise ValueError("give the network: --checkpoint PATH, or --model NAME [--weights PATH]")
    model.preprocessing = model.preprocessing.adjusted(**_kwargs(args, "crop resize mean std"))
    files = expand_images(args.images)
    if not files:
        raise ValueError(f"no images found in {' '.join(args.images)}")
    results = predict(model, files, **_kwargs(args, "topk batch_size"), device=args.device or pick_device())
    failed = [r for r in results if r.error]
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    for r in results:
        if r.error:
            print(f"senet predict: skipped {r.source}: {r.error}", file=sys.stderr)
        elif not args.json:
            tops = "  ".join(f"{lab} {p:.3f}" for lab, p in zip(r.labels, r.probs, strict=True))
            print(f"{r.source}\t{tops}")
    if failed:
        print(f"senet predict: {len(failed)} of {len(results)} images could not be read", file=sys.stderr)
    return 1 if failed else 0


def _add_recipes(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recipes", help="list the training recipes shipped with senet")
    p.add_argument("name", nargs="?", help="print this recipe's resolved config")
    p.set_defaults(func=_cmd_recipes)


def _cmd_recipes(args: argparse.Namespace) -> int:
    import yaml

    from .train import list_recipes, load_config

    if args.name:
        print(yaml.safe_dump(load_config(args.name).to_dict(), sort_keys=False), end="")
        return 0
    recipes = list_recipes()
    width = max(len(n) for n in recipes)
    for name, desc in recipes.items():
        print(f"{name:<{width}}  {desc}")
    return 0


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert weights of the official release (Caffe) into a senet checkpoint",
        description="Convert a .caffemodel of hujie-frank/SENet; load the result with "
        "senet.create_model(ARCH, weights=OUT).",
    )
    p.add_argument("model", help="the .caffemodel file")
    p.add_argument("--from", dest="source_format", required=True, choices=("caffe",), help="format of MODEL")
    p.add_argument("--arch", required=True, help="model name, e.g. se_resnet50, senet154, se_bn_inception")
    p.add_argument("--out", required=True, help="checkpoint to write")
    p.add_argument(
        "--keep-caffe-input",
        action="store_true",
        help="keep the Caffe input convention (BGR, 0-255, minus the mean (104, 117, 123)) instead of "
        "folding it into the first convolution for RGB ImageNet-normalised input",
    )
    p.set_defaults(func=_cmd_convert)


def _cmd_convert(args: argparse.Namespace) -> int:
    from .caffe import convert_caffe

    out = convert_caffe(args.model, args.arch, args.out, keep_caffe_input=args.keep_caffe_input)
    caffe = "BGR 0-255 minus the mean (104, 117, 123)"
    expects = caffe if args.keep_caffe_input else "RGB [0, 1] normalised with the ImageNet mean/std"
    print(f"{args.arch} written to {out}; it expects {expects} (transform: senet.preprocessing(model))")
    return 0


def _add_excite(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "excite",
        help="per-class excitations of a trained SE network (paper Sec. 7.2, Figs. 6-7)",
        description="Record every SE block's gates on images of the evaluation split and write "
        "excitations.npz, Fig. 6/7-style PNGs and a class-specificity summary to --out.",
    )
    p.add_argument("--checkpoint", required=True, help="a `senet train` checkpoint of an SE network")
    p.add_argument("--data-dir", required=True, help="its data set (the val/ or test/ split is used)")
    p.add_argument("--classes", nargs="+", help="class names or indices (default: all)")
    p.add_argument("--blocks", nargs="+", help="blocks to plot: SE_3_1, 'SE_3_*', module paths")
    p.add_argument(
        "--images-per-class", type=POSITIVE, default=50, help="images per class (default 50, as paper)"
    )
    p.add_argument("--channels", type=POSITIVE, default=50, help="channels per panel (default 50, as paper)")
    p.add_argument("--batch-size", type=POSITIVE, default=100, help="images per forward pass (default 100)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.add_argument("--out", default="excite", help="output folder (default ./excite)")
    p.set_defaults(func=_cmd_excite)


def _cmd_excite(args: argparse.Namespace) -> int:
    from .analysis.excite import summary_markdown
    from .analysis.excite_job import excite

    names = "checkpoint data_dir classes blocks images_per_class out batch_size channels device"
    r = excite(**_kwargs(args, names))
    print(summary_markdown(r["stats"], r["summary"]))
    print(f"plotted blocks: {', '.join(r['blocks'])}; wrote {len(r['files'])} files to {args.out}")
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="Markdown table of training runs beside the paper's figures")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders made by `senet train --out DIR`")
    p.add_argument("--out", help="write the report to this file (default: print it)")
    p.add_argument("--json", action="store_true", help="print the runs' figures as JSON instead")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from .analysis.report import read_run, report

    if args.json:
        print(json.dumps([read_run(d).as_dict() for d in args.runs], indent=2))
        return 0
    text = report(args.runs, args.out)
    if args.out:
        print(f"report of {len(args.runs)} run(s) written to {args.out}")
    else:
        print(text, end="")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    from .export import FORMATS

    p = sub.add_parser("export", help="write a model as ONNX, TorchScript or a torch.export program")
    p.add_argument("source", metavar="NAME|CHECKPOINT", help="a model name or a `senet train` checkpoint")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, help="output file, e.g. model.onnx / model.pt / model.pt2")
    p.add_argument("--input-size", type=POSITIVE, help="image side (default: the model's own)")
    p.add_argument("--weights", help="state dict to load into NAME (any layout load_weights reads)")
    p.add_argument("--fuse", action="store_true", help="fold BN into the convolutions first")
    p.add_argument("--no-check", action="store_true", help="skip running the file against PyTorch")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import check_export, export_model, load_for_export

    model, size = load_for_export(args.source, weights=args.weights)
    size = args.input_size or size
    out = export_model(model, args.format, args.out, input_size=size, fuse=args.fuse)
    line = f"wrote {out} ({args.format}, input N x {model.in_chans} x {size} x {size}, dynamic batch)"
    if not args.no_check:
        diff = check_export(model, out, args.format, input_size=size)
        line += (
            "; not checked (onnxruntime missing)" if diff is None else f"; max abs diff vs PyTorch {diff:.2e}"
        )
    print(line)
    return 0


def _add_detect(sub: argparse._SubParsersAction) -> None:
    from .fusion.config import DetectConfig

    p = sub.add_parser(
        "detect",
        help="RGB + event-camera detection with SE fusion (train, eval, simulate; docs/detection.md)",
        description="Two-stream RGB + event detectors (CAFR/FRN's fusion baselines) on DSEC-Det, "
        "PKU-DDD17-Car or the simulated set.",
    )
    dsub = p.add_subparsers(dest="detect_command", required=True, metavar="ACTION")
    t = dsub.add_parser(
        "train",
        help="train a detector with a recipe (`senet detect recipes`)",
        allow_abbrev=False,
        description="Train with a detection recipe; override any field, e.g. --fusion concat --epochs 5.",
    )
    _add_config_fields(t, sub.recipe_defaults, DetectConfig)
    t.set_defaults(func=_cmd_detect_train)
    e = dsub.add_parser("eval", help="COCO mAP / mAP50 of a detection checkpoint")
    e.add_argument("checkpoint", help="a `senet detect train` checkpoint (last.pt / best.pt)")
    e.add_argument("--data-dir", help="data folder (default: the run's)")
    e.add_argument("--split", help="split to score (default: the run's val_split)")
    e.add_argument("--limit", type=COUNT, default=0, help="score the first N frames only (0: all)")
    e.add_argument("--batch-size", type=POSITIVE, default=2, help="frames per forward pass (default 2)")
    e.add_argument("--device", help="cpu or cuda (default: CUDA when present)")
    e.set_defaults(func=_cmd_detect_eval)
    s = dsub.add_parser("simulate", help="write the simulated RGB + event set (DSEC-Det layout)")
    s.add_argument("--out", required=True, help="folder to write (gets train/ and test/)")
    s.add_argument("--cifar", required=True, help="the CIFAR-10 ImageFolder copy whose objects move")
    s.add_argument("--sequences", type=POSITIVE, default=24, help="training sequences (test: a third)")
    s.add_argument("--frames", type=POSITIVE, default=10, help="labelled frames per sequence")
    s.add_argument("--height", type=POSITIVE, default=64, help="frame height, pixels (the sim recipe: 64)")
    s.add_argument("--width", type=POSITIVE, default=80, help="frame width, pixels (the sim recipe: 80)")
    s.add_argument("--degrade", type=float, default=0.3, help="fraction of dark / blurred RGB frames")
    s.add_argument("--seed", type=COUNT, default=0)
    s.set_defaults(func=_cmd_detect_simulate)
    dsub.add_parser("recipes", help="list the detection recipes").set_defaults(func=_cmd_detect_recipes)


def _cmd_detect_train(args: argparse.Namespace) -> int:
    from .fusion.config import DetectConfig, load_detect_config
    from .fusion.train import train_detector

    cfg = load_detect_config(args.recipe, args.config, _config_overrides(args, DetectConfig))
    r = train_detector(cfg)
    print(
        f"done: {cfg.streams} mAP {100 * r.final['val_mAP']:.1f} "
        f"mAP50 {100 * r.final['val_mAP50']:.1f} (best mAP50 {100 * r.best_map50:.1f}) in "
        f"{r.seconds / 60:.1f} min; run folder {r.out}"
    )
    return 0


def _cmd_detect_eval(args: argparse.Namespace) -> int:
    from .fusion.train import detect_eval

    r = detect_eval(**_kwargs(args, "checkpoint data_dir split device limit batch_size"))
    per_class = "  ".join(f"{k} {100 * v:.1f}" for k, v in r["per_class"].items())
    print(
        f"{r['frames']} frames: mAP {100 * r['mAP']:.1f}  mAP50 {100 * r['mAP50']:.1f}  mAP75 "
        f"{100 * r['mAP75']:.1f}  per class AP: {per_class}"
    )
    return 0


def _cmd_detect_simulate(args: argparse.Namespace) -> int:
    from .fusion.simulate import write_simulated_dsec

    if not 0 <= args.degrade <= 1:
        raise ValueError(f"--degrade {args.degrade}: give a fraction of frames in [0, 1]")
    out = write_simulated_dsec(
        args.out,
        args.cifar,
        train_sequences=args.sequences,
        test_sequences=max(1, args.sequences // 3),
        **_kwargs(args, "frames height width degrade seed"),
    )
    print(f"wrote the simulated set to {out} (train/, test/ in the DSEC-Det layout)")
    return 0


def _cmd_detect_recipes(args: argparse.Namespace) -> int:
    from .fusion.config import list_detect_recipes

    for name, text in list_detect_recipes().items():
        print(f"{name:18s} {text}")
    return 0


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_list, _add_profile, _add_train]
COMMANDS += [_add_compare, _add_eval, _add_predict, _add_recipes, _add_convert, _add_excite, _add_report]
COMMANDS += [_add_export, _add_detect]


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``senet`` parser; with ``argv`` naming a recipe (``--help`` of train/compare) its defaults."""
    parser = argparse.ArgumentParser(prog="senet", description="Squeeze-and-Excitation Networks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wants_help = argv is not None and any(a in ("-h", "--help") for a in argv)
    sub.recipe_defaults = _recipe_defaults(argv) if wants_help else None  # type: ignore[attr-defined]
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``senet`` console command (also ``python -m senet``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    from .train.compare import RunsFailed
    from .train.interrupt import TrainingInterrupted

    try:
        return int(args.func(args) or 0)
    except TrainingInterrupted as e:  # Ctrl-C / SIGTERM in training: state saved, resumable
        print(f"senet {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"senet {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, KeyError, RunsFailed) as e:
        if not _user_error(e):
            raise  # a bug: the traceback shows where
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"senet {args.command}: error: {msg}", file=sys.stderr)
        return 2


def _user_error(e: BaseException) -> bool:
    """Whether ``e`` tells the user of a mistake (one line, exit 2) rather than a bug (a traceback).

    Errors of the file system (missing files, full disk, permissions) and errors senet raises on
    purpose -- a ``raise`` statement in the package, whose message names the problem and the fix --
    are the user's; a ``KeyError`` of a dictionary lookup or a ``ValueError`` from inside torch is
    a bug, and hiding its traceback behind one line would hide where it is.
    """
    if isinstance(e, OSError):
        return True
    frames = traceback.extract_tb(e.__traceback__)
    if not frames:
        return False
    last = frames[-1]
    package = str(Path(__file__).resolve().parent)
    return str(Path(last.filename).resolve()).startswith(package) and (last.line or "").startswith("raise")


if __name__ == "__main__":
    sys.exit(main())
