"""`avsep data`: make and prepare data, one module per sub-command.

`synth` generates the offline corpus (issue 3), `music` organises downloaded MUSIC videos and `index`
builds the training cache (issue 5), `extract` decodes a video into what the models see.
"""

from __future__ import annotations

import typer

from avsep_cli.cli.data import extract, index, music, synth

app = typer.Typer(help="Make and prepare data: corpus, MUSIC layout, caches, extraction.", no_args_is_help=True)
app.command("synth", help=synth.__doc__.split("\n\n")[0])(synth.synth)
app.command("music", help=music.__doc__.split("\n\n")[0])(music.music)
app.command("index", help=index.__doc__.split("\n\n")[0])(index.index)
app.command("extract", help=extract.__doc__.split("\n\n")[0])(extract.extract)
