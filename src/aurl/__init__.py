"""Aurl: learn to compose from MIDI.

The data flows one way: MIDI -> Score (symusic) -> tokens (MidiTok) -> model -> tokens -> Score ->
MIDI / MusicXML / piano roll / audio. One subpackage per stage.
"""

__version__ = "0.1.0"
