//! The registry against the Confluent Schema Registry API's documented behaviour, over HTTP.

use ordo_registry::{Registry, Running};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const V1: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"},{"name":"qty","type":"int"}]}"#;
const V2: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"},{"name":"qty","type":"int"},{"name":"note","type":["null","string"],"default":null}]}"#;
const V3_NO_DEFAULT: &str = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"},{"name":"qty","type":"int"},{"name":"price","type":"double"}]}"#;

struct Api {
    server: Running,
    client: reqwest::Client,
}

impl Api {
    fn start(registry: Registry) -> Api {
        let server = registry.spawn("127.0.0.1:0".parse().unwrap()).unwrap();
        Api {
            server,
            client: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.server.url()));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/vnd.schemaregistry.v1+json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(
            ct.as_deref(),
            Some("application/vnd.schemaregistry.v1+json"),
            "{path}"
        );
        (status, resp.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }
}

fn error_code(body: &Value) -> i64 {
    assert!(body["message"].is_string(), "{body}");
    body["error_code"].as_i64().unwrap()
}

#[tokio::test]
async fn register_fetch_and_list() {
    let api = Api::start(Registry::new());
    let (st, body) = api
        .post("/subjects/orders-value/versions", json!({"schema": V1}))
        .await;
    assert_eq!((st, body), (StatusCode::OK, json!({"id": 1})));
    // The same schema again: same id, no new version.
    let (_, body) = api
        .post(
            "/subjects/orders-value/versions",
            json!({"schema": V1, "schemaType": "AVRO"}),
        )
        .await;
    assert_eq!(body, json!({"id": 1}));
    let (_, body) = api
        .post("/subjects/orders-value/versions", json!({"schema": V2}))
        .await;
    assert_eq!(body, json!({"id": 2}));
    // Ids are global: another subject registering V2 gets id 2.
    let (_, body) = api
        .post("/subjects/other-value/versions", json!({"schema": V2}))
        .await;
    assert_eq!(body, json!({"id": 2}));

    let (st, body) = api.get("/schemas/ids/2?deleted=true").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body, json!({"schema": V2}));
    let (_, body) = api.get("/schemas/ids/2/versions").await;
    assert_eq!(
        body,
        json!([{"subject": "orders-value", "version": 2}, {"subject": "other-value", "version": 1}])
    );
    let (_, body) = api.get("/schemas/ids/1/schema").await;
    assert_eq!(body, serde_json::from_str::<Value>(V1).unwrap());
    let (_, body) = api.get("/subjects").await;
    assert_eq!(body, json!(["orders-value", "other-value"]));
    let (_, body) = api.get("/subjects/orders-value/versions").await;
    assert_eq!(body, json!([1, 2]));
    let (_, body) = api.get("/subjects/orders-value/versions/latest").await;
    assert_eq!(
        body,
        json!({"subject": "orders-value", "version": 2, "id": 2, "schema": V2})
    );
    let (_, body) = api.get("/subjects/orders-value/versions/1").await;
    assert_eq!(body["id"], 1);
    let (_, body) = api.get("/subjects/orders-value/versions/-1/schema").await;
    assert_eq!(body, serde_json::from_str::<Value>(V2).unwrap());
    let (_, body) = api.get("/schemas/types").await;
    assert_eq!(body, json!(["AVRO"]));

    // Lookup.
    let (st, body) = api
        .post("/subjects/orders-value", json!({"schema": V1}))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["version"], 1);
    assert_eq!(body["id"], 1);
}

#[tokio::test]
async fn errors_carry_confluent_codes() {
    let api = Api::start(Registry::new());
    api.post("/subjects/s/versions", json!({"schema": V1}))
        .await;

    let (st, body) = api.get("/schemas/ids/99").await;
    assert_eq!((st, error_code(&body)), (StatusCode::NOT_FOUND, 40403));
    let (st, body) = api.get("/subjects/nope/versions").await;
    assert_eq!((st, error_code(&body)), (StatusCode::NOT_FOUND, 40401));
    let (st, body) = api.get("/subjects/s/versions/7").await;
    assert_eq!((st, error_code(&body)), (StatusCode::NOT_FOUND, 40402));
    let (st, body) = api.get("/subjects/s/versions/0").await;
    assert_eq!(
        (st, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42202)
    );
    let (st, body) = api
        .post(
            "/subjects/s/versions",
            json!({"schema": "{\"type\":\"record\"}"}),
        )
        .await;
    assert_eq!(
        (st, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42201)
    );
    let (st, body) = api
        .post(
            "/subjects/s/versions",
            json!({"schema": V1, "schemaType": "PROTOBUF"}),
        )
        .await;
    assert_eq!(
        (st, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42201)
    );
    // BACKWARD is the default: a new field without a default cannot read old data.
    let (st, body) = api
        .post("/subjects/s/versions", json!({"schema": V3_NO_DEFAULT}))
        .await;
    assert_eq!((st, error_code(&body)), (StatusCode::CONFLICT, 409));
    let (st, body) = api.post("/subjects/s", json!({"schema": V2})).await;
    assert_eq!((st, error_code(&body)), (StatusCode::NOT_FOUND, 40403));
    let (st, body) = api.post("/subjects/nope", json!({"schema": V1})).await;
    assert_eq!((st, error_code(&body)), (StatusCode::NOT_FOUND, 40401));
    let (st, body) = api.get("/no/such/route").await;
    assert_eq!((st, error_code(&body)), (StatusCode::NOT_FOUND, 404));
    let (st, body) = api
        .put("/config", json!({"compatibility": "SIDEWAYS"}))
        .await;
    assert_eq!(
        (st, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, 42203)
    );
    let (st, body) = api.get("/config/s").await;
    assert_eq!((st, error_code(&body)), (StatusCode::NOT_FOUND, 40408));
    let (st, body) = api.delete("/subjects/s?permanent=true").await;
    assert_eq!((st, error_code(&body)), (StatusCode::NOT_FOUND, 40405));
}

#[tokio::test]
async fn compatibility_levels_and_checks() {
    let api = Api::start(Registry::new());
    api.post("/subjects/s/versions", json!({"schema": V1}))
        .await;
    api.post("/subjects/s/versions", json!({"schema": V2}))
        .await;

    let (_, body) = api
        .post(
            "/compatibility/subjects/s/versions/latest",
            json!({"schema": V3_NO_DEFAULT}),
        )
        .await;
    assert_eq!(body, json!({"is_compatible": false}));
    let (_, body) = api
        .post(
            "/compatibility/subjects/s/versions?verbose=true",
            json!({"schema": V2}),
        )
        .await;
    assert_eq!(body["is_compatible"], true);
    assert_eq!(body["messages"], json!([]));
    let (st, body) = api
        .post(
            "/compatibility/subjects/s/versions/9",
            json!({"schema": V2}),
        )
        .await;
    assert_eq!((st, error_code(&body)), (StatusCode::NOT_FOUND, 40402));

    // FORWARD: adding a field without a default is fine (old readers ignore it).
    let (_, body) = api
        .put("/config/s", json!({"compatibility": "FORWARD"}))
        .await;
    assert_eq!(body, json!({"compatibility": "FORWARD"}));
    let (_, body) = api.get("/config/s").await;
    assert_eq!(body, json!({"compatibilityLevel": "FORWARD"}));
    let (_, body) = api
        .post(
            "/compatibility/subjects/s/versions/latest",
            json!({"schema": V3_NO_DEFAULT}),
        )
        .await;
    assert_eq!(body, json!({"is_compatible": true}));
    let (st, body) = api
        .post("/subjects/s/versions", json!({"schema": V3_NO_DEFAULT}))
        .await;
    assert_eq!((st, body), (StatusCode::OK, json!({"id": 3})));

    // FULL_TRANSITIVE refuses what FORWARD let through, against every version.
    let (_, body) = api.delete("/config/s").await;
    assert_eq!(body, json!({"compatibilityLevel": "FORWARD"}));
    let (_, body) = api.get("/config/s?defaultToGlobal=true").await;
    assert_eq!(body, json!({"compatibilityLevel": "BACKWARD"}));
    api.put("/config", json!({"compatibility": "full_transitive"}))
        .await;
    let (_, body) = api.get("/config").await;
    assert_eq!(body, json!({"compatibilityLevel": "FULL_TRANSITIVE"}));
    let v4 = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"}]}"#;
    let (_, body) = api
        .post("/compatibility/subjects/s/versions", json!({"schema": v4}))
        .await;
    assert_eq!(body, json!({"is_compatible": false}));
    // NONE lets anything through.
    api.put("/config", json!({"compatibility": "NONE"})).await;
    let (st, _) = api
        .post("/subjects/s/versions", json!({"schema": v4}))
        .await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn deletes_soft_then_permanent() {
    let api = Api::start(Registry::new());
    api.post("/subjects/s/versions", json!({"schema": V1}))
        .await;
    api.post("/subjects/s/versions", json!({"schema": V2}))
        .await;
    let (_, body) = api.delete("/subjects/s/versions/2").await;
    assert_eq!(body, json!(2));
    let (_, body) = api.get("/subjects/s/versions").await;
    assert_eq!(body, json!([1]));
    let (_, body) = api.get("/subjects/s/versions?deleted=true").await;
    assert_eq!(body, json!([1, 2]));
    // The id stays readable: records written with it must still decode.
    let (st, _) = api.get("/schemas/ids/2?deleted=true").await;
    assert_eq!(st, StatusCode::OK);
    let (_, body) = api.delete("/subjects/s/versions/2?permanent=true").await;
    assert_eq!(body, json!(2));
    let (_, body) = api.delete("/subjects/s").await;
    assert_eq!(body, json!([1]));
    let (st, body) = api.get("/subjects/s/versions").await;
    assert_eq!((st, error_code(&body)), (StatusCode::NOT_FOUND, 40401));
    let (_, body) = api.get("/subjects?deleted=true").await;
    assert_eq!(body, json!(["s"]));
    let (_, body) = api.delete("/subjects/s?permanent=true").await;
    assert_eq!(body, json!([1]));
    let (_, body) = api.get("/subjects?deleted=true").await;
    assert_eq!(body, json!([]));
}

#[tokio::test]
async fn basic_auth_is_enforced() {
    let api = Api::start(Registry::new().with_basic_auth("ordo", "s3cret"));
    let (st, body) = api.get("/subjects").await;
    assert_eq!((st, error_code(&body)), (StatusCode::UNAUTHORIZED, 401));
    let resp = api
        .client
        .get(format!("{}/subjects", api.server.url()))
        .basic_auth("ordo", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = api
        .client
        .get(format!("{}/subjects", api.server.url()))
        .basic_auth("ordo", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn state_survives_a_restart_on_the_same_port() {
    let registry = Registry::new();
    let first = registry.spawn("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = first.addr();
    registry.register("s", V1).unwrap();
    first.stop();
    let client = reqwest::Client::new();
    assert!(client
        .get(format!("http://{addr}/schemas/ids/1"))
        .send()
        .await
        .is_err());
    let second = registry.spawn(addr).unwrap();
    let body: Value = client
        .get(format!("{}/schemas/ids/1", second.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body, json!({"schema": V1}));
}
