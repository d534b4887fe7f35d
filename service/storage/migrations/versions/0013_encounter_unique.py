"""An Encounter is one stay of one patient: unique indexes on patients.encounter_id and on the
kept identifier (by system and value among identifiers with a system, by value among those
without: NULLs are distinct in a unique index on SQLite and PostgreSQL alike, so one composite
index would let a system-less identifier repeat). The index on the id also serves
GET /fhir/Encounter/{id}, which scanned the table before.

A database upgraded from 0012 may hold one Encounter for two patients (stored before the service
refused it). Which patient's stay it is cannot be told from the database, so the upgrade does not
pick one: it stops before changing anything, naming each duplicated Encounter and the patients
holding it, and an operator clears the wrong patients' Encounter (docs/service.md, "Migration
0013"); the next start-up upgrades.

Revision ID: 0013
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

SHOWN = 20  # duplicated Encounters listed; the rest counted


def upgrade() -> None:
    duplicated = _duplicates(op.get_bind())
    if duplicated:
        lines = [f"  {what}: patients {', '.join(pids)}" for what, pids in duplicated[:SHOWN]]
        if len(duplicated) > SHOWN:
            lines.append(f"  ... and {len(duplicated) - SHOWN} more")
        raise RuntimeError(
            f"migration 0013 stopped, nothing was changed: {len(duplicated)} Encounter(s) are stored as the stay of "
            "more than one patient, and an Encounter is one stay of one patient:\n" + "\n".join(lines) + "\n"
            "Decide whose stay each one is, clear the others' (UPDATE patients SET encounter_id = NULL WHERE id = "
            "'...' for an id; SET encounter_system = NULL, encounter_value = NULL for an identifier), then start "
            "the service again (docs/service.md, 'Migration 0013').")
    op.create_index("ux_patients_encounter_id", "patients", ["encounter_id"], unique=True)
    op.create_index("ux_patients_encounter_identifier", "patients", ["encounter_system", "encounter_value"], unique=True,
                    sqlite_where=sa.text("encounter_system IS NOT NULL"),
                    postgresql_where=sa.text("encounter_system IS NOT NULL"))
    op.create_index("ux_patients_encounter_value_no_system", "patients", ["encounter_value"], unique=True,
                    sqlite_where=sa.text("encounter_system IS NULL"), postgresql_where=sa.text("encounter_system IS NULL"))


def _duplicates(bind) -> list[tuple[str, list[str]]]:
    """(the Encounter as an operator finds it, the ids of the patients holding it) of each
    Encounter id or kept identifier that more than one patient holds. GROUP BY puts NULL systems
    together, as the system-less index does."""
    p = sa.table("patients", sa.column("id", sa.String()), sa.column("encounter_id", sa.String()),
                 sa.column("encounter_system", sa.String()), sa.column("encounter_value", sa.String()))
    out = []
    ids = sa.select(p.c.encounter_id).where(p.c.encounter_id.is_not(None)).group_by(p.c.encounter_id) \
        .having(sa.func.count() > 1)
    held: dict = {}
    for row in bind.execute(sa.select(p.c.encounter_id, p.c.id).where(p.c.encounter_id.in_(ids))
                            .order_by(p.c.encounter_id, p.c.id)):
        held.setdefault(row.encounter_id, []).append(row.id)
    out += [(f"Encounter id {eid!r}", pids) for eid, pids in held.items()]
    keys = sa.select(p.c.encounter_system, p.c.encounter_value).where(p.c.encounter_value.is_not(None)) \
        .group_by(p.c.encounter_system, p.c.encounter_value).having(sa.func.count() > 1).subquery()
    same_system = sa.or_(p.c.encounter_system == keys.c.encounter_system,
                         sa.and_(p.c.encounter_system.is_(None), keys.c.encounter_system.is_(None)))
    held = {}
    for row in bind.execute(sa.select(p.c.encounter_system, p.c.encounter_value, p.c.id)
                            .join(keys, sa.and_(same_system, p.c.encounter_value == keys.c.encounter_value))
                            .order_by(p.c.encounter_system, p.c.encounter_value, p.c.id)):
        held.setdefault((row.encounter_system, row.encounter_value), []).append(row.id)
    out += [(f"Encounter identifier system {system!r} value {value!r}", pids) for (system, value), pids in held.items()]
    return out


def downgrade() -> None:
    op.drop_index("ux_patients_encounter_value_no_system", "patients")
    op.drop_index("ux_patients_encounter_identifier", "patients")
    op.drop_index("ux_patients_encounter_id", "patients")
