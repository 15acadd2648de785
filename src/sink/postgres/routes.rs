//! The sink's routes, ready to write: tables (event store or projection)
//! and SQL routes, each with the events it takes. With one table route that
//! takes every event (the section's own `table` and `mode`), the table is the
//! key state, as it always was; with any other set of routes, each key's
//! last handled version is kept in `ordo_key_versions` (per consumer group)
//! in the batch's transaction, and each SQL route's last applied version per
//! key in `ordo_route_versions`, which makes it run once per (route, key,
//! version).

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;

use super::columns::Column;
use super::sql_route::{self, Statement};
use super::sql_send;
use super::{PostgresConfig, SinkMode, Tables, Target};
use crate::consume::source::Unrouted;
use crate::record::Event;
use crate::sink::route::Filter;
use crate::sink::Lease;

/// An event with the partition it came from: the batches of several
/// partitions are written together.
pub(super) type Row<'a> = (&'a Lease, &'a Event);

/// A route into a table.
#[derive(Debug, Clone)]
pub(crate) struct TableRoute {
    pub name: String,
    pub filter: Filter,
    pub tables: Tables,
    pub mode: SinkMode,
    pub columns: Arc<[Column]>,
}

/// A route of statements.
#[derive(Debug, Clone)]
pub(crate) struct SqlRoute {
    pub name: String,
    pub filter: Filter,
    pub statements: Vec<Statement>,
    /// A statement reads a payload path (the payload is parsed for it).
    pub paths: bool,
}

/// Every route of the sink, and where the key state is.
#[derive(Debug, Clone)]
pub(crate) struct Routes {
    pub tables: Vec<TableRoute>,
    pub sql: Vec<SqlRoute>,
    /// Ordo's own tables (the first table route's target, if any).
    pub own: Tables,
    /// One table route takes every event: the table is the key state.
    pub single: bool,
    /// The event store route that takes every event, if any (the first):
    /// its table is the key state, as a single table's is (with the
    /// versions passed and the keys projections deleted), so no key state
    /// of its own is written. Without one, `ordo_key_versions` is.
    pub store: Option<usize>,
    pub unrouted: Unrouted,
    /// Every SQL route statement can be prepared by name, so a batch's
    /// runs travel as `EXECUTE` texts (see [`sql_send`]).
    pub by_name: bool,
    /// The connections they are prepared on.
    pub named: Arc<sql_send::Named>,
}

/// The routes could not be built from the configuration (not validated?).
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct RouteError {
    pub key: String,
    pub reason: String,
}

impl Routes {
    /// The routes `pg` configures (validated: `Settings::load` did it).
    pub fn new(pg: &PostgresConfig, unrouted: Unrouted) -> Result<Self, RouteError> {
        let mut tables = Vec::new();
        let mut sql = Vec::new();
        for (i, r) in pg.routes.iter().enumerate() {
            let at = |field: &str, reason: String| RouteError {
                key: format!("{}.{field}", r.key(i)),
                reason,
            };
            let filter = r.filter().map_err(|(k, why)| at(&k, why))?;
            match r.target() {
                Some(Target::Table { table, mode }) => tables.push(TableRoute {
                    name: r.name.clone(),
                    filter,
                    tables: Tables::new(&pg.schema, table, r.payload),
                    mode,
                    columns: r.columns.clone().into(),
                }),
                Some(Target::Sql(text)) => {
                    let statements = sql_route::parse(text).map_err(|why| at("sql", why))?;
                    sql.push(SqlRoute {
                        name: r.name.clone(),
                        filter,
                        paths: statements
                            .iter()
                            .flat_map(|s| &s.params)
                            .any(|p| matches!(p, sql_route::Param::Path(_))),
                        statements,
                    })
                }
                None => return Err(at("table", "required, but not set".into())),
            }
        }
        if tables.is_empty() && sql.is_empty() {
            return Err(RouteError {
                key: "sink.postgres.routes".into(),
                reason: "no route".into(),
            });
        }
        let single = pg.single_table().is_some();
        let store = tables.iter().position(|r| {
            r.mode == SinkMode::EventStore
                && r.filter.topics.is_none()
                && r.filter.event_types.is_none()
        });
        let own = match tables.first() {
            Some(t) => t.tables.clone(),
            None => Tables::new(&pg.schema, "ordo_offsets", true),
        };
        Ok(Self {
            tables,
            own,
            single,
            store,
            unrouted,
            by_name: sql
                .iter()
                .all(|r: &SqlRoute| r.statements.iter().all(|s| s.preparable)),
            named: Default::default(),
            sql,
        })
    }

    /// Whether any route takes `event` of `topic`: a delete only a
    /// projection's.
    pub fn takes(&self, topic: &str, event: &Event) -> bool {
        let t = event.event_type.as_deref();
        if event.delete {
            return self
                .tables
                .iter()
                .any(|r| r.mode == SinkMode::Projection && r.filter.matches(topic, t));
        }
        self.tables.iter().any(|r| r.filter.matches(topic, t))
            || self.sql.iter().any(|r| r.filter.matches(topic, t))
    }

    /// The routes' names and targets, for log lines and `ordo check`.
    pub fn describe(&self) -> String {
        let tables = self.tables.iter().map(|r| {
            format!(
                "{} -> {} ({})",
                r.name,
                r.tables.target_display,
                r.mode.as_str()
            )
        });
        let sql = self
            .sql
            .iter()
            .map(|r| format!("{} -> {} SQL statement(s)", r.name, r.statements.len()));
        tables.chain(sql).collect::<Vec<_>>().join(", ")
    }
}

/// The explicit key state lookup: one primary-key probe per key.
pub(super) fn key_versions_sql(t: &Tables) -> String {
    format!(
        "SELECT k.key, v.version FROM unnest($1::text[]) AS k(key) \
         JOIN {} AS v ON v.consumer_group = $2 AND v.key = k.key",
        t.key_versions
    )
}

/// Each key's highest version among `pairs`, as two arrays in key order
/// (rows locked in one order: concurrent batches cannot deadlock on them).
fn newest_per_key<'a>(pairs: impl Iterator<Item = (&'a str, i64)>) -> (Vec<&'a str>, Vec<i64>) {
    let mut newest: HashMap<&str, i64> = HashMap::new();
    for (key, version) in pairs {
        let slot = newest.entry(key).or_insert(version);
        *slot = (*slot).max(version);
    }
    let mut sorted: Vec<(&str, i64)> = newest.into_iter().collect();
    sorted.sort_unstable();
    sorted.into_iter().unzip()
}

/// The key state read from the event store route that takes every event
/// ([`Routes::store`]): a stream's highest version there, or a version
/// passed to the dead-letter topic or deleted from a projection by a
/// tombstone (neither reaches the event store).
pub(super) fn store_key_state_sql(routes: &Routes, store: &TableRoute) -> String {
    let side = |table: &str, target: &str, alias: &str| {
        let target = super::quote_literal(target);
        format!(
            "CASE WHEN (SELECT min({alias}0.key) FROM {table} AS {alias}0 WHERE {alias}0.target_table = {target}) IS NOT NULL \
             THEN (SELECT {alias}.version FROM {table} AS {alias} WHERE {alias}.target_table = {target} AND {alias}.key = k.key) END"
        )
    };
    let t = &store.tables;
    let mut sides = vec![side(&t.passed_versions, &t.target_display, "x")];
    for (i, r) in routes.tables.iter().enumerate() {
        if r.mode == SinkMode::Projection {
            let d = &r.tables;
            sides.push(side(&d.deleted_keys, &d.target_display, &format!("d{i}_")));
        }
    }
    format!(
        "SELECT s.key, s.version FROM (\
         SELECT k.key, GREATEST((SELECT max(e.version) FROM {} AS e WHERE e.stream = k.key), {}) AS version \
         FROM unnest($1::text[]) AS k(key) OFFSET 0) AS s WHERE s.version IS NOT NULL",
        t.target,
        sides.join(", ")
    )
}

/// Records the versions passed to the dead-letter topic (refused in every
/// route; a replay of its letter then applies it once) and those no route
/// took (`source.unrouted = "ignore"`), where the event store route that
/// takes every event is the key state ([`Routes::store`]).
pub(super) async fn store_passed(
    tx: &Transaction<'_>,
    routes: &Routes,
    store: &TableRoute,
    group: &str,
    passed: &[(String, i64)],
    ignored: &[(&str, i64)],
) -> Result<(), tokio_postgres::Error> {
    let (keys, versions) = newest_per_key(
        passed
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .chain(ignored.iter().copied()),
    );
    if keys.is_empty() {
        return Ok(());
    }
    let t = &store.tables;
    tx.execute(
        &format!(
            "INSERT INTO {} AS x (target_table, key, version) \
             SELECT $1, k, v FROM unnest($2::text[], $3::bigint[]) AS u(k, v) \
             ON CONFLICT (target_table, key) DO UPDATE SET version = EXCLUDED.version, recorded_at = now() \
             WHERE x.version < EXCLUDED.version",
            t.passed_versions
        ),
        &[&t.target_display, &keys, &versions],
    )
    .await?;
    store_refused(tx, &routes.own, group, passed).await
}

/// Records the events refused in every route and dead-lettered: a replay
/// of its letter applies it once.
async fn store_refused(
    tx: &Transaction<'_>,
    t: &Tables,
    group: &str,
    passed: &[(String, i64)],
) -> Result<(), tokio_postgres::Error> {
    if passed.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = passed.iter().map(|(k, _)| k.as_str()).collect();
    let versions: Vec<i64> = passed.iter().map(|(_, v)| *v).collect();
    let stmt = tx
        .prepare_cached(&format!(
            "INSERT INTO {} (consumer_group, key, version) \
             SELECT $1, k, v FROM unnest($2::text[], $3::bigint[]) AS u(k, v) ON CONFLICT DO NOTHING",
            t.refused_events
        ))
        .await?;
    tx.execute(&stmt, &[&group, &keys, &versions]).await?;
    Ok(())
}

/// Records each key's highest version handled by the batch (applied in
/// its routes, or passed to the dead-letter topic), where no event store
/// route is the key state.
pub(super) async fn store_key_versions(
    tx: &Transaction<'_>,
    t: &Tables,
    group: &str,
    events: &[Row<'_>],
    passed: &[(String, i64)],
) -> Result<(), tokio_postgres::Error> {
    let (keys, versions) = newest_per_key(
        events
            .iter()
            .map(|(_, e)| (e.key.as_str(), e.sequence))
            .chain(passed.iter().map(|(k, v)| (k.as_str(), *v))),
    );
    if keys.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached(&format!(
            "INSERT INTO {} AS kv (consumer_group, key, version) \
             SELECT $1, k, v FROM unnest($2::text[], $3::bigint[]) AS u(k, v) \
             ON CONFLICT (consumer_group, key) DO UPDATE SET version = EXCLUDED.version \
             WHERE kv.version < EXCLUDED.version",
            t.key_versions
        ))
        .await?;
    tx.execute(&stmt, &[&group, &keys, &versions]).await?;
    store_refused(tx, t, group, passed).await
}

/// A statement of an SQL route failed: which, and why.
#[derive(Debug)]
pub(super) struct StatementFailed {
    pub route: String,
    /// 1-based.
    pub statement: usize,
    pub source: tokio_postgres::Error,
}

/// Runs the SQL routes for `events` (each with the partition it came from;
/// in order per partition): for each route, the events it takes whose
/// version is above the route's last applied version of their key. The
/// statements of a batch are sent together and run in order (see
/// [`sql_send`]). The
/// number of (event, route) runs.
///
/// Each SQL route runs in one transaction at a time: a lock on the route's
/// name, held until commit, taken in name order. Statements of different
/// partitions' transactions may touch the same rows (a customer's totals)
/// in different orders, so they wait for each other instead of
/// deadlocking; and the route's guard rows (its applied version per key)
/// are read and moved by one writer at a time. The lock is part of the
/// route's name space, not the schema's: two deployments running a route
/// of the same name wait for each other, as their shared guard rows
/// require anyway. The caller runs this last in its transaction, so the
/// lock is held for as short a time as the commit allows.
pub(super) async fn run_sql(
    tx: &Transaction<'_>,
    routes: &Routes,
    group: &str,
    events: &[Row<'_>],
) -> Result<u64, StatementFailed> {
    let db = |e: tokio_postgres::Error| StatementFailed {
        route: String::new(),
        statement: 0,
        source: e,
    };
    // (route index, event index) in batch order.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (ei, (lease, e)) in events.iter().enumerate() {
        if e.delete {
            continue;
        }
        for (ri, r) in routes.sql.iter().enumerate() {
            if r.filter.matches(&lease.topic, e.event_type.as_deref()) {
                runs.push((ri, ei));
            }
        }
    }
    if runs.is_empty() {
        return Ok(0);
    }
    // What each run binds (per statement), taken before the locks: the
    // payload parsed once per event, and only for a route that reads a path.
    let mut docs: HashMap<usize, serde_json::Value> = HashMap::new();
    let bound: Vec<Vec<Vec<sql_route::TextParam>>> = runs
        .iter()
        .map(|&(ri, ei)| {
            let (route, (lease, event)) = (&routes.sql[ri], &events[ei]);
            let doc = match route.paths {
                true => &*docs.entry(ei).or_insert_with(|| {
                    serde_json::from_str(event.payload.as_str()).unwrap_or(serde_json::Value::Null)
                }),
                false => &serde_json::Value::Null,
            };
            route
                .statements
                .iter()
                .map(|s| s.values(event, &lease.topic, lease.partition, doc))
                .collect()
        })
        .collect();
    let t = &routes.own;
    let mut running: Vec<&str> = runs
        .iter()
        .map(|&(ri, _)| routes.sql[ri].name.as_str())
        .collect();
    running.sort_unstable();
    running.dedup();
    let serialize = tx
        .prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended('ordo route ' || $1, 0))")
        .await
        .map_err(db)?;
    let mut pairs: Vec<(&str, &str)> = runs
        .iter()
        .map(|&(ri, ei)| (routes.sql[ri].name.as_str(), events[ei].1.key.as_str()))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    let names: Vec<&str> = pairs.iter().map(|(r, _)| *r).collect();
    let keys: Vec<&str> = pairs.iter().map(|(_, k)| *k).collect();
    // Under the route's lock, what is committed is the route's state.
    let read = tx
        .prepare_cached(&format!(
            "SELECT g.route, g.key, g.version FROM {} AS g \
             JOIN unnest($1::text[], $2::text[]) AS u(r, k) ON g.route = u.r AND g.key = u.k",
            t.route_versions
        ))
        .await
        .map_err(db)?;
    // Sent together: the locks, in name order, then the read, which
    // PostgreSQL runs once they are held (one round trip under the locks).
    let lock_params: Vec<[&(dyn ToSql + Sync); 1]> =
        running.iter().map(|name| [name as _]).collect();
    let locks = futures::future::try_join_all(lock_params.iter().map(|p| tx.query(&serialize, p)));
    let (_, rows) = futures::future::try_join(locks, tx.query(&read, &[&names, &keys]))
        .await
        .map_err(db)?;
    let mut applied: HashMap<(&str, &str), Option<i64>> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let (route, key): (&str, &str) = (row.get(0), row.get(1));
        // The pairs asked for hold the same text, borrowed for the batch.
        if let Ok(i) = pairs.binary_search(&(route, key)) {
            applied.insert(pairs[i], row.get(2));
        }
    }
    // A replayed event at or below a route's applied version runs only if
    // it was refused (then it ran nowhere): its mark is taken, once, by
    // whichever replay runs it.
    let behind: Vec<(&str, i64)> = events
        .iter()
        .filter(|(_, e)| e.replayed)
        .map(|(_, e)| (e.key.as_str(), e.sequence))
        .collect();
    let mut refused: std::collections::HashSet<(String, i64)> = Default::default();
    if !behind.is_empty() {
        let keys: Vec<&str> = behind.iter().map(|(k, _)| *k).collect();
        let versions: Vec<i64> = behind.iter().map(|(_, v)| *v).collect();
        let taken = tx
            .query(
                &format!(
                    "DELETE FROM {} AS x USING unnest($2::text[], $3::bigint[]) AS u(k, v) \
                     WHERE x.consumer_group = $1 AND x.key = u.k AND x.version = u.v \
                     RETURNING x.key, x.version",
                    t.refused_events
                ),
                &[&group, &keys, &versions],
            )
            .await
            .map_err(db)?;
        refused = taken.iter().map(|r| (r.get(0), r.get(1))).collect();
    }
    // Which runs go, decided in order: a (route, key) version at or below
    // the applied one is not run again.
    let mut calls: Vec<sql_send::Call> = Vec::new();
    let mut moved: HashMap<(&str, &str), i64> = HashMap::new();
    let mut runs_done = 0u64;
    for (&(ri, ei), values) in runs.iter().zip(bound) {
        let (route, (_, event)) = (&routes.sql[ri], &events[ei]);
        let pair = (route.name.as_str(), event.key.as_str());
        let slot = applied.entry(pair).or_insert(None);
        if slot.is_some_and(|v| event.sequence <= v) {
            if !refused.contains(&(event.key.clone(), event.sequence)) {
                continue;
            }
        } else {
            *slot = Some(event.sequence);
            moved.insert(pair, event.sequence);
        }
        runs_done += 1;
        calls.extend(
            values
                .into_iter()
                .enumerate()
                .map(|(si, values)| (ri, si, values)),
        );
    }
    if moved.is_empty() {
        sql_send::send(tx, routes, &calls).await?;
        return Ok(runs_done);
    }
    let mut done: Vec<((&str, &str), i64)> = moved.into_iter().collect();
    done.sort_unstable();
    let names: Vec<&str> = done.iter().map(|((r, _), _)| *r).collect();
    let keys: Vec<&str> = done.iter().map(|((_, k), _)| *k).collect();
    let versions: Vec<i64> = done.iter().map(|(_, v)| *v).collect();
    let record = tx
        .prepare_cached(&format!(
            "INSERT INTO {} AS g (route, key, version) \
             SELECT r, k, v FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(r, k, v) \
             ON CONFLICT (route, key) DO UPDATE SET version = EXCLUDED.version",
            t.route_versions
        ))
        .await
        .map_err(db)?;
    // The guard rows move in the same round trip as the runs: one
    // transaction, so a run that fails leaves neither.
    let (sent, recorded) = futures::future::join(
        sql_send::send(tx, routes, &calls),
        tx.execute(&record, &[&names, &keys, &versions]),
    )
    .await;
    sent?;
    recorded.map_err(db)?;
    Ok(runs_done)
}
