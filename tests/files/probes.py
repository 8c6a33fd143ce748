"""Authorization-matrix probes for stored files (see tests/access/matrix_kit.py).

No route serves stored files yet: the actions (telecare/files/service.py) are called by the domains whose
records own files, and their routes come with those domains (message attachments, skin-case photos). The
matrix sends the conventional requests and expects them refused or absent; the actions' authorisation is
tested directly in tests/files/test_service.py."""

from __future__ import annotations

from telecare.access.policy import Action, Resource
from tests.access.matrix_kit import Caller, Rel, Target, World, absent, targets

API = "/api/v1"
WHY = "served by the owning domain's routes (messages, skin cases), none yet"


@targets(Resource.BINARY)
async def _file_target(world: World, caller: Caller, rel: Rel) -> Target:
    rec = {Rel.OWN: world.a.own, Rel.SAME_ORG: world.a.other, Rel.OTHER_ORG: world.b.own}[rel]
    return Target(None, rec.id, rec.markers)


absent(Resource.BINARY, Action.READ, "GET", f"{API}/files/{{id}}", reason=WHY)
absent(Resource.BINARY, Action.SEARCH, "GET", f"{API}/patients/{{patient_id}}/files", reason=WHY)
absent(Resource.BINARY, Action.CREATE, "POST", f"{API}/patients/{{patient_id}}/files", reason=WHY)
absent(Resource.BINARY, Action.UPDATE, "PATCH", f"{API}/files/{{id}}", reason=WHY)
absent(
    Resource.BINARY, Action.DELETE, "DELETE", f"{API}/files/{{id}}", reason="files are kept with their record"
)
absent(Resource.BINARY, Action.EXPORT, "GET", f"{API}/patients/{{patient_id}}/files/$export", reason=WHY)
