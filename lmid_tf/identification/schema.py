"""The catalogue database's tables, their version, and the upgrades.

`MIGRATIONS[i]` takes a database from version i to version i + 1; version 0
is an empty file. `upgrade` applies the missing ones in one transaction, so a
file is always at one whole version. Reviews and identity events are the
log: triggers refuse any UPDATE or DELETE of them.
"""

import sqlite3

_VERSION_1 = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version VALUES (0);

CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE locations (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE CHECK (name <> ''));

CREATE TABLE photos (
  id INTEGER PRIMARY KEY,
  content_hash TEXT NOT NULL UNIQUE,
  original_path TEXT NOT NULL,
  width INTEGER CHECK (width > 0),
  height INTEGER CHECK (height > 0),
  taken_at TEXT,                      -- ISO 8601 date or date-time, as given
  location_id INTEGER REFERENCES locations(id),
  latitude REAL CHECK (latitude BETWEEN -90 AND 90),      -- NULL: unknown
  longitude REAL CHECK (longitude BETWEEN -180 AND 180),
  photographer TEXT,
  viewpoint TEXT,                     -- 'left', 'right', ... or NULL
  extra TEXT NOT NULL DEFAULT '{}',   -- JSON: further sighting columns
  added_at TEXT NOT NULL);

-- A retired individual was merged into another (merged_into) or emptied by
-- an undo; only live individuals hold a name exclusively.
CREATE TABLE individuals (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL CHECK (name <> ''),
  notes TEXT NOT NULL DEFAULT '',
  created_at TEXT NOT NULL,
  retired_at TEXT,
  merged_into INTEGER REFERENCES individuals(id));
CREATE UNIQUE INDEX individuals_live_name ON individuals(name)
  WHERE retired_at IS NULL;

CREATE TABLE annotations (
  id INTEGER PRIMARY KEY,
  photo_id INTEGER NOT NULL REFERENCES photos(id),
  box TEXT,                 -- JSON [x, y, width, height] pixels; NULL: whole
  landmarks TEXT,           -- JSON [[x, y] | null, ...] photo pixels
  landmarks_source TEXT CHECK (landmarks_source IN
                               ('clicked', 'predicted', 'imported')),
  landmarks_set_by TEXT,
  landmarks_set_at TEXT,
  individual_id INTEGER REFERENCES individuals(id),   -- current identity
  created_at TEXT NOT NULL);
CREATE INDEX annotations_photo ON annotations(photo_id);
CREATE INDEX annotations_individual ON annotations(individual_id);

CREATE TABLE thumbnails (
  annotation_id INTEGER PRIMARY KEY REFERENCES annotations(id),
  png BLOB NOT NULL);

CREATE TABLE embeddings (
  annotation_id INTEGER NOT NULL REFERENCES annotations(id),
  model TEXT NOT NULL,
  vector BLOB NOT NULL,               -- float32, little-endian
  set_at TEXT NOT NULL,
  PRIMARY KEY (annotation_id, model));
CREATE INDEX embeddings_model ON embeddings(model);

CREATE TABLE reviews (
  id INTEGER PRIMARY KEY,
  query_annotation_id INTEGER NOT NULL REFERENCES annotations(id),
  candidate_annotation_id INTEGER REFERENCES annotations(id),
  candidate_individual_id INTEGER REFERENCES individuals(id),
  decision TEXT NOT NULL CHECK (decision IN ('same', 'different',
      'cannot_tell', 'new', 'unidentifiable', 'undo')),
  reviewer TEXT NOT NULL CHECK (reviewer <> ''),
  decided_at TEXT NOT NULL,
  model TEXT,
  distance REAL,
  rank INTEGER,
  threshold REAL,
  supersedes INTEGER UNIQUE REFERENCES reviews(id),
  -- the query's individual before this decision, to restore on undo
  previous_individual_id INTEGER REFERENCES individuals(id),
  reason TEXT NOT NULL DEFAULT '');
CREATE INDEX reviews_query ON reviews(query_annotation_id);

CREATE TABLE identity_events (
  id INTEGER PRIMARY KEY,
  kind TEXT NOT NULL CHECK (kind IN ('create', 'assign', 'merge', 'split',
                                     'rename', 'retire')),
  individual_id INTEGER REFERENCES individuals(id),
  other_individual_id INTEGER REFERENCES individuals(id),
  annotation_id INTEGER REFERENCES annotations(id),
  review_id INTEGER REFERENCES reviews(id),
  detail TEXT NOT NULL DEFAULT '{}',  -- JSON: names, moved annotations
  reviewer TEXT NOT NULL CHECK (reviewer <> ''),
  reason TEXT NOT NULL DEFAULT '',
  at TEXT NOT NULL);
CREATE INDEX identity_events_annotation ON identity_events(annotation_id);

CREATE TRIGGER reviews_no_update BEFORE UPDATE ON reviews
  BEGIN SELECT RAISE(ABORT, 'reviews are append-only'); END;
CREATE TRIGGER reviews_no_delete BEFORE DELETE ON reviews
  BEGIN SELECT RAISE(ABORT, 'reviews are append-only'); END;
CREATE TRIGGER events_no_update BEFORE UPDATE ON identity_events
  BEGIN SELECT RAISE(ABORT, 'identity events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON identity_events
  BEGIN SELECT RAISE(ABORT, 'identity events are append-only'); END;
"""

# Version 2: the nearest-match cache behind "most confident first", and a
# search version that every change to what a search sees bumps (triggers, so
# no writer can forget), letting readers keep their embedding matrix cached.
_VERSION_2 = """
CREATE TABLE nearest (
  annotation_id INTEGER NOT NULL REFERENCES annotations(id),
  model TEXT NOT NULL,
  distance REAL NOT NULL,
  individual_id INTEGER REFERENCES individuals(id),
  computed_at TEXT NOT NULL,
  PRIMARY KEY (annotation_id, model));
CREATE INDEX nearest_distance ON nearest(model, distance);

INSERT OR REPLACE INTO settings VALUES ('search_version', '0');
CREATE TRIGGER search_embedding_insert AFTER INSERT ON embeddings BEGIN
  UPDATE settings SET value = value + 1 WHERE key = 'search_version'; END;
CREATE TRIGGER search_embedding_update AFTER UPDATE ON embeddings BEGIN
  UPDATE settings SET value = value + 1 WHERE key = 'search_version'; END;
CREATE TRIGGER search_embedding_delete AFTER DELETE ON embeddings BEGIN
  UPDATE settings SET value = value + 1 WHERE key = 'search_version'; END;
CREATE TRIGGER search_identity AFTER UPDATE OF individual_id ON annotations
  BEGIN UPDATE settings SET value = value + 1
        WHERE key = 'search_version'; END;
CREATE TRIGGER search_viewpoint AFTER UPDATE OF viewpoint ON photos BEGIN
  UPDATE settings SET value = value + 1 WHERE key = 'search_version'; END;
"""

# Version 3: what changed, not only that something did. Each change of what
# a search sees appends the annotation's id, so a reader patches its cached
# matrix with those rows instead of reloading every embedding.
_VERSION_3 = """
CREATE TABLE search_changes (
  id INTEGER PRIMARY KEY,
  annotation_id INTEGER NOT NULL);
DROP TRIGGER search_embedding_insert;
DROP TRIGGER search_embedding_update;
DROP TRIGGER search_embedding_delete;
DROP TRIGGER search_identity;
DROP TRIGGER search_viewpoint;
DELETE FROM settings WHERE key = 'search_version';
CREATE TRIGGER search_embedding_insert AFTER INSERT ON embeddings BEGIN
  INSERT INTO search_changes (annotation_id) VALUES (NEW.annotation_id); END;
CREATE TRIGGER search_embedding_update AFTER UPDATE ON embeddings BEGIN
  INSERT INTO search_changes (annotation_id) VALUES (OLD.annotation_id);
  INSERT INTO search_changes (annotation_id) VALUES (NEW.annotation_id); END;
CREATE TRIGGER search_embedding_delete AFTER DELETE ON embeddings BEGIN
  INSERT INTO search_changes (annotation_id) VALUES (OLD.annotation_id); END;
CREATE TRIGGER search_identity AFTER UPDATE OF individual_id ON annotations
  BEGIN INSERT INTO search_changes (annotation_id) VALUES (NEW.id); END;
CREATE TRIGGER search_viewpoint AFTER UPDATE OF viewpoint ON photos BEGIN
  INSERT INTO search_changes (annotation_id)
    SELECT id FROM annotations WHERE photo_id = NEW.id; END;
"""

MIGRATIONS = (_VERSION_1, _VERSION_2, _VERSION_3)
CURRENT_VERSION = len(MIGRATIONS)


def version(connection: sqlite3.Connection) -> int:
  """The file's schema version; 0 for an empty file."""
  found = connection.execute(
      "SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchone()
  if not found:
    return 0
  return connection.execute('SELECT version FROM schema_version').fetchone()[0]


def upgrade(connection: sqlite3.Connection, target: int = CURRENT_VERSION
            ) -> int:
  """Applies the missing migrations up to `target` in one transaction.

  Returns the version the file had. Raises ValueError for a file from a
  newer lmid-tf (its tables may mean things this version does not know).
  """
  connection.execute('BEGIN IMMEDIATE')
  try:
    before = version(connection)
    if before > CURRENT_VERSION:
      raise ValueError(f'catalogue schema version {before} is newer than this '
                       f'lmid-tf knows ({CURRENT_VERSION}): upgrade lmid-tf')
    for step in range(before, target):
      # executescript would COMMIT; run the statements one by one instead.
      for statement in _statements(MIGRATIONS[step]):
        connection.execute(statement)
      connection.execute('UPDATE schema_version SET version = ?', (step + 1,))
    connection.execute('COMMIT')
  except BaseException:
    connection.execute('ROLLBACK')
    raise
  return before


def _statements(script: str) -> list:
  """The statements of a script (triggers hold ';' inside BEGIN ... END)."""
  statements, current = [], ''
  for line in script.splitlines(keepends=True):
    current += line
    if sqlite3.complete_statement(current):
      statements.append(current.strip())
      current = ''
  code = lambda s: '\n'.join(l for l in s.splitlines()
                             if not l.lstrip().startswith('--')).strip()
  return [s for s in statements if code(s)]
