//! SQL routes: a route's own statements, with named parameters bound from
//! each event (`${key}`, `${version}`, `${data.customer}` ...). The text is
//! split into statements and each `${name}` becomes a positional parameter;
//! values travel as text and PostgreSQL casts them to whatever type the
//! statement gives the parameter (as typed columns do).

use serde_json::Value;
use tokio_postgres::types::{Format, IsNull, ToSql, Type};

use crate::decode::extract::FieldPath;
use crate::record::Event;

/// What a `${name}` stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    Key,
    Version,
    EventType,
    Topic,
    Partition,
    Offset,
    /// The record's timestamp, as `timestamptz` text (UTC).
    Timestamp,
    /// The whole payload, as JSON text.
    Payload,
    /// A payload field: its text (a string as it is, other values as
    /// JSON); `NULL` when the payload lacks it or holds null.
    Path(FieldPath),
}

/// The names a parameter may take besides payload paths.
pub const NAMES: &[&str] = &[
    "key",
    "version",
    "event_type",
    "topic",
    "partition",
    "offset",
    "timestamp",
    "payload",
];

impl Param {
    fn parse(name: &str) -> Result<Self, String> {
        Ok(match name.trim() {
            "key" => Param::Key,
            "version" => Param::Version,
            "event_type" => Param::EventType,
            "topic" => Param::Topic,
            "partition" => Param::Partition,
            "offset" => Param::Offset,
            "timestamp" => Param::Timestamp,
            "payload" => Param::Payload,
            other => {
                // `${payload.key}` reaches a field whose name is also a parameter's.
                let path = other.strip_prefix("payload.").unwrap_or(other);
                Param::Path(path.parse().map_err(|why: String| {
                    format!(
                        "`${{{name}}}`: {why}; a parameter is one of {} or a payload path such as `data.customer`",
                        NAMES.join(", ")
                    )
                })?)
            }
        })
    }
}

/// One statement of a route, ready to prepare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The statement with `$1`, `$2` ... in place of the names.
    pub sql: String,
    /// What each positional parameter stands for, `$1` first.
    pub params: Vec<Param>,
    /// The names as written, `$1` first (for errors).
    pub names: Vec<String>,
    /// Whether PostgreSQL can `PREPARE` it (see [`preparable`]).
    pub preparable: bool,
}

/// Splits a route's `sql` into statements and numbers their parameters.
/// The error says which statement (1-based) and what is wrong.
pub fn parse(sql: &str) -> Result<Vec<Statement>, String> {
    let mut out = Vec::new();
    for (i, text) in split(sql)?.into_iter().enumerate() {
        let statement = number(&text).map_err(|why| format!("statement {}: {why}", i + 1))?;
        out.push(statement);
    }
    if out.is_empty() {
        return Err("holds no statement".into());
    }
    Ok(out)
}

/// Where the scanner is in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scan {
    Code,
    Quoted(char),
    LineComment,
    BlockComment,
    Dollar(String),
}

/// The statements of `sql` (split at `;` outside quotes, comments and
/// dollar-quoted bodies), trimmed, empty ones dropped.
fn split(sql: &str) -> Result<Vec<String>, String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut state = Scan::Code;
    let chars: Vec<char> = sql.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match &state {
            Scan::Code => match c {
                ';' => {
                    statements.push(std::mem::take(&mut current));
                    i += 1;
                    continue;
                }
                '\'' | '"' => state = Scan::Quoted(c),
                '-' if next == Some('-') => state = Scan::LineComment,
                '/' if next == Some('*') => state = Scan::BlockComment,
                '$' if next != Some('{') => {
                    // A dollar-quote opens with `$tag$` (or `$$`).
                    let rest: String = chars[i + 1..].iter().collect();
                    if let Some(end) = rest.find('$') {
                        let tag = &rest[..end];
                        if tag.chars().all(|c| c.is_alphanumeric() || c == '_')
                            && !tag.starts_with(|c: char| c.is_ascii_digit())
                        {
                            let tag = format!("${tag}$");
                            current.push_str(&tag);
                            i += tag.chars().count();
                            state = Scan::Dollar(tag);
                            continue;
                        }
                    }
                }
                _ => {}
            },
            Scan::Quoted(q) => {
                if c == *q {
                    state = Scan::Code;
                }
            }
            Scan::LineComment => {
                if c == '\n' {
                    state = Scan::Code;
                }
            }
            Scan::BlockComment => {
                if c == '*' && next == Some('/') {
                    current.push_str("*/");
                    i += 2;
                    state = Scan::Code;
                    continue;
                }
            }
            Scan::Dollar(tag) => {
                let rest: String = chars[i..].iter().take(tag.chars().count()).collect();
                if rest == *tag {
                    current.push_str(tag);
                    i += tag.chars().count();
                    state = Scan::Code;
                    continue;
                }
            }
        }
        current.push(c);
        i += 1;
    }
    match state {
        Scan::Quoted(q) => return Err(format!("a {q} quote is not closed")),
        Scan::BlockComment => return Err("a /* comment is not closed".into()),
        Scan::Dollar(tag) => return Err(format!("a {tag} quoted body is not closed")),
        Scan::Code | Scan::LineComment => {}
    }
    statements.push(current);
    Ok(statements
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && !only_comments(s))
        .collect())
}

/// Whether a piece of text holds nothing but comments and blanks.
fn only_comments(s: &str) -> bool {
    s.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with("--"))
}

/// Replaces each `${name}` outside quotes and comments by `$n` (the same
/// name, the same number).
fn number(text: &str) -> Result<Statement, String> {
    let mut sql = String::with_capacity(text.len());
    let mut params: Vec<Param> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut state = Scan::Code;
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if state == Scan::Code {
            if c == '$' && next == Some('{') {
                let rest: String = chars[i + 2..].iter().collect();
                let Some(end) = rest.find('}') else {
                    return Err("a `${` has no closing `}`".into());
                };
                let name = rest[..end].trim().to_string();
                let param = Param::parse(&name)?;
                let n = match names.iter().position(|x| *x == name) {
                    Some(n) => n,
                    None => {
                        names.push(name);
                        params.push(param);
                        names.len() - 1
                    }
                };
                sql.push_str(&format!("${}", n + 1));
                i += 2 + rest[..=end].chars().count();
                continue;
            }
            if c == '$' && next.is_some_and(|d| d.is_ascii_digit()) {
                return Err(
                    "positional parameters (`$1`) are not taken: name what the value is, as `${key}` or `${data.customer}`"
                        .into(),
                );
            }
        }
        state = match (&state, c) {
            (Scan::Code, '\'' | '"') => Scan::Quoted(c),
            (Scan::Code, '-') if next == Some('-') => Scan::LineComment,
            (Scan::Code, '/') if next == Some('*') => Scan::BlockComment,
            (Scan::Quoted(q), c) if c == *q => Scan::Code,
            (Scan::LineComment, '\n') => Scan::Code,
            (Scan::BlockComment, '/') if i > 0 && chars[i - 1] == '*' => Scan::Code,
            _ => state,
        };
        sql.push(c);
        i += 1;
    }
    let preparable = preparable(&sql);
    Ok(Statement {
        sql,
        params,
        names,
        preparable,
    })
}

/// Whether `PREPARE` takes the statement: its first word (after comments
/// and opening parentheses) is `SELECT`, `INSERT`, `UPDATE`, `DELETE`,
/// `MERGE`, `VALUES`, `TABLE` or `WITH` (a `CALL` or a `DO` it does not).
fn preparable(sql: &str) -> bool {
    let mut rest = sql;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r);
        } else {
            break;
        }
    }
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_lowercase();
    matches!(
        word.as_str(),
        "select" | "insert" | "update" | "delete" | "merge" | "values" | "table" | "with"
    )
}

/// A parameter's value as text, sent in PostgreSQL's text format so the
/// server casts it to the type the statement gives the parameter.
#[derive(Debug)]
pub struct TextParam(pub Option<String>);

impl ToSql for TextParam {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match &self.0 {
            Some(text) => {
                out.extend_from_slice(text.as_bytes());
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    tokio_postgres::types::to_sql_checked!();
}

/// The text of a payload value: a string as it is, `null` as SQL `NULL`,
/// anything else as JSON.
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// `timestamptz` text (RFC 3339, UTC) of a Kafka timestamp in milliseconds.
fn timestamp_text(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

impl Statement {
    /// The statement's parameter values for `event` (of `topic` and
    /// `partition`); `doc` is its payload, parsed once for all statements.
    pub fn values(
        &self,
        event: &Event,
        topic: &str,
        partition: i32,
        doc: &Value,
    ) -> Vec<TextParam> {
        self.params
            .iter()
            .map(|p| {
                TextParam(match p {
                    Param::Key => Some(event.key.clone()),
                    Param::Version => Some(event.sequence.to_string()),
                    Param::EventType => event.event_type.as_deref().map(str::to_string),
                    Param::Topic => Some(topic.to_string()),
                    Param::Partition => Some(partition.to_string()),
                    Param::Offset => Some(event.offset.to_string()),
                    Param::Timestamp => event.timestamp_ms.and_then(timestamp_text),
                    Param::Payload => Some(event.payload.as_str().to_string()),
                    Param::Path(path) => super::columns::at(doc, path).and_then(text_of),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_numbers_once_each() {
        let s = parse(
            "INSERT INTO customer_totals (customer, orders, amount)\n\
             VALUES (${data.customer}, 1, ${data.amount}::numeric)\n\
             ON CONFLICT (customer) DO UPDATE SET amount = customer_totals.amount + ${data.amount}::numeric",
        )
        .unwrap();
        assert_eq!(s.len(), 1);
        assert!(
            s[0].sql.contains("VALUES ($1, 1, $2::numeric)"),
            "{}",
            s[0].sql
        );
        assert!(s[0].sql.ends_with("customer_totals.amount + $2::numeric"));
        assert_eq!(s[0].names, ["data.customer", "data.amount"]);
    }

    #[test]
    fn statements_split_outside_quotes_comments_and_bodies() {
        let s = parse(
            "UPDATE t SET note = 'a;b' WHERE k = ${key}; -- one; two\n\
             DO $x$ BEGIN PERFORM 1; END $x$;\n\
             INSERT INTO log VALUES (${version}, '${not a param}') ;",
        )
        .unwrap();
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(s[0].sql, "UPDATE t SET note = 'a;b' WHERE k = $1");
        assert!(s[1].sql.contains("PERFORM 1; END"));
        assert_eq!(s[2].params, [Param::Version]);
        assert!(s[2].sql.contains("'${not a param}'"));
    }

    #[test]
    fn statements_prepare_can_take_are_told_apart() {
        let kinds =
            |sql: &str| -> Vec<bool> { parse(sql).unwrap().iter().map(|s| s.preparable).collect() };
        assert_eq!(
            kinds(
                "insert into t values (${key}); -- a note\n UPDATE t SET v = 1; \
                 /* why */ (SELECT ${key}); WITH x AS (SELECT 1) DELETE FROM t; \
                 CALL settle(${key}); DO $$ BEGIN PERFORM 1; END $$"
            ),
            [true, true, true, true, false, false]
        );
    }

    #[test]
    fn bad_text_is_named() {
        assert!(parse("SELECT $1")
            .unwrap_err()
            .contains("statement 1: positional"));
        assert!(parse("SELECT ${a..b}").unwrap_err().contains("`${a..b}`"));
        assert!(parse("SELECT 'open").unwrap_err().contains("not closed"));
        assert!(parse("  ;  -- nothing\n")
            .unwrap_err()
            .contains("no statement"));
        assert!(parse("SELECT ${key").unwrap_err().contains("closing"));
    }

    #[test]
    fn values_are_text_and_absent_fields_null() {
        let s = &parse("SELECT ${key}, ${version}, ${data.customer}, ${data.amount}, ${data.none}, ${payload.key}, ${timestamp}, ${data}").unwrap()[0];
        let mut e = Event::for_test("k1", 7, 40);
        e.payload = crate::record::JsonText::from_string(
            r#"{"key":"inner","data":{"customer":"c9","amount":12.5}}"#.into(),
        );
        e.timestamp_ms = Some(0);
        let doc: Value = serde_json::from_str(e.payload.as_str()).unwrap();
        let v: Vec<Option<String>> = s
            .values(&e, "orders", 3, &doc)
            .into_iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(
            v,
            vec![
                Some("k1".into()),
                Some("7".into()),
                Some("c9".into()),
                Some("12.5".into()),
                None,
                Some("inner".into()),
                Some("1970-01-01T00:00:00.000Z".into()),
                Some(r#"{"amount":12.5,"customer":"c9"}"#.into()),
            ]
        );
    }
}
