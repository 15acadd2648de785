//! The partitions' stored offsets under the operator's hand: listed for
//! `ordo offsets show`, moved by `ordo offsets set` and `skip`. A move is
//! written in one transaction: the partition's row gets the new offset, a
//! new epoch (the owner's writes are fenced from then on) and a mark
//! (`moved`) its owner looks for, so it takes the lease again and resumes
//! from the new offset ([`PostgresSink::take_moved`]); and the move is
//! recorded in `ordo_offset_moves`.

use super::{PostgresError, PostgresSink};
use crate::sink::Lease;

/// A partition's row in `ordo_offsets`, and what was skipped in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOffset {
    pub topic: String,
    pub partition: i32,
    /// `None`: leased, nothing stored yet.
    pub next_offset: Option<i64>,
    pub owner: String,
    pub epoch: i64,
    /// When the row was last written (RFC 3339, UTC).
    pub updated_at: String,
    /// Moved by an operator, and its owner has not resumed from there yet.
    pub moved: bool,
    /// Offsets passed over by `ordo offsets skip`, in all.
    pub skipped: i64,
}

/// One partition to move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    pub to: i64,
}

/// A move done: where the partition was (`None`: never stored) and is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub topic: String,
    pub partition: i32,
    pub from: Option<i64>,
    pub to: i64,
}

/// What a partition's owner learns when it takes a moved lease again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenMove {
    pub lease: Lease,
    /// The last move's kind (`set` or `skip`), and its offsets.
    pub kind: String,
    pub from: Option<i64>,
    pub to: i64,
}

/// The owner a partition's row names when a move created it.
const MOVED_BY: &str = "(ordo offsets)";

impl PostgresSink {
    /// Every partition's stored offset for this consumer group.
    pub async fn list_offsets(&self) -> Result<Vec<StoredOffset>, PostgresError> {
        let client = self.client().await?;
        let t = &self.routes.own;
        let rows = client
            .query(
                &format!(
                    "SELECT o.topic, o.partition, o.next_offset, o.owner, o.epoch, \
                     to_char(o.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), o.moved, \
                     coalesce((SELECT sum(m.to_offset - coalesce(m.from_offset, 0)) FROM {moves} AS m \
                       WHERE m.consumer_group = o.consumer_group AND m.topic = o.topic \
                       AND m.partition = o.partition AND m.kind = 'skip'), 0)::bigint \
                     FROM {offsets} AS o WHERE o.consumer_group = $1 ORDER BY 1, 2",
                    moves = t.offset_moves,
                    offsets = t.offsets
                ),
                &[&self.group],
            )
            .await
            .map_err(self.query_error("reading the stored offsets"))?;
        Ok(rows
            .iter()
            .map(|r| StoredOffset {
                topic: r.get(0),
                partition: r.get(1),
                next_offset: r.get(2),
                owner: r.get(3),
                epoch: r.get(4),
                updated_at: r.get(5),
                moved: r.get(6),
                skipped: r.get(7),
            })
            .collect())
    }

    /// Moves the stored offsets of `moves`, all in one transaction (all or
    /// nothing), and records each move (`kind`: `set` or `skip`; the
    /// command line and host that asked).
    pub async fn move_offsets(
        &self,
        moves: &[Move],
        kind: &str,
        command: &str,
        host: &str,
    ) -> Result<Vec<Moved>, PostgresError> {
        let mut client = self.client().await?;
        let t = &self.routes.own;
        let failed = self.query_error("moving the stored offsets");
        let tx = client.transaction().await.map_err(&failed)?;
        let mut done = Vec::with_capacity(moves.len());
        for m in moves {
            let from: Option<i64> = tx
                .query_opt(
                    &format!(
                        "SELECT next_offset FROM {} WHERE consumer_group = $1 AND topic = $2 \
                         AND partition = $3 FOR UPDATE",
                        t.offsets
                    ),
                    &[&self.group, &m.topic, &m.partition],
                )
                .await
                .map_err(&failed)?
                .and_then(|r| r.get(0));
            tx.execute(
                &format!(
                    "INSERT INTO {} AS o (consumer_group, topic, partition, next_offset, epoch, owner, moved) \
                     VALUES ($1, $2, $3, $4, 1, $5, false) \
                     ON CONFLICT (consumer_group, topic, partition) DO UPDATE \
                     SET next_offset = EXCLUDED.next_offset, epoch = o.epoch + 1, moved = true, updated_at = now()",
                    t.offsets
                ),
                &[&self.group, &m.topic, &m.partition, &m.to, &MOVED_BY],
            )
            .await
            .map_err(&failed)?;
            tx.execute(
                &format!(
                    "INSERT INTO {} (consumer_group, topic, partition, from_offset, to_offset, kind, command, host) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    t.offset_moves
                ),
                &[&self.group, &m.topic, &m.partition, &from, &m.to, &kind, &command, &host],
            )
            .await
            .map_err(&failed)?;
            done.push(Moved {
                topic: m.topic.clone(),
                partition: m.partition,
                from,
                to: m.to,
            });
        }
        tx.commit().await.map_err(&failed)?;
        Ok(done)
    }

    /// Takes `lease`'s partition again if an operator moved its offset
    /// while `owner` held it (the row still names `owner` and is marked
    /// moved): a new epoch, the new offset. `None` if it was not moved, or
    /// another replica took it since (a handover: nothing to take).
    pub async fn take_moved(
        &self,
        lease: &Lease,
        owner: &str,
    ) -> Result<Option<TakenMove>, PostgresError> {
        let client = self.client().await?;
        let t = &self.routes.own;
        let what = format!(
            "taking the moved lease of {}/{}",
            lease.topic, lease.partition
        );
        let row = client
            .query_opt(
                &format!(
                    "UPDATE {} SET epoch = epoch + 1, moved = false, updated_at = now() \
                     WHERE consumer_group = $1 AND topic = $2 AND partition = $3 AND owner = $4 AND moved \
                     RETURNING next_offset, epoch",
                    t.offsets
                ),
                &[&self.group, &lease.topic, &lease.partition, &owner],
            )
            .await
            .map_err(self.query_error(&what))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let next_offset: Option<i64> = row.get(0);
        let last = client
            .query_opt(
                &format!(
                    "SELECT kind, from_offset, to_offset FROM {} WHERE consumer_group = $1 AND topic = $2 \
                     AND partition = $3 ORDER BY id DESC LIMIT 1",
                    t.offset_moves
                ),
                &[&self.group, &lease.topic, &lease.partition],
            )
            .await
            .map_err(self.query_error(&what))?;
        let dead_lettered = self
            .dead_lettered_from(&client, &lease.topic, lease.partition, next_offset)
            .await?;
        let (kind, from, to) = match last {
            Some(r) => (r.get(0), r.get(1), r.get(2)),
            None => (
                "set".to_string(),
                lease.next_offset,
                next_offset.unwrap_or(0),
            ),
        };
        Ok(Some(TakenMove {
            lease: Lease {
                topic: lease.topic.clone(),
                partition: lease.partition,
                epoch: row.get(1),
                next_offset,
                dead_lettered,
            },
            kind,
            from,
            to,
        }))
    }
}
