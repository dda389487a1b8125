"""avsep: visually guided sound source separation.

Given a video of musicians, avsep finds each visible instrument and writes the sound of each one to its
own WAV file. Two published methods live under one roof (AVPC, T-NNLS 2023; IAL-CMS, AAAI 2024) next
to the Sound-of-Pixels baseline; all share one signal path (`avsep_cli.dsp`), one media module
(`avsep_cli.media`) and one evaluation module (`avsep_cli.metrics`).
"""

__version__ = "0.1.0"
