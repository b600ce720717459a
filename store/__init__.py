"""The one MongoDB module for leads and their history: the `leads` and `score_history`
collections are read and written only here.

- `store.indexes`: their indexes (created by the sink before its first write);
- `store.plan`: the pure write plan — LeadChanges coalesced per lead and history row into
  version-guarded upserts (ADR 0005, 0023);
- `store.writes`: the bulk writes of a batch, the email index settled, temporary faults retried,
  a change MongoDB refuses isolated by halving the batch;
- `store.erase`: erasures written in order within a batch (ADR 0020);
- `store.queries`: the reads the views make (lists, leaderboard, stage counts, timeline,
  export, the system-health comparison).

The sink agent (`agents.sink`) and the views (`web.leads`, `web.data_rights`,
`web.system_health`) call it. Other collections stay with the module that owns them: `projects`
(`app.projects`, indexes in `app.mongo`), `users`/`sessions` (`app.users`), `audit_log`
(`app.audit`), `key_usage` (`app.key_usage`), `automation_firings` (`app.firings`) and
`dead_letters` (`app.dead_letters`) — an erasure deletes from the last two as part of its one
idempotent step.
"""

from store.erase import write_in_order
from store.indexes import ensure_indexes
from store.plan import MaterializationPlan, plan_writes
from store.writes import Refused, describe_refusal, write_changes, write_plan

__all__ = [
    "MaterializationPlan",
    "Refused",
    "describe_refusal",
    "ensure_indexes",
    "plan_writes",
    "write_changes",
    "write_in_order",
    "write_plan",
]
