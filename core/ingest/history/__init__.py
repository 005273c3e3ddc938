"""Listening history from Spotify's data exports, turned into feedback events with no PII left.

Two export kinds are read (each file a JSON array):

* **extended streaming history** (``Streaming_History_Audio_*.json``; older ``endsong_*.json``): ``ts``,
  ``ms_played``, ``spotify_track_uri``, track/artist/album names, ``reason_start``, ``reason_end``,
  ``shuffle``, ``skipped``, ``offline``, ``incognito_mode`` and PII (``ip_addr``, ``platform``,
  ``conn_country``; older files ``username``, ``ip_addr_decrypted``, ``user_agent_decrypted``);
* **account data** (``StreamingHistory_music_*.json``): ``endTime``, ``artistName``, ``trackName``,
  ``msPlayed``; tracks are matched to the catalog by normalised artist and title.

Each stream becomes one event:

* ``track_completed`` when ``reason_end`` is ``trackdone`` or at least 80% of a track of known duration
  was played;
* ``track_skipped`` when ``skipped`` is true, ``reason_end`` is ``fwdbtn``, or under 30 s were played;
* ``play`` otherwise.

Podcast and audiobook rows (no track URI) and incognito sessions are dropped. The export owner
(``username``, else the ``user`` argument, else the export's folder name) becomes a keyed pseudonym;
nothing else about the person is kept, and rejected rows are stored with PII fields removed. Event ids
are hashes of (user, time, track, ms played), so re-importing a file adds nothing.

The modules, in the order a file goes through them: ``parsing`` (export bytes to typed columns),
``importer`` (drop, validate, match, classify; :class:`HistoryImporter`), ``catalog_index`` (durations
and name matching), ``event_table`` (the one builder of event rows) and ``event_ids`` (the id hashes).
"""

from core.ingest.history.catalog_index import normalise_text
from core.ingest.history.importer import HistoryImporter

__all__ = ["HistoryImporter", "normalise_text"]
