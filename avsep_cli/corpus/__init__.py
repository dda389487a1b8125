"""Offline audio-visual training corpus: SoundFont stems of real scores shown by moving instrument pictures."""
