"""The `edgegolf` console script. A plain `pip install edgegolf` installs only the runtime
(onnxruntime, numpy, tokenizers); the command line and the pipeline come with the
`compress` extra. Without it, the command says so instead of failing on an import."""

from __future__ import annotations

import sys

from edgegolf.errors import EXIT_ERROR


def main() -> None:
    from edgegolf.plugins import PluginError, load_plugins

    try:  # before the command line is built: its --help lists what plugins register
        load_plugins()
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    try:
        from edgegolf.cli import main as cli_main
    except ImportError as exc:
        from edgegolf.extras import missing_extra

        print(f"error: {missing_extra('compress', 'the edgegolf command line', exc)}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    cli_main()


if __name__ == "__main__":
    main()
