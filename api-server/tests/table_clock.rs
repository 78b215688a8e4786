//! Table ages come from the injected clock, as every other timestamp does: with the store
//! stamping objects on 2001-01-01 and the API's clock three days later, every age is 3d.

mod common;

use bytes::Bytes;
use chrono::TimeZone;
use common::{JSON_CT, PACKAGES, TestServer, package_json, parse};
use http::StatusCode;
use store::Clock;

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

#[tokio::test]
async fn table_ages_are_measured_on_the_injected_clock() {
    let created = chrono::Utc
        .with_ymd_and_hms(2001, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid time");
    let now = created + chrono::TimeDelta::days(3);
    let s = TestServer::start_with_clocks(100, Clock::fixed(created), Clock::fixed(now)).await;
    let (code, _) = s
        .json("POST", PACKAGES, JSON_CT, &package_json("web"))
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let accept = [("accept", TABLE)];
    let (_, _, list) = s.send("GET", PACKAGES, &accept, Bytes::new()).await;
    let (_, _, one) = s
        .send("GET", &format!("{PACKAGES}/web"), &accept, Bytes::new())
        .await;
    let (_, _, watched) = s
        .send(
            "GET",
            &format!("{PACKAGES}?watch=1&timeoutSeconds=1"),
            &accept,
            Bytes::new(),
        )
        .await;
    let first_line = watched.split(|b| *b == b'\n').next().unwrap_or_default();
    for (what, table) in [
        ("list", parse(&list)),
        ("get", parse(&one)),
        ("watch", parse(first_line)["object"].clone()),
    ] {
        assert_eq!(table["rows"][0]["cells"][2], "3d", "{what}: {table}");
    }
}
