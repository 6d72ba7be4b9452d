"""The ``nni-udc`` command line.

Usage::

    nni-udc search CONFIG [--target T | --weight W] [--out DIR]   one search from an experiment file
                                                                 (strategy uniform: the uniform baseline grid)
    nni-udc pareto CONFIG [--trials N] [--storage URL] [--workers N]  the Optuna outer loop: the accuracy-cost front,
                                                                 then the uniform baseline and the comparison
    nni-udc baseline CONFIG [--out DIR] [--workers N]            the uniform-compression baseline of any file
    nni-udc show RUN                                             the front of a finished (or running) pareto run
                                                                 (and its comparison with the baseline)
    nni-udc retrain CONFIG [--seeds K] [--out DIR] [--workers N] a finished pareto run's comparison again, every
                                                                 model retrained from scratch with K seeds
    nni-udc nnictl-register [--name N]                           register the Optuna tuner with nnictl
    nni-udc nnictl-trial CONFIG                                  an nnictl trial: one search, reported to NNI

    nni-udc demo [--strategy udc|evolution|random] [--targets T,T,...] [--epochs E] [--finetune-epochs F]
                 [--trials N] [--seed S] [--out DIR]

    nni-udc profile --space digits --out latency.yaml [--threads T] [--warmup W] [--repeats R]
    nni-udc npu-size MODEL.pt [--target ethos-u55|ethos-u65]
    nni-udc npu-calibrate [--target ethos-u55|ethos-u65] [--write]   the Ethos-U size model against Arm's encoder
    nni-udc export RUN_OR_MODEL [--format torch|onnx|packed|all] [--target ethos-u55|ethos-u65] [--out DIR]

    python -m nni_udc.cli COMMAND ...                            the same with this interpreter (nnictl trials)

Bad arguments, files and paths exit with status 2 and a one-line message, no traceback. Each command is a
function of its own module here (``run``, ``show``, ``nnictl``, ``tools``, ``demo``), bound to its subparser
with ``set_defaults(func=..., errors=...)``: ``errors`` are the exceptions that mean a user's mistake.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from nni_udc import __version__
from nni_udc.cli.export import ExportError, export_command, input_shape
from nni_udc.cli.nnictl import register_command, trial_command
from nni_udc.cli.npu import add_calibrate_command
from nni_udc.cli.run import baseline_command, pareto_command, retrain_command, search_command
from nni_udc.cli.show import show_command
from nni_udc.cli.tools import npu_size_command, profile_command
from nni_udc.config import ConfigError, option_type
from nni_udc.errors import DivergedError
from nni_udc.pareto.files import RunFileError
from nni_udc.pareto.nnictl import DEFAULT_NAME
from nni_udc.registry import ACCELERATORS

__all__ = ["main"]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, but got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, but got {text!r}")
    return value


def _targets(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers in (0, 1], but got {text!r}") from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers in (0, 1], but got {text!r}")
    return values


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nni-udc", description="Compression-aware neural architecture search for NNI 3.0.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser("demo", help="search compressible CNNs on scikit-learn's digits; prints a results table",
                               description="Search DigitsSpace with the one-shot UDC strategy (or an NNI multi-trial "
                                           "strategy) and compare the found models with the float and uniform 8-bit "
                                           "baselines.")
    demo.add_argument("--strategy", choices=["udc", "evolution", "random"], default="udc",
                      help="udc: one-shot search per memory target; evolution/random: NNI's RegularizedEvolution or "
                           "Random multi-trial search (default: udc)")
    demo.add_argument("--targets", type=_targets, default=(0.03, 0.06, 0.12),
                      help="udc: memory targets as fractions of the widest float model (default: 0.03,0.06,0.12)")
    demo.add_argument("--epochs", type=_positive, default=12,
                      help="training epochs: of the supernet (udc), per architecture (multi-trial) and of the "
                           "baselines (default: 12)")
    demo.add_argument("--finetune-epochs", type=_positive, default=None,
                      help="udc: quantisation-aware fine-tuning epochs of each found model (default: --epochs)")
    demo.add_argument("--trials", type=_positive, default=16, help="multi-trial: architectures to train (default: 16)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    demo.add_argument("--verbose", action="store_true", help="show NNI and Lightning logs")
    demo.set_defaults(func=_demo, errors=())

    search = commands.add_parser(
        "search", help="run one search described by an experiment file; write the model, architecture and report",
        description="Run the search of an experiment YAML file (see examples/) and write model.pt, "
                    "architecture.json, report.json and TensorBoard logs to its output directory.")
    search.add_argument("config", help="experiment YAML file")
    group = search.add_mutually_exclusive_group()
    group.add_argument("--target", type=option_type("search.target"), default=None,
                       help="cost target as a fraction of the uncompressed model (overrides search.target)")
    group.add_argument("--weight", type=option_type("search.weight"), default=None, help="linear penalty weight λ instead of a target")
    search.add_argument("--out", default=None, help="output directory (default: the file's output)")
    search.set_defaults(func=search_command, errors=(ConfigError, DivergedError))

    pareto = commands.add_parser(
        "pareto", help="trace the accuracy-vs-cost front with an Optuna outer loop over the cost target",
        description="Run the file's search for many cost targets (an Optuna two-objective study), then write "
                    "front.csv, front.json, front.png and front.html to the output directory and print the front "
                    "and its hypervolume. Stopped runs resume where they were: run the same command again. "
                    "--workers N runs N searches at once on this machine; run the command on several machines "
                    "with a shared pareto.storage to have more workers.")
    pareto.add_argument("config", help="experiment YAML file")
    pareto.add_argument("--trials", type=option_type("pareto.trials"), default=None, help="completed searches to reach (overrides "
                                                                        "pareto.trials)")
    pareto.add_argument("--storage", default=None, help="Optuna storage URL (overrides pareto.storage; default: "
                                                        "sqlite:///OUTPUT/study.db)")
    pareto.add_argument("--workers", type=option_type("pareto.workers"), default=None,
                        help="processes running searches side by side on this machine (overrides pareto.workers; "
                             "default: 2 where there are 2 CPU cores, the searches train on the CPU and there are "
                             "at least 8 of them, else 1)")
    pareto.add_argument("--verbose", action="store_true", help="show NNI and Lightning logs and per-epoch progress")
    pareto.set_defaults(func=pareto_command, errors=(ConfigError, DivergedError))

    baseline = commands.add_parser(
        "baseline", help="train the uniform-compression baseline of an experiment file's space",
        description="Train every model of the space's uniform grid (every compressible layer at the same bits, "
                    "sparsity or rank; smallest and largest width) from scratch with the training budget of one "
                    "search, whatever the file's strategy. Writes baseline.csv and baseline.json; models already "
                    "there are kept (run it again to resume). Compares with the searches when the directory holds "
                    "a pareto run's front.json.")
    baseline.add_argument("config", help="experiment YAML file")
    baseline.add_argument("--out", default=None, help="output directory (default: the file's output)")
    baseline.add_argument("--workers", type=_positive, default=None,
                          help="processes training models side by side (default: 2, or 1 on one core); the "
                               "numbers do not depend on it")
    baseline.set_defaults(func=baseline_command, errors=(ConfigError, DivergedError))

    retrain = commands.add_parser(
        "retrain", help="retrain a pareto run's searched and uniform models with several seeds; compare the means",
        description="One run's comparison rests on one training of every model. Train every searched architecture "
                    "and every uniform front model of a finished pareto run (front.json and baseline.json in the "
                    "output directory) from scratch with the baseline's budget under seeds 0..K-1, and compare "
                    "mean accuracies. Writes retrained.json as each training finishes (run it again to resume).")
    retrain.add_argument("config", help="experiment YAML file of the pareto run")
    retrain.add_argument("--seeds", type=_positive, default=3, help="trainings of each model (default: 3)")
    retrain.add_argument("--out", default=None, help="the run's output directory (default: the file's output)")
    retrain.add_argument("--workers", type=_positive, default=None,
                         help="processes training models side by side (default: 2, or 1 on one core)")
    retrain.set_defaults(func=retrain_command, errors=(ConfigError, DivergedError, RunFileError))

    show = commands.add_parser("show", help="print the front of a pareto run",
                               description="Print the front (front.json) of a pareto run directory as a table, and "
                                           "its comparison with the uniform baseline when baseline.json is there.")
    show.add_argument("run", help="a pareto run's output directory (or its front.json)")
    show.set_defaults(func=show_command, errors=(RunFileError,))

    register = commands.add_parser("nnictl-register", help="register the Optuna outer-loop tuner with nnictl",
                                   description="Register nni_udc.pareto.tuner.OptunaTuner with 'nnictl algo register' "
                                               "so an NNI experiment config can use tuner: {name: NAME}.")
    register.add_argument("--name", default=DEFAULT_NAME, help=f"the tuner's name (default: {DEFAULT_NAME})")
    register.set_defaults(func=register_command, errors=(ValueError,))
    trial = commands.add_parser("nnictl-trial", help="an nnictl trial: one search with the tuner's parameter",
                                description="Run by nnictl as the trial command: read the tuner's cost target, run "
                                            "the file's search and report accuracy, costs and architecture to NNI.")
    trial.add_argument("config", help="experiment YAML file")
    trial.set_defaults(func=trial_command, errors=(ConfigError,))

    profile = commands.add_parser("profile", help="time every layer configuration of a space; write a latency target",
                                  description="Time every distinct layer configuration of a space with torch on this "
                                              "CPU and write a hardware-target YAML file whose latency_ms cost reads "
                                              "the table (use it as UDC(hardware='FILE')).")
    profile.add_argument("--space", default="digits", help="registered space name or module:Class (default: digits)")
    profile.add_argument("--input-shape", default=None,
                         help="one sample's input shape, e.g. 3,32,32 (needed for module:Class spaces)")
    profile.add_argument("--out", default="latency.yaml", help="target file to write (default: latency.yaml)")
    profile.add_argument("--threads", type=_positive, default=1, help="torch threads while timing (default: 1)")
    profile.add_argument("--warmup", type=_positive, default=10, help="untimed runs per layer (default: 10)")
    profile.add_argument("--repeats", type=_positive, default=50, help="timed runs per layer; the median is kept "
                                                                       "(default: 50)")
    profile.set_defaults(func=profile_command, errors=(ValueError,))

    npu = commands.add_parser("npu-size", help="true Ethos-U encoded weight size of a saved model (Arm's encoder)",
                              description="Encode every weight layer of a model saved with torch.save with Arm's "
                                          "Ethos-U weight encoder and print the bytes per layer and in total.")
    npu.add_argument("model", help="model file written by torch.save(model), or a run directory (its model.pt)")
    npu.add_argument("--target", choices=ACCELERATORS.names(), default="ethos-u55")
    npu.set_defaults(func=npu_size_command, errors=(ValueError, TypeError))  # TypeError: a layer it cannot cost
    add_calibrate_command(commands)

    export = commands.add_parser(
        "export", help="write a searched model as plain torch files, QDQ ONNX and a packed file",
        description="Bake the model of a search run directory, a pareto trial directory or a model file (read with "
                    "weights_only=True) and write it as torch files (model.pt2, model.state_dict.pt, "
                    "model.record.json), QDQ ONNX (model.onnx) and/or a packed file (model.nupk); print the bytes "
                    "of each and, for the packed file, the bytes the search counted (memory_bits / 8).")
    export.add_argument("model", help="run or trial directory, or a model file")
    export.add_argument("--format", choices=["torch", "onnx", "packed", "all"], default="all",
                        help="what to write (default: all)")
    export.add_argument("--out", default=None, help="output directory (default: export/ in the run directory)")
    export.add_argument("--input-shape", type=input_shape, default=None,
                        help="one sample's input shape, e.g. 1,8,8 (read from the run directory when not given)")
    export.add_argument("--target", choices=ACCELERATORS.names(), default=None,
                        help="also write the Ethos-U weight streams of this NPU (Arm's encoder) to OUT/TARGET/")
    export.set_defaults(func=export_command, errors=(ExportError,))
    return parser



def _demo(args: argparse.Namespace) -> int:
    from nni_udc.cli.demo import run_demo  # heavy imports only when needed

    run_demo(trials=args.trials, epochs=args.epochs, strategy=args.strategy, targets=args.targets,
             finetune_epochs=args.finetune_epochs, seed=args.seed, out=args.out, verbose=args.verbose)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``nni-udc ARGV``; returns the exit status (a user's mistake exits 2 with one line on stderr)."""
    parser = _parser()
    args = parser.parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.func
    try:
        return command(args)
    except args.errors as error:
        parser.exit(2, f"nni-udc {args.command}: error: {error}\n")
    except KeyboardInterrupt:
        if args.command not in ("search", "pareto", "baseline", "retrain"):
            raise
        parser.exit(130, f"\nnni-udc {args.command}: interrupted; finished searches and trained models are kept: "
                         "run the same command again to resume\n")


if __name__ == "__main__":
    sys.exit(main())
