-- 0006 (PostgreSQL): withdrawing a price that has not taken effect yet (issue 18), as SQLite's
-- 0012 part 1, by appending: a row of `price_withdrawals` names the withdrawn row of
-- `model_prices`, which stays as it was (its UPDATE/DELETE/TRUNCATE triggers stay). Every lookup
-- skips a withdrawn row (`PostgresSQL.selectPriceForModel`, `selectPrices`, `selectLivePrice`),
-- so a consume falls back to whatever priced the model before. Replacing a future price is a
-- withdrawal and a new row in one transaction (`PostgresLedger.replacePrice`).
--
-- So a pattern may now have a second row at the same start once the first is withdrawn: 0001's
-- UNIQUE (model_pattern, effective_from_us, legacy_prefix) becomes a trigger that refuses a second
-- row only while the first is live (SQLite's model_prices_check_insert). A constraint cannot look
-- at another table, so the trigger serialises with the store's price writers and priced consumes
-- by taking the same transaction-level advisory lock as `setPrice` (`PostgresSQL.pricesLockKey`,
-- 0x4244_4C47_0001 = 72861104930817; `PostgresPricesLockTests` proves the two agree), which also
-- covers plain SQL writers.
--
-- A withdrawal is refused (by the store with LedgerError's wording, and here for every writer)
-- for a price already in effect at the withdrawal's time, and for a price whose start a recorded
-- consume it matches has reached (on PostgreSQL every consume counts, as `setPrice` counts them:
-- there are no reprices here). Types as 0001's rule: ids `bigint`, times `bigint` UTC
-- microseconds stamped by the store's clock. The migrator runs this in one transaction.

ALTER TABLE model_prices DROP CONSTRAINT model_prices_model_pattern_effective_from_us_legacy_prefix_key;
CREATE INDEX model_prices_pattern_start ON model_prices (model_pattern, effective_from_us);

CREATE TABLE price_withdrawals (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The withdrawn row of model_prices; a row is withdrawn once.
    price_id bigint NOT NULL UNIQUE REFERENCES model_prices (id),
    -- UTC microseconds: when it was withdrawn (before the price's start).
    withdrawn_at_us bigint NOT NULL CHECK (withdrawn_at_us >= 0),
    source text NOT NULL
);
CREATE TRIGGER price_withdrawals_forbid_update BEFORE UPDATE OR DELETE ON price_withdrawals
FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER price_withdrawals_forbid_truncate BEFORE TRUNCATE ON price_withdrawals
FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

CREATE FUNCTION model_prices_check_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(72861104930817);
    IF EXISTS (SELECT 1 FROM model_prices AS p
               WHERE p.model_pattern = NEW.model_pattern AND p.effective_from_us = NEW.effective_from_us
                 AND p.legacy_prefix = NEW.legacy_prefix
                 AND NOT EXISTS (SELECT 1 FROM price_withdrawals AS w WHERE w.price_id = p.id)) THEN
        RAISE EXCEPTION 'model_prices: the pattern already has a price from that time (withdraw it first)'
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER model_prices_check_insert BEFORE INSERT ON model_prices
FOR EACH ROW EXECUTE FUNCTION model_prices_check_insert();

CREATE FUNCTION price_withdrawals_check_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    price model_prices%ROWTYPE;
BEGIN
    PERFORM pg_advisory_xact_lock(72861104930817);
    SELECT * INTO price FROM model_prices WHERE id = NEW.price_id;
    IF price.effective_from_us <= NEW.withdrawn_at_us THEN
        RAISE EXCEPTION 'price_withdrawals: the price is already in effect; supersede it with a later start instead'
            USING ERRCODE = 'check_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM events AS e
               WHERE e.timestamp_us >= price.effective_from_us AND e.kind = 'consume'
                 AND (ledger_model_name(e.model) = price.model_pattern
                      OR (right(price.model_pattern, 1) = '*'
                          AND left(ledger_model_name(e.model), length(price.model_pattern) - 1)
                              = left(price.model_pattern, -1)))) THEN
        RAISE EXCEPTION 'price_withdrawals: a recorded consume has reached the price''s start; supersede it instead'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER price_withdrawals_check_insert BEFORE INSERT ON price_withdrawals
FOR EACH ROW EXECUTE FUNCTION price_withdrawals_check_insert();
