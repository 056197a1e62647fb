"""One readable line per segment change or trigger (``segstream tail``, the demo).

>>> describe_record("segstream.triggers", {"kind": "win_back", "customer_id": "c1",
...     "ts": 0, "reason": "entered lifecycle=dormant"})
'1970-01-01 00:00 TRIGGER win_back        c1  entered lifecycle=dormant'
>>> describe_record("segstream.segment-changes", {"dimension": "lifecycle",
...     "customer_id": "c1", "from_segment": "at_risk", "to_segment": "dormant",
...     "ts": 0, "reason": "days_since_order=61.0 >= 60.0"})
'1970-01-01 00:00 CHANGE  lifecycle       c1  at_risk → dormant  (days_since_order=61.0 >= 60.0)'
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def describe_record(topic: str, record: dict[str, Any]) -> str:
    """A change or trigger as one line: event time, what, who, why."""
    when = datetime.fromtimestamp(record["ts"] / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
    if "kind" in record:
        return f"{when} TRIGGER {record['kind']:<15} {record['customer_id']}  {record['reason']}"
    return (
        f"{when} CHANGE  {record['dimension']:<15} {record['customer_id']}  "
        f"{record['from_segment'] or '∅'} → {record['to_segment']}  ({record['reason']})"
    )
