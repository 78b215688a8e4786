//! The store conformance suite, run through the HTTP client against a live server.

mod common;

use common::TestServer;

const HISTORY_LIMIT: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_store_passes_the_conformance_suite() {
    let server = TestServer::start(HISTORY_LIMIT).await;
    store::conformance::run_all(&server.http, HISTORY_LIMIT).await;
    server.stop().await;
}
