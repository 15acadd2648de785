//! Sample order events of four types, for routes (`examples/orders/`): each
//! order stream's versions cycle through `order.placed`, `order.paid`,
//! `order.shipped` and `order.delivered`; a placed event names its customer
//! and amount. The known answers of the example's read models come with it.

use std::collections::BTreeMap;

use serde_json::json;

use super::data::{self, Dataset};

/// The four event types, in the order a stream goes through them.
pub const TYPES: [&str; 4] = [
    "order.placed",
    "order.paid",
    "order.shipped",
    "order.delivered",
];

/// Order streams per customer: a customer's totals move with the events of
/// a few streams, as in a shop, so the number of customers grows with the
/// number of streams.
pub const STREAMS_PER_CUSTOMER: usize = 4;

/// The type of a stream's `version`.
pub fn event_type(version: i64) -> &'static str {
    TYPES[((version - 1).rem_euclid(4)) as usize]
}

/// The customer of an order stream: streams `acct-0000` to `acct-0003`
/// belong to `cust-0000`, and so on (a name without a number: one of 50).
pub fn customer(stream: &str) -> String {
    let digits = stream
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap_or_default();
    let n = match digits.parse::<usize>() {
        Ok(n) => n / STREAMS_PER_CUSTOMER,
        Err(_) => {
            let h = stream
                .bytes()
                .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
            h as usize % 50
        }
    };
    format!("cust-{n:04}")
}

/// The amount (in cents) a placed event at `version` of `stream` carries.
pub fn amount_cents(stream: &str, version: i64) -> i64 {
    let h = stream
        .bytes()
        .fold(7i64, |h, b| (h * 13 + b as i64) % 10_007);
    1_000 + (h + version * 37) % 9_000
}

/// The JSON payload of one event.
pub fn payload(stream: &str, version: i64) -> Vec<u8> {
    let t = event_type(version);
    let status = t.trim_start_matches("order.");
    let data = if t == "order.placed" {
        let cents = amount_cents(stream, version);
        json!({
            "customer": customer(stream),
            "amount": format!("{}.{:02}", cents / 100, cents % 100),
            "status": status,
        })
    } else {
        json!({ "status": status })
    };
    json!({ "id": stream, "version": version, "type": t, "data": data })
        .to_string()
        .into_bytes()
}

/// Order events with late and duplicated deliveries, as [`data::generate`].
pub fn generate(events: usize, partitions: i32, keys: usize, seed: u64) -> Dataset {
    data::generate_with(events, partitions, keys, 0.05, 20, 0.02, seed, payload)
}

/// What the example's `customer_totals` table holds once every event of
/// `ds` landed: per customer, (placed orders, amount in cents).
pub fn customer_totals(ds: &Dataset) -> BTreeMap<String, (i64, i64)> {
    let mut totals: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for k in 0..ds.keys {
        let stream = data::key_name(k);
        for v in (1..=ds.versions).filter(|v| event_type(*v) == "order.placed") {
            let t = totals.entry(customer(&stream)).or_default();
            t.0 += 1;
            t.1 += amount_cents(&stream, v);
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_cycle_and_placed_events_carry_a_customer() {
        assert_eq!(event_type(1), "order.placed");
        assert_eq!(event_type(4), "order.delivered");
        assert_eq!(event_type(5), "order.placed");
        let p: serde_json::Value = serde_json::from_slice(&payload("acct-0001", 1)).unwrap();
        assert_eq!(p["type"], "order.placed");
        assert_eq!(p["data"]["customer"], customer("acct-0001"));
        let ds = generate(800, 2, 100, 1);
        let totals = customer_totals(&ds);
        // 8 versions per stream: two placed events each.
        assert_eq!(totals.values().map(|t| t.0).sum::<i64>(), 200);
    }
}
