-- Club members saved in the run's data interval (every member with full_refresh), for
-- include/mappings/legacy_members_to_esp.yaml. Half-open window: the legacy nightly job saves
-- many rows at exactly 02:00, and each belongs to one day only. A soft-deleted member's club
-- fields are sent empty.
SELECT member_no,
       email,
       first_name,
       last_name,
       CASE WHEN deleted THEN NULL ELSE club_level END AS club_level,
       CASE WHEN deleted THEN NULL ELSE points END AS points,
       joined,
       opted_out,
       deleted,
       updated_at
FROM club.members
{% if not params.full_refresh %}
WHERE updated_at >= %(since)s::timestamptz AND updated_at < %(until)s::timestamptz
{% endif %}
ORDER BY updated_at, member_no
