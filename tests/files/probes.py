"""Authorization-matrix probes for stored files (see tests/access/matrix_kit.py).

Files are downloaded by id (`GET /api/v1/files/{id}`); they are uploaded with the records that own them
(message attachments: tests/messaging), so creation has no route of its own here. The world stores one
photo per patient of the world, owned by nothing yet, uploaded by a clinician who reaches that patient."""

from __future__ import annotations

from telecare.access.policy import Action, Resource
from telecare.auth.principal import Principal
from telecare.files import service as files
from telecare.identity.models import Role
from tests.access.matrix_kit import Caller, Outcome, Rel, Target, World, absent, probe, targets, world_setup
from tests.files.images import jpeg, picture

API = "/api/v1"
WHY = "files are uploaded with the record that owns them (a message's attachments)"


@world_setup
async def _files_world(world: World) -> None:
    for party in (world.a, world.b):
        physician = party.accounts[Role.PHYSICIAN]
        for rec, uploader in ((party.own, physician), (party.other, party.bystander)):
            principal = Principal(
                user_id=uploader.user_id,
                org_id=party.org_id,
                role=Role.PHYSICIAN,
                kind="token",
                practitioner_id=uploader.practitioner_id,
            )
            async with world.db.unit_of_work() as s:
                row = await files.store_upload(
                    s,
                    principal,
                    patient_id=rec.id,
                    data=jpeg(picture((64, 48))),
                    declared_name=f"{rec.id}.jpg",
                )
                world.extra[f"file:{rec.id}"] = row.id


@targets(Resource.BINARY)
async def _file_target(world: World, caller: Caller, rel: Rel) -> Target:
    rec = {Rel.OWN: world.a.own, Rel.SAME_ORG: world.a.other, Rel.OTHER_ORG: world.b.own}[rel]
    return Target(None, rec.id, rec.markers, {"file_id": world.extra[f"file:{rec.id}"]})


@probe(Resource.BINARY, Action.READ)
async def _download(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/files/{t.data['file_id']}", headers=caller.headers)
    ok = r.status_code == 200 and r.headers.get("content-type", "").startswith("image/jpeg")
    return Outcome(r, ok and r.content[:2] == b"\xff\xd8")


absent(Resource.BINARY, Action.SEARCH, "GET", f"{API}/patients/{{patient_id}}/files", reason=WHY)
absent(Resource.BINARY, Action.CREATE, "POST", f"{API}/patients/{{patient_id}}/files", reason=WHY)
absent(Resource.BINARY, Action.UPDATE, "PATCH", f"{API}/files/{{id}}", reason=WHY)
absent(
    Resource.BINARY, Action.DELETE, "DELETE", f"{API}/files/{{id}}", reason="files are kept with their record"
)
absent(Resource.BINARY, Action.EXPORT, "GET", f"{API}/patients/{{patient_id}}/files/$export", reason=WHY)
