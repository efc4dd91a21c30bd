"""Identification: a catalogue of known individuals, its calibrated
'new individual?' threshold, and review sheets people check matches on; the
catalogue database (photos, annotations, individuals, append-only reviews),
its search, imports and exports."""
