-- The read models of the orders example, created before Ordo starts.
-- Ordo creates the event store (`order_events`) and its own tables itself;
-- the tables an SQL route writes are the user's.

-- One row per order: its customer, status and total.
CREATE TABLE IF NOT EXISTS orders (
    order_id   text PRIMARY KEY,
    customer   text,
    status     text NOT NULL,
    total      numeric(12, 2),
    placed_at  timestamptz,
    version    bigint NOT NULL
);

-- Per customer: orders placed and their amount.
CREATE TABLE IF NOT EXISTS customer_totals (
    customer text PRIMARY KEY,
    orders   bigint NOT NULL,
    amount   numeric(14, 2) NOT NULL
);
