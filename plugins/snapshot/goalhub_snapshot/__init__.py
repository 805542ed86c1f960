"""goalhub_snapshot: RTC snapshots off while an exclusive goal runs, back on when it ends.

Seed 000, ``snapshot_rtc_sources``: "Disable snapshot on exclusive start, enable at end".
Calls go to the BytePlus RTC OpenAPI when ``GOALHUB_RTC_ACCESS_KEY``/``GOALHUB_RTC_SECRET_KEY``
are set (``goalhub_snapshot.settings``) and are only recorded in ``outbound`` otherwise.
"""

from goalhub_snapshot.receivers import resume_snapshot_rtc_sources, snapshot_rtc_sources

__all__ = ["resume_snapshot_rtc_sources", "snapshot_rtc_sources"]
__version__ = "0.1.0"
