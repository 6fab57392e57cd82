"""The `graphscope` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

EXAMPLES = """examples:
  graphscope demo                  trace the built-in Mask R-CNN-like model, find and run its NMS
  graphscope demo --variant map_fn the same model with tf.map_fn inside its proposal layer
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphscope",
        description="Look inside a TensorFlow/Keras model and run any tensor you find there.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="run the built-in demo model (no downloads)",
        description="Build a small Mask R-CNN-like model with random weights, find the NMS op "
        "inside its custom ROI layer by an ancestor walk, and run it on a synthetic image.",
    )
    demo.add_argument("--variant", choices=("loop", "map_fn"), default="loop",
                      help="how the ROI layer loops over the batch (default: loop)")
    return parser


def _quiet_tensorflow_import() -> None:
    """Import TensorFlow with its C++ start-up chatter (CUDA probing, oneDNN notices) silenced.

    Those lines are written before TensorFlow's logging is configured, so no environment
    variable hides them; the file descriptor of stderr is pointed at /dev/null for the import only.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow

            tensorflow.config.list_physical_devices()  # device probing also logs (cuInit)
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `graphscope` console script."""
    args = _parser().parse_args(argv)
    if not args.debug:
        _quiet_tensorflow_import()
    from rich.console import Console

    from graphscope.errors import GraphscopeError

    console = Console()
    try:
        if args.command == "demo":
            from graphscope import demo

            for renderable in demo.report(variant=args.variant):
                console.print(renderable)
        return 0
    except GraphscopeError as e:
        if args.debug:
            raise
        print(f"graphscope: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
