"""The command line, every subcommand in one place: `lucent-dsl` (`lucent_dsl.cli:main`).

Rooms: `app` (the parser, `main`, exit codes), `commands` (render, atlas, layers, replay...),
`examples` (`lucent-dsl examples`), `explore` (`lucent-dsl explore`), `toolbox` (the research methods'
subcommands). The methods themselves live in their library rooms, so Python users get them too.

Example:
    >>> main(["render", "channel('0', 1)", "--steps", "0"])  # bad input: one line on stderr, exit code 2
    2
"""
from .app import main as main

__all__ = ["main"]
