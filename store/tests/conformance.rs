//! The conformance suite on the in-process backends (the HTTP backend runs it in api-server).

use store::{EngineConfig, FileStore, MemoryStore, conformance::run_all};

const HISTORY: usize = 50;

fn config() -> EngineConfig {
    EngineConfig {
        history_limit: HISTORY,
        ..EngineConfig::default()
    }
}

#[tokio::test]
async fn memory_backend() {
    run_all(&MemoryStore::new(config()), HISTORY).await;
}

#[tokio::test]
async fn file_backend() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), config()).await.unwrap();
    run_all(&store, HISTORY).await;
}
