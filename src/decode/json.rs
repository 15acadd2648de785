//! JSON payloads: one JSON document per record, kept as the text that came in.
//!
//! A payload is checked to be one valid JSON document and handed to the sink
//! as it came (numbers keep every digit); the fields the key and the
//! sequence come from are read in the same single pass. No tree of the
//! document is built.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::extract::FieldPath;
use super::extract::Scalar;
use super::DecodeReason;
use crate::record::JsonText;

/// Parses a payload as one JSON document.
#[derive(Debug, Clone, Copy)]
pub struct JsonFormat;

impl JsonFormat {
    /// Checks the payload and reads what it holds at each of `paths` (`None`
    /// where a path leads nowhere).
    pub fn decode(
        &self,
        bytes: &[u8],
        paths: &[FieldPath],
    ) -> Result<(JsonText, Vec<Option<Scalar>>), DecodeReason> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            <serde_json::Error as de::Error>::custom(format_args!(
                "invalid UTF-8 at byte {}",
                e.valid_up_to()
            ))
        })?;
        let found = fields(text, paths, Scan::Whole)?;
        // Skipped strings are checked for their syntax only: an escape such
        // as a lone surrogate is caught by a full parse, done only when the
        // text has escapes at all.
        if text.contains("\\u") {
            serde_json::from_str::<serde_json::Value>(text)?;
        }
        Ok((JsonText::from_string(text.to_string()), found))
    }

    /// Reads the fields at `paths` of JSON text Ordo rendered itself (an
    /// Avro record's), which needs no further check (and has no repeated
    /// member): the reading stops once every path is found. The text is
    /// kept as is.
    pub fn rendered(
        &self,
        text: String,
        paths: &[FieldPath],
    ) -> Result<(JsonText, Vec<Option<Scalar>>), DecodeReason> {
        let found = fields(&text, paths, Scan::UntilFound)?;
        Ok((JsonText::from_string(text), found))
    }
}

/// How much of a document [`fields`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// All of it: its syntax is checked, and a repeated member replaces an
    /// earlier one.
    Whole,
    /// Up to where every path was found.
    UntilFound,
}

/// What `text` holds at each of `paths`, in one pass over it.
fn fields(
    text: &str,
    paths: &[FieldPath],
    scan: Scan,
) -> Result<Vec<Option<Scalar>>, serde_json::Error> {
    let targets: Vec<&[String]> = paths.iter().map(|p| p.0.as_slice()).collect();
    let mut found = vec![None; paths.len()];
    let stopped = std::cell::Cell::new(false);
    let mut de = serde_json::Deserializer::from_str(text);
    let read = Node {
        targets: &targets,
        mask: mask_of(targets.len()),
        depth: 0,
        found: &mut found,
        stop: (scan == Scan::UntilFound).then_some(&stopped),
    }
    .deserialize(&mut de);
    match read {
        // Stopped on purpose, every path found.
        Err(_) if stopped.get() => {}
        other => {
            other?;
            de.end()?;
        }
    }
    Ok(found)
}

/// The targets `0..n`, as a bit set.
fn mask_of(n: usize) -> u64 {
    match n {
        0 => 0,
        n if n >= 64 => u64::MAX,
        n => (1u64 << n) - 1,
    }
}

/// A value in the document, reached by the targets in `mask` (each has its
/// first `depth` path parts matched).
struct Node<'a> {
    targets: &'a [&'a [String]],
    mask: u64,
    depth: usize,
    found: &'a mut [Option<Scalar>],
    /// Set when the reading stops once every path is found.
    stop: Option<&'a std::cell::Cell<bool>>,
}

impl Node<'_> {
    fn each(&self, f: impl FnMut(usize)) {
        (0..self.targets.len().min(64))
            .filter(|&i| self.mask & (1 << i) != 0)
            .for_each(f)
    }

    /// Records `value` for the targets whose path ends here.
    fn capture(&mut self, value: impl Fn() -> Scalar) {
        let mut ends = vec![];
        self.each(|i| {
            if self.targets[i].len() == self.depth {
                ends.push(i);
            }
        });
        for i in ends {
            self.found[i] = Some(value());
        }
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(mut self) -> Result<(), E> {
        self.capture(|| Scalar::Null);
        Ok(())
    }

    fn visit_bool<E>(mut self, _: bool) -> Result<(), E> {
        self.capture(|| Scalar::Bool);
        Ok(())
    }

    fn visit_i64<E>(mut self, v: i64) -> Result<(), E> {
        self.capture(|| Scalar::Number(v.into()));
        Ok(())
    }

    fn visit_u64<E>(mut self, v: u64) -> Result<(), E> {
        self.capture(|| Scalar::Number(v.into()));
        Ok(())
    }

    fn visit_f64<E>(mut self, v: f64) -> Result<(), E> {
        self.capture(|| {
            serde_json::Number::from_f64(v)
                .map(Scalar::Number)
                .unwrap_or(Scalar::Null)
        });
        Ok(())
    }

    fn visit_str<E>(mut self, v: &str) -> Result<(), E> {
        self.capture(|| Scalar::Str(v.to_owned()));
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.capture(|| Scalar::Array);
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.capture(|| Scalar::Object);
        let mut deeper = 0u64;
        self.each(|i| {
            if self.targets[i].len() > self.depth {
                deeper |= 1 << i;
            }
        });
        loop {
            let key = Key {
                targets: self.targets,
                mask: deeper,
                depth: self.depth,
            };
            let Some(matched) = map.next_key_seed(key)? else {
                return Ok(());
            };
            if matched == 0 {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            // A repeated member replaces the earlier one whole, as in a
            // parsed document (and in `jsonb`).
            for i in 0..self.targets.len().min(64) {
                if matched & (1 << i) != 0 {
                    self.found[i] = None;
                }
            }
            map.next_value_seed(Node {
                targets: self.targets,
                mask: matched,
                depth: self.depth + 1,
                found: &mut *self.found,
                stop: self.stop,
            })?;
            if let Some(stop) = self.stop {
                if self.found.iter().all(Option::is_some) {
                    stop.set(true);
                    return Err(de::Error::custom("every path was found"));
                }
            }
        }
    }
}

/// An object member's name; yields the targets whose next path part it is.
struct Key<'a> {
    targets: &'a [&'a [String]],
    mask: u64,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = u64;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E>(self, name: &str) -> Result<u64, E> {
        let mut matched = 0;
        for (i, t) in self.targets.iter().enumerate().take(64) {
            if self.mask & (1 << i) != 0 && t[self.depth] == name {
                matched |= 1 << i;
            }
        }
        Ok(matched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(ps: &[&str]) -> Vec<FieldPath> {
        ps.iter().map(|p| p.parse().unwrap()).collect()
    }

    fn found(text: &str, ps: &[&str]) -> Vec<Option<Scalar>> {
        JsonFormat.decode(text.as_bytes(), &paths(ps)).unwrap().1
    }

    #[test]
    fn valid_and_invalid_json() {
        let (text, _) = JsonFormat.decode(br#"{"a":1}"#, &[]).unwrap();
        assert_eq!(text.as_str(), r#"{"a":1}"#);
        assert_eq!(text.to_value(), serde_json::json!({"a": 1}));
        for bad in [
            &b"{\"a\":"[..],
            b"{\"a\":1} x",
            b"{\"a\":tru}",
            b"\"\\x\"",
            b"\"\\ud800\"",
            b"[1,]",
            b"",
            b"\"\xff\"",
        ] {
            let e = JsonFormat.decode(bad, &paths(&["a"])).unwrap_err();
            assert!(e.to_string().contains("not valid JSON"), "{e}");
        }
    }

    #[test]
    fn the_text_is_kept_as_it_came() {
        let body = r#"{ "n": 123456789012345678901234567890.5, "s": "\u00e9" }"#;
        let (text, _) = JsonFormat.decode(body.as_bytes(), &[]).unwrap();
        assert_eq!(text.as_str(), body);
    }

    #[test]
    fn fields_are_found_at_their_paths() {
        let doc = r#"{"id": "o-1", "order": {"v": 3, "x": [1, {"v": 9}], "n": null},
                      "f": 1.5, "b": true, "big": 18446744073709551615}"#;
        let got = found(
            doc,
            &[
                "id",
                "order.v",
                "order.x",
                "order",
                "order.n",
                "f",
                "b",
                "big",
                "nope",
                "id.deeper",
                "order.x.v",
            ],
        );
        assert_eq!(
            got,
            vec![
                Some(Scalar::Str("o-1".into())),
                Some(Scalar::Number(3.into())),
                Some(Scalar::Array),
                Some(Scalar::Object),
                Some(Scalar::Null),
                Some(Scalar::Number(serde_json::Number::from_f64(1.5).unwrap())),
                Some(Scalar::Bool),
                Some(Scalar::Number(u64::MAX.into())),
                None,
                None,
                None,
            ]
        );
    }

    #[test]
    fn the_last_of_repeated_members_counts_as_in_a_parsed_document() {
        let doc = r#"{"a": {"b": 1}, "k": "x", "a": {"c": 2}, "k": "y"}"#;
        assert_eq!(
            found(doc, &["a.b", "k"]),
            vec![None, Some(Scalar::Str("y".into()))]
        );
        let value: serde_json::Value = serde_json::from_str(doc).unwrap();
        assert_eq!(value.pointer("/a/b"), None);
    }

    #[test]
    fn escaped_member_names_and_values_match() {
        let doc = r#"{"i\u0064": "a\"b", "not_array": [], "s": "\ud83d\ude00"}"#;
        assert_eq!(
            found(doc, &["id", "s"]),
            vec![
                Some(Scalar::Str("a\"b".into())),
                Some(Scalar::Str("\u{1F600}".into()))
            ]
        );
    }

    #[test]
    fn a_document_that_is_not_an_object_has_no_fields() {
        assert_eq!(found("[1,2]", &["a"]), vec![None]);
        assert_eq!(found("7", &["a"]), vec![None]);
    }

    #[test]
    fn rendered_text_is_read_until_every_path_is_found() {
        let paths: Vec<FieldPath> = ["meta.seq", "id"]
            .iter()
            .map(|p| p.parse().unwrap())
            .collect();
        // What follows the last path found is not read (here it is not even JSON).
        let text = r#"{"meta":{"seq":4,"x":[1]},"id":"k1","rest":nonsense"#;
        let (_, got) = JsonFormat.rendered(text.to_string(), &paths).unwrap();
        assert_eq!(
            got,
            vec![
                Some(Scalar::Number(4.into())),
                Some(Scalar::Str("k1".into()))
            ]
        );
        assert!(JsonFormat.decode(text.as_bytes(), &paths).is_err());
        // A path not found: the whole text is read, and checked.
        let paths: Vec<FieldPath> = ["meta.seq", "absent"]
            .iter()
            .map(|p| p.parse().unwrap())
            .collect();
        assert!(JsonFormat.rendered(text.to_string(), &paths).is_err());
        let whole = r#"{"meta":{"seq":4},"id":"k1"}"#;
        let (_, got) = JsonFormat.rendered(whole.to_string(), &paths).unwrap();
        assert_eq!(got, vec![Some(Scalar::Number(4.into())), None]);
    }
}
