"""Identification: a catalogue of known individuals, its calibrated
'new individual?' threshold, and review sheets people check matches on."""
