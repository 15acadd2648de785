//! Sending a batch's SQL route runs to PostgreSQL. Each route statement is
//! prepared once per connection under a name of its own (`PREPARE
//! ordo_route_<route>_<statement>`); a batch's runs then travel as
//! `EXECUTE` statements in as few simple-query messages as their size
//! allows, each value an escape-string literal that PostgreSQL casts as it
//! casts a bound text parameter. One message and one answer carry
//! thousands of runs, where binding each run costs a message exchange and
//! a flush on both sides. A statement that `PREPARE` does not take (it
//! takes `SELECT`, `INSERT`, `UPDATE`, `DELETE`, `MERGE`, `VALUES`; not
//! `CALL`) makes the sink's runs go bound, one by one, pipelined.

use std::collections::HashSet;
use std::sync::Mutex;

use deadpool_postgres::{Object, ObjectId, Transaction};
use futures::StreamExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::SimpleQueryMessage;

use super::routes::{Routes, StatementFailed};
use super::sql_route::TextParam;

/// A text of `EXECUTE` statements is sent once it holds this many bytes.
const TEXT_BYTES: usize = 256 * 1024;

/// One run of one statement: the route's and the statement's index and the
/// values of its parameters.
pub(super) type Call = (usize, usize, Vec<TextParam>);

/// The pool connections on which every SQL route statement is prepared by
/// name.
#[derive(Debug, Default)]
pub(crate) struct Named(Mutex<HashSet<ObjectId>>);

impl Named {
    fn holds(&self, id: ObjectId) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id)
    }

    fn add(&self, id: ObjectId) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
    }
}

/// The name a route statement is prepared under on each connection.
fn name(route: usize, statement: usize) -> String {
    format!("ordo_route_{route}_{statement}")
}

/// Prepares every SQL route statement by name on `client`, once per
/// connection (nothing to do when the runs go bound).
pub(super) async fn prepare(client: &Object, routes: &Routes) -> Result<(), StatementFailed> {
    if routes.sql.is_empty() || !routes.by_name {
        return Ok(());
    }
    let id = Object::id(client);
    if routes.named.holds(id) {
        return Ok(());
    }
    for (ri, route) in routes.sql.iter().enumerate() {
        for (si, statement) in route.statements.iter().enumerate() {
            let prepared = client
                .batch_execute(&format!("PREPARE {} AS {}", name(ri, si), statement.sql))
                .await;
            match prepared {
                // From an earlier attempt on this connection that failed later on.
                Err(e) if e.code() == Some(&SqlState::DUPLICATE_PSTATEMENT) => {}
                Err(source) => {
                    return Err(StatementFailed {
                        route: route.name.clone(),
                        statement: si + 1,
                        source,
                    })
                }
                Ok(()) => {}
            }
        }
    }
    routes.named.add(id);
    Ok(())
}

/// Runs `calls` in order in `tx` (on a connection [`prepare`] was given).
/// A statement that fails is named by its route and number.
pub(super) async fn send(
    tx: &Transaction<'_>,
    routes: &Routes,
    calls: &[Call],
) -> Result<(), StatementFailed> {
    if !routes.by_name {
        return send_bound(tx, routes, calls).await;
    }
    let failed = |i: usize, source| {
        let (ri, si, _) = &calls[i];
        StatementFailed {
            route: routes.sql[*ri].name.clone(),
            statement: si + 1,
            source,
        }
    };
    let mut text = String::new();
    // The calls the text holds start at `first`.
    let mut first = 0;
    for (i, (ri, si, values)) in calls.iter().enumerate() {
        push_execute(&mut text, &name(*ri, *si), values);
        if text.len() >= TEXT_BYTES || i + 1 == calls.len() {
            run_text(tx, &text)
                .await
                .map_err(|(done, source)| failed(first + done, source))?;
            text.clear();
            first = i + 1;
        }
    }
    Ok(())
}

/// Runs a text of statements; on an error, how many completed before it.
async fn run_text(tx: &Transaction<'_>, text: &str) -> Result<(), (usize, tokio_postgres::Error)> {
    let mut answers = std::pin::pin!(tx
        .client()
        .simple_query_raw(text)
        .await
        .map_err(|e| (0, e))?);
    let mut done = 0;
    while let Some(answer) = answers.next().await {
        if let SimpleQueryMessage::CommandComplete(_) = answer.map_err(|e| (done, e))? {
            done += 1;
        }
    }
    Ok(())
}

/// Appends `EXECUTE name(values);`.
fn push_execute(text: &mut String, name: &str, values: &[TextParam]) {
    text.push_str("EXECUTE ");
    text.push_str(name);
    if !values.is_empty() {
        text.push('(');
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                text.push_str(", ");
            }
            push_literal(text, v.0.as_deref());
        }
        text.push(')');
    }
    text.push_str(";\n");
}

/// Appends `value` as an escape-string literal (`E'...'`, so the server's
/// `standard_conforming_strings` does not matter): a backslash and a quote
/// doubled, a NUL as `\000`, which PostgreSQL refuses as it refuses a NUL
/// in a bound value (SQLSTATE 22021); `None` as `NULL`.
fn push_literal(text: &mut String, value: Option<&str>) {
    let Some(value) = value else {
        text.push_str("NULL");
        return;
    };
    text.push_str("E'");
    if !value.contains(['\\', '\'', '\0']) {
        text.push_str(value);
    } else {
        for c in value.chars() {
            match c {
                '\\' => text.push_str("\\\\"),
                '\'' => text.push_str("''"),
                '\0' => text.push_str("\\000"),
                c => text.push(c),
            }
        }
    }
    text.push('\'');
}

/// The runs bound one by one, pipelined: sent together, run in order.
async fn send_bound(
    tx: &Transaction<'_>,
    routes: &Routes,
    calls: &[Call],
) -> Result<(), StatementFailed> {
    let mut prepared = std::collections::HashMap::new();
    for &(ri, si, _) in calls {
        if let std::collections::hash_map::Entry::Vacant(slot) = prepared.entry((ri, si)) {
            let statement = tx
                .prepare_cached(&routes.sql[ri].statements[si].sql)
                .await
                .map_err(|source| StatementFailed {
                    route: routes.sql[ri].name.clone(),
                    statement: si + 1,
                    source,
                })?;
            slot.insert(statement);
        }
    }
    let params: Vec<Vec<&(dyn ToSql + Sync)>> = calls
        .iter()
        .map(|(_, _, values)| values.iter().map(|v| v as &(dyn ToSql + Sync)).collect())
        .collect();
    let sent = calls.iter().zip(&params).map(|(&(ri, si, _), p)| {
        let statement = &prepared[&(ri, si)];
        async move {
            tx.execute(statement, p)
                .await
                .map_err(|source| StatementFailed {
                    route: routes.sql[ri].name.clone(),
                    statement: si + 1,
                    source,
                })
        }
    });
    futures::future::try_join_all(sent).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_quotes_backslashes_and_nul_and_null_is_bare() {
        let mut text = String::new();
        push_execute(
            &mut text,
            "ordo_route_0_1",
            &[
                TextParam(Some("plain".into())),
                TextParam(Some(r"it's a \ and '' ".into())),
                TextParam(None),
                TextParam(Some("nul\0end".into())),
            ],
        );
        assert_eq!(
            text,
            "EXECUTE ordo_route_0_1(E'plain', E'it''s a \\\\ and '''' ', NULL, E'nul\\000end');\n"
        );
        let mut bare = String::new();
        push_execute(&mut bare, "ordo_route_2_0", &[]);
        assert_eq!(bare, "EXECUTE ordo_route_2_0;\n");
    }
}
