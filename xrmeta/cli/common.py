"""What the commands share: argument types and groups, checks of flag values, reading UTF-8 line files, and how
an error is reported (one 'error: ...' line on stderr, exit status 2, nothing written); the clicks file of
xrmeta-retrain and xrmeta-add-feedback."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..catalog import MAX_K
from ..coldstart.learned import LearnedConfig
from ..data import DATA_HOME_ENV
from ..model import title_problem
from ..threads import resolve

EXIT_ERROR = 2


class _ShowDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default in --help, unless there is none to show (None, or off for a switch)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def parser(prog: str, description: str, usage: str | None = None) -> argparse.ArgumentParser:
    """A command's parser: `prog` as the console script is called, defaults shown in --help."""
    return argparse.ArgumentParser(prog=prog, usage=usage, description=description, formatter_class=_ShowDefaults)


def fail(error: Exception) -> int:
    print(f"error: {error}", file=sys.stderr)
    return EXIT_ERROR


def finite(text: str) -> float:
    """argparse type: a float that is not NaN or infinite (float() accepts 'nan' and 'inf')."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def add_threads_arg(p: argparse.ArgumentParser, default: int, what: str) -> None:
    p.add_argument("--threads", type=int, default=default, help=f"threads for {what}: -1 = all cores, n >= 1 = n")


def add_model_update_args(p: argparse.ArgumentParser, source: str, source_help: str, unit: str) -> None:
    """--model-dir, the input file flag `source`, --output-dir and --batch-size: a command that changes a model."""
    p.add_argument("--model-dir", required=True, type=Path, help="model directory")
    p.add_argument(source, required=True, type=Path, help=source_help)
    p.add_argument("--output-dir", type=Path, help="save the updated model here instead of in place")
    p.add_argument("--batch-size", type=int, default=10000, help=f"{unit} per call (each at least 1)")


def check_update_args(args) -> None:
    """The values `add_model_update_args` and `add_threads_arg` leave unchecked."""
    if args.batch_size < 1:
        raise ValueError("--batch-size must be >= 1")
    check_threads(args.threads)


def check_threads(threads: int) -> None:
    """The threads rule (`xrmeta.threads.resolve`: -1 = all cores, n >= 1 = n threads), in the flag's words."""
    try:
        resolve(threads)
    except ValueError:
        raise ValueError(f"--threads must be >= 1 (or -1 for all cores), got {threads}") from None


def check_search_args(k: int | None = None, beam_size: int | None = None) -> None:
    """Reject search flags out of range before loading anything."""
    for flag, value, top in (("--k", k, MAX_K), ("--beam-size", beam_size, None)):
        if value is not None and not 1 <= value <= (top or value):
            raise ValueError(f"{flag} must be >= 1{f' and <= {top}' if top else ''}, got {value}")


def add_data_home_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-home", type=Path,
                   help=f"directory holding the named datasets (homedepot/, pricerunner/); default: "
                   f"${DATA_HOME_ENV} if set, else ../shared/data beside the checkout")


def read_lines(source: str | Path) -> list[str]:
    """The lines of a UTF-8 file (or stdin for '-'), split on \\n only (str.splitlines would also break a text at
    U+2028, form feeds and the like), without a final empty line; an undecodable byte names the file and line."""
    raw = sys.stdin.buffer.read() if str(source) == "-" else Path(source).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ValueError(f"{source} line {line}: not UTF-8") from None
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":  # the final newline ends the last line; it does not start another
        lines.pop()
    return lines


def add_generator_args(p: argparse.ArgumentParser) -> None:
    """The learned generator's settings (`xrmeta-train --generator learned` and `xrmeta-train-generator`)."""
    d = LearnedConfig()
    g = p.add_argument_group("learned generator (IRENE-style; see xrmeta/coldstart/learned.py)")
    g.add_argument("--gen-depth", type=int, default=d.depth, help="transformer layers")
    g.add_argument("--gen-width", type=int, default=d.d_model, help="token width (d_model)")
    g.add_argument("--gen-steps", type=int, default=d.steps, help="full-batch Adam steps")
    g.add_argument("--gen-lr", type=float, default=d.lr, help="Adam learning rate")
    g.add_argument("--gen-pos-weight", type=float, default=d.pos_weight, help="C: loss weight of a positive pair")
    g.add_argument("--gen-max-items", type=int, default=d.max_items,
                   help="observed items (whole leaf clusters) sampled to train on")
    g.add_argument("--gen-proxy-frac", type=float, default=d.proxy_frac,
                   help="share of the sampled clicked items held out as stand-ins for new items")
    g.add_argument("--gen-parts", choices=("self", "both", "neighbours"), default=d.parts,
                   help="what the generator mixes: the item's own title (weighted per n-gram block), also its "
                   "neighbours' classifiers, or only those")
    g.add_argument("--gen-bias-calibration", choices=("match", "steal"), default=d.bias_calibration,
                   help="new items' scores centred on trained items' for relevant queries (match), or kept under "
                   "them so that they cost trained items' queries at most a thousandth of their top-1 (steal)")
    g.add_argument("--gen-seed", type=int, default=d.seed, help="seed of the sampling and of the initialization")


def learned_config(args) -> LearnedConfig:
    config = LearnedConfig(depth=args.gen_depth, d_model=args.gen_width, steps=args.gen_steps, lr=args.gen_lr,
                           pos_weight=args.gen_pos_weight, max_items=args.gen_max_items,
                           proxy_frac=args.gen_proxy_frac, seed=args.gen_seed, parts=args.gen_parts,
                           bias_calibration=args.gen_bias_calibration)
    config.validate()
    return config


def read_clicks(path: Path) -> list[tuple[str, str]]:
    """Read 'query<TAB>item_id' lines (UTF-8; blank lines skipped); an error names the file and the line."""
    clicks = []
    for n, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise ValueError(f"{path} line {n}: expected 'query<TAB>item_id', found {len(parts)} field(s)")
        query, item_id = parts[0].strip(), parts[1].strip()
        if not item_id:
            raise ValueError(f"{path} line {n}: empty item id")
        problem = title_problem(query, "query")
        if problem:
            raise ValueError(f"{path} line {n}: {problem}")
        clicks.append((query, item_id))
    if not clicks:
        raise ValueError(f"{path}: no clicks")
    return clicks
