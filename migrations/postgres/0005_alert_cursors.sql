-- 0005 (PostgreSQL): the cursors of alert webhooks (`budget-ledger serve --alert-webhook URL`),
-- as SQLite's 0011: per URL, the last event id whose alert the URL acknowledged (a 2xx), or the
-- end of the feed when the URL was first configured. Delivery resumes after it. Not derived from
-- the events: operational state, written with UPDATE, so not append-only.
--
-- A cursor only moves forward: the store's upsert keeps GREATEST(stored, new)
-- (`PostgresLedger.advanceAlertCursor(for:to:)`), so a late or repeated acknowledgement of an
-- older alert changes nothing. Every server of one database that posts to the same URL shares
-- its row (docs/postgres.md, "Alert webhooks on PostgreSQL").
--
-- Types as 0001's rule: the id is `bigint`; updated_at_us is `bigint` UTC microseconds because
-- the store's clock stamps it (as on SQLite), not PostgreSQL's. The URL's limit is the store's
-- (`Ledger.alertURLBytesMax`), checked here too so plain SQL cannot store a key the server
-- would refuse.

CREATE TABLE alert_cursors (
    url text PRIMARY KEY CHECK (octet_length(url) BETWEEN 1 AND 2048),
    last_event_id bigint NOT NULL CHECK (last_event_id >= 0),
    updated_at_us bigint NOT NULL CHECK (updated_at_us >= 0)
);
