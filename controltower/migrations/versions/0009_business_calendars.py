"""Metrics branch: business calendars for deadline SLAs.

`ct_business_due(start, days, tz, workdays, holidays, cutoff, pickup)` is the SQL twin of
`controltower.calendars.due` (a property test holds them to the same instant): the start day
is the local date of `start` in `tz` when it is a business day (ISO weekday in `workdays`, not
in `holidays`) and the local time is before `cutoff`, else the next business day; the due day
is `days` business days later; the due time is `pickup` local time on it, else the last
microsecond of that local day. `timestamp AT TIME ZONE` reads a skipped local time with the
offset before the change and a repeated one with the offset after it: both the later instant,
as `calendars.local_instant` does. Every input is an argument (no table read), so the function
is IMMUTABLE and runs anywhere a query does (a Citus worker too).

`sla_open_items.calendar` names the calendar an open item's due time was computed by (NULL:
a plain target or a promise), so the breaches page can show it.

Revision ID: 0009_business_calendars
Revises: 0008_hop_causes
"""

from alembic import op

revision = "0009_business_calendars"
down_revision = "0008_hop_causes"
branch_labels = None
depends_on = None

_FUNCTION = """
CREATE FUNCTION ct_business_due(
    start timestamptz, days integer, tz text, workdays integer[], holidays date[], cutoff time, pickup time
) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    local timestamp := start AT TIME ZONE tz;
    day date := local::date;
    steps integer := 0;
    left_days integer := GREATEST(days, 0);
BEGIN
    IF NOT (EXTRACT(ISODOW FROM day)::integer = ANY(workdays) AND NOT day = ANY(COALESCE(holidays, '{}')))
       OR (cutoff IS NOT NULL AND local::time >= cutoff) THEN
        left_days := left_days + 1;
    END IF;
    WHILE left_days > 0 LOOP
        day := day + 1;
        steps := steps + 1;
        IF steps > 3660 + GREATEST(days, 0) * 7 THEN
            RAISE EXCEPTION 'ct_business_due: no business day within ten years of %', day;
        END IF;
        IF EXTRACT(ISODOW FROM day)::integer = ANY(workdays) AND NOT day = ANY(COALESCE(holidays, '{}')) THEN
            left_days := left_days - 1;
        END IF;
    END LOOP;
    IF pickup IS NOT NULL THEN
        RETURN (day + pickup) AT TIME ZONE tz;
    END IF;
    RETURN ((day + 1)::timestamp AT TIME ZONE tz) - interval '1 microsecond';
END
$$
"""


def upgrade() -> None:
    op.execute(_FUNCTION)
    op.execute("ALTER TABLE sla_open_items ADD COLUMN calendar text")


def downgrade() -> None:
    op.execute("ALTER TABLE sla_open_items DROP COLUMN calendar")
    op.execute("DROP FUNCTION ct_business_due(timestamptz, integer, text, integer[], date[], time, time)")
