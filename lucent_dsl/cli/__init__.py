"""The command line, every subcommand in one place: `lucent-dsl` (`lucent_dsl.cli:main`).

Rooms: `app` (the parser, `main`, exit codes), `commands` (render, atlas, layers, replay...),
`examples` (`lucent-dsl examples`), `explore` (`lucent-dsl explore`), `toolbox` (the research methods'
subcommands). The methods themselves live in their library rooms, so Python users get them too.
"""
from .app import main as main

__all__ = ["main"]
