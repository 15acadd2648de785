//! One batch, one transaction: the partition's progress (guarded by the lease
//! epoch), the events and any skipped gaps; or the batches of several
//! partitions in one transaction ([`group`]). The events are the per-key
//! sequence state too: a key's last applied version is the highest version
//! the target table holds for it (see [`super::PostgresSink::key_states`]).

use std::collections::BTreeMap;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::{Object, Transaction};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{accepts, to_sql_checked, IsNull, ToSql, Type};

use super::columns::{at, Column};
use super::routes::{self, Routes, Row, StatementFailed, TableRoute};
use super::{SinkMode, Tables};
use crate::consume::source::Unrouted;
use crate::sink::{Batch, Lease, Written};

pub enum WriteError {
    /// The lease epoch moved: another worker owns the partition now.
    Fenced,
    Db(tokio_postgres::Error),
    /// A statement of an SQL route failed.
    Statement(StatementFailed),
    /// An event matches no route (`source.unrouted = "dead_letter"`).
    Unrouted {
        key: String,
        version: i64,
        event_type: Option<String>,
    },
}

impl From<StatementFailed> for WriteError {
    fn from(e: StatementFailed) -> Self {
        if e.route.is_empty() {
            WriteError::Db(e.source)
        } else {
            WriteError::Statement(e)
        }
    }
}

impl From<tokio_postgres::Error> for WriteError {
    fn from(e: tokio_postgres::Error) -> Self {
        WriteError::Db(e)
    }
}

/// Connection loss, timeouts, deadlocks and serialization failures are worth retrying.
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        None => true, // I/O or protocol error: the connection broke
        Some(code) => {
            let transient = [
                SqlState::T_R_SERIALIZATION_FAILURE,
                SqlState::T_R_DEADLOCK_DETECTED,
                SqlState::QUERY_CANCELED,
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::TOO_MANY_CONNECTIONS,
                SqlState::LOCK_NOT_AVAILABLE,
            ];
            transient.contains(code) || code.code().starts_with("08")
        }
    }
}

/// How an event store batch is appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Append {
    /// Binary `COPY` straight into the table: for events the key state
    /// proves new (each released above its key's last applied version). The
    /// primary key stays the last guard: if another writer got there first,
    /// the `COPY` fails as a whole and the batch is written with `Insert`.
    Copy,
    /// `INSERT ... ON CONFLICT DO NOTHING`: events already present are absorbed.
    Insert,
}

/// Writes a batch and the partition's progress in one transaction.
pub async fn batch(
    client: &mut Object,
    routes: &Routes,
    group: &str,
    lease: &Lease,
    batch: &Batch,
) -> Result<Written, WriteError> {
    super::sql_send::prepare(client, routes).await?;
    // Events sent back from the dead-letter topic may be in the table
    // already. Typed columns are cast from text by an INSERT.
    if copies(routes, batch) {
        match transaction(client, routes, Append::Copy, group, lease, batch).await {
            Err(WriteError::Db(e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                tracing::debug!(topic = %lease.topic, partition = lease.partition,
                    error = %super::describe_pg(&e),
                    "an event of the batch was in the event store already; writing the batch with ON CONFLICT");
            }
            other => return other,
        }
    }
    transaction(client, routes, Append::Insert, group, lease, batch).await
}

/// Moves a partition's progress, if its lease still holds (one row updated).
fn progress_sql(t: &Tables) -> String {
    format!(
        "UPDATE {} SET next_offset = $4, updated_at = now() \
         WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND epoch = $5",
        t.offsets
    )
}

/// The parameters of [`progress_sql`] for a partition's batch.
fn progress_params<'a>(
    group: &'a &str,
    lease: &'a Lease,
    batch: &'a Batch,
) -> [&'a (dyn ToSql + Sync); 5] {
    [
        group,
        &lease.topic,
        &lease.partition,
        &batch.next_offset,
        &lease.epoch,
    ]
}

/// Whether a batch's events go by binary `COPY` (see [`Append::Copy`]):
/// event store events the key state proves new, with no typed column to
/// cast, into every event store route.
fn copies(routes: &Routes, batch: &Batch) -> bool {
    routes
        .tables
        .iter()
        .any(|r| r.mode == SinkMode::EventStore && r.columns.is_empty())
        && !batch.events.iter().any(|e| e.replayed)
}

/// The one table route that takes every event into an event store with no
/// typed column: batches of several partitions are copied together.
fn copied_together(routes: &Routes) -> Option<&TableRoute> {
    match routes.tables.as_slice() {
        [r] if routes.single && r.mode == SinkMode::EventStore && r.columns.is_empty() => Some(r),
        _ => None,
    }
}

/// Writes the batches of several partitions in one transaction: each
/// partition's progress under its lease (the updates sent together, then
/// their answers read), then one binary `COPY` of the events of every batch
/// that [`copies`], then each other batch as its own transaction would.
/// `Fenced` if any lease was taken over; the caller then writes the
/// batches one by one to learn whose.
pub async fn group(
    client: &mut Object,
    routes: &Routes,
    group: &str,
    members: &[(Lease, Batch)],
) -> Result<Vec<Written>, WriteError> {
    super::sql_send::prepare(client, routes).await?;
    let tx = client.transaction().await?;
    let progress = tx.prepare_cached(&progress_sql(&routes.own)).await?;
    let params: Vec<_> = members
        .iter()
        .map(|(lease, batch)| progress_params(&group, lease, batch))
        .collect();
    let moved =
        futures::future::try_join_all(params.iter().map(|p| tx.execute(&progress, p))).await?;
    if moved.iter().any(|&n| n != 1) {
        return Err(WriteError::Fenced);
    }
    if !routes.single {
        let written = routed_group(&tx, routes, group, members).await?;
        tx.commit().await?;
        return Ok(written);
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut written = Vec::with_capacity(members.len());
    let together = copied_together(routes);
    for (lease, batch) in members {
        if together.is_some()
            && copies(routes, batch)
            && batch.gaps.is_empty()
            && batch.passed.is_empty()
            && batch.dead_lettered.is_empty()
            && !batch.prune_dead_lettered
        {
            rows.extend(batch.events.iter().map(|e| (lease, e)));
            written.push(Written {
                applied: batch.events.len() as u64,
                absorbed: 0,
            });
        } else {
            let append = if copies(routes, batch) {
                Append::Copy
            } else {
                Append::Insert
            };
            written.push(body(&tx, routes, append, group, lease, batch).await?);
        }
    }
    if let (Some(route), false) = (together, rows.is_empty()) {
        copy_rows(&tx, &route.tables, rows.into_iter()).await?;
    }
    tx.commit().await?;
    Ok(written)
}

async fn transaction(
    client: &mut Object,
    routes: &Routes,
    append: Append,
    group: &str,
    lease: &Lease,
    batch: &Batch,
) -> Result<Written, WriteError> {
    let tx = client.transaction().await?;
    // Progress first: it locks the partition's row until commit, and checks the lease.
    let progress = tx.prepare_cached(&progress_sql(&routes.own)).await?;
    let moved = tx
        .execute(&progress, &progress_params(&group, lease, batch))
        .await?;
    if moved != 1 {
        return Err(WriteError::Fenced);
    }
    let written = body(&tx, routes, append, group, lease, batch).await?;
    tx.commit().await?;
    Ok(written)
}

/// What a batch writes besides its progress: the events in each route, the
/// key state (with routes), the gaps, the dead-letter marks and the
/// versions passed.
async fn body(
    tx: &Transaction<'_>,
    routes: &Routes,
    append: Append,
    group: &str,
    lease: &Lease,
    batch: &Batch,
) -> Result<Written, WriteError> {
    extras(tx, routes, group, lease, batch).await?;
    if routes.single {
        let route = &routes.tables[0];
        if batch.events.is_empty() {
            return Ok(Written::default());
        }
        let rows: Vec<Row> = batch.events.iter().map(|e| (lease, e)).collect();
        Ok(table_events(tx, route, append, &rows).await?)
    } else {
        Ok(routed(tx, routes, append, group, &[(lease, batch)]).await?)
    }
}

/// The rest of a batch: the gaps, the dead-letter marks and the versions
/// passed.
async fn extras(
    tx: &Transaction<'_>,
    routes: &Routes,
    group: &str,
    lease: &Lease,
    batch: &Batch,
) -> Result<(), tokio_postgres::Error> {
    let t = &routes.own;
    if !batch.gaps.is_empty() {
        let keys: Vec<&str> = batch.gaps.iter().map(|g| g.key.as_str()).collect();
        let expected: Vec<i64> = batch.gaps.iter().map(|g| g.expected).collect();
        let released: Vec<i64> = batch.gaps.iter().map(|g| g.released).collect();
        let offsets: Vec<i64> = batch.gaps.iter().map(|g| g.offset).collect();
        let bounds: Vec<&str> = batch.gaps.iter().map(|g| g.bound.as_str()).collect();
        tx.execute(
            &format!(
                "INSERT INTO {} (consumer_group, topic, partition, key, expected, released, \"offset\", bound) \
                 SELECT $1, $2, $3, k, e, r, o, b \
                 FROM unnest($4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::text[]) AS u(k, e, r, o, b)",
                t.gaps
            ),
            &[
                &group,
                &lease.topic,
                &lease.partition,
                &keys,
                &expected,
                &released,
                &offsets,
                &bounds,
            ],
        )
        .await?;
    }
    if !batch.dead_lettered.is_empty() {
        tx.execute(
            &format!(
                "INSERT INTO {} (consumer_group, topic, partition, \"offset\") \
                 SELECT $1, $2, $3, o FROM unnest($4::bigint[]) AS u(o) ON CONFLICT DO NOTHING",
                t.dead_lettered
            ),
            &[&group, &lease.topic, &lease.partition, &batch.dead_lettered],
        )
        .await?;
    }
    if routes.single && !batch.passed.is_empty() {
        let keys: Vec<&str> = batch.passed.iter().map(|(k, _)| k.as_str()).collect();
        let versions: Vec<i64> = batch.passed.iter().map(|(_, v)| *v).collect();
        tx.execute(
            &format!(
                "INSERT INTO {} AS x (target_table, key, version) \
                 SELECT $1, k, max(v) FROM unnest($2::text[], $3::bigint[]) AS u(k, v) GROUP BY k \
                 ON CONFLICT (target_table, key) DO UPDATE SET version = EXCLUDED.version, recorded_at = now() \
                 WHERE x.version < EXCLUDED.version",
                t.passed_versions
            ),
            &[&t.target_display, &keys, &versions],
        )
        .await?;
    }
    if batch.prune_dead_lettered {
        tx.execute(
            &format!(
                "DELETE FROM {} WHERE consumer_group = $1 AND topic = $2 AND partition = $3 \
                 AND \"offset\" < $4",
                t.dead_lettered
            ),
            &[&group, &lease.topic, &lease.partition, &batch.next_offset],
        )
        .await?;
    }
    Ok(())
}

/// One table route's share of a batch.
async fn table_events(
    tx: &Transaction<'_>,
    route: &TableRoute,
    append: Append,
    rows: &[Row<'_>],
) -> Result<Written, tokio_postgres::Error> {
    let (t, typed) = (&route.tables, &route.columns[..]);
    match route.mode {
        SinkMode::EventStore if append == Append::Copy && typed.is_empty() => {
            copy(tx, t, rows).await
        }
        SinkMode::EventStore => insert(tx, t, typed, rows).await,
        SinkMode::Projection => upsert(tx, t, typed, rows).await,
    }
}

/// Batches through several routes: each table route gets the events it
/// takes, then the key state moves, then the SQL routes run (last: they
/// hold their routes' locks until commit). An event no route takes is
/// refused (`source.unrouted = "dead_letter"`) or only moves its key
/// (`ignore`). An event counts as applied once its routes committed;
/// absorbed when an event store route it went to had it already.
async fn routed(
    tx: &Transaction<'_>,
    routes: &Routes,
    append: Append,
    group: &str,
    members: &[(&Lease, &Batch)],
) -> Result<Written, WriteError> {
    if routes.unrouted == Unrouted::DeadLetter {
        for (lease, batch) in members {
            if let Some(e) = batch.events.iter().find(|e| !routes.takes(&lease.topic, e)) {
                return Err(WriteError::Unrouted {
                    key: e.key.clone(),
                    version: e.sequence,
                    event_type: e.event_type.as_deref().map(str::to_string),
                });
            }
        }
    }
    let all: Vec<Row> = members
        .iter()
        .flat_map(|(lease, batch)| batch.events.iter().map(move |e| (*lease, e)))
        .collect();
    let mut absorbed = 0;
    for route in &routes.tables {
        let rows: Vec<Row> = all
            .iter()
            .filter(|(l, e)| route.filter.matches(&l.topic, e.event_type.as_deref()))
            .filter(|(_, e)| !e.delete || route.mode == SinkMode::Projection)
            .copied()
            .collect();
        if !rows.is_empty() {
            let w = table_events(tx, route, append, &rows).await?;
            if route.mode == SinkMode::EventStore {
                absorbed = absorbed.max(w.absorbed);
            }
        }
    }
    let passed: Vec<(String, i64)> = members
        .iter()
        .flat_map(|(_, b)| b.passed.iter().cloned())
        .collect();
    match routes.store {
        Some(i) => {
            let ignored: Vec<(&str, i64)> = all
                .iter()
                .filter(|(l, e)| !routes.takes(&l.topic, e))
                .map(|(_, e)| (e.key.as_str(), e.sequence))
                .collect();
            routes::store_passed(tx, routes, &routes.tables[i], group, &passed, &ignored).await?;
        }
        None => routes::store_key_versions(tx, &routes.own, group, &all, &passed).await?,
    }
    if !routes.sql.is_empty() {
        routes::run_sql(tx, routes, group, &all).await?;
    }
    let events = all.len() as u64;
    Ok(Written {
        applied: events - absorbed.min(events),
        absorbed: absorbed.min(events),
    })
}

/// The batches of several partitions through the routes, in one
/// transaction: each table route's events of every batch in one statement
/// (one `COPY` into an event store), the SQL routes' statements of every
/// batch in one pipeline. A batch whose event store events may be present
/// already (`INSERT ... ON CONFLICT`, which counts what it absorbs only for
/// the whole statement) is written on its own first.
async fn routed_group(
    tx: &Transaction<'_>,
    routes: &Routes,
    group: &str,
    members: &[(Lease, Batch)],
) -> Result<Vec<Written>, WriteError> {
    let stores = routes.tables.iter().any(|r| r.mode == SinkMode::EventStore);
    let copy_all = routes
        .tables
        .iter()
        .all(|r| r.mode != SinkMode::EventStore || r.columns.is_empty());
    let mut written = vec![Written::default(); members.len()];
    let mut together = Vec::new();
    for (i, (lease, batch)) in members.iter().enumerate() {
        extras(tx, routes, group, lease, batch).await?;
        if !stores || (copy_all && copies(routes, batch)) {
            together.push(i);
        } else {
            written[i] = routed(tx, routes, Append::Insert, group, &[(lease, batch)]).await?;
        }
    }
    let batches: Vec<(&Lease, &Batch)> = together
        .iter()
        .map(|&i| (&members[i].0, &members[i].1))
        .collect();
    if !batches.is_empty() {
        // Copied whole or refused whole: nothing of these is absorbed.
        routed(tx, routes, Append::Copy, group, &batches).await?;
        for &i in &together {
            written[i] = Written {
                applied: members[i].1.events.len() as u64,
                absorbed: 0,
            };
        }
    }
    Ok(written)
}

struct Columns<'a> {
    keys: Vec<&'a str>,
    versions: Vec<i64>,
    payloads: Vec<JsonParam<'a>>,
    topics: Vec<&'a str>,
    partitions: Vec<i32>,
    offsets: Vec<i64>,
    timestamps: Vec<Option<i64>>,
}

fn columns<'a>(rows: impl Iterator<Item = Row<'a>>) -> Columns<'a> {
    let mut c = Columns {
        keys: vec![],
        versions: vec![],
        payloads: vec![],
        topics: vec![],
        partitions: vec![],
        offsets: vec![],
        timestamps: vec![],
    };
    for (lease, e) in rows {
        c.keys.push(&e.key);
        c.versions.push(e.sequence);
        c.payloads.push(JsonParam(e.payload.as_str()));
        c.topics.push(&lease.topic);
        c.partitions.push(lease.partition);
        c.offsets.push(e.offset);
        c.timestamps.push(e.timestamp_ms);
    }
    c
}

/// A payload's JSON text as a `json` or `jsonb` parameter, sent as it is
/// (the decoder checked it); PostgreSQL parses it once, as it would text
/// from `COPY`.
#[derive(Debug)]
struct JsonParam<'a>(&'a str);

impl ToSql for JsonParam<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            // The jsonb binary format: a version byte, then the text.
            out.extend_from_slice(&[1]);
        }
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    accepts!(JSON, JSONB);
    to_sql_checked!();
}

/// `timestamptz` of a Kafka timestamp in milliseconds since the epoch.
fn system_time(ms: i64) -> Option<SystemTime> {
    let at = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH.checked_add(at)
    } else {
        UNIX_EPOCH.checked_sub(at)
    }
}

/// Event store, by binary `COPY` (see [`Append::Copy`]).
async fn copy(
    tx: &Transaction<'_>,
    t: &Tables,
    rows: &[Row<'_>],
) -> Result<Written, tokio_postgres::Error> {
    let applied = copy_rows(tx, t, rows.iter().copied()).await?;
    Ok(Written {
        applied,
        absorbed: rows.len() as u64 - applied,
    })
}

/// Binary `COPY` of events, each with the partition it came from; the rows copied.
async fn copy_rows<'a>(
    tx: &Transaction<'_>,
    t: &Tables,
    rows: impl Iterator<Item = Row<'a>>,
) -> Result<u64, tokio_postgres::Error> {
    let statement = tx
        .prepare_cached(&format!(
            "COPY {} (stream, version, payload, topic, partition, \"offset\", event_time) \
             FROM STDIN (FORMAT binary)",
            t.target
        ))
        .await?;
    let sink = tx.copy_in(&statement).await?;
    let writer = BinaryCopyInWriter::new(
        sink,
        &[
            Type::TEXT,
            Type::INT8,
            Type::JSONB,
            Type::TEXT,
            Type::INT4,
            Type::INT8,
            Type::TIMESTAMPTZ,
        ],
    );
    futures::pin_mut!(writer);
    for (lease, e) in rows {
        let at = e.timestamp_ms.and_then(system_time);
        writer
            .as_mut()
            .write(&[
                &e.key,
                &e.sequence,
                &JsonParam(e.payload.as_str()),
                &lease.topic,
                &lease.partition,
                &e.offset,
                &at,
            ])
            .await?;
    }
    writer.finish().await
}

/// The SQL pieces of the typed columns in a statement whose own parameters
/// end at `$last`: each column's values a `text[]` parameter, cast in the SELECT.
struct TypedSql {
    /// `, "a", "b"`: the INSERT's column list.
    names: String,
    /// `, $8::text[], $9::text[]`: unnest's arguments.
    arrays: String,
    /// `, c0, c1`: the unnest aliases.
    aliases: String,
    /// `, c0::numeric, decode(c1, 'base64')`: the SELECT's values.
    casts: String,
    /// `, "a" = EXCLUDED."a"`: a projection's update.
    updates: String,
}

fn typed_sql(typed: &[Column], last: usize) -> TypedSql {
    let mut s = TypedSql {
        names: String::new(),
        arrays: String::new(),
        aliases: String::new(),
        casts: String::new(),
        updates: String::new(),
    };
    for (i, c) in typed.iter().enumerate() {
        let name = super::quote_ident(&c.name);
        s.names.push_str(&format!(", {name}"));
        s.arrays.push_str(&format!(", ${}::text[]", last + 1 + i));
        s.aliases.push_str(&format!(", c{i}"));
        s.casts
            .push_str(&format!(", {}", c.pg_type.cast(&format!("c{i}"))));
        s.updates.push_str(&format!(", {name} = EXCLUDED.{name}"));
    }
    s
}

/// The typed columns' values of `events`, one array per column, as text
/// (`None`: SQL `NULL`, for a field the payload lacks or holds null).
fn typed_values<'a>(
    typed: &[Column],
    events: impl Iterator<Item = &'a crate::record::Event>,
) -> Vec<Vec<Option<String>>> {
    let mut out: Vec<Vec<Option<String>>> = vec![vec![]; typed.len()];
    if typed.is_empty() {
        return out;
    }
    for e in events {
        let doc: serde_json::Value =
            serde_json::from_str(e.payload.as_str()).unwrap_or(serde_json::Value::Null);
        for (c, values) in typed.iter().zip(out.iter_mut()) {
            values.push(at(&doc, &c.path).and_then(|v| c.pg_type.text_of(v)));
        }
    }
    out
}

/// A batch statement's parameters: `$1`..`$7` the events' columns (each
/// event's topic and partition among them), then `extra`, then the typed
/// columns' arrays.
fn params<'a>(
    c: &'a Columns<'a>,
    extra: &[&'a (dyn ToSql + Sync)],
    typed: &'a [Vec<Option<String>>],
) -> Vec<&'a (dyn ToSql + Sync)> {
    let mut p: Vec<&(dyn ToSql + Sync)> = vec![
        &c.keys,
        &c.versions,
        &c.payloads,
        &c.topics,
        &c.partitions,
        &c.offsets,
        &c.timestamps,
    ];
    p.extend_from_slice(extra);
    p.extend(typed.iter().map(|v| v as &(dyn ToSql + Sync)));
    p
}

/// Event store: append; a (stream, version) already present is absorbed, not doubled.
async fn insert(
    tx: &Transaction<'_>,
    t: &Tables,
    typed: &[Column],
    rows: &[Row<'_>],
) -> Result<Written, tokio_postgres::Error> {
    let c = columns(rows.iter().copied());
    let x = typed_sql(typed, 7);
    let values = typed_values(typed, rows.iter().map(|(_, e)| *e));
    let stmt = tx
        .prepare_cached(&format!(
            "INSERT INTO {} (stream, version, {}topic, partition, \"offset\", event_time{}) \
             SELECT s, v, {}tp, pn, o, to_timestamp(ts / 1000.0){} \
             FROM unnest($1::text[], $2::bigint[], $3::jsonb[], $4::text[], $5::int[], $6::bigint[], $7::bigint[]{}) \
             WITH ORDINALITY AS u(s, v, p, tp, pn, o, ts{}, n) ORDER BY n \
             ON CONFLICT (stream, version) DO NOTHING",
            t.target,
            if t.payload { "payload, " } else { "" },
            x.names,
            if t.payload { "p, " } else { "" },
            x.casts,
            x.arrays,
            x.aliases
        ))
        .await?;
    let params = params(&c, &[], &values);
    let applied = tx.execute(&stmt, &params).await?;
    Ok(Written {
        applied,
        absorbed: rows.len() as u64 - applied,
    })
}

/// Projection: latest state per key, written only over an older version.
/// Keys repeated in the batch are reduced to their newest event first, since
/// one `INSERT ... ON CONFLICT` cannot touch a row twice. A key whose newest
/// event is a tombstone has its row deleted and the version it was deleted
/// at recorded (`ordo_deleted_keys`, read with the key state); an upsert at
/// or below a key's deleted version is not written, so an older version
/// replayed later does not bring the row back.
async fn upsert(
    tx: &Transaction<'_>,
    t: &Tables,
    typed: &[Column],
    rows: &[Row<'_>],
) -> Result<Written, tokio_postgres::Error> {
    let mut newest: BTreeMap<&str, Row> = BTreeMap::new();
    for &(lease, e) in rows {
        let slot = newest.entry(e.key.as_str()).or_insert((lease, e));
        if e.sequence > slot.1.sequence {
            *slot = (lease, e);
        }
    }
    let (deletes, upserts): (Vec<Row>, Vec<Row>) =
        newest.values().copied().partition(|(_, e)| e.delete);
    let mut applied = 0;
    if !upserts.is_empty() {
        let c = columns(upserts.iter().copied());
        let x = typed_sql(typed, 8);
        let values = typed_values(typed, upserts.iter().map(|(_, e)| *e));
        let stmt = tx
            .prepare_cached(&format!(
                "INSERT INTO {} AS cur (key, version, {}topic, partition, \"offset\", event_time, updated_at{}) \
                 SELECT k, v, {}tp, pn, o, to_timestamp(ts / 1000.0), now(){} \
                 FROM unnest($1::text[], $2::bigint[], $3::jsonb[], $4::text[], $5::int[], $6::bigint[], $7::bigint[]{}) AS u(k, v, s, tp, pn, o, ts{}) \
                 WHERE NOT EXISTS (SELECT 1 FROM {} AS d WHERE d.target_table = $8 AND d.key = u.k AND d.version >= u.v) \
                 ON CONFLICT (key) DO UPDATE SET version = EXCLUDED.version, {}\
                 topic = EXCLUDED.topic, partition = EXCLUDED.partition, \"offset\" = EXCLUDED.\"offset\", \
                 event_time = EXCLUDED.event_time, updated_at = now(){} \
                 WHERE cur.version < EXCLUDED.version",
                t.target,
                if t.payload { "state, " } else { "" },
                x.names,
                if t.payload { "s, " } else { "" },
                x.casts,
                x.arrays,
                x.aliases,
                t.deleted_keys,
                if t.payload { "state = EXCLUDED.state, " } else { "" },
                x.updates
            ))
            .await?;
        let params = params(&c, &[&t.target_display], &values);
        applied += tx.execute(&stmt, &params).await?;
    }
    if !deletes.is_empty() {
        let keys: Vec<&str> = deletes.iter().map(|(_, e)| e.key.as_str()).collect();
        let versions: Vec<i64> = deletes.iter().map(|(_, e)| e.sequence).collect();
        tx.execute(
            &format!(
                "DELETE FROM {} AS cur USING unnest($1::text[], $2::bigint[]) AS u(k, v) \
                 WHERE cur.key = u.k AND cur.version < u.v",
                t.target
            ),
            &[&keys, &versions],
        )
        .await?;
        // Recorded unless a newer version stands (the tombstone is then stale).
        applied += tx
            .execute(
                &format!(
                    "INSERT INTO {d} AS d (target_table, key, version) \
                     SELECT $3, k, v FROM unnest($1::text[], $2::bigint[]) AS u(k, v) \
                     WHERE NOT EXISTS (SELECT 1 FROM {target} AS p WHERE p.key = u.k AND p.version >= u.v) \
                     ON CONFLICT (target_table, key) DO UPDATE SET version = EXCLUDED.version, deleted_at = now() \
                     WHERE d.version < EXCLUDED.version",
                    d = t.deleted_keys,
                    target = t.target
                ),
                &[&keys, &versions, &t.target_display],
            )
            .await?;
    }
    Ok(Written {
        applied: applied.min(rows.len() as u64),
        absorbed: (rows.len() as u64).saturating_sub(applied),
    })
}
